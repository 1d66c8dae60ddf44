"""Whether bf16 is fast on this CPU, measured: flags do not tell (AVX2 emulates bf16 ~80x slower than fp32; AMX or
AVX-512 BF16 run it ~4-10x faster). `model.dtype=auto` asks `cpu_has_fast_bf16`."""

from __future__ import annotations

import functools
import os
import time

import torch

BF16_MIN_SPEEDUP = 1.5  # bf16 on a CPU only when a matmul runs at least this much faster than in fp32


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

