"""The update's shared prompt prefix (SharedPrefix): the same log-probs and exact gradients as scoring each prompt
in full, and the prefix run once per update instead of once per batch."""

from __future__ import annotations

import json

import pytest
import torch

from icrl_lite.logprobs import SharedPrefix, response_logprobs
from icrl_lite.policy import ModelConfig, decoder, load_policy
from icrl_lite.rollout import Rollout, RolloutConfig
from icrl_lite.trainer import LossItem, TrainConfig, Trainer
from seeded import generator_for

pytestmark = pytest.mark.usefixtures("one_thread")

PREFIX = list(range(1000, 1040))  # 40 tokens the prompts share (the demonstrations)
PROMPTS = [PREFIX + [7, 8, 9], PREFIX + [11, 12], PREFIX + [13, 14, 15, 16]]
RESPONSES = [[[21, 22, 23], [24, 25]], [[26, 27, 28, 29]], [[30], [31, 32, 33]]]


@pytest.fixture(scope="module")
def policy(tiny_model_dir):
    model, _ = load_policy(ModelConfig(name=str(tiny_model_dir), dtype="fp32"))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a non-zero adapter: a fresh one has B = 0, so its A gets no gradient
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.05 * torch.randn(p.shape, generator=generator))
    model.train()
    return model


def lora_grads(model, prefix: SharedPrefix | None) -> dict[str, torch.Tensor]:
    """Gradients of the summed log-probs of every prompt's responses, scored with or without the shared prefix."""
    model.zero_grad(set_to_none=True)
    for prompt, responses in zip(PROMPTS, RESPONSES):
        logp = response_logprobs(model, prompt, responses, chunk=2, prefix=prefix)  # (G, R)
        mask = torch.zeros_like(logp)
        for g, response in enumerate(responses):
            mask[g, : len(response)] = 1
        (logp * mask).sum().backward()
    if prefix is not None:
        prefix.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def test_log_probs_with_the_shared_prefix_equal_the_full_prompts(policy):
    with torch.no_grad():
        prefix = SharedPrefix.compute(policy, PREFIX)
        for prompt, responses in zip(PROMPTS, RESPONSES):
            full = response_logprobs(policy, prompt, responses, chunk=2)
            shared = response_logprobs(policy, prompt, responses, chunk=2, prefix=prefix)
            for g, response in enumerate(responses):
                torch.testing.assert_close(shared[g, : len(response)], full[g, : len(response)], rtol=1e-5, atol=1e-5)
    prefix.backward()  # under no_grad there is nothing to send back: a no-op


def test_gradients_through_the_shared_prefix_are_exact(policy):
    full = lora_grads(policy, None)
    shared = lora_grads(policy, SharedPrefix.compute(policy, PREFIX))
    assert full.keys() == shared.keys()
    for name in full:
        torch.testing.assert_close(shared[name], full[name], rtol=1e-4, atol=1e-6, msg=name)
    # the prefix's own backward is what carries the demos' share: without it the gradients differ
    policy.zero_grad(set_to_none=True)
    missing = lora_grads_without_prefix_backward(policy)
    assert any(not torch.allclose(missing[n], full[n], rtol=1e-3, atol=1e-6) for n in full)


def lora_grads_without_prefix_backward(model) -> dict[str, torch.Tensor]:
    prefix = SharedPrefix.compute(model, PREFIX)
    prefix.backward = lambda: None  # forget to send the gathered gradients through the prefix
    return lora_grads(model, prefix)


def test_keys_that_no_trainable_weight_touches_are_constants(tiny_model_dir):
    # LoRA on q_proj and v_proj only: the first layer's keys come from frozen weights, so they get no gradient
    model, _ = load_policy(ModelConfig(name=str(tiny_model_dir), dtype="fp32", lora_target_modules=["q_proj", "v_proj"]))
    model.train()
    prefix = SharedPrefix.compute(model, PREFIX)
    assert not prefix.keys[0].requires_grad and prefix.values[0].requires_grad
    logp = response_logprobs(model, PROMPTS[0], RESPONSES[0], chunk=2, prefix=prefix)
    logp.sum().backward()
    prefix.backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if p.requires_grad and "lora_A" in n)


