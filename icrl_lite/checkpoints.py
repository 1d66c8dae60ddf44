"""Run directories on disk: checkpoints, the lock that allows one run per directory, and repair after a crash.

A run directory holds config.yaml, metrics.jsonl (one line per finished step), checkpoint-<step>/ (adapter/,
trainer_state.pt, config.yaml), `latest` (the newest checkpoint's name) and `.lock`. Every write is ordered so that
a kill at any instant leaves something `repair_run_dir` can finish or undo: a checkpoint is written into a staging
dir and renamed into place; an old one is renamed to a trash name before it is deleted. On start, staging and trash
dirs are removed, `latest` names the newest complete checkpoint, and `trim_metrics` cuts metrics.jsonl back to the
steps that checkpoint holds (the later ones are trained, and logged, again).

Torch is imported only where a checkpoint is read, so the lock and the checks are cheap to import.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: runs are not locked
    fcntl = None

LOCK_FILE = ".lock"
METRICS_FILE = "metrics.jsonl"
STAGING_PREFIX = ".tmp-checkpoint-"
TRASH_PREFIX = ".trash-"
_CHECKPOINT = re.compile(r"checkpoint-(\d+)")


# ---- the lock -----------------------------------------------------------------------------------------
class RunDirLocked(FileExistsError):
    """Another process is running in the run directory."""


_NEWEST: dict[Path, RunLock] = {}  # per resolved run dir, the newest lock of this process that acquired it


class RunLock:
    """An exclusive `flock` on <run_dir>/.lock, held while a run uses the directory.

    The kernel drops it when the process dies, however it dies (SIGKILL included), so a stale lock file never
    blocks a later run; its text names the holder for the message of a run it refuses. Within one process,
    `acquire(take_over=True)` (a new Trainer) takes the lock from an older lock on the same dir (a Trainer that
    failed, finished or was abandoned in a notebook), and the older one can never acquire it again: its view of
    the run is stale.
    """

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self.file = None

    def acquire(self, take_over: bool = False) -> RunLock:
        if self.file is not None or fcntl is None:
            return self
        self.run_dir.mkdir(parents=True, exist_ok=True)
        key = self.run_dir.resolve()
        newest = _NEWEST.get(key)
        if newest is not None and newest is not self:
            if not take_over:
                raise RunDirLocked(f"a newer Trainer on {self.run_dir} took over this one's lock: train with that one")
            if newest.file is not None:
                self.file, newest.file = newest.file, None
                _NEWEST[key] = self
                return self
        f = open(self.path, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "unknown process"
            f.close()
            raise RunDirLocked(f"{self.run_dir} is in use by another run ({holder}): wait for it to finish or stop it, "
                               f"or choose another output_dir=") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        f.flush()
        self.file = f
        _NEWEST[key] = self
        return self

    def release(self) -> None:
        if self.file is not None:
            self.file.close()  # closing the descriptor drops the flock
            self.file = None


# ---- checkpoints --------------------------------------------------------------------------------------
def checkpoint_step(path: Path) -> int | None:
    match = _CHECKPOINT.fullmatch(path.name)
    return int(match.group(1)) if match else None


def is_complete(checkpoint: Path) -> bool:
    """Whether every file a resume reads is there (a half-deleted checkpoint lacks some of them)."""
    adapter = checkpoint / "adapter"
    return ((checkpoint / "trainer_state.pt").is_file() and (adapter / "adapter_config.json").is_file()
            and any(adapter.glob("adapter_model.*")))


def checkpoint_dirs(run_dir: str | Path) -> list[Path]:
    """checkpoint-<step> dirs, complete or not, oldest first."""
    run_dir = Path(run_dir)
    found = [p for p in run_dir.glob("checkpoint-*") if p.is_dir() and checkpoint_step(p) is not None]
    return sorted(found, key=checkpoint_step)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run (what a resume continues from), or None."""
    complete = [p for p in checkpoint_dirs(run_dir) if is_complete(p)]
    return complete[-1] if complete else None


