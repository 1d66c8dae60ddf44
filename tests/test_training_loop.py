"""The training step's correctness: log-probs at the sampling temperature, the ratio against the sampler,
the learning-rate schedule on steps without updates, mixed groups and the loss on the demo-free prompt."""

from __future__ import annotations

import json

import pytest
import torch

from icrl_lite import trainer as trainer_module
from icrl_lite.logprobs import response_logprobs
from icrl_lite.policy import ModelConfig
from icrl_lite.rollout import RolloutConfig
from icrl_lite.trainer import LossItem, TrainConfig, Trainer
from seeded import generator_for

DEMOS = [
    {"question": "Where was Zataeth Graemath born?", "answers": ["Vunfoholt"],
     "solution": "<think> search </think>\n<search> Zataeth Graemath </search>\n\n<information>Doc 1</information>\n\n<answer> Vunfoholt </answer>"},
    {"question": "When was Skorvilow founded?", "answers": ["1600"],
     "solution": "<think> find it </think>\n<search> Skorvilow </search>\n\n<information>Doc 1</information>\n\n<answer> 1600 </answer>"},
]


@pytest.fixture
def make_config(tiny_model_dir, tmp_path):
    pool = tmp_path / "demos.jsonl"
    pool.write_text("".join(json.dumps(d) + "\n" for d in DEMOS))

    def make(**overrides) -> TrainConfig:
        cfg = TrainConfig(
            output_dir=str(tmp_path / "run"), demo_pool=str(pool), stages=[{"demos": 1, "steps": 2}],
            prompts_per_step=2, num_generations=2, micro_batch_size=2, eval_every=0, save_every=0, progress=False,
            probe_demos=0, check_demo_budgets=False, model=ModelConfig(name=str(tiny_model_dir), dtype="fp32"),
            rollout=RolloutConfig(max_turns=1, max_turn_tokens=8, max_response_tokens=24, temperature=0.7),
        )
        for key, value in overrides.items():
            setattr(cfg, key, value)
        return cfg

    return make


def randomise_adapter(model, seed: int = 0, scale: float = 0.05) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * scale)


def test_trainer_logprob_of_a_sampled_token_equals_the_samplers_at_temperature_not_1(make_config):
    trainer = Trainer(make_config(rollout=RolloutConfig(max_turns=0, max_response_tokens=16, temperature=0.7, merge_lora=False)))
    randomise_adapter(trainer.model)
    prompt = trainer.tokenizer("Question: where is it?")["input_ids"]
    rollouts = trainer.engine.generate([prompt], 3, generator_for(trainer.model))
    with torch.no_grad():
        scored = response_logprobs(trainer.model, prompt, [r.response_ids for r in rollouts], temperature=0.7)  # (3, R)
        at_one = response_logprobs(trainer.model, prompt, [r.response_ids for r in rollouts])  # (3, R)
    for i, r in enumerate(rollouts):
        sampler = torch.tensor(r.logprobs, device=scored.device)
        torch.testing.assert_close(scored[i, : len(r.logprobs)], sampler, rtol=1e-4, atol=1e-4)
        assert (at_one[i, : len(r.logprobs)] - sampler).abs().max() > 1e-2  # T=1 scoring would be off


def test_merged_sampling_and_unmerged_scoring_agree_in_fp32(make_config):
    trainer = Trainer(make_config(rollout=RolloutConfig(max_turns=0, max_response_tokens=16, temperature=0.7)))
    randomise_adapter(trainer.model)
    prompt = trainer.tokenizer("Question: where is it?")["input_ids"]
    rollouts = trainer.engine.generate([prompt], 2, generator_for(trainer.model, 1))  # merged adapter
    with torch.no_grad():
        scored = response_logprobs(trainer.model, prompt, [r.response_ids for r in rollouts], temperature=0.7)
    for i, r in enumerate(rollouts):
        sampler = torch.tensor(r.logprobs, device=scored.device)
        torch.testing.assert_close(scored[i, : len(r.logprobs)], sampler, rtol=1e-4, atol=1e-4)


def test_the_ratio_is_taken_against_the_samplers_logprobs(make_config):
    # the sampler reports every token 1 nat less likely than the trainer finds it: ratio e > 1 + epsilon, so
    # with positive advantages the clip removes every token's gradient and the adapter does not move
    trainer = Trainer(make_config(beta=0.0))
    prompt = trainer.tokenizer("Question: where?")["input_ids"]
    rollouts = trainer.engine.generate([prompt], 2, generator_for(trainer.model))
    for r in rollouts:
        r.logprobs = [lp - 1.0 if bit else 0.0 for lp, bit in zip(r.logprobs, r.loss_mask)]
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_" in n}
    metrics = trainer.update([LossItem(r, prompt, 1.0) for r in rollouts])
    assert metrics["clip_fraction"] == pytest.approx(1.0)
    assert all(torch.equal(before[n], p) for n, p in trainer.model.named_parameters() if "lora_" in n)


