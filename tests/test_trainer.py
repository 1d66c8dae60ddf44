"""The trainer on a tiny random model: what an update touches, metrics, checkpoints, resume, input errors, loss masks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from icrl_lite import trainer as trainer_module
from icrl_lite.policy import ModelConfig
from icrl_lite.rollout import Rollout, RolloutConfig
from icrl_lite.trainer import LossItem
from icrl_lite.trainer import TrainConfig, Trainer, latest_checkpoint, loss_mask
from seeded import generator_for

METRIC_KEYS = {"reward", "em", "format_valid", "searches", "response_tokens", "kl", "loss", "grad_norm",
               "step_seconds", "gen_tokens_per_s", "demos", "loss_scale", "skipped_updates"}


SHORT_DEMOS = [  # short worked examples keep the prompts, and so the updates, small
    {"question": "Where is Tavoustead?", "answers": ["Louktuk"],
     "solution": "<search> Tavoustead </search>\n<information>Doc 1(Title: Tavoustead) in Louktuk.</information>\n"
                 "<answer> Louktuk </answer>"},
    {"question": "When was Skorvilow founded?", "answers": ["1600"], "solution": "<answer> 1600 </answer>"},
]


@pytest.fixture
def make_config(tiny_model_dir, tmp_path):
    demo_pool = tmp_path / "demos.jsonl"
    demo_pool.write_text("".join(json.dumps(d) + "\n" for d in SHORT_DEMOS))

    def make(name: str = "run", **overrides) -> TrainConfig:
        cfg = TrainConfig(
            output_dir=str(tmp_path / name), demo_pool=str(demo_pool), stages=[{"demos": 1, "steps": 1}, {"demos": 0, "steps": 1}],
            prompts_per_step=2, num_generations=2, micro_batch_size=2, eval_every=0, save_every=1, progress=False,
            check_demo_budgets=False,
            model=ModelConfig(name=str(tiny_model_dir), dtype="fp32"),
            rollout=RolloutConfig(max_turns=1, max_turn_tokens=8, max_response_tokens=24, temperature=1.0),
        )
        for key, value in overrides.items():
            setattr(cfg, key, value)
        return cfg

    return make


def lora_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}


def score_as(monkeypatch, pattern: list[tuple[float, float]]) -> None:
    """Make the trainer's scores of a step's rollouts, in order, the given (reward, em) pairs."""
    pattern = iter(pattern)
    real = trainer_module.score

    def score(rollout, gold, *args):
        metrics = real(rollout, gold, *args)
        metrics["reward"], metrics["em"] = next(pattern)
        return metrics

    monkeypatch.setattr(trainer_module, "score", score)


def read_metrics(run_dir) -> list[dict]:
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def test_training_changes_lora_weights_and_leaves_base_weights_bit_identical(make_config, varied_rewards):
    trainer = Trainer(make_config())
    lora_before = lora_state(trainer.model)
    base_before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_" not in n}
    trainer.train()
    lora_after = lora_state(trainer.model)
    assert all(not torch.equal(lora_before[n], lora_after[n]) for n in lora_after if "lora_B" in n)
    for n, p in trainer.model.named_parameters():
        if n in base_before:
            assert not p.requires_grad and torch.equal(p, base_before[n]), n


def test_metrics_has_one_line_per_step_with_the_documented_keys(make_config, varied_rewards):
    cfg = make_config()
    Trainer(cfg).train()
    rows = read_metrics(cfg.output_dir)
    assert [r["step"] for r in rows] == [1, 2]
    for row in rows:
        assert METRIC_KEYS <= row.keys()
        assert row["informative_groups"] == 2 and row["grad_norm"] > 0


def test_metrics_follow_the_curriculum_demos(make_config):
    cfg = make_config(stages=[{"demos": 2, "steps": 1}, {"demos": 1, "steps": 1}, {"demos": 0, "steps": 1}],
                      save_every=0)
    Trainer(cfg).train()
    assert [r["demos"] for r in read_metrics(cfg.output_dir)] == [2, 1, 0]


def test_prompts_carry_as_many_demos_as_the_curriculum_asks(make_config, monkeypatch):
    # the demos are in the prompt the policy sees, not only in the logged number
    trainer = Trainer(make_config())
    seen = []
    monkeypatch.setattr(trainer_module, "build_messages", lambda q, demos, layout, instruction: seen.append(len(demos)) or
                        [{"role": "user", "content": q}])
    trainer.prompt("where?", 1, 0, 0)
    trainer.prompt("where?", 0, 1, 0)
    assert seen == [1, 0]


def test_demo_choice_per_step_gives_every_question_of_a_step_the_same_demos(make_config, monkeypatch):
    seen = []
    monkeypatch.setattr(trainer_module, "build_messages", lambda q, demos, layout, instruction: seen.append(
        [d["question"] for d in demos]) or [{"role": "user", "content": q}])
    for choice in ("per_prompt", "per_step"):
        trainer = Trainer(make_config(choice, demo_choice=choice))
        seen.clear()
        for index in range(4):
            trainer.prompt("where?", 2, 0, index)
        step0 = {tuple(d) for d in seen}
        assert len(step0) == 1 if choice == "per_step" else len(step0) > 1


def test_checkpoints_are_complete_atomic_and_pruned(make_config, varied_rewards):
    cfg = make_config(stages=[{"demos": 1, "steps": 2}, {"demos": 0, "steps": 1}], keep_checkpoints=2)
    out = Path(cfg.output_dir)
    Trainer(cfg).train()
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-3"]
    assert (out / "latest").read_text().strip() == "checkpoint-3"
    assert latest_checkpoint(out) == out / "checkpoint-3"
    for checkpoint in out.glob("checkpoint-*"):
        assert (checkpoint / "adapter" / "adapter_config.json").exists()
        assert (checkpoint / "trainer_state.pt").exists() and (checkpoint / "config.yaml").exists()
    assert not list(out.glob(".tmp-*")) and not (out / ".latest.tmp").exists()
    assert (out / "config.yaml").exists()


def test_checkpoint_state_records_its_step(make_config, varied_rewards):
    cfg = make_config()
    Trainer(cfg).train()
    state = torch.load(Path(cfg.output_dir) / "checkpoint-1" / "trainer_state.pt", weights_only=False)
    assert state["step"] == 1 and state["optimizer"]["state"]


def test_killed_and_resumed_run_equals_an_uninterrupted_one(make_config, varied_rewards, monkeypatch):
    straight = Trainer(make_config("straight"))
    straight.train()

    interrupted_cfg = make_config("interrupted")
    first = Trainer(interrupted_cfg)
    real_step = Trainer.step

    def die_at_step_two(self):
        if self.step_index == 1:
            raise KeyboardInterrupt  # the process is killed after checkpoint-1 was written
        return real_step(self)

    monkeypatch.setattr(Trainer, "step", die_at_step_two)
    with pytest.raises(KeyboardInterrupt):
        first.train()
    monkeypatch.setattr(Trainer, "step", real_step)
    del first

    resumed = Trainer(make_config("interrupted"), resume=True)
    assert resumed.step_index == 1
    resumed.train()

    assert resumed.step_index == straight.step_index == 2
    a, b = lora_state(straight.model), lora_state(resumed.model)
    assert a.keys() == b.keys()
    for n in a:
        assert torch.allclose(a[n], b[n], rtol=0, atol=1e-7), n
    opt_a, opt_b = straight.optimizer.state_dict(), resumed.optimizer.state_dict()
    assert opt_a["state"].keys() == opt_b["state"].keys()
    for i in opt_a["state"]:
        for key in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.allclose(opt_a["state"][i][key], opt_b["state"][i][key], rtol=0, atol=1e-7), (i, key)
    assert [g["lr"] for g in straight.optimizer.param_groups] == [g["lr"] for g in resumed.optimizer.param_groups]
    assert [r["step"] for r in read_metrics(interrupted_cfg.output_dir)] == [1, 2]


def test_new_run_in_a_dir_with_checkpoints_needs_resume(make_config):
    cfg = make_config(stages=[{"demos": 0, "steps": 1}])
    Trainer(cfg).train()
    with pytest.raises(FileExistsError, match="--resume"):
        Trainer(cfg)


def test_resume_of_a_finished_run_trains_no_more_steps(make_config):
    cfg = make_config(stages=[{"demos": 0, "steps": 1}])
    Trainer(cfg).train()
    assert Trainer(cfg, resume=True).train() == []
    assert len(read_metrics(cfg.output_dir)) == 1


def test_missing_corpus_names_the_path(make_config, tmp_path):
    missing = tmp_path / "no-corpus.jsonl"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        Trainer(make_config(corpus=str(missing)))


def test_malformed_train_jsonl_names_file_and_line(make_config, tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text('{"question": "q1?", "answers": ["a"]}\n{"question": "q2?", \n')
    with pytest.raises(ValueError, match=f"{path}:2"):
        Trainer(make_config(train_data=str(path)))


def test_curriculum_asking_more_demos_than_the_pool_is_rejected(make_config, tmp_path):
    pool = tmp_path / "demos.jsonl"
    pool.write_text(json.dumps({"question": "q?", "answers": ["a"], "solution": "<answer> a </answer>"}) + "\n")
    with pytest.raises(ValueError, match="pool has 1"):
        Trainer(make_config(demo_pool=str(pool), stages=[{"demos": 2, "steps": 1}]))


def test_loss_mask_takes_the_rollout_bits_and_pads_with_zero():
    long = Rollout(prompt_ids=[5, 6, 7], response_ids=[8, 9, 10, 11], loss_mask=[1, 0, 0, 1])
    short = Rollout(prompt_ids=[5, 6], response_ids=[0, 3], loss_mask=[1, 1])  # token 0 = the pad id, sampled
    assert loss_mask([long, short]).tolist() == [[1, 0, 0, 1], [1, 1, 0, 0]]


def test_update_on_zero_advantages_without_kl_leaves_the_adapter_unchanged(make_config):
    # the loss is a function of the advantages: with none and no KL term there is no gradient
    trainer = Trainer(make_config(beta=0.0))
    prompt = trainer.tokenizer("Question: where?")["input_ids"]
    rollouts = trainer.engine.generate([prompt], 2, generator_for(trainer.model))
    before = lora_state(trainer.model)
    trainer.update([LossItem(r, prompt, 0.0) for r in rollouts])
    after = lora_state(trainer.model)
    assert all(torch.equal(before[n], after[n]) for n in before)


def test_update_with_advantages_moves_the_adapter(make_config):
    trainer = Trainer(make_config())
    prompt = trainer.tokenizer("Question: where?")["input_ids"]
    rollouts = trainer.engine.generate([prompt], 2, generator_for(trainer.model))
    before = lora_state(trainer.model)
    metrics = trainer.update([LossItem(r, prompt, a) for r, a in zip(rollouts, (1.0, -1.0))])
    after = lora_state(trainer.model)
    assert metrics["grad_norm"] > 0
    assert any(not torch.equal(before[n], after[n]) for n in before)


def test_resume_does_not_log_replayed_steps_twice(make_config, monkeypatch):
    # killed during step 4 with checkpoint-2 on disk: steps 3 and 4 are trained again after resuming
    cfg = make_config(stages=[{"demos": 0, "steps": 4}], save_every=2)
    real_step = Trainer.step

    def die_at_step_four(self):
        if self.step_index == 3:
            raise KeyboardInterrupt
        return real_step(self)

    monkeypatch.setattr(Trainer, "step", die_at_step_four)
    with pytest.raises(KeyboardInterrupt):
        Trainer(cfg).train()
    monkeypatch.setattr(Trainer, "step", real_step)
    Trainer(cfg, resume=True).train()
    assert [r["step"] for r in read_metrics(cfg.output_dir)] == [1, 2, 3, 4]


@pytest.mark.parametrize("offpolicy", [True, False])
def test_kl_is_taken_on_on_policy_rollouts_only(make_config, monkeypatch, offpolicy):
    # k3 estimates KL(policy || reference) only on tokens the scored policy sampled: demo-sampled tokens scored
    # without the demos (off-policy) must not get the term, nor pay for a reference pass
    trainer = Trainer(make_config(beta=0.5, updates_per_step=1))
    prompt = trainer.tokenizer("Question: where?")["input_ids"]
    rollouts = trainer.engine.generate([prompt], 2, generator_for(trainer.model))
    switches = []
    real = trainer_module.reference_mode
    monkeypatch.setattr(trainer_module, "reference_mode", lambda model: switches.append(1) or real(model))
    with torch.no_grad():  # a non-zero adapter, so the policy and the reference differ
        for name, p in trainer.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    metrics = trainer.update([LossItem(r, prompt, 1.0, offpolicy) for r in rollouts])
    assert (len(switches), metrics["kl"] > 0) == ((0, False) if offpolicy else (1, True))


def test_a_gold_step_fine_tunes_on_the_pools_solutions_and_samples_nothing(make_config, monkeypatch):
    cfg = make_config(stages=[{"demos": 0, "steps": 1, "gold": True}], offpolicy_weight="shaped", beta=0.5)
    trainer = Trainer(cfg)
    monkeypatch.setattr(trainer.engine, "generate", lambda *a, **k: pytest.fail("a gold step sampled rollouts"))
    monkeypatch.setattr(trainer_module, "shaped_offpolicy_loss", lambda *a, **k: pytest.fail("gold items are plain NLL"))
    seen = []
    real = trainer.update
    monkeypatch.setattr(trainer, "update", lambda items: seen.extend(items) or real(items))
    before = lora_state(trainer.model)
    metrics = trainer.step()
    assert metrics["gold_solutions"] == len(SHORT_DEMOS) == len(seen) and metrics["rollouts"] == 0
    assert {it.rollout.text for it in seen} == {d["solution"] for d in SHORT_DEMOS}
    assert all(it.supervised and it.advantage == 1.0 for it in seen)
    for it in seen:  # each under its own question's prompt without demos: the question, no worked solution
        demo = next(d for d in SHORT_DEMOS if d["solution"] == it.rollout.text)
        assert it.prompt == trainer.prompt(demo, 0, 0, 0)
        assert it.prompt != trainer.prompt(demo, 1, 0, 0)  # (a prompt with a demo would differ)
    assert metrics["em"] == 1.0 and metrics["grad_norm"] > 0  # the solutions are right, and they were trained on
    assert any(not torch.equal(before[n], p) for n, p in lora_state(trainer.model).items())


def test_a_step_counts_the_pushed_up_rollouts_with_and_without_the_right_answer(make_config, monkeypatch):
    # rewards 0, 1 | 0, 1 in the step's two groups; only the first rollout pushed up has the right answer
    score_as(monkeypatch, [(0.0, 0.0), (1.0, 1.0), (0.0, 0.0), (1.0, 0.0)])
    trainer = Trainer(make_config(stages=[{"demos": 0, "steps": 1}]))
    metrics = trainer.step()
    assert (metrics["pushed_up_correct"], metrics["pushed_up_wrong"]) == (1, 1)


def test_correct_offpolicy_weight_trains_right_answers_only_at_weight_one_even_without_spread(make_config, monkeypatch):
    # a step with demos scored without them: group 1 is all right (no spread), group 2 has one right, one wrong
    score_as(monkeypatch, [(1.0, 1.0), (1.0, 1.0), (0.0, 0.0), (1.0, 1.0)])
    trainer = Trainer(make_config(stages=[{"demos": 1, "steps": 1}], offpolicy_weight="correct"))
    seen = []
    monkeypatch.setattr(trainer, "update", lambda items: seen.extend(items) or {})
    metrics = trainer.step()
    assert len(seen) == 3 and all(it.offpolicy and it.advantage == 1.0 for it in seen)
    assert (metrics["pushed_up_correct"], metrics["pushed_up_wrong"]) == (3, 0)


def test_alpha_anneals_from_alpha_to_alpha_final_and_reaches_the_reward(make_config, monkeypatch):
    trainer = Trainer(make_config(alpha=0.8, alpha_final=1.0))
    assert [trainer.alpha_at(p) for p in (0.0, 0.5, 1.0)] == pytest.approx([0.8, 0.9, 1.0])
    assert Trainer(make_config("constant")).alpha_at(1.0) == 0.8
    alphas = []
    real = trainer_module.score
    monkeypatch.setattr(trainer_module, "score", lambda r, g, task, tools, alpha, *a: alphas.append(alpha) or
                        real(r, g, task, tools, alpha, *a))
    trainer.train()
    assert sorted(set(alphas)) == pytest.approx([0.8, 1.0]) and read_metrics(trainer.out)[-1]["alpha"] == 1.0


def test_multi_hop_share_draws_that_share_of_each_steps_questions_from_multi_hop_ones(make_config, tmp_path):
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"id": str(i), "question": f"q{i}?", "answers": ["a"], "hops": 1 + (i % 4 == 0)})
                             + "\n" for i in range(40)))
    trainer = Trainer(make_config(train_data=str(train), prompts_per_step=4, multi_hop_share=0.5))
    for step in range(5):
        hops = sorted(q["hops"] for q in trainer.questions_at(step))
        assert hops == [1, 1, 2, 2]
    assert trainer.questions_at(3) == trainer.questions_at(3)  # a function of the step: a resume draws the same
    uniform = Trainer(make_config("uniform", train_data=str(train), prompts_per_step=4))
    assert sum(q["hops"] == 2 for s in range(20) for q in uniform.questions_at(s)) < 40  # ~20 of 80 by chance
    without = tmp_path / "plain.jsonl"
    without.write_text(json.dumps({"question": "q?", "answers": ["a"]}) + "\n")
    with pytest.raises(ValueError, match="hops"):
        Trainer(make_config("plain", train_data=str(without), multi_hop_share=0.5))


def test_a_step_logs_the_tool_use_health(make_config, varied_rewards):
    trainer = Trainer(make_config(stages=[{"demos": 0, "steps": 1}]))
    metrics = trainer.step()
    for key in ("no_spread_groups", "spread/em", "spread/format", "repeated_calls", "answer_retrieved", "closed_book",
                "invalid_turns", "response_tokens", "alpha"):
        assert key in metrics, key
    assert metrics["no_spread_groups"] == 0.0  # varied_rewards gives every group a spread


@pytest.mark.parametrize("bad, match", [({"epsilon_high": 0.1}, "epsilon_high"), ({"alpha_final": 1.5}, "alpha_final"),
                                        ({"answer_credit": "recall"}, "answer_credit"),
                                        ({"answer_credit": "f1", "task": "math"}, "qa reward"),
                                        ({"multi_hop_share": 2.0}, "multi_hop_share")])
def test_bad_learning_options_are_refused_with_the_fix(make_config, bad, match):
    with pytest.raises(ValueError, match=match):
        make_config(**bad).validate()
