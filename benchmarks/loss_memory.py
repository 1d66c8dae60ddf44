"""Loss memory vs sequence length: icrl-lite's chunked log-probs vs a full-logits log_softmax.

What is measured is the part of the loss whose memory depends on the vocabulary: hidden states (1, T, H) of
the policy's width through an LM head of the policy's shape (H x V, frozen, in the policy's dtype) to the
log-probability of T target tokens, forward and backward (gradients flow to the hidden states, as in LoRA
training). `chunked` is `icrl_lite.logprobs.token_logprobs` (for this frozen head `HeadLogprobs`: the logits of 64
positions at a time on a CPU, `chunk` on a GPU, recomputed in the backward pass; in bf16 on a CPU with the C++ kernels
(since 2026-11-29 21:00 UTC) one pass over each block's bf16 logits each way, elsewhere fp32 copies of them; with
`KEEP_SOFTMAX` (off by default since 20:07 UTC; on 18:50-20:07) the T positions' softmax, in the head's dtype, is kept
for the backward while it fits in one chunk's fp32 logits; before 13:00 UTC, checkpointed chunks of `chunk` positions
everywhere); `full` is what a plain implementation does, log_softmax(head(h).float()) over all T
positions at once. The transformer body is left out: it is the same for both.

Each (method, length) runs in its own process, so its peak is its own: peak RSS (VmHWM, reset just before
the computation) above the RSS just before it on a CPU, max allocated above allocated on a GPU (`python -m benchmarks.loss_memory SPEC OUT`).
On a CPU the child runs with glibc's mmap threshold fixed at 1 MiB: by default glibc raises it (up to 32 MiB)
after the first large free, later chunk-sized tensors then come from the heap, whose freed pages stay resident,
and RSS would add up every chunk's logits although only one is alive at a time.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import torch

METHODS = ("chunked", "full")


def current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def reset_peak_rss() -> None:
    """Set the kernel's peak-RSS mark (VmHWM) to the current RSS (Linux >= 4.0), so that the peak read after a
    computation is the computation's, not the import's."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def peak_rss_mb() -> float:
    """VmHWM: the peak RSS since the process started or since `reset_peak_rss`."""
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024  # kB


def full_logprobs(head, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(targets | hidden) with the whole (B, T, V) logits at once: (B, T, H), (B, T) -> (B, T)."""
    logits = head(hidden).float()  # (B, T, V)
    return torch.log_softmax(logits, dim=-1).gather(-1, targets[..., None]).squeeze(-1)  # (B, T)


def measure(spec: dict) -> dict:
    """Peak extra memory (MiB) of one forward + backward of `spec["method"]` at `spec["length"]` positions."""
    from icrl_lite.logprobs import token_logprobs

    device = torch.device(spec["device"])
    dtype = getattr(torch, spec["dtype"])
    torch.manual_seed(0)
    head = torch.nn.Linear(spec["hidden"], spec["vocab"], bias=False).to(device, dtype).requires_grad_(False)

    def run(length: int) -> None:
        hidden = torch.randn(1, length, spec["hidden"], device=device, dtype=dtype, requires_grad=True)  # (1, T, H)
        targets = torch.randint(spec["vocab"], (1, length), device=device)  # (1, T)
        if spec["method"] == "chunked":
            logp = token_logprobs(head, hidden, targets, spec["chunk"])  # (1, T)
        else:
            logp = full_logprobs(head, hidden, targets)  # (1, T)
        logp.sum().backward()

    run(8)  # kernels and thread pools are set up before the baseline
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        run(spec["length"])
        torch.cuda.synchronize(device)
        extra = (torch.cuda.max_memory_allocated(device) - base) / 2**20
    else:
        reset_peak_rss()
        base = current_rss_mb()
        run(spec["length"])
        extra = max(0.0, peak_rss_mb() - base)
    return {"method": spec["method"], "length": spec["length"], "peak_extra_mb": extra}


def run_loss_memory(model_name: str, dtype: torch.dtype, device: torch.device, lengths: list[int], chunk: int,
                    workdir: Path) -> dict:
    """Both methods at every length (one process each), with the size of one fp32 (T, V) logits tensor."""
    from benchmarks.machine import policy_size

    size = policy_size(model_name, dtype)
    workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    for length in lengths:
        row = {"length": length, "fp32_logits_mb": length * size["vocab"] * 4 / 2**20}
        for method in METHODS:
            spec = {"method": method, "length": length, "chunk": chunk, "vocab": size["vocab"], "hidden": size["hidden"],
                    "dtype": str(dtype).removeprefix("torch."), "device": str(device)}
            row[method] = run_child(spec, workdir / f"{method}-{length}")
        rows.append(row)
    return {"chunk": chunk, "vocab": size["vocab"], "hidden": size["hidden"], "dtype": size["dtype"],
            "chunk_fp32_logits_mb": chunk * size["vocab"] * 4 / 2**20, "rows": rows}


def run_child(spec: dict, stem: Path) -> dict:
    """One measurement in a fresh process: {"peak_extra_mb": MiB}, or {"error": the end of its output}."""
    spec_path, out_path = stem.with_suffix(".spec.json"), stem.with_suffix(".json")
    spec_path.write_text(json.dumps(spec))
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(2**20)}  # see the module docstring
    done = subprocess.run([sys.executable, "-m", "benchmarks.loss_memory", str(spec_path), str(out_path)],
                          cwd=root, capture_output=True, text=True, env=env)
    if done.returncode != 0 or not out_path.exists():
        return {"error": (done.stderr or done.stdout)[-1500:]}
    return {"peak_extra_mb": json.loads(out_path.read_text())["peak_extra_mb"]}


if __name__ == "__main__":
    spec_file, out_file = sys.argv[1:]
    Path(out_file).write_text(json.dumps(measure(json.loads(Path(spec_file).read_text()))))
