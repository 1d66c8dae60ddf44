"""The machine: what it is, and what it can do, measured in the same run as the other benchmarks.

`describe_machine` names the hardware (CPU model and its vector flags, or the GPU), cores, memory, the load at
the start (a shared machine's numbers are only comparable side by side) and the library versions.
`machine_limits` measures matmul FLOP/s per dtype (fp32, bf16, and fp16 on CUDA) and memory bandwidth (a large
tensor copy and sum); `decode_bound` turns them into the most tokens per second a decoder of a given size can
generate: every decode step reads all its weights once and does ~2 FLOPs per weight per sequence, so at batch B
it is min(B x bandwidth / weight bytes, FLOP/s / (2 x parameters)). KV-cache reads and attention are left out,
so the bound is an upper bound.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import time
from datetime import datetime
from pathlib import Path

import torch

# CPU flags that decide matmul speed per dtype (the full list is in results.json)
KEY_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile",
             "amx_bf16", "amx_int8", "amx_fp16")
PACKAGES = ("torch", "transformers", "trl", "peft", "accelerate")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def describe_machine(device: torch.device) -> dict:
    """Hardware, cores, memory, load and versions, as plain JSON values."""
    info = {
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "device": str(device),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {name: package_version(name) for name in PACKAGES},
    }
    info.update(cpu_description())
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["gpu"] = {"name": props.name, "capability": f"{props.major}.{props.minor}",
                       "memory_gb": round(props.total_memory / 2**30, 1), "count": torch.cuda.device_count(),
                       "cuda": torch.version.cuda}
    return info


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def cpu_description(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict:
    """{"cpu": model name, "cpu_flags": the matmul-relevant flags, "cpu_flags_all": every flag} (Linux; elsewhere
    the model from `platform` and no flags)."""
    model, flags = platform.processor() or platform.machine(), []
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = value.split()
    return {"cpu": model, "cpu_flags": [f for f in KEY_FLAGS if f in flags], "cpu_flags_all": flags}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_seconds(fn, device: torch.device, reps: int, budget_s: float) -> float:
    """Best wall time of `fn()` over up to `reps` runs after one warm-up; stops early once `budget_s` is spent
    (an emulated dtype can take seconds per run)."""
    fn()
    synchronize(device)
    best, spent = float("inf"), 0.0
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        synchronize(device)
        took = time.perf_counter() - start
        best, spent = min(best, took), spent + took
        if spent > budget_s:
            break
    return best


def matmul_flops(dtype: torch.dtype, device: torch.device, size: int, reps: int = 5, budget_s: float = 2.0) -> float:
    """FLOP/s of a (size x size) @ (size x size) matmul in `dtype` (2 size^3 FLOPs), best of `reps`."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    return 2 * size**3 / best_seconds(lambda: torch.mm(a, b), device, reps, budget_s)


def memory_bandwidth(device: torch.device, mbytes: int, reps: int = 5) -> dict[str, float]:
    """Bytes/s of a large fp32 tensor: `copy` (reads and writes it: 2x its bytes) and `read` (sums it)."""
    n = mbytes * 2**20 // 4
    x = torch.rand(n, device=device)
    y = torch.empty_like(x)
    copy = best_seconds(lambda: y.copy_(x), device, reps, budget_s=5.0)
    read = best_seconds(lambda: x.sum(), device, reps, budget_s=5.0)
    return {"copy": 2 * n * 4 / copy, "read": n * 4 / read}


def machine_limits(device: torch.device, matmul_size: int, bandwidth_mbytes: int, also: tuple[str, ...] = ()) -> dict:
    """Measured limits: {"matmul_gflops": {dtype: GFLOP/s}, "bandwidth_gbs": {"copy", "read"}}. fp32 and bf16,
    fp16 on CUDA (CPUs emulate it) or when named in `also`; fp32 on CUDA is true fp32 unless torch's TF32
    switch was turned on."""
    names = ["fp32", "bf16"] + (["fp16"] if device.type == "cuda" or "fp16" in also else [])
    gflops = {name: matmul_flops(DTYPES[name], device, matmul_size) / 1e9 for name in names}
    bandwidth = {k: v / 1e9 for k, v in memory_bandwidth(device, bandwidth_mbytes).items()}
    return {"matmul_size": matmul_size, "matmul_gflops": gflops, "bandwidth_mbytes": bandwidth_mbytes,
            "bandwidth_gbs": bandwidth}


def decode_bound(weight_bytes: float, params: float, bandwidth_bps: float, flops: float, batch: int) -> dict[str, float]:
    """Most tokens/s a decoder can generate at `batch` sequences: every step reads the weights once (bandwidth
    bound: batch x bandwidth / weight bytes) and costs 2 FLOPs per parameter per sequence (compute bound:
    FLOP/s / (2 x params)); the bound is the smaller. KV-cache reads and attention are ignored."""
    bandwidth_bound = batch * bandwidth_bps / weight_bytes
    flops_bound = flops / (2 * params)
    return {"batch": batch, "bandwidth_bound": bandwidth_bound, "flops_bound": flops_bound,
            "tokens_per_s": min(bandwidth_bound, flops_bound)}


def policy_size(model_name: str, dtype: torch.dtype) -> dict:
    """Parameters and weight bytes of the policy in `dtype`, counted on the meta device (no memory). Tied
    embeddings count once: as the LM head they are read whole every decode step."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from icrl_lite.policy import resolve_model_path

    config = AutoConfig.from_pretrained(resolve_model_path(model_name))
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    params = sum(p.numel() for p in model.parameters())
    return {"params": params, "weight_bytes": params * torch.finfo(dtype).bits // 8, "dtype": dtype_name(dtype),
            "vocab": config.vocab_size, "hidden": config.hidden_size}


def dtype_name(dtype: torch.dtype) -> str:
    return {v: k for k, v in DTYPES.items()}[dtype]


def decode_bounds(limits: dict, size: dict, batches=(1, 4, 16, 32, 64)) -> list[dict]:
    """`decode_bound` at several batch sizes for a policy of `size` (`policy_size`) under measured `limits`,
    with the matmul FLOP/s of the policy's dtype and the read bandwidth."""
    flops = limits["matmul_gflops"][size["dtype"]] * 1e9
    bandwidth = limits["bandwidth_gbs"]["read"] * 1e9
    return [decode_bound(size["weight_bytes"], size["params"], bandwidth, flops, b) for b in batches]

