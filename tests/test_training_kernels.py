"""The update's CPU kernels against plain autograd: HeadLogprobs (the frozen LM head's blocked log-probs) and the
two-matmul attention used with gradients on short contexts."""

import pytest
import torch

from icrl_lite.model import SHORT_KEYS, HeadLogprobs, sdpa_gqa, token_logprobs


def reference(weight, hidden, targets, temperature):
    logits = hidden @ weight.T / (temperature if temperature > 0 else 1.0)
    return torch.log_softmax(logits.float(), -1).gather(-1, targets[..., None]).squeeze(-1)


@pytest.mark.parametrize("temperature", [1.0, 0.7, 0.0])
def test_values_and_input_gradients_equal_autograd(temperature):
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 300, bias=False)
    head.weight.requires_grad_(False)
    hidden = torch.randn(3, 50, 16, dtype=torch.float64).float().requires_grad_(True)
    targets = torch.randint(0, 300, (3, 50))
    weights = torch.randn(3, 50)  # a loss that weighs every position differently
    ours = token_logprobs(head, hidden, targets, chunk=1024, temperature=temperature)
    (ours * weights).sum().backward()
    ours_grad, hidden.grad = hidden.grad, None
    theirs = reference(head.weight, hidden, targets, temperature)
    (theirs * weights).sum().backward()
    assert torch.allclose(ours, theirs, atol=1e-5)
    assert torch.allclose(ours_grad, hidden.grad, atol=1e-5)


def test_blocks_do_not_change_the_result():
    torch.manual_seed(0)
    weight, hidden, targets = torch.randn(300, 16), torch.randn(70, 16, requires_grad=True), torch.randint(0, 300, (70,))
    outs = []
    for block in (1, 7, 64, 1000):
        out = HeadLogprobs.apply(hidden, weight, targets, 1.0, block)
        grad, = torch.autograd.grad(out.sum(), hidden)
        outs.append((out, grad))
    for out, grad in outs[1:]:
        assert torch.allclose(out, outs[0][0], atol=1e-5) and torch.allclose(grad, outs[0][1], atol=1e-5)


def test_a_trainable_head_still_gets_its_gradient():
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 300, bias=False)  # trainable: the generic checkpointed path
    hidden, targets = torch.randn(2, 10, 16), torch.randint(0, 300, (2, 10))
    token_logprobs(head, hidden, targets, chunk=4).sum().backward()
    expected, = torch.autograd.grad(reference(head.weight, hidden, targets, 1.0).sum(), head.weight)
    assert torch.allclose(head.weight.grad, expected, atol=1e-5)


@pytest.mark.parametrize("masked", [False, True])
def test_short_context_attention_with_gradients_matches_the_kernel(masked):
    torch.manual_seed(0)
    module = torch.nn.Module().train()
    q_len, k_len = (20, 30) if masked else (30, 30)  # masked: a cached prompt of 10 positions, then 20 queries
    query, key, value = (torch.randn(2, heads, n, 16) for heads, n in ((4, q_len), (2, k_len), (2, k_len)))
    mask = None
    if masked:
        mask = torch.ones(q_len, k_len, dtype=torch.bool).tril(k_len - q_len)[None, None].repeat(2, 1, 1, 1)
        mask[1, :, :, :4] = False  # left padding in row 1
    grads = []
    for dtype in (torch.bfloat16, torch.float32):  # bf16 takes the two matmuls, fp32 the kernel
        leaves = [t.to(dtype).requires_grad_(True) for t in (query, key, value)]
        out, _ = sdpa_gqa(module, *leaves, None if mask is None else mask, is_causal=True)
        (out.float() * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        grads.append([out.float()] + [t.grad.float() for t in leaves])
    for ours, theirs in zip(*grads):
        assert (ours - theirs).abs().max() <= 0.02 * theirs.abs().max()  # bf16 rounding; a missing mask is O(1)
    assert k_len <= SHORT_KEYS
