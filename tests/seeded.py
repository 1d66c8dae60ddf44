"""Seeded generators on a model's device, for tests whose models load with model.device=auto (CUDA where there
is one): the rollout engine draws its samples on the logits' device, and a CPU generator cannot draw there."""

import torch


def generator_for(model, seed: int = 0) -> torch.Generator:
    """A generator on `model`'s device seeded with `seed` (on a CPU the same stream as `torch.Generator()`)."""
    return torch.Generator(device=model.device).manual_seed(seed)
