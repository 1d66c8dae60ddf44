"""How much memory a training run needs: weights, LoRA + AdamW, the rollout KV cache and its copies, activations.

`estimate_memory` adds up what this code allocates, phase by phase. The rollout phase holds the KV cache of every
rollout of a step (the engine keeps prompt x samples rows in one cache, `rollout.SlabLayer`, which grows by a
sixteenth of its length at a time), the transient copies of it the engine and transformers make (a layer copied
into a new slab, the fed rows' copy for a forced chunk, K/V repeated per query head on CUDA), the base weights
stashed while LoRA is merged for decoding, and one forward's activations. The update phase holds one
micro-batch's activations and one LM-head chunk of fp32 logits. The weights and the adapter's optimizer state are
there in both. Each term is a worst case for its moment (a forced chunk fed by every row but one, at the longest
cache), and the terms of a phase are added although not all peak together, so the estimate errs high.
`memory_report` prints the estimate at startup and refuses a GPU run that does not fit, naming the knobs that
would make it fit. tests/test_memory.py checks the estimate against measured CPU peaks of a small model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields

import torch

GB = 1e9
CUDA_OVERHEAD = int(1.0 * GB)  # CUDA context (~0.5 GB) and the caching allocator's fragmentation
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)  # 4 bits a weight + a double-quantized absmax per 64-weight block
SLAB_GROW = 32  # rollout.SlabLayer's capacity: the filled length + max(SLAB_GROW, length // 16)


def slab_capacity(length: int) -> int:
    """The most positions a `rollout.SlabLayer` holding `length` positions has allocated (having grown at `length`)."""
    return length + max(SLAB_GROW, length // 16)


@dataclass
class ModelShape:
    """The sizes of a decoder-only transformer that memory depends on (from its HF config)."""

    vocab: int
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    tied: bool

    @classmethod
    def from_config(cls, config) -> "ModelShape":
        """From an HF config object or its dict (config.json)."""
        get = config.get if isinstance(config, dict) else lambda key, default=None: getattr(config, key, default)
        heads = get("num_attention_heads")
        return cls(
            vocab=get("vocab_size"), hidden=get("hidden_size"), intermediate=get("intermediate_size"),
            layers=get("num_hidden_layers"), heads=heads, kv_heads=get("num_key_value_heads") or heads,
            head_dim=get("head_dim") or get("hidden_size") // heads, tied=bool(get("tie_word_embeddings", False)),
        )

    def linears(self) -> dict[str, tuple[int, int]]:
        """(in, out) features of each linear layer of one decoder layer."""
        h, q, kv, i = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim, self.intermediate
        return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    def kv_bytes_per_token(self, dtype_bytes: int) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * dtype_bytes


@dataclass
class MemoryEstimate:
    """Bytes by component; the peak is the larger of the rollout and the update phase."""

    weights: int
    adapter: int  # LoRA weights, gradients and AdamW's two moments, all fp32
    # the rollout phase
    kv_cache: int  # the rollout batch's cache at the slab's capacity (filled + 1/16)
    kv_regrow: int  # one layer's cache held twice while it is copied into a larger or compacted slab
    kv_rows_copy: int  # a forced chunk fed by some rows runs them on a copy of their cache (every layer)
    repeat_kv: int  # CUDA: one layer's K/V copied once per query head by transformers' sdpa path
    merge_stash: int  # the base weights LoRA is merged into, stashed to restore them (not for a 4-bit base)
    decode_weights: int  # CPU: FastDecoder's fused, reordered copy of the merged weights (at most)
    rollout_work: int  # a prefill's or a forced chunk's activations, or a decode step's fp32 logits: the largest
    # the update phase
    activations: int  # one micro-batch's forward kept for its backward
    update_repeat_kv: int  # CUDA, no gradient checkpointing: every layer's repeated K/V kept for the backward
    logprob_chunk: int  # one LM-head chunk: fp32 logits, their softmax and gradient
    overhead: int  # CUDA context and allocator slack (0 on a CPU)
    rows: int = 0  # rollouts in the cache
    tokens_per_row: int = 0  # the longest rollout: prompt + response within the context budget

    @property
    def rollout_peak(self) -> int:
        return self.weights + self.adapter + self.overhead + self.rollout_kv + self.merge_stash + self.decode_weights \
            + self.rollout_work

    @property
    def rollout_kv(self) -> int:
        """The cache and its copies: what prompts_per_step x num_generations and the token budgets scale."""
        return self.kv_cache + self.kv_regrow + self.kv_rows_copy + self.repeat_kv

    @property
    def update_peak(self) -> int:
        return self.weights + self.adapter + self.overhead + self.activations + self.update_repeat_kv + self.logprob_chunk

    @property
    def peak(self) -> int:
        return max(self.rollout_peak, self.update_peak)

    def table(self) -> str:
        parts = [f"{f.name} {getattr(self, f.name) / GB:.2f}" for f in fields(self)
                 if f.name not in ("rows", "tokens_per_row") and getattr(self, f.name)]  # the terms this run has
        return (f"{', '.join(parts)} GB; peak {self.peak / GB:.1f} GB (rollouts {self.rollout_peak / GB:.1f}, "
                f"update {self.update_peak / GB:.1f}); {self.rows} rollouts x {self.tokens_per_row} tokens")


def estimate_memory(model_config, dtype: torch.dtype = torch.bfloat16, load_in_4bit: bool = False, lora_rank: int = 16,
                    target_modules: list[str] | None = None, prompts_per_step: int = 4, num_generations: int = 4,
                    prompt_tokens: int | None = None, max_response_tokens: int = 512, max_context_tokens: int = 5000,
                    max_turns: int = 2, max_obs_tokens: int = 500, merge_lora: bool = True, fast_decode: bool = True,
                    logprob_chunk: int = 1024, micro_batch_size: int = 4, gradient_checkpointing: bool = False,
                    cuda: bool = True) -> MemoryEstimate:
    """Estimate the peak memory of a training step.

    prompt_tokens: the longest prompt, demonstrations included (None: the prompt fills the context budget
    but for the response). target_modules: LoRA's, or None / ["all-linear"] for every projection. max_turns,
    max_obs_tokens, merge_lora, fast_decode: the rollout's (max_turns 0: no tool output is forced into the cache).
    """
    shape = model_config if isinstance(model_config, ModelShape) else ModelShape.from_config(model_config)
    s = torch.finfo(dtype).bits // 8  # bytes per value in the compute dtype
    h, i, v, layers = shape.hidden, shape.intermediate, shape.vocab, shape.layers
    linears = shape.linears()
    if target_modules in (None, ["all-linear"]):
        targets = list(linears)
    else:  # names of another architecture: assume every projection
        targets = [t for t in target_modules if t in linears] or list(linears)

    linear_params = layers * sum(a * b for a, b in linears.values())
    weights = linear_params * (NF4_BYTES if load_in_4bit else s) + v * h * s * (1 if shape.tied else 2) + (2 * layers + 1) * h * s
    adapter = 16 * lora_rank * layers * sum(sum(linears[t]) for t in targets)  # fp32 weight + grad + 2 AdamW moments

    # rollouts: every row holds its prompt + response in one cache
    prompt = max(1, min(max_context_tokens - 1, max_context_tokens - max_response_tokens if prompt_tokens is None else prompt_tokens))
    length = min(prompt + max_response_tokens, max_context_tokens)
    rows = prompts_per_step * num_generations
    kv_token = shape.kv_bytes_per_token(s)  # every layer's K and V of one position
    kv_cache = rows * slab_capacity(length) * kv_token
    # a slab that grows, or is rebuilt after rows leave or holes are compacted, is copied one layer at a time
    kv_regrow = rows * length * kv_token // layers
    # RolloutEngine._forward_rows: a forced chunk (tool output) fed by some rows only runs them on a copy of their
    # keys/values, every layer at once; at worst every row but one feeds, at the longest cache
    fed = rows - 1 if max_turns > 0 else 0
    kv_rows_copy = fed * length * kv_token
    # transformers' sdpa attention on CUDA copies each KV head once per query head (repeat_kv) when it is given a
    # mask: in every rollout forward after the prompt (forced chunks; decode steps too in transformers versions
    # without its single-query grouped path), one layer at a time. The policy's own attention (attention.sdpa_gqa,
    # every device) hands grouped heads to the kernel for decode steps and forced chunks of up to 32 positions;
    # longer chunks (most tool outputs) and padded prefills still go through transformers' sdpa: this term.
    repeats = cuda and shape.heads > shape.kv_heads
    repeat_kv = rows * length * 2 * shape.heads * shape.head_dim * s if repeats else 0
    # policy.merged_adapter stashes every adapted base weight for the whole of `generate` (a 4-bit base is not merged)
    merged = merge_lora and not load_in_4bit
    merge_stash = layers * sum(linears[t][0] * linears[t][1] for t in targets) * s if merged else 0
    # cpu.FastDecoder (CPU, merged weights): every linear layer and the LM head fused and reordered, a second copy
    # (where oneDNN does not reorder, the unfused o/down/head are not copied; not built when short of memory)
    decode_weights = (linear_params + v * h) * s if merged and fast_decode and not cuda else 0
    prefill = prompts_per_step * prompt * (4 * h + 3 * i) * s  # one layer's activations for every distinct prompt
    chunk = fed * min(max_obs_tokens, max_response_tokens) * (4 * h + 3 * i) * s  # the same for a forced chunk
    decode = rows * v * 4 * 8  # a step's fp32 logits: kept, selected, scaled, noised (measured: ~8 copies)
    rollout_work = max(prefill, chunk, decode)

    # update: one micro-batch of one prompt's responses
    b = min(micro_batch_size, num_generations)
    per_token_layer = layer_activation_bytes(shape, s, [linears[t][0] for t in targets], lora_rank)
    update_repeat_kv = 0
    if gradient_checkpointing:  # response_logprobs scores b sequences of prompt + response, each layer recomputed
        tokens = b * length  # causal without a mask: sdpa gets grouped heads, no repeat_kv
        activations = layers * tokens * h * s + tokens * per_token_layer
    else:  # one shared prompt pass, then b responses on its cache
        tokens = prompt + b * max_response_tokens
        activations = layers * tokens * per_token_layer + b * prompt * kv_token
        if repeats:  # the responses' pass has a mask: sdpa keeps each layer's repeated K/V for the backward
            update_repeat_kv = layers * b * (prompt + max_response_tokens) * 2 * shape.heads * shape.head_dim * s
    activations += 2 * b * max_response_tokens * h * s  # the final hidden states fed to the head, and their gradient
    # one chunk of fp32 logits and their gradient (below fp32, also the head's own output)
    logprob_chunk_bytes = b * min(logprob_chunk, max_response_tokens) * v * (8 + (s if s < 4 else 0))
    return MemoryEstimate(
        weights=int(weights), adapter=int(adapter), kv_cache=int(kv_cache), kv_regrow=int(kv_regrow),
        kv_rows_copy=int(kv_rows_copy), repeat_kv=int(repeat_kv), merge_stash=int(merge_stash),
        decode_weights=int(decode_weights), rollout_work=int(rollout_work), activations=int(activations),
        update_repeat_kv=int(update_repeat_kv), logprob_chunk=int(logprob_chunk_bytes),
        overhead=CUDA_OVERHEAD if cuda else 0, rows=rows, tokens_per_row=length,
    )


def layer_activation_bytes(shape: ModelShape, s: int, lora_inputs: list[int], lora_rank: int) -> int:
    """Bytes one token leaves in one decoder layer for the backward pass: norm inputs (and their fp32
    statistics), attention's q, k, v and output, the MLP's gate, up, activation and product, plus (in bf16/fp16)
    the fp32 copy of its input that each LoRA adapter, kept in fp32 by peft, makes and saves."""
    q, kv, h, i = shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim, shape.hidden, shape.intermediate
    base = s * (2 * h + 2 * q + 2 * kv + 4 * i) + 4 * 2 * h
    lora = sum((4 * n if s < 4 else 0) + 4 * lora_rank for n in lora_inputs)  # a 16-bit input is copied to fp32
    return base + lora


# ---- the startup report ----------------------------------------------------------------------------------
def device_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def knobs(cfg, estimate: MemoryEstimate) -> list[str]:
    """What to turn, the largest component first (the components this run has)."""
    kv = estimate.rollout_kv
    copies = kv - estimate.kv_cache
    advice = [
        (kv, f"rollout KV cache {kv / GB:.1f} GB ({copies / GB:.1f} of it copies) for {estimate.rows} rollouts x "
             f"{estimate.tokens_per_row} tokens: lower prompts_per_step ({cfg.prompts_per_step}) or "
             f"num_generations ({cfg.num_generations}), or rollout.max_context_tokens / max_response_tokens"),
        (estimate.rollout_work, f"rollout forward {estimate.rollout_work / GB:.1f} GB: fewer rollouts, or a lower "
                                f"rollout.max_obs_tokens ({cfg.rollout.max_obs_tokens})"),
        (estimate.merge_stash, f"merged-adapter stash {estimate.merge_stash / GB:.1f} GB: rollout.merge_lora=false "
                               "(decoding ~2x slower) or model.load_in_4bit=true"),
        (estimate.decode_weights, f"fast-decode weight copy {estimate.decode_weights / GB:.1f} GB: rollout.fast_decode=false"),
        (estimate.activations + estimate.update_repeat_kv,
         f"training activations {(estimate.activations + estimate.update_repeat_kv) / GB:.1f} GB: lower micro_batch_size "
         f"({cfg.micro_batch_size})" + ("" if cfg.model.gradient_checkpointing else " or set model.gradient_checkpointing=true")),
        (estimate.logprob_chunk, f"log-prob chunk {estimate.logprob_chunk / GB:.1f} GB: lower logprob_chunk ({cfg.logprob_chunk})"),
        (estimate.weights, f"weights {estimate.weights / GB:.1f} GB: " + (
            "a smaller model" if cfg.model.load_in_4bit else "model.load_in_4bit=true or a smaller model")),
        (estimate.adapter, f"LoRA + AdamW {estimate.adapter / GB:.1f} GB: lower model.lora_rank ({cfg.model.lora_rank})"),
    ]
    return [text for size, text in sorted(advice, key=lambda item: -item[0]) if size]


def estimate_for(cfg, prompt_tokens: int | None = None, model_config=None, device: torch.device | None = None) -> MemoryEstimate:
    """`estimate_memory` for a TrainConfig-like `cfg` (model config read from the model's config.json)."""
    from .policy import resolve_device, resolve_dtype, resolve_model_path

    device = device or resolve_device(cfg.model.device)
    if model_config is None:
        from transformers import AutoConfig

        model_config = AutoConfig.from_pretrained(resolve_model_path(cfg.model.name))
    return estimate_memory(
        model_config, dtype=resolve_dtype(cfg.model.dtype, device), load_in_4bit=cfg.model.load_in_4bit,
        lora_rank=cfg.model.lora_rank, target_modules=cfg.model.lora_target_modules,
        prompts_per_step=cfg.prompts_per_step, num_generations=cfg.num_generations, prompt_tokens=prompt_tokens,
        max_response_tokens=cfg.rollout.max_response_tokens, max_context_tokens=cfg.rollout.max_context_tokens,
        max_turns=cfg.rollout.max_turns, max_obs_tokens=cfg.rollout.max_obs_tokens, merge_lora=cfg.rollout.merge_lora,
        fast_decode=cfg.rollout.fast_decode, logprob_chunk=cfg.logprob_chunk, micro_batch_size=cfg.micro_batch_size,
        gradient_checkpointing=cfg.model.gradient_checkpointing, cuda=device.type == "cuda",
    )


def memory_report(cfg, prompt_tokens: int | None = None, model_config=None, device: torch.device | None = None,
                  available: int | None = None) -> MemoryEstimate:
    """Print the estimate; on a GPU, refuse (ValueError) a run whose estimate exceeds its memory, on a CPU warn.

    prompt_tokens: the longest training prompt with the most demonstrations (None: the context budget less the
    response). available: the device's memory in bytes (None: asked from the device).
    """
    from .policy import resolve_device

    device = device or resolve_device(cfg.model.device)
    estimate = estimate_for(cfg, prompt_tokens, model_config, device)
    available = available if available is not None else device_memory(device)
    vllm = ""
    if getattr(cfg.rollout, "backend", "auto") == "vllm":  # vLLM reserves its share for its weights and KV cache
        share = cfg.rollout.vllm_gpu_memory_utilization
        vllm = f" ({share:.0%} of {available / GB:.1f} GB reserved by vLLM, rollout.vllm_gpu_memory_utilization)"
        available = int(available * (1 - share))
    print(f"[icrl-lite] memory estimate: {estimate.table()}; {device.type} has {available / GB:.1f} GB{vllm}")
    if estimate.peak > available:
        message = (f"the run needs ~{estimate.peak / GB:.1f} GB by the estimate and the {device.type} has "
                   f"{available / GB:.1f} GB. Turn, largest first:\n  - " + "\n  - ".join(knobs(cfg, estimate)))
        if device.type == "cuda":
            raise ValueError(message)
        print(f"[icrl-lite] warning: {message}")
    return estimate