def remove_dir(path: Path) -> None:
    """Delete a directory crash-safely: renamed to a trash name first (one atomic step), then deleted, so a kill
    never leaves a half-deleted dir under its real name."""
    if not path.exists():
        return
    trash = path.with_name(TRASH_PREFIX + path.name.lstrip("."))
    if trash.exists():
        shutil.rmtree(trash)
    path.rename(trash)
    shutil.rmtree(trash)


def save_checkpoint(run_dir: str | Path, step: int, write: Callable[[Path], None], keep: int) -> Path:
    """Write checkpoint-<step>: `write(staging)` fills a staging dir, which is renamed into place; then `latest`
    names it and all but the newest `keep` checkpoints are removed (`remove_dir`)."""
    run_dir = Path(run_dir)
    final = run_dir / f"checkpoint-{step}"
    staging = run_dir / f"{STAGING_PREFIX}{step}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    write(staging)
    remove_dir(final)
    staging.rename(final)
    write_latest(run_dir, final.name)
    for old in checkpoint_dirs(run_dir)[:-keep]:
        remove_dir(old)
    return final


def write_latest(run_dir: Path, name: str) -> None:
    pointer = run_dir / ".latest.tmp"
    pointer.write_text(name + "\n")
    os.replace(pointer, run_dir / "latest")


def load_trainer_state(checkpoint: Path) -> dict:
    """The optimizer, loss scaler, RNG and step saved in a checkpoint, or an error naming the file and the fix."""
    import pickle

    import torch

    path = checkpoint / "trainer_state.pt"
    try:  # onto the CPU: a GPU run's state resumes on a CPU too (the optimizer moves its state to the parameters)
        return torch.load(path, weights_only=False, map_location="cpu")
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as e:  # a damaged file
        raise ValueError(f"{path} is unreadable ({type(e).__name__}: {e}); delete {checkpoint} to resume from the "
                         f"checkpoint before it") from None


# ---- starting a run -----------------------------------------------------------------------------------
def open_run_dir(run_dir: Path, resume: bool) -> Path | None:
    """Make a locked run dir ready for a run and return the checkpoint to continue from (None: step 0).

    Repairs what a killed run left, refuses to start over a run's checkpoints without `resume`, checks the
    adapter it will load, and cuts metrics.jsonl back to that checkpoint's step (an empty log without one).
    """
    for note in repair_run_dir(run_dir):
        print(f"[icrl-lite] {run_dir}: {note}")
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is not None and not resume:
        raise FileExistsError(f"{run_dir} already holds checkpoints: pass --resume to continue it, or choose another "
                              f"output_dir=")
    if resume and checkpoint is None:
        print(f"[icrl-lite] --resume: no checkpoint in {run_dir}, starting from scratch")
    if checkpoint is not None:
        check_adapter(checkpoint / "adapter")
    note = trim_metrics(run_dir, checkpoint_step(checkpoint) if checkpoint is not None else 0)
    if note:
        print(f"[icrl-lite] {run_dir}: {note}")
    return checkpoint