def test_learning_rate_follows_the_step_even_without_updates(make_config, tmp_path):
    cfg = make_config(stages=[{"demos": 0, "steps": 6}], learning_rate=1e-3, warmup_ratio=0.2)
    trainer = Trainer(cfg)
    trainer.update = lambda items: pytest.fail("constant rewards must not update")  # type: ignore[method-assign]
    real = trainer_module.score
    trainer_module.score = lambda *a, **k: {**real(*a, **k), "reward": 0.5}  # no spread, no update
    try:
        history = trainer.train()
    finally:
        trainer_module.score = real
    lrs = [m["lr"] for m in history]
    assert lrs == pytest.approx([1e-3 * trainer.lr_lambda(s) for s in range(6)])
    assert lrs[-1] < 0.2e-3  # the cosine reached its tail although no step updated


def test_mixed_groups_put_demo_and_zero_shot_rollouts_in_one_group(make_config, monkeypatch):
    trainer = Trainer(make_config(stages=[{"demos": 1, "steps": 1, "zero_shot": 1}]))
    seen = {}
    real_generate = trainer.engine.generate

    def spy(prompts, counts, generator):
        out = real_generate(prompts, counts, generator)
        seen["rollouts"] = out
        return out

    monkeypatch.setattr(trainer.engine, "generate", spy)
    metrics = trainer.step()
    rollouts = seen["rollouts"]
    assert len(rollouts) == 4 and metrics["zero_shot_rollouts"] == 2
    for g in range(2):  # in each group the first rollout saw a demo, the second the bare question
        with_demo, bare = rollouts[2 * g].prompt_ids, rollouts[2 * g + 1].prompt_ids
        assert len(with_demo) > len(bare)
        assert trainer.tokenizer.decode(with_demo).count("<|im_start|>user") == 2
        assert trainer.tokenizer.decode(bare).count("<|im_start|>user") == 1


@pytest.mark.parametrize("weight", ["positive", "ratio", "shaped"])
def test_demo_rollouts_are_scored_under_the_zero_shot_prompt(make_config, monkeypatch, weight):
    trainer = Trainer(make_config(demo_loss_prompt="zero_shot", offpolicy_weight=weight))
    rewards = iter([1.0, 0.0, 0.0, 1.0])
    real = trainer_module.score
    monkeypatch.setattr(trainer_module, "score", lambda *a, **k: {**real(*a, **k), "reward": next(rewards)})
    captured = {}
    real_update = trainer.update
    monkeypatch.setattr(trainer, "update", lambda items: captured.setdefault("items", items) and real_update(items))
    metrics = trainer.step()
    items = captured["items"]
    assert all(it.offpolicy for it in items)
    assert all(len(it.prompt) < len(it.rollout.prompt_ids) for it in items)  # scored without the demo
    assert trainer.tokenizer.decode(items[0].prompt).count("<|im_start|>user") == 1
    expected = 2 if weight == "positive" else 4  # positive: only the rollouts with advantage > 0
    assert len(items) == metrics["trained_rollouts"] == expected
    assert metrics["grad_norm"] > 0


def test_probe_reports_the_first_tool_token_logprob(make_config):
    trainer = Trainer(make_config(probe_demos=2))
    probe = trainer.probe()
    assert probe["probe/tool_logp"] < 0 and probe["probe/start_logp"] < 0


