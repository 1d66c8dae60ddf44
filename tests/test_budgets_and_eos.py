"""Demo trajectories must fit the rollout budgets; what an end-of-sequence token does mid-rollout;
per-prompt sample counts."""

from __future__ import annotations

import pytest
import torch

from icrl_lite.config import CONFIG_DIR, load_config
from icrl_lite.policy import ModelConfig, load_policy
from icrl_lite.rollout import RolloutConfig, RolloutEngine, demo_budget_problems
from icrl_lite.tasks import setup_task
from icrl_lite.tools import Tool
from icrl_lite.trainer import TrainConfig
from seeded import generator_for

SEARCH = Tool("search", "<search>", "</search>", lambda q: "Doc 1(Title: A) text")


@pytest.mark.parametrize("name", sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
def test_every_packaged_config_fits_its_bundled_demos(name, tokenizer):
    cfg = load_config(TrainConfig, name)
    task, tools, _ = setup_task(cfg)
    demos = task.load_demos(cfg.demo_pool or task.bundled("demos"))
    assert demo_budget_problems(demos, tokenizer, tools, cfg.rollout) == []


def test_two_hop_demos_do_not_fit_the_old_320_token_budget(tokenizer):
    cfg = TrainConfig()
    task, tools, _ = setup_task(cfg)
    demos = task.load_demos(task.bundled("demos"))
    problems = demo_budget_problems(demos, tokenizer, tools, RolloutConfig(max_turns=2, max_response_tokens=320))
    assert len(problems) >= 5 and all("rollout.max_response_tokens=320" in p for p in problems)
    one_call = demo_budget_problems(demos, tokenizer, tools, RolloutConfig(max_turns=1, max_response_tokens=512))
    assert len(one_call) == 6 and all("2 tool calls > rollout.max_turns=1" in p for p in one_call)


def test_a_demo_with_a_long_turn_is_named():
    class Chars:  # one token per character
        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": list(range(len(text)))}

    demo = {"question": "q", "solution": "x" * 50 + "<search>a</search>\n\n<information>doc</information>\n\n<answer>b</answer>"}
    problems = demo_budget_problems([demo], Chars(), [SEARCH], RolloutConfig(max_turns=2, max_turn_tokens=40, max_response_tokens=500))
    # the turn is what the policy samples: up to </search> (68 characters); the blank lines before <information>
    # are the engine's, forced with the observation
    assert len(problems) == 1 and "a 68-token turn > rollout.max_turn_tokens=40" in problems[0]


def test_trainer_refuses_budgets_that_truncate_the_demos(tiny_model_dir, tmp_path):
    from icrl_lite.trainer import Trainer

    cfg = TrainConfig(output_dir=str(tmp_path / "run"), model=ModelConfig(name=str(tiny_model_dir), dtype="fp32"),
                      rollout=RolloutConfig(max_response_tokens=320))
    with pytest.raises(ValueError, match="demos do not fit the rollout budgets"):
        Trainer(cfg)


class EosThenAnswer(torch.nn.Module):
    """An LM head whose first sampled token is EOS, then `<answer> x </answer>` token by token."""

    def __init__(self, script: list[int], vocab: int):
        super().__init__()
        self.script, self.vocab, self.calls = script, vocab, 0

    def forward(self, h):
        token = self.script[min(self.calls, len(self.script) - 1)]
        self.calls += 1
        logits = torch.full((*h.shape[:-1], self.vocab), -1e9)
        logits[..., token] = 0.0
        return logits


@pytest.mark.parametrize("stop_at_eos", [False, True])
def test_an_eos_without_an_action_follows_the_documented_rule(tiny_model_dir, stop_at_eos):
    model, tok = load_policy(ModelConfig(name=str(tiny_model_dir), dtype="fp32"))
    answer = tok("<answer> x </answer>", add_special_tokens=False)["input_ids"]
    head = EosThenAnswer([tok.eos_token_id] + answer, len(tok))
    model.get_output_embeddings = lambda: head
    cfg = RolloutConfig(temperature=0.0, max_turns=2, max_turn_tokens=20, max_response_tokens=200, stop_at_eos=stop_at_eos)
    (r,) = RolloutEngine(model, tok, [SEARCH], cfg).generate([tok("Question: q?")["input_ids"]])
    if stop_at_eos:  # the rollout ends at the EOS
        assert r.response_ids == [tok.eos_token_id] and r.finished and r.invalid_turns == 0
    else:  # ICRL's loop: the corrective message is forced and the policy answers
        assert r.response_ids[0] == tok.eos_token_id and r.loss_mask[0] == 1
        assert r.invalid_turns == 1 and "My previous action is invalid" in r.text
        assert r.policy_text.endswith("<answer> x </answer>") and r.finished


def test_per_prompt_sample_counts_are_group_contiguous(tiny_model_dir):
    model, tok = load_policy(ModelConfig(name=str(tiny_model_dir), dtype="fp32"))
    engine = RolloutEngine(model, tok, [], RolloutConfig(max_turns=0, max_response_tokens=6))
    a, b = tok("Question: a?")["input_ids"], tok("Question: bb bb?")["input_ids"]
    out = engine.generate([a, b, a], [2, 0, 3], generator_for(model))
    assert [r.prompt_ids for r in out] == [a, a, a, a, a]
    assert all(len(r.logprobs) == len(r.response_ids) for r in out)
    with pytest.raises(ValueError, match="one per prompt"):
        engine.generate([a, b], [1], generator_for(model))
