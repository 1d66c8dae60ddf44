"""The policy's attention, on every device: grouped KV heads (GQA) are never copied once per query head where that
can be avoided (`sdpa_gqa`, registered with transformers by `register_attention`). On a CPU the half-precision paths
come from `icrl_lite.cpu`; on a GPU, `gpu_attention`."""

from __future__ import annotations

import torch

from . import cpu

SHORT_QUERY = 32  # off the CPU: at most this many query positions without gradients are attended by `grouped_attention`


def sdpa_gqa(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None, **kwargs):
    """The policy's attention on every device: grouped KV heads are never copied once per query head where that
    can be avoided. transformers' sdpa path copies them (`repeat_kv`) whenever it is given a mask, and the rollout
    engine always gives one (its rows hold holes).

    On a CPU, grouped heads go to torch's kernel as they are (`enable_gqa`): at SmolLM2's 9:3 heads the copy made
    attention ~10x slower than the kernel's own grouped path (measured: 29 ms vs 2.2 ms per call at 16 x 1500
    tokens); half precision has faster paths of its own (`cpu.HalfAttention`, `grouped_attention`). Elsewhere (CUDA)
    see `gpu_attention`.
    """
    if not attends_on_cpu(query):
        return gpu_attention(module, query, key, value, attention_mask, dropout, scaling, is_causal, **kwargs)
    causal = bool(is_causal if is_causal is not None else True) and attention_mask is None and query.shape[2] > 1
    plain = attention_mask is not None or causal or query.shape[2] == 1  # no mask and not causal: the kernel
    if plain and cpu.half_attention_fits(query, key, attention_mask, dropout if module.training else 0.0):
        scale = scaling if scaling is not None else query.shape[-1] ** -0.5
        return cpu.HalfAttention.apply(query, key, value, attention_mask, scale).transpose(1, 2).contiguous(), None
    if cpu.short_query_fits(query, attention_mask, module.training):
        if causal:  # no mask given: queries and keys are the same positions
            attention_mask = torch.ones(query.shape[2], key.shape[2], dtype=torch.bool, device=query.device).tril()[None, None]
        return grouped_attention(query, key, value, attention_mask, scaling), None
    dtype = query.dtype
    if cpu.half_on_cpu(query) and query.shape[2] < key.shape[2]:
        # queries after a cached context (no gradients, or too many for HalfAttention): the CPU kernel is faster in
        # fp32 (bf16, 4 x 129 queries x 2,050 keys, forward + backward: 51.6 ms with the casts vs 65.5 ms)
        query, key, value = query.float(), key.float(), value.float()
    out = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, dropout_p=dropout if module.training else 0.0,
        scale=scaling, is_causal=causal, enable_gqa=True,
    )  # (B, heads, q, d)
    return out.transpose(1, 2).contiguous().to(dtype), None


def attends_on_cpu(query: torch.Tensor) -> bool:
    """Which path `sdpa_gqa` takes: the CPU's kernels or `gpu_attention` (tests force the latter on a CPU)."""
    return query.device.type == "cpu"


def gpu_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None, **kwargs):
    """`sdpa_gqa` off the CPU: decode steps and short forced chunks grouped, longer queries by torch's fused kernel.

    With a mask, transformers copies each KV head once per query head before torch's kernel (`repeat_kv`), and it
    is right to for long queries: with a mask and `enable_gqa`, torch's CUDA dispatcher may leave its fused kernels
    for the math backend (the memory-efficient kernel takes grouped heads only in recent versions), which writes
    the whole (q x L) score matrix. For one query position per row the copy is most of the step's attention
    traffic: the kernel needs to read the cache once, the copy reads it, writes it g times and the kernel reads
    the g copies (Qwen2.5-3B, 16 query heads on 2 KV heads: 17x the cache's bytes, every layer, every step).
    So up to `SHORT_QUERY` positions without gradients (decode steps, short tool outputs) go to
    `grouped_attention`: one matmul per KV head with its query heads stacked, an fp32 softmax, no copy. Its fp32
    scores for 32 queries (with the softmax's output and the cast probabilities, ~10 bytes a query and key) stay
    below the K/V copy they replace (2 x 2 x head_dim bytes a key: 512 at head_dim 128 in bf16). Longer queries
    (prompts, long tool outputs, the update's scoring with gradients) keep transformers' sdpa path: the fused
    kernel never writes the (q x L) scores, which from ~head_dim queries on outweighs the copy (one layer's K/V
    at a time).

    Numerically it is transformers' eager attention (scores in the input dtype, softmax in fp32); in fp16 the
    query is scaled before the matmul, as torch's kernels do, so the scores cannot overflow where the unscaled
    dot products would (> 65,504).
    """
    queries = query.shape[2]
    grouped = (queries <= SHORT_QUERY and not module.training and not torch.is_grad_enabled()
               and (attention_mask.dtype == torch.bool if attention_mask is not None else queries == 1))
    if not grouped:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    if query.dtype == torch.float16:
        query, scaling = query * (scaling if scaling is not None else query.shape[-1] ** -0.5), 1.0
    return grouped_attention(query, key, value, attention_mask, scaling), None


def grouped_attention(query, key, value, attention_mask, scaling=None) -> torch.Tensor:
    """Attention as two matmuls in the input dtype with an fp32 softmax, KV heads grouped without copies.

    query (B, H, q, d), key/value (B, KV, L, d), attention_mask None or bool (B|1, 1, q, L) with True = attend.
    Returns (B, q, H, d), as the attention interface expects.
    """
    batch, heads, length, dim = query.shape
    kv_heads = key.shape[1]
    group = heads // kv_heads
    scores = torch.matmul(query.reshape(batch, kv_heads, group * length, dim), key.transpose(-1, -2))  # (B, KV, g*q, L)
    scores = scores.float() * (scaling if scaling is not None else dim ** -0.5)
    if attention_mask is not None:
        scores = scores.view(batch, kv_heads, group, length, -1).masked_fill(
            ~attention_mask[:, None], torch.finfo(torch.float32).min).view(batch, kv_heads, group * length, -1)
    probs = torch.softmax(scores, dim=-1).to(value.dtype)
    out = torch.matmul(probs, value).view(batch, heads, length, dim)  # (B, H, q, d)
    return out.transpose(1, 2).contiguous()


def register_attention() -> str:
    """Register `sdpa_gqa` (with sdpa's boolean masks) with transformers; returns its `attn_implementation` name."""
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import sdpa_mask

    AttentionInterface.register("sdpa_gqa", sdpa_gqa)
    AttentionMaskInterface.register("sdpa_gqa", sdpa_mask)
    return "sdpa_gqa"