def test_final_evaluation_compares_the_untrained_and_trained_model_on_the_same_questions(make_config, tmp_path):
    from icrl_lite.evaluate import side_by_side

    questions = tmp_path / "held_out.jsonl"
    questions.write_text("".join(json.dumps({"id": f"q{i}", "question": f"Where is town {i}?", "answers": ["x"],
                                             "hops": 1 + i // 2}) + "\n" for i in range(3)))
    trainer = Trainer(make_config(final_eval=str(questions)))
    randomise_adapter(trainer.model, scale=1.0)  # the trained policy differs clearly from the untrained one
    results = trainer.final_evaluation()
    assert results["untrained"]["questions"] == results["trained"]["questions"] == 3
    # the untrained model with demos (as many as asked, at most the pool's), on the same questions
    assert results["untrained_demos"]["demos"] == min(3, len(DEMOS)) > 0 and results["untrained"]["demos"] == 0
    with_demos = [json.loads(line) for line in (trainer.out / "final-eval-untrained_demos.jsonl").read_text().splitlines()]
    assert [r["id"] for r in with_demos] == ["q0", "q1", "q2"]
    # by hop count: two 1-hop questions, one 2-hop
    assert results["trained"]["questions@1hop"] == 2 and results["trained"]["questions@2hop"] == 1
    assert "em@2hop" in results["trained"] and "searches@1hop" in results["trained"]
    low, high = results["trained"]["intervals"]["searches@1hop"]
    assert low <= results["trained"]["searches@1hop"] <= high
    records = [json.loads(line) for line in (trainer.out / "final-eval-trained.jsonl").read_text().splitlines()]
    two_hop = [r["em"] for r in records if r["hops"] == 2]
    assert results["trained"]["intervals"]["em@2hop"] == [two_hop[0], two_hop[0]]  # one question: its own score
    untrained = [json.loads(line) for line in (trainer.out / "final-eval-untrained.jsonl").read_text().splitlines()]
    trained = [json.loads(line) for line in (trainer.out / "final-eval-trained.jsonl").read_text().splitlines()]
    assert [r["id"] for r in untrained] == [r["id"] for r in trained] == ["q0", "q1", "q2"]
    assert [r["trajectory"] for r in untrained] != [r["trajectory"] for r in trained]  # the adapter was off, then on
    low, high = results["trained"]["intervals"]["response_tokens"]
    assert low <= results["trained"]["response_tokens"] <= high
    table = side_by_side(results, trainer.task, trainer.tools)
    assert "untrained" in table and "search calls / question" in table and "3 questions" in table
    assert f"untrained, {min(3, len(DEMOS))} demos" in table and "EM, 2-hop (1)" in table
    assert "answer in a result" in table and "right, not retrieved" in table and "repeated calls" in table
    # a resumed run reuses the untrained evaluation
    again = Trainer(make_config(final_eval=str(questions)), resume=True).final_evaluation()
    assert again["untrained"] == results["untrained"] and again["untrained_demos"] == results["untrained_demos"]
    # ... but not after the questions changed
    questions.write_text(questions.read_text().replace("town 0", "village 0"))
    Trainer(make_config(final_eval=str(questions)), resume=True).final_evaluation()
    for name in ("untrained", "untrained_demos"):  # evaluated again, on the new questions
        first = json.loads((trainer.out / f"final-eval-{name}.jsonl").read_text().splitlines()[0])
        assert first["question"] == "Where is village 0?"


def test_bootstrap_interval_hand_cases():
    from icrl_lite.evaluate import bootstrap_ci

    assert bootstrap_ci([1.0] * 10) == (1.0, 1.0)
    low, high = bootstrap_ci([0.0] * 50 + [1.0] * 50, resamples=4000)
    assert 0.38 < low < 0.45 and 0.55 < high < 0.62  # mean 0.5 +- 1.96 * 0.05


def test_several_updates_per_step_reuse_the_rollouts_and_keep_moving(make_config):
    trainer = Trainer(make_config(beta=0.0, updates_per_step=3))
    prompt = trainer.tokenizer("Question: where?")["input_ids"]
    rollouts = trainer.engine.generate([prompt], 2, generator_for(trainer.model))
    steps = []
    real_step = trainer.optimizer.step
    trainer.optimizer.step = lambda *a, **k: steps.append(1) or real_step(*a, **k)  # type: ignore[method-assign]
    metrics = trainer.update([LossItem(r, prompt, a) for r, a in zip(rollouts, (1.0, -1.0))])
    assert len(steps) == 3 and metrics["grad_norm"] > 0
    with pytest.raises(ValueError, match="updates_per_step"):
        make_config(updates_per_step=0).validate()


def test_the_default_training_config_is_the_qa_transfer_studys_winning_arm():
    # docs/results.md: the demofree arm of icrl_lite/configs/studies/qa-transfer.yaml is what `icrl-lite train` runs
    from icrl_lite.study import load_study, train_config

    study = load_study("qa-transfer")
    arm = next(a for a in study.arm_list() if a.name == "demofree")
    winner, default = train_config(study, arm, 0), TrainConfig()
    for key in ("stages", "demo_loss_prompt", "offpolicy_weight", "updates_per_step", "learning_rate",
                "prompts_per_step", "num_generations", "scale_rewards", "beta", "rollout"):
        assert getattr(winner, key) == getattr(default, key), key
