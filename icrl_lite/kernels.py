"""Optional C++ kernels for bf16 on a CPU (`csrc/cpu_kernels.cpp`): decode steps (`decode.FastDecoder`) and the LM head's
log-probs in training (`model.HeadLogprobs`), built on first use by torch's cpp_extension.

They need a C++ compiler and ninja (`pip install ninja` if the system has none); the build (~20 s) happens once per
machine and torch version and is cached under torch's extension directory (TORCH_EXTENSIONS_DIR). Where the build
fails, `cpu_kernels()` says why once and returns None, and both keep the torch ops: same results, slower.
Set ICRL_LITE_KERNELS=0 to turn them off.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import sys
from pathlib import Path

SOURCE = Path(__file__).with_name("csrc") / "cpu_kernels.cpp"
FLAGS = ["-O3", "-march=native", "-fno-math-errno", "-ffp-contract=fast", "-fopenmp"]


def enabled() -> bool:
    return os.environ.get("ICRL_LITE_KERNELS", "1").strip().lower() not in ("0", "false", "no", "off")


def build_name(flags: list[str]) -> str:
    """A name per source, flags, torch version and CPU: a cache built with -march=native elsewhere is never loaded
    here."""
    import torch

    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        pass
    key = "\0".join([SOURCE.read_text(), torch.__version__, platform.machine(), cpu, *flags])
    return "icrl_lite_cpu_" + hashlib.sha256(key.encode()).hexdigest()[:12]


def build(flags: list[str] = FLAGS):
    """Compile (or load the cached build of) the kernels with these compiler flags; raises when that fails."""
    from torch.utils import cpp_extension

    name = build_name(flags)
    try:
        built = any(Path(cpp_extension._get_build_directory(name, verbose=False)).glob("*.so"))
    except Exception:  # a private helper of torch's: only the message depends on it
        built = True
    if not built:
        print("[icrl-lite] building the C++ CPU kernels (once per machine and torch version, ~20 s)", file=sys.stderr)
    return cpp_extension.load(name=name, sources=[str(SOURCE)], extra_cflags=flags, extra_ldflags=["-fopenmp"],
                              verbose=False)


@functools.cache
def cpu_kernels():
    """The compiled module (`add_rms_norm`, `silu_mul`, `attention`, `head_lse`, `head_grad`), or None where it is off, cannot be built, or
    was built without AVX-512 BF16 (its portable loops are slower than torch's ops; bf16 decoding is picked only on
    machines that have it)."""
    if not enabled():
        return None
    try:
        module = build()
    except Exception as err:  # no compiler, no ninja, a failed build: the torch ops do the same work
        reason = str(err).strip().splitlines()
        print(f"[icrl-lite] note: the C++ CPU kernels could not be built ({reason[-1] if reason else type(err).__name__}); "
              "decode steps and the LM head's log-probs use torch ops (same results, slower). Install a C++ compiler and ninja "
              "(pip install ninja) to build them, or set ICRL_LITE_KERNELS=0 to skip this.", file=sys.stderr)
        return None
    return module if module.vectorized() else None


def kernels_for(x):
    """`cpu_kernels()` for a bf16 tensor on a CPU (what every kernel takes), else None."""
    import torch

    return cpu_kernels() if x.device.type == "cpu" and x.dtype == torch.bfloat16 else None
