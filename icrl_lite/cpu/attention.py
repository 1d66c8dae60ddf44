"""Attention in half precision on a CPU, where torch's kernel has no fast path: `HalfAttention` (plain bf16 matmuls,
with a backward pass), and the tests that say when it, or `attention.grouped_attention` for a few query positions,
beats torch's kernel. `attention.sdpa_gqa` routes a CPU call through them."""

from __future__ import annotations

import torch

def half_on_cpu(query: torch.Tensor) -> bool:
    return query.device.type == "cpu" and query.dtype in (torch.bfloat16, torch.float16)


SHORT_QUERY = 32  # decode steps and small forced chunks; longer queries (prefill, training) keep the fused kernel


def short_query_on_cpu(query: torch.Tensor, attention_mask, training: bool) -> bool:
    """Whether `grouped_attention` beats torch's kernel: a few half-precision query positions on a CPU, no grad.

    torch's CPU scaled_dot_product_attention has no fast half-precision path for one query position: measured on
    a 2-core AVX-512-bf16 EPYC at 16 rows x 9:3 heads x 600 keys, 16 ms per call in bf16 vs 1.1 ms for two bf16
    matmuls and an fp32 softmax (fp32: no difference, so fp32 keeps the kernel).
    """
    return (half_on_cpu(query) and not training and not torch.is_grad_enabled() and query.shape[2] <= SHORT_QUERY
            and (attention_mask is not None or query.shape[2] == 1)
            and (attention_mask is None or attention_mask.dtype == torch.bool))


HALF_ATTENTION_SAVED = 64 << 20  # at most this many bytes of probabilities kept per call; more: the kernel (O + lse)
HALF_ATTENTION_BLOCK = 16 << 20  # bytes of scores computed at once: larger blocks are mapped afresh by the
# allocator on every call and their page faults dominated (8 x 129 x 2,054 in one block: 80 ms, in blocks: 36 ms)
CAUSAL_BLOCK = 256  # most queries per block of a causal self-attention: keys after a block's last query are skipped


def half_attention_on_cpu(query: torch.Tensor, key: torch.Tensor, attention_mask, dropout: float) -> bool:
    """Whether `HalfAttention` beats torch's kernel: half precision on a CPU, a bool mask or none (causal), and
    probabilities small enough to keep for the backward pass. With gradients (above) and without them too (the
    reference pass, prefills and tool-output chunks; forward only, bf16, against the bf16 kernel: 4 x 129 queries
    after 2,054 keys 12.2 vs 20.9 ms, 32 x 40 after 400 6.5 vs 11.4 ms, 32 x 150 causal 13.3 vs 20.7 ms, 1,906
    causal 31 vs 31 ms)."""
    if not (half_on_cpu(query) and not dropout):
        return False
    queries, keys = query.shape[2], key.shape[2]
    if attention_mask is None and queries not in (1, keys) or attention_mask is not None and attention_mask.dtype != torch.bool:
        return False
    pairs = queries * keys if attention_mask is not None or queries == 1 else queries * (keys + CAUSAL_BLOCK) // 2
    return query.shape[0] * query.shape[1] * pairs * query.element_size() <= HALF_ATTENTION_SAVED


