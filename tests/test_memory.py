"""The memory estimate: exact counts, measured CPU peaks of a small model, the startup report, the GPU configs."""

from __future__ import annotations

import pytest
import torch

from icrl_lite.config import load_config
from icrl_lite.memory import GB, estimate_memory, memory_report
from icrl_lite.model import ModelConfig, load_policy, response_logprobs

SMALL = dict(vocab_size=4096, hidden_size=128, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
             num_key_value_heads=4, tie_word_embeddings=True)
QWEN_3B = dict(vocab_size=151936, hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
               num_key_value_heads=2, head_dim=128, tie_word_embeddings=True)  # Qwen2.5-3B-Instruct's config.json
WITHIN = 1.5  # estimate / measured peak within [1 / WITHIN, WITHIN]; measured 0.95-1.05 here, 0.9-1.3 in bf16 too

pytestmark = pytest.mark.usefixtures("one_thread")

@pytest.fixture(scope="module")
def small_dir(tmp_path_factory, tokenizer):
    """A 4-layer random Llama, big enough for its cache and activations to dominate the allocator's noise."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("small-llama")
    LlamaForCausalLM(LlamaConfig(**SMALL, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def small_policy(small_dir):
    return load_policy(ModelConfig(name=str(small_dir), dtype="fp32"))


def peak_allocated(fn) -> int:
    """Peak bytes of CPU tensors allocated while `fn` runs, above what was allocated before (torch's profiler
    reports every allocation and free: the counterpart of torch.cuda.max_memory_allocated)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    live = peak = 0
    for event in sorted((e for e in prof.events() if e.self_cpu_memory_usage), key=lambda e: e.time_range.start):
        live += event.self_cpu_memory_usage
        peak = max(peak, live)
    return peak


def test_weights_and_adapter_are_counted_exactly(small_dir):
    model, _ = load_policy(ModelConfig(name=str(small_dir), dtype="fp32", lora_rank=8))
    base = sum(p.numel() * p.element_size() for n, p in model.named_parameters() if "lora_" not in n)
    lora = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    estimate = estimate_memory(SMALL, torch.float32, lora_rank=8, target_modules=ModelConfig().lora_target_modules)
    assert estimate.weights == base
    assert estimate.adapter == 16 * lora  # fp32 weight, gradient and AdamW's two moments


def test_rollout_estimate_matches_the_measured_cpu_peak(small_policy):
    from icrl_lite.rollout import RolloutConfig, RolloutEngine

    model, tok = small_policy
    prompts, samples, prompt_tokens, response_tokens = 4, 4, 200, 24
    generator = torch.Generator().manual_seed(0)
    ids = [torch.randint(3, SMALL["vocab_size"], (prompt_tokens,), generator=generator).tolist() for _ in range(prompts)]
    cfg = RolloutConfig(max_turns=0, max_turn_tokens=response_tokens, max_response_tokens=response_tokens, temperature=1.0)
    engine = RolloutEngine(model, tok, [], cfg)
    measured = peak_allocated(lambda: engine.generate(ids, samples, generator))
    estimate = estimate_memory(SMALL, torch.float32, prompts_per_step=prompts, num_generations=samples,
                               prompt_tokens=prompt_tokens, max_response_tokens=response_tokens, cuda=False)
    assert 1 / WITHIN < (estimate.kv_cache + estimate.rollout_work) / measured < WITHIN


@pytest.mark.parametrize("checkpointing, chunk", [(False, 8), (True, 8), (False, 64)])
def test_update_estimate_matches_the_measured_cpu_peak(small_policy, checkpointing, chunk):
    model = small_policy[0]
    if checkpointing:
        model.base_model.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    prompt_tokens, response_tokens, micro_batch = 200, 100, 4
    generator = torch.Generator().manual_seed(0)
    prompt = torch.randint(3, SMALL["vocab_size"], (prompt_tokens,), generator=generator).tolist()
    responses = [torch.randint(3, SMALL["vocab_size"], (response_tokens,), generator=generator).tolist() for _ in range(micro_batch)]
    model.train()

    def step():
        response_logprobs(model, prompt, responses, chunk).sum().backward()

    try:
        step()  # the gradients' buffers exist from the first step on, as in training
        measured = peak_allocated(step)
    finally:
        model.base_model.model.gradient_checkpointing_disable()
        model.zero_grad(set_to_none=True)
    estimate = estimate_memory(SMALL, torch.float32, prompts_per_step=1, num_generations=micro_batch,
                               prompt_tokens=prompt_tokens, max_response_tokens=response_tokens, logprob_chunk=chunk,
                               micro_batch_size=micro_batch, gradient_checkpointing=checkpointing, cuda=False)
    assert 1 / WITHIN < (estimate.activations + estimate.logprob_chunk) / measured < WITHIN


def config(name: str):
    from icrl_lite.config import CONFIG_DIR
    from icrl_lite.trainer import TrainConfig

    return load_config(TrainConfig, CONFIG_DIR / f"{name}.yaml")


@pytest.fixture
def gpu(monkeypatch):
    """A mocked CUDA device of a given compute capability (for dtype=auto)."""
    def with_capability(major: int) -> torch.device:
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (major, 0))
        return torch.device("cuda", 0)
    return with_capability


@pytest.mark.parametrize("name, capability, card_bytes", [
    ("gpu-16gb", 7, 15.8e9),  # T4
    ("gpu-24gb", 8, 23.6e9),  # A10G / L4, the smallest 24 GB cards
    ("gpu-80gb", 8, 85.0e9),  # A100 / H100 80 GB
    ("paper-qwen3b", 8, 85.0e9),
])
def test_shipped_gpu_configs_fit_their_cards_by_the_estimate(gpu, capsys, name, capability, card_bytes):
    estimate = memory_report(config(name), model_config=QWEN_3B, device=gpu(capability), available=int(card_bytes))
    assert estimate.peak < 0.9 * card_bytes  # a margin for the allocator and what the estimate leaves out
    assert "memory estimate" in capsys.readouterr().out


def test_a_gpu_run_that_does_not_fit_is_refused_with_the_knobs_largest_first(gpu):
    with pytest.raises(ValueError) as refused:
        memory_report(config("paper-qwen3b"), model_config=QWEN_3B, device=gpu(8), available=int(24 * GB))
    knobs = str(refused.value).split("\n  - ")[1:]
    assert knobs[0].startswith("rollout KV cache") and "prompts_per_step (16)" in knobs[0]
    assert any("micro_batch_size (4)" in k for k in knobs) and any("logprob_chunk (256)" in k for k in knobs)


def test_a_cpu_run_that_does_not_fit_is_only_warned_about(capsys):
    memory_report(config("paper-qwen3b"), model_config=QWEN_3B, device=torch.device("cpu"), available=int(8 * GB))
    assert "warning: the run needs" in capsys.readouterr().out


def test_the_kv_cache_follows_rollouts_and_context():
    base = dict(model_config=QWEN_3B, prompt_tokens=1000, max_response_tokens=1000, max_context_tokens=5000)
    one = estimate_memory(prompts_per_step=4, num_generations=8, **base)
    assert estimate_memory(prompts_per_step=8, num_generations=8, **base).kv_cache == 2 * one.kv_cache
    assert one.kv_cache == 32 * 2 * 2000 * (2 * 36 * 2 * 128 * 2)  # rows x slab x tokens x bf16 K+V bytes a token
