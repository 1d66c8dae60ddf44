"""A lean decode step for Llama-family policies on a CPU: one token per row, no autograd, fused prepacked weights.

A decode step of a 135M-parameter model at 32 rows is ~200 small matmuls plus ~600 elementwise ops. Through
transformers' modules, half of a step on a 2-core CPU was not matmul at all (dtype round trips, masks rebuilt per
layer, module dispatch), and the matmuls themselves ran slowly because oneDNN reorders every weight on every call.
`FastDecoder` runs the same computation with:

- q/k/v and gate/up projections fused into one matmul each (one weight read, one call);
- weights reordered once into oneDNN's blocked layout (`torch.ops.mkldnn._reorder_linear_weight`) when oneDNN is
  there: measured on a 2-core AVX-512 EPYC at 32 rows x 30 layers, 12.5 ms vs 17.7 ms per step in bf16 and
  23 ms vs 65 ms in fp32 (`python scripts/bench_decode.py`);
- attention over the cache's whole preallocated slab (`rollout.SlabLayer`) with its unfilled tail masked: a CPU
  bf16 matmul copies a view of part of it, which cost more than the attention itself;
- the attention mask and rotary embedding built once per step, not once per layer;
- a prompt prefix shared by every row (the step's demonstrations) attended as one block (`cascade_attention`);
- in bf16, where the C++ kernels are built (`icrl_lite.cpu.kernels`), the rest of each layer in three kernel calls
  (`kernel_step`: RMSNorm with the residual add, rotary + cache write + attention, SiLU x up): 14.0-14.5 vs
  18.4-19.1 ms a step at 16 rows (docs/performance.md, fifth pass). Steps with a shared prefix keep the torch ops.

It is built per `RolloutEngine.generate` call, after LoRA is merged, so it sees the weights that sample; the
cost is one copy of the weights (fused and reordered) for the call, made only when it takes at most half of the
memory still available. Anything it does not know (another
architecture, an unmerged or quantized LoRA layer, a GPU) gets `None` from `build`, and the engine keeps
transformers' forward. Numerically it is the same computation up to the summation order of the fused matmuls
(`tests/test_decode.py` compares logits and greedy tokens with transformers' forward).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from .kernels import cpu_kernels

SUPPORTED = ("llama", "qwen2", "qwen3")  # RMSNorm, rotary, SiLU-gated MLP, full attention; qwen3 adds q/k norms


def plain_weight(module) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """The (weight, bias) a linear layer computes with right now, or None when it is more than one matmul
    (an active, unmerged LoRA adapter) or not a dense matmul (a quantized base)."""
    if hasattr(module, "base_layer"):  # a PEFT LoRA layer
        if not (getattr(module, "merged", False) or getattr(module, "disable_adapters", False)):
            return None
        module = module.base_layer
    weight = getattr(module, "weight", None)
    if (not isinstance(module, torch.nn.Linear) or weight is None or not weight.is_floating_point()
            or getattr(weight, "quant_state", None) is not None):
        return None
    return weight.detach(), None if module.bias is None else module.bias.detach()


def available_memory() -> int | None:
    """Bytes the OS can still give this process (MemAvailable), or None where that is not known."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


