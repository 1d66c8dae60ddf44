"""LoRA projections on a CPU in bf16: the frozen base layer and its adapter as one autograd node.

peft computes a LoRA layer as the base projection plus `lora_B(lora_A(x.float())) * scaling`: with its fp32
adapter weights every call casts the (bf16) input to fp32, runs two small fp32 matmuls, scales, casts back and
adds, and autograd keeps an fp32 copy of the input for the adapter's gradient. On a 2-core CPU those small
operations were ~20% of the update (SmolLM2-135M, 7 adapted projections per layer, 16 x 129 positions: 0.9 of
4.7 s). `HalfLoraLinear` runs the adapter in the input's half precision instead (its weights cast once per call,
~20 K values), adds it onto the base output inside one matmul (`addmm_`), keeps the bf16 input for the backward,
and returns the adapter's gradients (bf16 matmuls, accumulated in fp32 inside) in the adapters' own fp32. The adapter's contribution is rounded to bf16
once more than in peft (before it is added to the bf16 base output, which peft also rounds).
"""

from __future__ import annotations

from types import MethodType

import torch


class HalfLoraLinear(torch.autograd.Function):
    """y = x W^T + bias + scaling * (x A^T) B^T in x's dtype; gradients for x, A and B (W and bias are frozen).

    x (..., in), weight (out, in), bias (out,) or None, lora_a (r, in), lora_b (out, r). Returns (..., out).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, lora_a, lora_b, scaling: float):
        a, b = lora_a.to(x.dtype), (lora_b * scaling).to(x.dtype)  # (r, in), (out, r)
        flat = x.reshape(-1, x.shape[-1])  # (N, in)
        low = flat @ a.t()  # (N, r)
        out = torch.nn.functional.linear(flat, weight, bias)  # (N, out)
        out.addmm_(low, b.t())
        ctx.save_for_backward(flat, weight, a, b, low)
        ctx.scaling, ctx.x_shape = scaling, x.shape
        return out.view(*x.shape[:-1], out.shape[-1])

    @staticmethod
    def backward(ctx, grad):  # (..., out)
        flat, weight, a, b, low = ctx.saved_tensors
        grad = grad.reshape(-1, grad.shape[-1])  # (N, out)
        d_low = grad @ b  # (N, r), scaled
        d_x = None
        if ctx.needs_input_grad[0]:
            d_x = (grad @ weight).addmm_(d_low, a).view(ctx.x_shape)
        d_a = (d_low.t() @ flat).float() if ctx.needs_input_grad[3] else None  # (r, in)
        d_b = (grad.t() @ low).float().mul_(ctx.scaling) if ctx.needs_input_grad[4] else None  # (out, r)
        return d_x, None, None, d_a, d_b, None


def plain_adapter(layer, x: torch.Tensor, args: tuple, kwargs: dict) -> str | None:
    """The one active plain LoRA adapter of a peft `Linear` that `HalfLoraLinear` computes as peft would (bf16
    input on a CPU, frozen nn.Linear base, no dropout in training, no DoRA or other variant, no LoRA bias, not
    merged, no per-row adapter names); None = peft's own forward."""
    if x.device.type != "cpu" or x.dtype != torch.bfloat16 or args or kwargs:  # fp16 adapter gradients could
        # overflow under the loss scale
        return None
    if layer.disable_adapters or layer.merged or len(layer.active_adapters) != 1:
        return None
    name = layer.active_adapters[0]
    base = layer.base_layer
    if name not in layer.lora_A or name in getattr(layer, "lora_variant", {}) or type(base) is not torch.nn.Linear:
        return None
    if layer.lora_B[name].bias is not None:  # peft's lora_bias=True
        return None
    if base.weight.requires_grad or base.bias is not None and base.bias.requires_grad:
        return None
    dropout = layer.lora_dropout[name]
    if layer.training and isinstance(dropout, torch.nn.Dropout) and dropout.p > 0:
        return None
    return name


def half_lora_forward(layer, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    name = plain_adapter(layer, x, args, kwargs)
    if name is None:
        return type(layer).forward(layer, x, *args, **kwargs)
    base = layer.base_layer
    return HalfLoraLinear.apply(x, base.weight, base.bias, layer.lora_A[name].weight, layer.lora_B[name].weight,
                                layer.scaling[name])


def use_half_lora(model) -> int:
    """Route every peft LoRA `Linear` of `model` through `half_lora_forward` (each call still falls back to peft's
    forward when `plain_adapter` says so). Returns how many layers were routed."""
    from peft.tuners.lora.layer import Linear

    layers = [m for m in model.modules() if type(m) is Linear]
    for layer in layers:
        layer.forward = MethodType(half_lora_forward, layer)
    return len(layers)
