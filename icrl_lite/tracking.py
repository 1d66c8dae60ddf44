"""Experiment tracking: each step's metrics also go to TensorBoard, Weights & Biases or Trackio (`report_to`).

metrics.jsonl in the run directory is always written (by the trainer); a tracker is a second copy for
dashboards. A tracker's package is imported only when it is asked for (`report_to=none` imports none of them),
and a missing one is named with its pip command when the config is validated, before any model work.

Resumed runs continue where the checkpoint left off, as metrics.jsonl does: TensorBoard drops the events of
the steps after the checkpoint (`purge_step`), W&B continues the same run (its id is kept in the run
directory), Trackio the run of the same name.
"""

from __future__ import annotations

import importlib.util
import json
import os
from numbers import Real
from pathlib import Path
from typing import Protocol

REPORT_TO = ("none", "tensorboard", "wandb", "trackio")  # each tracker's name is also its package's
STATE_FILE = "tracker.json"  # in the run dir: the W&B run id, so that a resume continues the same run
PROJECT = "icrl-lite"  # W&B / Trackio project unless WANDB_PROJECT / TRACKIO_PROJECT says otherwise


class Tracker(Protocol):
    def log(self, metrics: dict, step: int) -> None: ...

    def close(self) -> None: ...


def check_report_to(report_to: str) -> None:
    """A known tracker whose package is installed (looked up, not imported); else an error with the fix."""
    if report_to not in REPORT_TO:
        raise ValueError(f"report_to={report_to!r}: use one of {', '.join(REPORT_TO)}")
    if report_to != "none" and importlib.util.find_spec(report_to) is None:  # torch's writer needs `tensorboard`
        extra = " (or pip install 'icrl-lite[track]')" if report_to == "tensorboard" else ""
        raise ImportError(f"report_to={report_to} needs the {report_to} package: pip install {report_to}{extra}; "
                          f"or set report_to=none")


def scalars(metrics: dict) -> dict[str, float]:
    """The numeric entries of a step's metrics (text and nested values are left to metrics.jsonl)."""
    return {k: float(v) for k, v in metrics.items() if isinstance(v, Real)}


class NoTracker:
    def log(self, metrics: dict, step: int) -> None:
        pass

    def close(self) -> None:
        pass


class TensorBoardTracker:
    """Scalars under <run_dir>/tensorboard: `tensorboard --logdir <run_dir>`."""

    def __init__(self, run_dir: Path, config: dict, start_step: int):
        from torch.utils.tensorboard import SummaryWriter

        # purge_step drops what a killed run logged after the checkpoint resumed from (those steps run again;
        # without a checkpoint, all of them)
        self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=start_step + 1)
        if not start_step:
            self.writer.add_text("config", "```\n" + json.dumps(config, indent=1) + "\n```")

    def log(self, metrics: dict, step: int) -> None:
        for key, value in scalars(metrics).items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()  # a dashboard open on a running job sees each step

    def close(self) -> None:
        self.writer.close()


class WandbTracker:
    """A W&B run named after the run dir (project: WANDB_PROJECT or icrl-lite); a resume continues it."""

    def __init__(self, run_dir: Path, config: dict, start_step: int):
        import wandb

        state = read_state(run_dir)
        if "wandb_id" not in state:
            state["wandb_id"] = wandb.util.generate_id()
            write_state(run_dir, state)
        self.wandb = wandb
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", PROJECT), name=run_dir.resolve().name,
                              id=state["wandb_id"], resume="allow", config=config, dir=str(run_dir))

    def log(self, metrics: dict, step: int) -> None:
        self.run.log(scalars(metrics), step=step)

    def close(self) -> None:
        self.run.finish()


class TrackioTracker:
    """A Trackio run named after the run dir (project: TRACKIO_PROJECT or icrl-lite); a resume continues it."""

    def __init__(self, run_dir: Path, config: dict, start_step: int):
        import trackio

        self.trackio = trackio
        trackio.init(project=os.environ.get("TRACKIO_PROJECT", PROJECT), name=run_dir.resolve().name, config=config,
                     resume="allow" if start_step else "never")

    def log(self, metrics: dict, step: int) -> None:
        self.trackio.log(scalars(metrics), step=step)

    def close(self) -> None:
        self.trackio.finish()


def open_tracker(report_to: str, run_dir: str | Path, config: dict, start_step: int = 0) -> Tracker:
    """The tracker `report_to` names, logging under `run_dir`; `start_step` > 0 when a run is resumed."""
    check_report_to(report_to)
    if report_to == "none":
        return NoTracker()
    tracker = {"tensorboard": TensorBoardTracker, "wandb": WandbTracker, "trackio": TrackioTracker}[report_to]
    return tracker(Path(run_dir), config, start_step)


def read_state(run_dir: Path) -> dict:
    path = run_dir / STATE_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def write_state(run_dir: Path, state: dict) -> None:
    tmp = run_dir / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, run_dir / STATE_FILE)
