"""Checks made before any model work, so that a typo costs a second and one line, not a model load (or an
evaluation) and a traceback: the model source exists, and the output paths can be written.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

_HUB_ID = re.compile(r"[\w.-]+(/[\w.-]+)?")
_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def check_model_source(name: str) -> None:
    """`name` is the embedded model, a local model directory, or a hub id that is cached or can be fetched.

    A hub id that is not cached is looked up once (a few seconds at most), so an unknown name or an unreachable
    hub fails now with the fix, instead of after transformers' minute of retries; offline (HF_HUB_OFFLINE=1) it
    fails at once.
    """
    from .policy import EMBEDDED

    embedded = next(iter(EMBEDDED))
    if name in EMBEDDED:
        return
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ValueError(f"model.name={name}: {path} has no config.json; give a model directory saved with "
                             f"save_pretrained, a hub id, or {embedded}")
        return
    if not _HUB_ID.fullmatch(name) or name.startswith((".", "/", "~")):
        raise ValueError(f"model.name={name}: no such directory, and not a hub id (owner/name); "
                         f"the embedded model is {embedded}")
    import huggingface_hub
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, HTTPError, RepositoryNotFoundError

    if _cached(name):
        return
    if huggingface_hub.is_offline_mode() or os.environ.get("TRANSFORMERS_OFFLINE", "0").upper() in ("1", "ON", "YES", "TRUE"):
        raise ValueError(f"model.name={name} is not in the Hugging Face cache and the hub is off (HF_HUB_OFFLINE): "
                         f"download it first (`hf download {name}`), give a local directory, or use {embedded}")
    try:
        huggingface_hub.model_info(name, timeout=10)
    except GatedRepoError:
        raise ValueError(f"model.name={name} is gated: accept its licence on huggingface.co and log in (`hf auth login`)") from None
    except RepositoryNotFoundError:
        raise ValueError(f"model.name={name}: no such model on the Hugging Face hub (check the spelling; private "
                         f"models need `hf auth login`), and no such local directory") from None
    except HfHubHTTPError:
        return  # the hub answered with another error: loading reports it
    except (HTTPError, OSError) as e:
        raise ValueError(f"model.name={name} is not in the Hugging Face cache and the hub cannot be reached "
                         f"({type(e).__name__}: {e}): connect, or download it first, or use {embedded}") from None


def _cached(repo_id: str) -> bool:
    """Whether the hub cache holds the model's config and weights (the latest revision seen)."""
    from huggingface_hub import try_to_load_from_cache

    def has(filename: str) -> bool:
        return isinstance(try_to_load_from_cache(repo_id, filename), str)

    return has("config.json") and any(has(f) for f in _WEIGHTS)


def check_output_dir(path: str | Path) -> Path:
    """`path` as a run directory that can be created and written; a one-line error naming the fix otherwise."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"output_dir={path} is a file, not a directory: choose another output_dir=")
    existing = next(p for p in (path, *path.parents) if p.exists() or p == p.parent)
    if not existing.is_dir():
        raise ValueError(f"output_dir={path}: {existing} is a file, not a directory: choose another output_dir=")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"output_dir={path}: cannot write in {existing} (permission denied): choose another output_dir=")
    return path


def check_writable_file(path: str | Path, what: str = "--output") -> Path:
    """Check that the file `path` can be written (its folder may still have to be made) before the work that
    produces it runs."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{what} {path} is a directory: give a file path")
    existing = next(p for p in path.parents if p.exists() or p == p.parent)
    if not existing.is_dir():
        raise ValueError(f"{what} {path}: {existing} is a file, not a directory: choose another path")
    target = path if path.exists() else existing
    if not os.access(target, os.W_OK) or (target.is_dir() and not os.access(target, os.X_OK)):
        raise ValueError(f"{what} {path}: cannot write {target} (permission denied): choose another path")
    return path
