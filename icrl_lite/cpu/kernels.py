"""Optional C++ kernels for bf16 on a CPU (`csrc/cpu_kernels.cpp`): decode steps (`decode.FastDecoder`) and the LM head's
log-probs in training (`logprobs.HeadLogprobs`), built on first use by torch's cpp_extension.

They need a C++ compiler and ninja (`pip install ninja` if the system has none); the build (~20 s) happens once per
machine and torch version and is cached under torch's extension directory (TORCH_EXTENSIONS_DIR). Where the build
fails, `cpu_kernels()` says why once and returns None, and both keep the torch ops: same results, slower.

The source has two bodies: AVX-512 BF16 loops, compiled where the CPU has that extension (AMD Zen 4 and newer, Intel
Sapphire Rapids and newer), and portable scalar loops for every other CPU (AVX2-only x86, ARM), which are slower than
torch's own ops. So by default the kernels are used only where the vectorised body was built; elsewhere bf16 runs the
torch ops, and on such machines `model.dtype=auto` picks fp32 anyway (bf16 is emulated there).

ICRL_LITE_KERNELS picks the branch, so each can be exercised on any machine (the tests do):
  unset, 1, auto   use the kernels where the build is vectorised (the default);
  0, off           never (the torch ops);
  always           use the native build even where it is not vectorised (the portable loops on an AVX2 CPU);
  portable         build the scalar loops even where the CPU has AVX-512 BF16, and use that build.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import sys
import time
from pathlib import Path

SOURCE = Path(__file__).with_name("csrc") / "cpu_kernels.cpp"


FLAGS = ["-O3", "-march=native", "-fno-math-errno", "-ffp-contract=fast", "-fopenmp"]
MODES = {"1": "auto", "auto": "auto", "true": "auto", "yes": "auto", "on": "auto", "0": "off", "false": "off",
         "no": "off", "off": "off", "always": "always", "portable": "portable"}


def mode() -> str:
    """ICRL_LITE_KERNELS as one of auto / off / always / portable; an unknown value is an error that lists them."""
    value = os.environ.get("ICRL_LITE_KERNELS", "auto").strip().lower() or "auto"
    if value not in MODES:
        raise ValueError(f"ICRL_LITE_KERNELS={value!r} is not one of 1/auto (default), 0/off, always, portable: "
                         "see icrl_lite/cpu/kernels.py")
    return MODES[value]


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            return set(next((line for line in f if line.startswith("flags")), "").split())
    except OSError:
        return set()


def portable_flags() -> list[str]:
    """FLAGS compiling the scalar loops instead of the AVX-512 BF16 body (ICRL_LITE_PORTABLE, a define the source
    reads: no compiler flag to depend on); the same as FLAGS on a CPU that lacks it, so one build serves both."""
    return FLAGS + ["-DICRL_LITE_PORTABLE"] if "avx512_bf16" in cpu_flags() else FLAGS


def build_name(flags: list[str]) -> str:
    """A name per source, flags, torch version and CPU: a cache built with -march=native elsewhere is never loaded
    here."""
    import torch

    cpu = " ".join(sorted(cpu_flags()))
    key = "\0".join([SOURCE.read_text(), torch.__version__, platform.machine(), cpu, *flags])
    return "icrl_lite_cpu_" + hashlib.sha256(key.encode()).hexdigest()[:12]


STALE_LOCK_S = 600  # a build takes ~20 s (minutes on a loaded machine): a lock older than this was left by a killed one


def wait_for_build_lock(folder: Path, stale_s: float = STALE_LOCK_S) -> None:
    """Wait while another process may be building into `folder`, then clear a lock that a killed build left.

    torch's cpp_extension takes `<build dir>/lock` for a build and waits for it without end: a build killed midway
    (Ctrl-C, a timeout) left it behind, and every later process that wanted the kernels hung. A lock younger than
    `stale_s` is waited for (another process is building); an older one is removed, with a note."""
    lock, told = folder / "lock", False
    while True:
        try:
            age = time.time() - lock.stat().st_mtime
        except FileNotFoundError:
            return
        if age > stale_s:
            print(f"[icrl-lite] removing {lock}: a build of the C++ CPU kernels was interrupted {age / 60:.0f} min "
                  "ago and left it", file=sys.stderr)
            lock.unlink(missing_ok=True)
            return
        if not told:
            print(f"[icrl-lite] waiting for another process's build of the C++ CPU kernels ({lock}); if none is "
                  f"running, it is cleared {stale_s - age:.0f} s from now", file=sys.stderr)
            told = True
        time.sleep(1)


def build(flags: list[str] | None = None):
    """Compile (or load the cached build of) the kernels with these compiler flags; raises when that fails."""
    from torch.utils import cpp_extension

    flags = FLAGS if flags is None else flags
    name = build_name(flags)
    try:
        folder = Path(cpp_extension._get_build_directory(name, verbose=False))
    except Exception:  # a private helper of torch's: only the lock check and the message depend on it
        folder = None
    if folder is not None:
        wait_for_build_lock(folder)
    built = folder is None or any(folder.glob("*.so"))
    if not built:
        print("[icrl-lite] building the C++ CPU kernels (once per machine and torch version, ~20 s)", file=sys.stderr)
    return cpp_extension.load(name=name, sources=[str(SOURCE)], extra_cflags=flags, extra_ldflags=["-fopenmp"],
                              verbose=False)


@functools.cache
def cpu_kernels():
    """The compiled module (`add_rms_norm`, `silu_mul`, `attention`, `head_lse`, `head_grad`, the fused ops' forward and
    backward), or None where it is off, cannot be built, or (mode auto) was built without AVX-512 BF16: its portable
    loops are slower than torch's ops. Cached per process: call `cpu_kernels.cache_clear()` after changing the mode."""
    chosen = mode()
    if chosen == "off":
        return None
    try:
        module = build(portable_flags() if chosen == "portable" else FLAGS)
    except Exception as err:  # no compiler, no ninja, a failed build: the torch ops do the same work
        reason = str(err).strip().splitlines()
        print(f"[icrl-lite] note: the C++ CPU kernels could not be built ({reason[-1] if reason else type(err).__name__}); "
              "decode steps and the LM head's log-probs use torch ops (same results, slower). Install a C++ compiler and ninja "
              "(pip install ninja) to build them, or set ICRL_LITE_KERNELS=0 to skip this.", file=sys.stderr)
        return None
    return module if module.vectorized() or chosen in ("always", "portable") else None


def kernels_for(x):
    """`cpu_kernels()` for a bf16 tensor on a CPU (what every kernel takes), else None."""
    import torch

    return cpu_kernels() if x.device.type == "cpu" and x.dtype == torch.bfloat16 else None
