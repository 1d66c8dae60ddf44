"""The GPU path of model.py, tested with CPU stand-ins: gradient checkpointing on the tiny model, mocked CUDA
capabilities for the dtype choice, fp16 on the CPU for loss scaling, a 16-bit stand-in for the 4-bit base."""

from __future__ import annotations

import pytest
import torch

from icrl_lite.model import ModelConfig, load_policy, response_logprobs


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