def test_a_prefix_that_does_not_start_the_prompt_is_refused(policy):
    with torch.no_grad():
        prefix = SharedPrefix.compute(policy, PREFIX)
        with pytest.raises(ValueError, match="not a proper prefix"):
            response_logprobs(policy, [1, 2, 3] + PREFIX, [[4]], prefix=prefix)
        with pytest.raises(ValueError, match="not a proper prefix"):  # the prompt must keep a token of its own
            response_logprobs(policy, PREFIX, [[4]], prefix=prefix)


# ---- in the trainer's update ----------------------------------------------------------------------------
@pytest.fixture
def make_trainer(tiny_model_dir, tmp_path):
    demos = tmp_path / "demos.jsonl"
    demos.write_text(json.dumps({"question": "Where is Tavoustead?", "answers": ["Louktuk"],
                                 "solution": "<search> Tavoustead </search>\n<answer> Louktuk </answer>"}) + "\n")

    def make(name: str, **overrides) -> Trainer:
        cfg = TrainConfig(
            output_dir=str(tmp_path / name), demo_pool=str(demos), stages=[{"demos": 1, "steps": 1}],
            prompts_per_step=2, num_generations=2, micro_batch_size=2, eval_every=0, save_every=0, progress=False,
            check_demo_budgets=False, final_eval="", probe_demos=0, beta=0.01, updates_per_step=2,
            model=ModelConfig(name=str(tiny_model_dir), dtype="fp32"),
            rollout=RolloutConfig(max_turns=1, max_turn_tokens=8, max_response_tokens=16, temperature=1.0, **overrides),
        )
        return Trainer(cfg)

    return make


def items_for(trainer: Trainer) -> list[LossItem]:
    """Two prompts that share the system prompt, the demo and the instruction, two rollouts each, fixed advantages."""
    prompts = [trainer.prompt(q, 1, 0, 0) for q in ("Where is Ab?", "Who founded Cd?")]
    rollouts = trainer.engine.generate(prompts, 2, generator_for(trainer.model))
    return [LossItem(r, r.prompt_ids, a) for r, a in zip(rollouts, (1.0, -1.0, 0.5, -0.5))]


def test_the_update_runs_the_prefix_once_and_matches_the_unshared_update(make_trainer):
    shared, unshared = make_trainer("shared"), make_trainer("unshared", shared_prefix_min=0)
    tokens = {}
    for trainer in (shared, unshared):
        items = items_for(trainer)
        prompts = [it.prompt for it in items]
        length = len(trainer.shared_prefix([prompts[0], prompts[-1]]))
        fed = []
        hook = decoder(trainer.model).register_forward_pre_hook(
            lambda module, args, kwargs: fed.append(kwargs["input_ids"].numel()), with_kwargs=True)
        try:
            trainer.update(items)
        finally:
            hook.remove()
            trainer.lock.release()
        tokens[trainer is shared] = (sum(fed), length, len(prompts[0]))
    (shared_fed, prefix, prompt_len), (unshared_fed, none, _) = tokens[True], tokens[False]
    assert prefix >= 64 and none == 0  # the system prompt + demo + instruction is shared; sharing off shares nothing
    # 2 updates x (reference + policy passes): without sharing each batch runs its prompt, with it the prefix runs
    # once per update (+ once for the reference), so the difference is the prefix of the batches saved
    assert unshared_fed - shared_fed == prefix * (2 - 1) * (2 + 1)
    for name, p in shared.model.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(p, dict(unshared.model.named_parameters())[name], rtol=1e-4, atol=1e-6, msg=name)


def test_no_sharing_for_a_single_batch_or_a_short_prefix(make_trainer):
    trainer = make_trainer("single")
    try:
        assert trainer.shared_prefix([[1, 2, 3, 4]]) == []  # one batch: response_logprobs already shares its prompt
        assert trainer.shared_prefix([[1] * 10 + [2], [1] * 10 + [3]]) == []  # 10 < shared_prefix_min
        assert trainer.shared_prefix([[1] * 70 + [2], [1] * 70 + [3, 4]]) == [1] * 70
        assert trainer.shared_prefix([[1] * 80, [1] * 80]) == [1] * 79  # each prompt keeps a token of its own
    finally:
        trainer.lock.release()
