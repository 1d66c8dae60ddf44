"""Moved on 2026-12-08: `icrl_lite.model` was split into `icrl_lite.policy` (loading, dtype, LoRA, the generation,
reference and merged-adapter modes, fp16 loss scaling), `icrl_lite.logprobs` (log-probabilities with gradients) and
`icrl_lite.attention` (the policy's attention); the CPU speed work is `icrl_lite.cpu`. A name imported from here still
works, with a DeprecationWarning that names its new module."""

from __future__ import annotations

import importlib
import warnings

HOMES = ("policy", "logprobs", "attention", "cpu")


def __getattr__(name: str):
    if not name.startswith("_"):
        for home in HOMES:
            module = importlib.import_module(f"icrl_lite.{home}")
            if name in vars(module):
                warnings.warn(f"icrl_lite.model.{name} is now icrl_lite.{home}.{name}: import it from there (icrl_lite.model "
                              "goes away in a later release)", DeprecationWarning, stacklevel=2)
                return getattr(module, name)
    raise AttributeError(f"module 'icrl_lite.model' has no attribute {name!r}; it was split into "
                         + ", ".join(f"icrl_lite.{home}" for home in HOMES))
