"""The update's CPU kernels against plain autograd: HeadLogprobs (the frozen LM head's blocked log-probs) and
HalfAttention (attention with gradients as half-precision matmuls)."""

import pytest
import torch

from icrl_lite import logprobs as logprobs_module
from icrl_lite.attention import sdpa_gqa
from icrl_lite.cpu import attention as cpu_attention
from icrl_lite.cpu.attention import half_attention_on_cpu
from icrl_lite.logprobs import HeadLogprobs, token_logprobs


def reference(weight, hidden, targets, temperature):
    logits = hidden @ weight.T / (temperature if temperature > 0 else 1.0)
    return torch.log_softmax(logits.float(), -1).gather(-1, targets[..., None]).squeeze(-1)


@pytest.mark.parametrize("chunk", [1024, 16])  # the softmax kept for the backward (150 positions x 4 <= 4 x 1024), and not
@pytest.mark.parametrize("temperature", [1.0, 0.7, 0.0])
def test_values_and_input_gradients_equal_autograd(temperature, chunk, monkeypatch):
    monkeypatch.setattr(logprobs_module, "KEEP_SOFTMAX", True)
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 300, bias=False)
    head.weight.requires_grad_(False)
    hidden = torch.randn(3, 50, 16, dtype=torch.float64).float().requires_grad_(True)
    targets = torch.randint(0, 300, (3, 50))
    weights = torch.randn(3, 50)  # a loss that weighs every position differently
    ours = token_logprobs(head, hidden, targets, chunk=chunk, temperature=temperature)
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
        for keep in (False, True):
            out = HeadLogprobs.apply(hidden, weight, targets, 1.0, block, keep)
            grad, = torch.autograd.grad((out * torch.linspace(-1, 2, 70)).sum(), hidden)
            outs.append((out, grad))
    for out, grad in outs[1:]:
        assert torch.allclose(out, outs[0][0], atol=1e-5) and torch.allclose(grad, outs[0][1], atol=1e-5)


def test_confident_tokens_keep_their_gradient_in_bf16(monkeypatch):
    """A bf16 head whose targets are mostly likely (p up to 1 - 1e-5): the target's gradient entry g (1 - p) must not
    cancel in bf16 (1 - 0.999 rounds to 0 there). With the softmax kept (chunk 1024) the gradients equal those of
    the recomputing path (chunk 16), and within bf16 rounding of fp64 autograd."""
    monkeypatch.setattr(logprobs_module, "KEEP_SOFTMAX", True)
    torch.manual_seed(0)
    weight = torch.randn(300, 16)
    targets = torch.randint(0, 300, (4, 64))
    head = torch.nn.Linear(16, 300, bias=False).to(torch.bfloat16).requires_grad_(False)
    head.weight.copy_(weight)
    hidden = (weight[targets] * torch.linspace(0.3, 1.5, 64)[:, None]).to(torch.bfloat16)  # aligned: confident
    grads = []
    for chunk in (1024, 16):  # 256 positions x 2 bytes <= 4 x 1024: kept; > 4 x 16: recomputed
        h = hidden.clone().requires_grad_(True)
        token_logprobs(head, h, targets, chunk=chunk).sum().backward()
        grads.append(h.grad.double())
    h64 = hidden.double().requires_grad_(True)
    logp = torch.log_softmax(h64 @ head.weight.double().T, -1).gather(-1, targets[..., None]).squeeze(-1)
    logp.sum().backward()
    p = logp.exp().detach()
    confident = (p > 0.99) & (p < 0.99999)  # below that the exact gradient itself is below bf16's reach
    assert confident.sum() > 20
    torch.testing.assert_close(grads[0], grads[1], rtol=0.01, atol=1e-3 * grads[1].abs().max().item())
    error = (grads[0] - h64.grad).norm(dim=-1) / h64.grad.norm(dim=-1)  # each position's own gradient
    assert error[confident].max() < 0.3, error[confident].max()  # 0.12 measured; 1.9 with g (1 - p) in bf16


def test_the_softmax_is_recomputed_by_default():
    head = torch.nn.Linear(16, 300, bias=False).requires_grad_(False)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        token_logprobs(head, torch.randn(1, 8, 16, requires_grad=True), torch.randint(0, 300, (1, 8)), chunk=1024)
    assert max(saved) == 300 * 16  # the head's weight, no 8 x 300 softmax


@pytest.mark.parametrize("chunk, kept", [(64, True), (63, False)])
def test_the_softmax_is_kept_only_within_one_chunks_fp32_logits(chunk, kept, monkeypatch):
    """2 x 64 positions of a bf16 head: their softmax (2 bytes each) is kept when it fits in chunk x 4 bytes per
    vocabulary entry; otherwise nothing of vocabulary size is saved for the backward."""
    monkeypatch.setattr(logprobs_module, "KEEP_SOFTMAX", True)
    head = torch.nn.Linear(16, 300, bias=False).to(torch.bfloat16).requires_grad_(False)
    hidden = torch.randn(2, 64, 16, dtype=torch.bfloat16, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        out = token_logprobs(head, hidden, torch.randint(0, 300, (2, 64)), chunk=chunk)
    assert (max(saved) == 128 * 300) is kept and max(saved) >= 300 * 16  # the head's weight is always saved
    out.sum().backward()
    assert hidden.grad is not None and torch.isfinite(hidden.grad).all()


def test_a_trainable_head_still_gets_its_gradient():
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 300, bias=False)  # trainable: the generic checkpointed path
    hidden, targets = torch.randn(2, 10, 16), torch.randint(0, 300, (2, 10))
    token_logprobs(head, hidden, targets, chunk=4).sum().backward()
    expected, = torch.autograd.grad(reference(head.weight, hidden, targets, 1.0).sum(), head.weight)
    assert torch.allclose(head.weight.grad, expected, atol=1e-5)