class HalfAttention(torch.autograd.Function):
    """Attention as plain matmuls in half precision on a CPU, with gradients (the update) and without.

    torch's CPU kernel has no fast half-precision backward, so the update ran it in fp32 (4 x 129 queries after a
    2,054-key context, 9:3 heads, forward + backward: 54.6 ms). Here the scores are one bf16 matmul per KV head
    (its query heads stacked, no copies of K/V), the softmax runs on them in place of a mask copy (only the
    columns from the first masked one on are filled), and the probabilities are kept for the backward pass, where
    the softmax's gradient needs no mask: masked probabilities are 0 (18.1 ms, 3.0x). Rounding is bf16's: the
    scores are rounded once before the softmax, as in the decode step that sampled the tokens.

    The work goes in blocks of at most `HALF_ATTENTION_BLOCK` bytes of scores: rows of the batch, and for causal
    self-attention (`mask` None, queries == keys: a prompt or the shared demonstrations) blocks of at most
    `CAUSAL_BLOCK` queries that skip the keys after their last query (1,906 positions: 50 vs 90 ms for the kernel).

    query (B, H, q, d), key/value (B, KV, L, d), mask None (causal, q == L, or q == 1) or bool (B|1, 1, q, L),
    True = attend. Returns (B, H, q, d).
    """

    @staticmethod
    def forward(ctx, query, key, value, mask, scale: float):
        batch, heads, length, dim = query.shape
        kv_heads, keys = key.shape[1], key.shape[2]
        group = heads // kv_heads
        scaled = (query * scale).reshape(batch, kv_heads, group, length, dim)
        out = torch.empty_like(scaled)
        causal = mask is None and length > 1
        blocks = _attention_blocks(batch, heads, length, keys, causal)
        probs = []
        for rows, first, last, width in blocks:
            scores = torch.matmul(_query_block(scaled, rows, first, last), key[rows, :, :width].transpose(-1, -2))
            _mask_scores(scores.view(scores.shape[0], kv_heads, group, last - first, width),
                         None if mask is None else mask[rows if mask.shape[0] > 1 else slice(None), :, first:last, :width],
                         causal)
            probs.append(torch.softmax(scores, dim=-1))  # (b, KV, g * q', width)
            del scores
            block_out = torch.matmul(probs[-1], value[rows, :, :width])  # (b, KV, g * q', d)
            out[rows, :, :, first:last] = block_out.view(-1, kv_heads, group, last - first, dim)
        ctx.save_for_backward(scaled, key, value, *probs)
        ctx.scale, ctx.blocks = scale, blocks
        return out.view(batch, heads, length, dim)

    @staticmethod
    def backward(ctx, grad):  # (B, H, q, d)
        scaled, key, value, *probs = ctx.saved_tensors
        grad = grad.reshape(scaled.shape)  # (B, KV, g, q, d)
        d_query = torch.empty_like(scaled)
        several = len(ctx.blocks) > scaled.shape[0]  # causal query blocks of a row share its keys: their gradients
        # are summed in fp32 (bf16 partial sums lose ~1% a block)
        d_key, d_value = (torch.zeros_like(t, dtype=torch.float32) if several else torch.empty_like(t) for t in (key, value))
        for (rows, first, last, width), block in zip(ctx.blocks, probs):
            block_grad = _query_block(grad, rows, first, last)  # (b, KV, g * q', d)
            _accumulate(d_value[rows, :, :width], torch.matmul(block.transpose(-1, -2), block_grad), several)
            d_probs = torch.matmul(block_grad, value[rows, :, :width].transpose(-1, -2))  # (b, KV, g * q', width)
            d_scores = torch._softmax_backward_data(d_probs, block, -1, block.dtype)  # masked: probs 0, so 0
            del d_probs
            d_query[rows, :, :, first:last] = torch.matmul(d_scores, key[rows, :, :width]).view(
                -1, *scaled.shape[1:3], last - first, scaled.shape[-1])
            _accumulate(d_key[rows, :, :width], torch.matmul(d_scores.transpose(-1, -2),
                                                             _query_block(scaled, rows, first, last)), several)
        d_query.mul_(ctx.scale)
        return d_query.view(grad.shape[0], -1, *grad.shape[3:]), d_key.to(key.dtype), d_value.to(value.dtype), None, None


def _attention_blocks(batch: int, heads: int, queries: int, keys: int, causal: bool) -> list[tuple]:
    """(rows, first query, end query, keys attended) of each block: rows of the batch holding at most
    `HALF_ATTENTION_BLOCK` bytes of bf16 scores; a causal self-attention also in query blocks of at most
    `CAUSAL_BLOCK`, each attending the keys up to its last query."""
    if not causal:
        step = max(1, HALF_ATTENTION_BLOCK // max(heads * queries * keys * 2, 1))
        return [(slice(r, min(r + step, batch)), 0, queries, keys) for r in range(0, batch, step)]
    size = max(1, min(CAUSAL_BLOCK, HALF_ATTENTION_BLOCK // max(heads * keys * 2, 1)))
    return [(slice(r, r + 1), first, min(first + size, queries), keys - queries + min(first + size, queries))
            for r in range(batch) for first in range(0, queries, size)]


def _query_block(grouped: torch.Tensor, rows: slice, first: int, last: int) -> torch.Tensor:
    """(B, KV, g, q, d) -> the block's (b, KV, g * (last - first), d), a copy only when it is part of the queries."""
    block = grouped[rows, :, :, first:last]
    return block.reshape(block.shape[0], block.shape[1], -1, block.shape[-1])


def _mask_scores(scores: torch.Tensor, mask, causal: bool) -> None:
    """Fill masked scores (b, KV, g, q', L') with the dtype's minimum, in place: a bool `mask` (b|1, 1, q', L')
    from its first column that masks anything on; `causal`: the block's last q' keys above the diagonal."""
    width = scores.shape[-1]
    if causal:
        queries = scores.shape[-2]
        above = torch.ones(queries, queries, dtype=torch.bool, device=scores.device).triu(1)
        scores[..., width - queries:].masked_fill_(above, torch.finfo(scores.dtype).min)
    elif mask is not None:
        columns = mask.reshape(-1, width).all(dim=0)  # (L',) True where no query masks the key
        if not bool(columns.all()):
            start = int(columns.logical_not().to(torch.uint8).argmax())
            scores[..., start:].masked_fill_(~mask[:, None, :, :, start:], torch.finfo(scores.dtype).min)


def _accumulate(into: torch.Tensor, value: torch.Tensor, add: bool) -> None:
    if add:
        into.add_(value.view_as(into))
    else:
        into.copy_(value.view_as(into))

