"""CPU acceleration: everything icrl-lite does to run fast on a CPU, in one place.

The rest of the library calls only what this file exports; each is a no-op or returns None where it does not apply
(another device or dtype, an architecture it does not know, the C++ kernels not built), and the caller keeps
transformers' and torch's own ops, which compute the same thing more slowly.

    cpu_has_fast_bf16()       bf16 matmuls measured faster than fp32 here (`model.dtype=auto`)      bf16.py
    accelerate(model)         half-precision LoRA layers and fused RMSNorm / SiLU x up on a policy  lora.py, fused.py
    half_attention_fits(...)  `HalfAttention` (bf16 attention with a backward) beats torch's kernel  attention.py
    short_query_fits(...)     a few half-precision queries: two matmuls beat torch's kernel         attention.py
    half_on_cpu(query)        half precision on a CPU                                               attention.py
    HalfAttention             the attention itself                                                  attention.py
    kernels_for(x)            the C++ kernels for a bf16 CPU tensor, or None                        kernels.py, csrc/
    FastDecoder.build(...)    the lean decode step of a Llama-family policy, or None                decode.py

Which branch runs is forced from any machine for the tests: ICRL_LITE_CPU_BF16=0/1 (dtype), ICRL_LITE_KERNELS=
0/auto/always/portable (the C++ kernels, `kernels.py`), and the model's dtype (bf16 takes the half-precision paths).
"""

from .attention import HalfAttention, half_attention_on_cpu as half_attention_fits, half_on_cpu
from .attention import short_query_on_cpu as short_query_fits
from .bf16 import cpu_has_fast_bf16
from .decode import FastDecoder
from .fused import use_fused_ops
from .kernels import kernels_for
from .lora import use_half_lora

__all__ = ["FastDecoder", "HalfAttention", "accelerate", "cpu_has_fast_bf16", "half_attention_fits", "half_on_cpu",
           "kernels_for", "short_query_fits"]


def accelerate(model) -> dict[str, int]:
    """Route a loaded CPU policy's half-precision LoRA layers (`lora.py`) and its RMSNorms and MLPs (bf16: one C++
    pass each way, `fused.py`) through the CPU paths; returns how many modules each took."""
    return {"half_lora": use_half_lora(model), "fused": use_fused_ops(model)}