def attention_case(q_len: int, k_len: int, left_pad: int = 0, batch: int = 2):
    """Queries after a cached context of k_len - q_len keys (q_len == k_len: causal self-attention, no mask), 4:2
    heads, row 1 left-padded by `left_pad` keys."""
    torch.manual_seed(0)
    query, key, value = (torch.randn(batch, heads, n, 16) for heads, n in ((4, q_len), (2, k_len), (2, k_len)))
    mask = None
    if q_len < k_len or left_pad:
        mask = torch.ones(q_len, k_len, dtype=torch.bool).tril(k_len - q_len)[None, None].repeat(batch, 1, 1, 1)
        mask[1, :, :, :left_pad] = False
    return query, key, value, mask


def attention_and_grads(query, key, value, mask, dtype):
    """sdpa_gqa's output and input gradients for a fixed weighting of the output, in fp32."""
    module = torch.nn.Module().train()
    leaves = [t.to(dtype).requires_grad_(True) for t in (query, key, value)]
    out, _ = sdpa_gqa(module, *leaves, mask, is_causal=True)
    (out.double() * torch.linspace(-1, 1, out.numel(), dtype=torch.float64).view_as(out)).sum().backward()
    return [out.double()] + [t.grad.double() for t in leaves]


@pytest.mark.parametrize("q_len, k_len, left_pad", [(30, 30, 0), (20, 30, 4), (24, 700, 0), (24, 700, 5), (1, 40, 0),
                                                     (300, 300, 0)])
@pytest.mark.parametrize("block_bytes, causal_block", [(16 << 20, 256), (16 << 20, 7), (1, 256)])  # 1: one row
def test_half_attention_matches_fp64_attention(monkeypatch, q_len, k_len, left_pad, block_bytes, causal_block):
    monkeypatch.setattr(cpu_attention, "HALF_ATTENTION_BLOCK", block_bytes)
    monkeypatch.setattr(cpu_attention, "CAUSAL_BLOCK", causal_block)
    query, key, value, mask = attention_case(q_len, k_len, left_pad)
    assert half_attention_on_cpu(query.bfloat16().requires_grad_(), key, mask, 0.0)
    calls = []
    real = cpu_attention.HalfAttention.apply
    monkeypatch.setattr(cpu_attention.HalfAttention, "apply", lambda *a: calls.append(1) or real(*a))
    ours = attention_and_grads(query, key, value, mask, torch.bfloat16)
    assert calls  # bf16 with gradients took HalfAttention
    exact = attention_and_grads(query, key, value, mask, torch.float64)  # fp64: torch's kernel
    for got, want in zip(ours, exact):
        assert (got - want).abs().max() <= 0.03 * want.abs().max()  # bf16 rounding; a missing mask is O(1)


def test_half_attention_with_one_mask_for_all_rows_and_transposed_inputs():
    query, key, value, mask = attention_case(20, 300, 0, batch=3)
    mask = mask[:1]  # (1, 1, q, L): the same mask for every row
    as_transformers = [t.transpose(1, 2).contiguous().transpose(1, 2) for t in (query, key, value)]  # (B, H, q, d) views
    ours = attention_and_grads(*as_transformers, mask, torch.bfloat16)
    exact = attention_and_grads(query, key, value, mask, torch.float64)
    for got, want in zip(ours, exact):
        assert (got - want).abs().max() <= 0.03 * want.abs().max()


def test_half_attention_rules():
    bf16 = torch.zeros(2, 4, 30, 16, dtype=torch.bfloat16)
    keys = torch.zeros(2, 2, 30, 16, dtype=torch.bfloat16)
    with torch.enable_grad():
        assert half_attention_on_cpu(bf16, keys, None, 0.0)
        assert not half_attention_on_cpu(bf16.float(), keys.float(), None, 0.0)  # fp32: the kernel
        assert not half_attention_on_cpu(bf16, keys, None, 0.1)  # dropout: the kernel
        assert not half_attention_on_cpu(bf16, keys, torch.zeros(2, 1, 30, 30), 0.0)  # additive mask: the kernel
        long = torch.zeros(1, 9, 4000, 16, dtype=torch.bfloat16)  # causal: ~9 x 4,000^2 / 2 probabilities, 148 MB
        assert not half_attention_on_cpu(long, long[:, :3], None, 0.0)
        assert half_attention_on_cpu(long[:, :, :2000], long[:, :3, :2000], None, 0.0)  # 37 MB
        many = torch.zeros(64, 9, 129, 16, dtype=torch.bfloat16)  # 64 x 9 x 129 x 4,000 bf16 probabilities: 594 MB
        assert not half_attention_on_cpu(many, torch.zeros(64, 3, 4000, 16, dtype=torch.bfloat16),
                                         torch.ones(1, 1, 129, 4000, dtype=torch.bool), 0.0)
    with torch.no_grad():
        assert half_attention_on_cpu(bf16, keys, None, 0.0)  # reference pass, prefill: forward only