# ---- repair after a crash -----------------------------------------------------------------------------
def repair_run_dir(run_dir: str | Path) -> list[str]:
    """Finish or undo what a killed run left (call it holding the lock): staging dirs, trash dirs, checkpoints
    missing files, a `latest` naming anything but the newest complete checkpoint. Returns what was done."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    notes = []
    for leftover in sorted([*run_dir.glob(STAGING_PREFIX + "*"), *run_dir.glob(TRASH_PREFIX + "*")]):
        if leftover.is_dir():
            shutil.rmtree(leftover)
        else:
            leftover.unlink()
        notes.append(f"removed {leftover.name} (left by a killed run)")
    (run_dir / ".latest.tmp").unlink(missing_ok=True)
    for checkpoint in checkpoint_dirs(run_dir):
        if not is_complete(checkpoint):
            remove_dir(checkpoint)
            notes.append(f"removed {checkpoint.name}: incomplete (a killed run was deleting or writing it)")
    newest = latest_checkpoint(run_dir)
    pointer = run_dir / "latest"
    named = pointer.read_text().strip() if pointer.is_file() else None
    if newest is not None and named != newest.name:
        write_latest(run_dir, newest.name)
        notes.append(f"`latest` now names {newest.name}" + (f" (was {named})" if named else ""))
    elif newest is None and pointer.exists():
        pointer.unlink()
        notes.append(f"removed `latest` (it named {named}, which is gone)")
    return notes


def last_logged_step(run_dir: str | Path) -> int:
    """The step of the last complete line of metrics.jsonl (0 when there is none)."""
    log = Path(run_dir) / METRICS_FILE
    if not log.exists():
        return 0
    for line in reversed(log.read_text(encoding="utf-8", errors="replace").splitlines()):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int):
            return row["step"]
    return 0


def trim_metrics(run_dir: str | Path, step: int) -> str | None:
    """Keep the lines of metrics.jsonl for steps <= `step` (the checkpoint resumed from; 0 = none), so that the
    steps trained again are not logged twice. A line cut short by a kill is dropped too. Returns a note."""
    log = Path(run_dir) / METRICS_FILE
    if not log.exists():
        return None
    kept, dropped = [], []
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] <= step:
            kept.append(line)
        elif line.strip():
            dropped.append(row.get("step") if isinstance(row, dict) else "?")
    if not dropped:
        return None
    staging = log.with_name(".metrics.jsonl.tmp")
    staging.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    os.replace(staging, log)
    where = f"checkpoint-{step}, the step resumed from" if step else "the start: there is no checkpoint to resume"
    return (f"metrics.jsonl: dropped the lines of steps {', '.join(map(str, dropped))}, logged after {where} "
            f"(they are trained and logged again)")


# ---- adapters -----------------------------------------------------------------------------------------
def check_adapter(adapter: Path) -> None:
    """A one-line error naming the file when an adapter dir does not hold a LoRA adapter that can be loaded."""
    config = adapter / "adapter_config.json"
    if not config.is_file():
        raise ValueError(f"{adapter}: no adapter_config.json; expected a LoRA adapter saved by icrl-lite (or peft)")
    try:
        data = json.loads(config.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{config}: not valid JSON ({e}); the adapter is damaged: use another checkpoint") from None
    if not isinstance(data, dict) or "peft_type" not in data or "r" not in data:
        raise ValueError(f"{config}: not a peft adapter config (needs peft_type and r); the adapter is damaged: use "
                         f"another checkpoint")
    weights = adapter / "adapter_model.safetensors"
    if weights.is_file():
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(weights), framework="pt") as f:
                keys = list(f.keys())
        except (SafetensorError, OSError) as e:
            raise ValueError(f"{weights}: not a safetensors file ({e}); the adapter is damaged: use another "
                             f"checkpoint") from None
        if not any("lora_" in k for k in keys):
            raise ValueError(f"{weights} holds no LoRA weights (keys such as {keys[:2]}); use another checkpoint")
    elif not (adapter / "adapter_model.bin").is_file():
        raise ValueError(f"{adapter}: no adapter_model.safetensors; the adapter is incomplete: use another checkpoint")


def resolve_checkpoint(checkpoint: str | Path) -> Path:
    """A checkpoint dir, or the latest complete checkpoint of a run dir; its adapter is checked."""
    path = Path(checkpoint)
    if (path / "latest").exists() or not (path / "adapter").exists():
        found = latest_checkpoint(path)
        if found is None:
            raise FileNotFoundError(f"{path} holds no checkpoint (expected checkpoint-*/adapter or an adapter/ dir); "
                                    f"use --checkpoint base for the untrained model")
        path = found
    check_adapter(path / "adapter")
    return path
