"""Data-parallel training over `torch.distributed`: the few collectives the trainer needs, and nothing when it is alone.

A run launched by `torchrun --nproc_per_node N` (or `accelerate launch`, which calls it) gets RANK, WORLD_SIZE and
LOCAL_RANK from the launcher; `init` joins the process group (nccl on CUDA, gloo on CPU) and gives each process the
GPU of its local rank. Every rank samples its share of a step's groups (`share`), the ranks' scores are gathered so
that advantages and metrics are the whole step's (`gather`), the LoRA gradients are summed (`all_reduce_grads`:
each rank divides its loss by the whole step's token count, `sum_over_ranks`, so the sum is the token mean of the
single-process loss), and rank 0 alone opens the run directory, evaluates, logs and checkpoints (`decided_by_main`
tells the others what it found). Processes are started and restarted by the launcher, never here.

Without a launcher (WORLD_SIZE unset or 1) every function is the identity or a no-op: a single process computes
exactly what it did before this module existed.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")

TIMEOUT = timedelta(minutes=60)  # how long ranks wait for each other, e.g. while rank 0 alone evaluates


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank in the run (0 without a launcher)."""
    return dist.get_rank() if active() else 0


def world_size() -> int:
    """Processes in the run (1 without a launcher)."""
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Whether this process evaluates, logs and checkpoints (rank 0; the only process without a launcher)."""
    return rank() == 0


def init(device: str = "auto") -> str:
    """Join the launcher's process group when WORLD_SIZE > 1 (once per process) and return the device this rank
    trains on: `model.device` as given when alone, cuda:LOCAL_RANK on GPUs (nccl), cpu otherwise (gloo)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return device
    local = int(os.environ.get("LOCAL_RANK", "0"))
    on_gpu = device != "cpu" and torch.cuda.is_available()
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"model.device={device} names one device, but under torchrun each of the {world} processes "
                         f"takes the GPU of its LOCAL_RANK: set model.device=auto (or cuda, or cpu)")
    if device == "cuda" and not on_gpu:
        raise ValueError("model.device=cuda but no CUDA device is visible; use model.device=cpu")
    if on_gpu and local >= torch.cuda.device_count():
        raise ValueError(f"LOCAL_RANK={local} but {torch.cuda.device_count()} CUDA devices are visible on this node: "
                         f"launch at most --nproc_per_node {torch.cuda.device_count()}")
    if on_gpu:
        torch.cuda.set_device(local)
    if not active():
        dist.init_process_group("nccl" if on_gpu else "gloo", timeout=TIMEOUT)
    return f"cuda:{local}" if on_gpu else "cpu"


def teardown() -> None:
    """Leave the process group (a no-op without one)."""
    if active():
        dist.destroy_process_group()


def share(count: int) -> range:
    """This rank's contiguous share of `count` items (a step's groups): sizes differ by at most one; all of them
    when alone."""
    r, n = rank(), world_size()
    return range(r * count // n, (r + 1) * count // n)


def rank_seed(seed: int) -> int:
    """A seed for this rank's sampling derived from a step's `seed`: `seed` itself on rank 0 (and alone), another
    fixed one on every other rank. A function of the step and rank, not a saved state, so a resumed run draws the
    same samples as an uninterrupted one with the same number of processes."""
    return seed if rank() == 0 else (seed + rank() * 0x9E3779B97F4A7C15) % 2**63


def gather(obj: T) -> list[T]:
    """Every rank's `obj` (picklable), in rank order, on every rank; `[obj]` when alone."""
    if not active():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def sum_over_ranks(*values: float) -> tuple:
    """Each value summed over the ranks (ints stay ints); the values themselves when alone."""
    if not active():
        return values
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    total = torch.tensor(values, dtype=torch.float64, device=device)  # (V,)
    dist.all_reduce(total)
    return tuple(type(v)(t) for v, t in zip(values, total.tolist()))


def all_reduce_grads(params: list[torch.Tensor]) -> None:
    """Sum the gradients of `params` over the ranks, in one fp32 buffer. A rank that trained on nothing sends
    zeros; a parameter whose gradient is None on every rank keeps None (as it would in one process)."""
    if not active() or not params:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    present = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=params[0].device)  # (P,)
    flat = torch.cat([g.reshape(-1).float() for g in grads] + [present])  # (sum of sizes + P,)
    dist.all_reduce(flat)
    sizes = [p.numel() for p in params]
    present = flat[sum(sizes):] > 0  # (P,)
    for p, chunk, has in zip(params, flat[: sum(sizes)].split(sizes), present.tolist()):
        if has:
            p.grad = chunk.view_as(p).to(p.dtype)


def broadcast_params(params: list[torch.Tensor]) -> None:
    """Rank 0's values of `params` on every rank (the trainable weights at the start: every rank begins alike)."""
    if not active():
        return
    with torch.no_grad():
        for p in params:
            dist.broadcast(p.data, src=0)


def decided_by_main(decide: Callable[[], T]) -> T:
    """`decide()` run on rank 0 alone, its result (or the exception it raised) on every rank: e.g. the checkpoint
    that rank 0 found in the run directory it locked and repaired, or why it refused to start."""
    if not active():
        return decide()
    if is_main():
        try:
            result = decide()
        except BaseException as e:
            dist.broadcast_object_list([e], src=0)
            raise
        dist.broadcast_object_list([result], src=0)
        return result
    box: list[Any] = [None]
    dist.broadcast_object_list(box, src=0)
    if isinstance(box[0], BaseException):
        raise box[0]
    return box[0]
