"""RMSNorm and the SiLU-gated MLP's product for bf16 on a CPU, as autograd Functions on the C++ kernels.

In the update, transformers' RMSNorm is ~8 ops forward and ~12 backward over fp32 copies of the activations, and
`silu(gate) * up` another ~6; at 4 x 129 positions of a 576-wide model that was ~0.3 s of a 3.6 s update on a
2-core EPYC. The kernels (`icrl_lite.cpu.kernels`) do each in one pass forward and one backward, fp32 inside, with one
rounding to bf16 per output. `use_fused_ops` routes a model's norms and MLPs through them; each call still runs
transformers' own forward where they do not apply (another dtype or device, a trainable norm weight, the kernels
not built).
"""

from __future__ import annotations

from types import MethodType

import torch

from .kernels import kernels_for

NORMS = ("LlamaRMSNorm", "Qwen2RMSNorm", "Qwen3RMSNorm", "MistralRMSNorm")  # weight * x / rms(x), nothing else
MLPS = ("LlamaMLP", "Qwen2MLP", "Qwen3MLP", "MistralMLP")  # down(act(gate(x)) * up(x))


class RMSNormFunction(torch.autograd.Function):
    """weight * bf16(x / rms(x)) over the last dim, x bf16 (..., H); the weight is frozen (no gradient)."""

    @staticmethod
    def forward(ctx, x, weight, eps: float, kernels):
        flat = x.reshape(-1, x.shape[-1]).contiguous()  # (N, H)
        y, inv = kernels.rms_norm_forward(flat, weight.contiguous(), eps)
        ctx.save_for_backward(flat, weight, inv)
        ctx.kernels = kernels
        return y.view(x.shape)

    @staticmethod
    def backward(ctx, grad):
        flat, weight, inv = ctx.saved_tensors
        d_x = ctx.kernels.rms_norm_backward(grad.reshape(flat.shape).contiguous(), flat, weight.contiguous(), inv)
        return d_x.view(grad.shape), None, None, None


class SiluMulFunction(torch.autograd.Function):
    """bf16(silu(gate)) * up, both bf16 of one shape."""

    @staticmethod
    def forward(ctx, gate, up, kernels):
        gate, up = gate.contiguous(), up.contiguous()
        ctx.save_for_backward(gate, up)
        ctx.kernels = kernels
        return kernels.silu_mul_forward(gate, up)

    @staticmethod
    def backward(ctx, grad):
        gate, up = ctx.saved_tensors
        d_gate, d_up = ctx.kernels.silu_mul_backward(grad.contiguous(), gate, up)
        return d_gate, d_up, None


def is_silu(act) -> bool:
    return isinstance(act, torch.nn.SiLU) or type(act).__name__ == "SiLUActivation"  # transformers' ACT2FN["silu"]


def fused_norm_forward(norm, x: torch.Tensor) -> torch.Tensor:
    kernels = kernels_for(x)
    weight = norm.weight
    if kernels is None or weight.dtype != torch.bfloat16 or weight.requires_grad or weight.device != x.device:
        return type(norm).forward(norm, x)
    return RMSNormFunction.apply(x, weight, float(norm.variance_epsilon), kernels)


def fused_mlp_forward(mlp, x: torch.Tensor) -> torch.Tensor:
    kernels = kernels_for(x)
    if kernels is None or not is_silu(mlp.act_fn):
        return type(mlp).forward(mlp, x)
    gate, up = mlp.gate_proj(x), mlp.up_proj(x)
    if gate.dtype != torch.bfloat16 or up.dtype != torch.bfloat16:
        return mlp.down_proj(mlp.act_fn(gate) * up)
    return mlp.down_proj(SiluMulFunction.apply(gate, up, kernels))


def use_fused_ops(model) -> int:
    """Route `model`'s Llama-style RMSNorms and SiLU-gated MLPs through the fused kernels (each call falls back to
    transformers' forward where they do not apply). Returns how many modules were routed."""
    routed = 0
    for module in model.modules():
        name = type(module).__name__
        if name in NORMS and hasattr(module, "variance_epsilon"):
            module.forward = MethodType(fused_norm_forward, module)
        elif name in MLPS and all(hasattr(module, a) for a in ("gate_proj", "up_proj", "down_proj", "act_fn")):
            module.forward = MethodType(fused_mlp_forward, module)
        else:
            continue
        routed += 1
    return routed
