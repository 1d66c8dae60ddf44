"""The CUDA path for real (skipped without a CUDA device; scripts/gpu_check.sh runs them): a bf16 step, a 4-bit
step with fp16 compute through the loss scaler, gradient checkpointing against the shared prompt prefix, and a
2-step run's peak memory against the estimate. tests/test_gpu_path.py checks the same code with CPU stand-ins."""

from __future__ import annotations

import json
import math

import pytest
import torch

from benchmarks.gpu_check import record_longest_prompt
from icrl_lite.logprobs import SharedPrefix, response_logprobs
from icrl_lite.memory import estimate_for
from icrl_lite.policy import ModelConfig, cuda_has_native_bf16, load_policy
from icrl_lite.rollout import RolloutConfig
from icrl_lite.trainer import TrainConfig, Trainer

pytestmark = pytest.mark.gpu

CUDA = torch.device("cuda", 0)
MEMORY_MARGIN = 1.05  # measured max allocated <= 1.05 x the estimate's tensors: cuBLAS workspaces, small buffers
DEMO = {"question": "Where is Tavoustead?", "answers": ["Louktuk"],
        "solution": "<search> Tavoustead </search>\n<information>Doc 1(Title: Tavoustead) in Louktuk.</information>\n"
                    "<answer> Louktuk </answer>"}


def needs_native_bf16():
    if not cuda_has_native_bf16(CUDA):
        pytest.skip("bf16 needs compute capability >= 8 (this GPU emulates it)")


@pytest.fixture
def make_config(tiny_model_dir, tmp_path):
    """The tiny model on CUDA, 2 prompts x 2 rollouts with one demo shared by the step, 2 steps."""
    pool = tmp_path / "demos.jsonl"
    pool.write_text(json.dumps(DEMO) + "\n")

    def make(**model) -> TrainConfig:
        return TrainConfig(
            output_dir=str(tmp_path / "run"), demo_pool=str(pool), stages=[{"demos": 1, "steps": 2}],
            demo_choice="per_step", demo_loss_prompt="own", prompts_per_step=2, num_generations=2, micro_batch_size=2,
            updates_per_step=2, eval_every=0, save_every=0, final_eval="", probe_demos=0, progress=False,
            check_demo_budgets=False, model=ModelConfig(name=str(tiny_model_dir), device="cuda", **model),
            rollout=RolloutConfig(max_turns=1, max_turn_tokens=8, max_response_tokens=24, temperature=1.0),
        )

    return make


def lora_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}


def test_a_bf16_policy_trains_on_cuda_with_finite_losses(make_config, varied_rewards):
    needs_native_bf16()
    trainer = Trainer(make_config(dtype="bf16"))
    assert trainer.model.device.type == "cuda"
    assert trainer.model.get_input_embeddings().weight.dtype == torch.bfloat16
    before = lora_state(trainer.model)
    history = trainer.train()  # rollouts sampled with the trainer's CUDA generator
    assert all(m["trained_rollouts"] > 0 and math.isfinite(m["loss"]) and m["grad_norm"] > 0 for m in history)
    after = lora_state(trainer.model)
    assert any(not torch.equal(before[n], after[n]) for n in before)
    assert all(torch.isfinite(p).all() for p in after.values())


def test_a_4bit_base_with_fp16_compute_trains_through_the_loss_scaler(make_config, varied_rewards):
    pytest.importorskip("bitsandbytes")
    trainer = Trainer(make_config(dtype="fp16", load_in_4bit=True))
    quantized = [m for m in trainer.model.modules() if getattr(getattr(m, "weight", None), "quant_state", None) is not None]
    assert quantized  # the base's linear layers hold NF4 weights
    assert trainer.model.get_input_embeddings().weight.dtype == torch.float16
    assert trainer.scaler.enabled  # fp16 gradients go through dynamic loss scaling
    before = lora_state(trainer.model)
    history = trainer.train()
    for m in history:
        assert math.isfinite(m["loss"]) and math.isfinite(m["loss_scale"]) and m["loss_scale"] >= 1
    assert history[-1]["skipped_updates"] < 2 * len(history)  # an overflow may skip an update, not all of them
    after = lora_state(trainer.model)
    assert any(not torch.equal(before[n], after[n]) for n in before)
    assert all(torch.isfinite(p).all() for p in after.values())


PREFIX = list(range(1000, 1040))  # 40 tokens the prompts share (the demonstrations)
PROMPTS = [PREFIX + [7, 8, 9], PREFIX + [11, 12], PREFIX + [13, 14, 15, 16]]
RESPONSES = [[[21, 22, 23], [24, 25]], [[26, 27, 28, 29]], [[30], [31, 32, 33]]]


def update_gradients(model, shared: bool) -> torch.Tensor:
    """The adapter's gradient of every prompt's summed response log-probs, scored as the trainer's update scores
    them: with the prompts' shared prefix computed once, or (under gradient checkpointing, whose layers run without
    a cache, so `Trainer.shared_prefix` shares nothing) each prompt in full."""
    model.zero_grad(set_to_none=True)
    prefix = SharedPrefix.compute(model, PREFIX) if shared else None
    for prompt, responses in zip(PROMPTS, RESPONSES):
        logp = response_logprobs(model, prompt, responses, chunk=2, prefix=prefix)  # (G, R)
        mask = torch.zeros_like(logp)  # (G, R)
        for g, response in enumerate(responses):
            mask[g, : len(response)] = 1
        (logp * mask).sum().backward()
    if prefix is not None:
        prefix.backward()
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad]).float()


def test_checkpointed_gradients_equal_the_shared_prefix_ones_in_bf16(tiny_model_dir):
    needs_native_bf16()
    model, _ = load_policy(ModelConfig(name=str(tiny_model_dir), dtype="bf16", device="cuda", gradient_checkpointing=True))
    generator = torch.Generator(device=model.device).manual_seed(0)
    with torch.no_grad():  # a non-zero adapter: a fresh one has B = 0, so its A gets no gradient
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.05, generator=generator)
    model.train()
    checkpointed = update_gradients(model, shared=False)  # each prompt + response as one sequence, layers recomputed
    model.base_model.model.gradient_checkpointing_disable()
    shared = update_gradients(model, shared=True)  # the prefix's KV once, its gradient sent back through it once
    assert checkpointed.norm() > 0
    assert ((checkpointed - shared).norm() / shared.norm()).item() < 0.02  # bf16 rounding on two summation orders


def test_a_two_step_run_stays_within_its_memory_estimate(make_config, varied_rewards):
    cfg = make_config(dtype="auto")
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(CUDA)
    before = torch.cuda.memory_allocated(CUDA)
    trainer = Trainer(cfg)
    longest = record_longest_prompt(trainer.engine)
    history = trainer.train()
    peak = torch.cuda.max_memory_allocated(CUDA) - before
    estimate = estimate_for(cfg, prompt_tokens=longest[0], device=CUDA)
    assert all(m["trained_rollouts"] > 0 for m in history)
    assert peak <= MEMORY_MARGIN * (estimate.peak - estimate.overhead), (
        f"measured {peak / 1e9:.3f} GB, estimated {estimate.table()}")
