"""The GPU path of model.py, tested with CPU stand-ins: gradient checkpointing on the tiny model, mocked CUDA
capabilities for the dtype choice, fp16 on the CPU for loss scaling, a 16-bit stand-in for the 4-bit base."""

from __future__ import annotations

import pytest
import torch

from icrl_lite import model as model_module
from icrl_lite.model import ModelConfig, cpu_has_fast_bf16, load_policy, resolve_dtype, response_logprobs

CUDA = torch.device("cuda", 0)


def randomize_lora_b(model, std: float = 0.1) -> None:
    """A non-zero adapter (a fresh one has B = 0 and changes nothing)."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=generator) * std)


def lora_grads(model, logp: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
    lora = [p for p in model.parameters() if p.requires_grad]
    return list(torch.autograd.grad((logp * mask).sum(), lora))


@pytest.fixture(scope="module")
def checkpointed(tiny_model_dir, tokenizer):
    """The tiny policy with gradient checkpointing on, a random adapter, a prompt and two responses."""
    model, _ = load_policy(ModelConfig(name=str(tiny_model_dir), dtype="fp32", gradient_checkpointing=True))
    randomize_lora_b(model)
    prompt = tokenizer("Question: where is the lighthouse of Tavoustead?")["input_ids"]
    responses = [tokenizer(" It is in Treslow, by the river.")["input_ids"], tokenizer(" Unknown")["input_ids"]]
    mask = torch.zeros((2, max(map(len, responses))))  # (G, R) 1 = a real response token
    for g, r in enumerate(responses):
        mask[g, : len(r)] = 1
    return model, prompt, responses, mask


def test_checkpointed_logprobs_keep_the_prompt(checkpointed):
    model, prompt, responses, mask = checkpointed
    model.train()
    policy = response_logprobs(model, prompt, responses, chunk=3)  # (G, R) under grad: checkpointed layers
    assert policy.requires_grad
    model.eval()
    with torch.no_grad():
        reference = response_logprobs(model, prompt, responses, chunk=3)  # (G, R) no checkpointing: shared cache
    real = mask.bool()
    assert torch.allclose(policy[real], reference[real], rtol=1e-5, atol=1e-5)


def test_checkpointed_gradients_equal_the_uncheckpointed_ones(checkpointed):
    model, prompt, responses, mask = checkpointed
    model.train()
    with_checkpointing = lora_grads(model, response_logprobs(model, prompt, responses, chunk=3), mask)
    model.base_model.model.gradient_checkpointing_disable()
    try:
        without = lora_grads(model, response_logprobs(model, prompt, responses, chunk=3), mask)
    finally:
        model.base_model.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    for a, b in zip(with_checkpointing, without):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6 * b.abs().max().item())


# ---- dtype=auto -----------------------------------------------------------------------------------------
@pytest.fixture
def gpu(monkeypatch):
    """A mocked CUDA device of a given compute capability that, like a real T4, claims bf16 (emulated)."""
    def with_capability(major: int, minor: int) -> None:
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (major, minor))
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation or major >= 8)
    return with_capability


@pytest.mark.parametrize("capability, dtype", [((7, 5), torch.float16), ((8, 0), torch.bfloat16), ((9, 0), torch.bfloat16)])
def test_auto_dtype_on_a_gpu_is_bf16_only_where_it_is_native(gpu, capability, dtype):
    gpu(*capability)  # 7.5 = T4
    assert resolve_dtype("auto", CUDA) is dtype


def test_bf16_on_a_t4_is_refused_with_the_fix(gpu):
    gpu(7, 5)
    with pytest.raises(ValueError, match="use model.dtype=fp16 or auto"):
        resolve_dtype("bf16", CUDA)


@pytest.fixture
def cpu_timings(monkeypatch):
    """Mock the matmul timer: seconds per dtype; the cached answer is cleared around the test."""
    calls = []

    def set_timings(seconds: dict) -> list:
        monkeypatch.setattr(model_module, "matmul_seconds", lambda dtype, **kw: calls.append(dtype) or seconds[dtype])
        return calls

    monkeypatch.delenv("ICRL_LITE_CPU_BF16", raising=False)
    cpu_has_fast_bf16.cache_clear()
    yield set_timings
    cpu_has_fast_bf16.cache_clear()


@pytest.mark.parametrize("bf16_seconds, fast", [
    (0.25, True),  # avx512_bf16 / AMX: 4x faster
    (80.0, False),  # AVX2 only: emulated, 80x slower, although the flags may list bf16
    (0.8, False),  # 1.25x is within noise and not worth bf16's precision
])
def test_cpu_bf16_is_chosen_by_measured_speed(cpu_timings, bf16_seconds, fast):
    cpu_timings({torch.float32: 1.0, torch.bfloat16: bf16_seconds})
    assert cpu_has_fast_bf16() is fast
    assert resolve_dtype("auto", torch.device("cpu")) is (torch.bfloat16 if fast else torch.float32)


def test_cpu_bf16_is_measured_once_per_process(cpu_timings):
    calls = cpu_timings({torch.float32: 1.0, torch.bfloat16: 0.25})
    assert cpu_has_fast_bf16() and cpu_has_fast_bf16()
    assert len(calls) == 2  # one fp32 and one bf16 measurement, then the cached answer


@pytest.mark.parametrize("value, fast", [("1", True), ("0", False)])
def test_cpu_bf16_env_override_skips_the_measurement(cpu_timings, monkeypatch, value, fast):
    calls = cpu_timings({})
    monkeypatch.setenv("ICRL_LITE_CPU_BF16", value)
    assert cpu_has_fast_bf16() is fast and not calls