@functools.cache
def can_pack(dtype: torch.dtype, device: torch.device) -> bool:
    """Whether this torch build reorders weights for oneDNN on this device and dtype and gets F.linear's result
    back from them: probed once per process on a small matrix."""
    if not (device.type == "cpu" and dtype in (torch.float32, torch.bfloat16) and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")):
        return False
    weight, bias, x = torch.ones((8, 16), dtype=dtype), torch.ones(8, dtype=dtype), torch.ones((2, 16), dtype=dtype)
    try:
        packed = torch.ops.mkldnn._reorder_linear_weight(weight, 32)
        out = torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")
    except (RuntimeError, NotImplementedError):  # an op missing from this build: plain F.linear instead
        return False
    return torch.equal(out, F.linear(x, weight, bias))


class Linear:
    """y = x W^T + b with W stored once for many calls: reordered for oneDNN when `pack` (see `can_pack`)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, pack: bool, rows_hint: int = 32):
        self.bias = None if bias is None else bias.contiguous()
        self.packed = pack
        self.weight = (torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), rows_hint) if pack
                       else weight.contiguous())

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.packed:
            return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "")
        return F.linear(x, self.weight, self.bias)


def fused(modules, pack: bool) -> Linear | None:
    """One `Linear` computing the outputs of several linear layers on the same input, concatenated."""
    parts = [plain_weight(m) for m in modules]
    if any(p is None for p in parts):
        return None
    weights = [w for w, _ in parts]
    biases = [b for _, b in parts]
    bias = None if all(b is None for b in biases) else torch.cat(
        [b if b is not None else w.new_zeros(w.shape[0]) for w, b in zip(weights, biases)])
    return Linear(torch.cat(weights) if len(weights) > 1 else weights[0], bias, pack)


class Layer:
    def __init__(self, layer, pack: bool):
        attn, mlp = layer.self_attn, layer.mlp
        self.qkv = fused([attn.q_proj, attn.k_proj, attn.v_proj], pack)
        self.o = fused([attn.o_proj], pack)
        self.gate_up = fused([mlp.gate_proj, mlp.up_proj], pack)
        self.down = fused([mlp.down_proj], pack)
        self.norms = (layer.input_layernorm, layer.post_attention_layernorm)
        self.eps = tuple(norm_eps(norm) for norm in self.norms)
        self.q_norm, self.k_norm = getattr(attn, "q_norm", None), getattr(attn, "k_norm", None)
        self.scaling = attn.scaling

    @property
    def complete(self) -> bool:
        return None not in (self.qkv, self.o, self.gate_up, self.down)


def norm_eps(norm) -> float:
    return getattr(norm, "variance_epsilon", None) or getattr(norm, "eps", 1e-6)


def rms_norm(norm, x: torch.Tensor) -> torch.Tensor:
    """transformers' Llama RMSNorm: normalise in fp32, scale in the input dtype."""
    return norm.weight * F.rms_norm(x.float(), (x.shape[-1],), eps=norm_eps(norm)).to(x.dtype)


def attention(query, key, value, mask, scaling: float) -> torch.Tensor:
    """One query position per row against the cache, KV heads grouped without copies, softmax in fp32.

    query (B, KV, g, d) (query heads grouped by their KV head), key/value (B, KV, K, d), mask (B, 1, 1, K)
    additive (0 or -inf) -> (B, KV g d).
    """
    scores = torch.matmul(query, key.transpose(-1, -2))  # (B, KV, g, K)
    scores = scores.float().mul_(scaling).add_(mask)
    probs = torch.softmax(scores, dim=-1).to(value.dtype)
    return torch.matmul(probs, value).flatten(1)  # (B, KV, g, d) -> (B, KV g d)


def cascade_attention(query, shared_key, shared_value, key, value, mask, scaling: float) -> torch.Tensor:
    """`attention` over [a block shared by every row | each row's own keys], exactly, reading the shared block once.

    query (B, KV, g, d); shared_key/value (1, KV, C, d); key/value (B, KV, R, d) with mask (B, 1, 1, R). The
    shared block's scores for all rows are one matmul per KV head ((B g) x d times d x C); both parts are
    normalised by their joint log-sum-exp, so the sum of the two outputs is the softmax over all C + R keys.
    """
    batch, kv_heads, group, dim = query.shape
    rows = query.transpose(0, 1).reshape(kv_heads, batch * group, dim)  # (KV, B g, d)
    shared = torch.matmul(rows, shared_key[0].transpose(-1, -2)).float().mul_(scaling)  # (KV, B g, C)
    own = torch.matmul(query, key.transpose(-1, -2)).float().mul_(scaling).add_(mask)  # (B, KV, g, R)
    lse = torch.logaddexp(torch.logsumexp(shared, -1).view(kv_heads, batch, group).transpose(0, 1),
                          torch.logsumexp(own, -1))  # (B, KV, g)
    shared = shared.sub_(lse.transpose(0, 1).reshape(kv_heads, batch * group, 1)).exp_().to(value.dtype)
    own = own.sub_(lse[..., None]).exp_().to(value.dtype)
    out = torch.matmul(shared, shared_value[0]).view(kv_heads, batch, group, dim).transpose(0, 1)  # (B, KV, g, d)
    return (out.float() + torch.matmul(own, value).float()).to(value.dtype).flatten(1)  # (B, KV g d)


class FastDecoder:
    """One decode step of the whole model (embeddings -> logits) for B rows feeding one token each."""

    def __init__(self, model, body, layers: list[Layer], head: Linear):
        self.model, self.body, self.layers, self.head = model, body, layers, head
        cfg = model.config
        self.heads, self.kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        # the C++ kernels (bf16, no q/k norms, head_dim a multiple of 16), or None: torch ops
        fits = (model.dtype == torch.bfloat16 and self.head_dim % 16 == 0 and self.heads % self.kv_heads == 0
                and all(layer.q_norm is None for layer in layers))
        self.kernels = cpu_kernels() if fits else None

    @classmethod
    def build(cls, model) -> "FastDecoder | None":
        """A decoder for `model` as it computes now, or None when the lean step does not cover it."""
        from ..policy import decoder  # here: the policy imports this package

        cfg = model.config
        device = model.device
        body = decoder(model)
        if (device.type != "cpu" or getattr(cfg, "model_type", None) not in SUPPORTED
                or getattr(cfg, "hidden_act", None) != "silu" or getattr(cfg, "use_sliding_window", False)
                or any(t != "full_attention" for t in (getattr(cfg, "layer_types", None) or []))
                or not hasattr(body, "rotary_emb")):
            return None
        linears = [m for m in [*body.modules(), model.get_output_embeddings()] if isinstance(m, torch.nn.Linear)]
        copy = sum(m.weight.numel() * m.weight.element_size() for m in linears)
        free = available_memory()
        if free is not None and copy > free // 2:  # the fused, reordered weights are a second copy of them
            return None
        pack = can_pack(model.dtype, device)
        with torch.no_grad():
            layers = [Layer(layer, pack) for layer in body.layers]
            head = fused([model.get_output_embeddings()], pack)
        if head is None or not all(layer.complete for layer in layers):
            return None
        return cls(model, body, layers, head)

    @torch.no_grad()
    def __call__(self, ids: torch.Tensor, attention_mask: torch.Tensor, positions: torch.Tensor, cache,
                 prefix: list[tuple[torch.Tensor, torch.Tensor]] | None = None) -> torch.Tensor:
        """ids (B,) one token per row, attention_mask (B, L + 1) over the cache and the new token (1 = attend),
        positions (B,); appends each layer's key/value to `cache`; returns the next-token logits (B, V) in fp32.

        `prefix`, per layer the keys/values (1, KV, C, d) of C leading positions that every row's cache holds
        (valid) as its own copy, the same for all: the rows attend to it as one shared block (`cascade_attention`),
        reading it once per step instead of once per row."""
        if (self.kernels is not None and prefix is None and hasattr(cache.layers[0], "reserve")
                and attention_mask.shape[1] == cache.layers[0].keys.shape[-2] + 1):
            return self.kernel_step(ids, attention_mask, positions, cache)
        skip = 0 if prefix is None else prefix[0][0].shape[2]
        rows = ids.shape[0]
        h = self.body.embed_tokens(ids)  # (B, H)
        cos, sin = self.body.rotary_emb(h, positions[:, None])  # (B, 1, d)
        masks = {}  # key length -> (B, 1, 1, K) additive fp32 mask: 0 = attend, -inf = not
        q_size, kv_size = self.heads * self.head_dim, self.kv_heads * self.head_dim
        heads, kv_heads, dim = self.heads, self.kv_heads, self.head_dim
        half = dim // 2
        sin = torch.cat([-sin[..., :half], sin[..., half:]], dim=-1)  # rotate_half(x) * sin == x.roll(half) * this
        for index, (layer, cache_layer) in enumerate(zip(self.layers, cache.layers)):
            x = rms_norm(layer.norms[0], h)
            qkv = layer.qkv(x)  # (B, (H + 2 KV) d)
            qk = qkv[:, : q_size + kv_size].view(rows, heads + kv_heads, dim)
            if layer.q_norm is not None:
                qk = torch.cat([layer.q_norm(qk[:, :heads]), layer.k_norm(qk[:, heads:])], dim=1)
            qk = qk * cos + qk.roll(half, dims=-1) * sin  # rotary on q and k at once
            q = qk[:, :heads].view(rows, kv_heads, heads // kv_heads, dim)
            k = qk[:, heads:, None]  # (B, KV, 1, d)
            v = qkv[:, q_size + kv_size:].view(rows, kv_heads, 1, dim)
            keys, values = cache_layer.update(k, v)
            if getattr(cache_layer, "slab_k", None) is not None:  # the whole slab: contiguous, zero past the end
                keys, values = cache_layer.slab_k, cache_layer.slab_v
            if keys.shape[2] not in masks:
                attend = F.pad(attention_mask.bool(), (0, keys.shape[2] - attention_mask.shape[1]))  # (B, K)
                attend = attend[:, skip:]  # (B, K - C): the shared prefix's keys are attended separately
                masks[keys.shape[2]] = torch.zeros(attend.shape, dtype=torch.float32).masked_fill_(
                    ~attend, float("-inf"))[:, None, None, :]
            if prefix is None:
                out = attention(q, keys, values, masks[keys.shape[2]], layer.scaling)  # (B, heads * d)
            else:
                shared_k, shared_v = prefix[index]
                out = cascade_attention(q, shared_k, shared_v, keys[:, :, skip:], values[:, :, skip:],
                                        masks[keys.shape[2]], layer.scaling)
            h = h + layer.o(out)
            gate, up = layer.gate_up(rms_norm(layer.norms[1], h)).chunk(2, dim=-1)
            h = h + layer.down(F.silu(gate) * up)
        return self.head(rms_norm(self.body.norm, h)).float()  # (B, V)

    def kernel_step(self, ids: torch.Tensor, attention_mask: torch.Tensor, positions: torch.Tensor,
                    cache) -> torch.Tensor:
        """`__call__` through the C++ kernels (`icrl_lite.cpu.kernels`): per layer, the four fused linears and three
        kernel calls (RMSNorm with the residual add before it, attention with rotary and the cache write, SiLU x up).
        The cache's layers are `rollout.SlabLayer`s: each step's keys/values are written into the slab's spare
        room, which `reserve` makes."""
        kernels = self.kernels
        h = self.body.embed_tokens(ids).contiguous()  # (B, H), the residual stream, updated in place
        cos, sin = self.body.rotary_emb(h, positions[:, None])  # (B, 1, d)
        half = self.head_dim // 2
        cos = cos[:, 0].contiguous()  # (B, d)
        sin = torch.cat([-sin[:, 0, :half], sin[:, 0, half:]], dim=-1)  # rotate_half(x) * sin == x.roll(half) * this
        mask = torch.zeros(attention_mask.shape, dtype=torch.float32).masked_fill_(~attention_mask.bool(), float("-inf"))
        delta = None  # what the previous layer adds to h
        for layer, cache_layer in zip(self.layers, cache.layers):
            length = cache_layer.reserve(1)
            x = kernels.add_rms_norm(h, delta, layer.norms[0].weight, layer.eps[0])
            out = kernels.attention(layer.qkv(x), cos, sin, cache_layer.slab_k, cache_layer.slab_v, length, mask,
                                    self.heads, self.kv_heads, layer.scaling)  # (B, heads * d)
            cache_layer.advance(1)
            x = kernels.add_rms_norm(h, layer.o(out), layer.norms[1].weight, layer.eps[1])
            delta = layer.down(kernels.silu_mul(layer.gate_up(x)))
        return self.head(kernels.add_rms_norm(h, delta, self.body.norm.weight, norm_eps(self.body.norm))).float()  # (B, V)
