"""Experiment tracking: report_to=none imports no tracker, TensorBoard gets every step's scalars (and a resume
replaces what came after the checkpoint), W&B continues its run, a missing package is named with its pip command."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from importlib.machinery import ModuleSpec
from pathlib import Path

import pytest

from icrl_lite import tracking
from icrl_lite.cli import main
from icrl_lite.config import load_config
from icrl_lite.policy import ModelConfig
from icrl_lite.rollout import RolloutConfig
from icrl_lite.tracking import open_tracker
from icrl_lite.trainer import TrainConfig, Trainer

pytestmark = pytest.mark.usefixtures("one_thread")

TRACKER_MODULES = ("tensorboard", "torch.utils.tensorboard", "wandb", "trackio")


def tiny_config(model_dir, out: Path, **overrides) -> TrainConfig:
    cfg = TrainConfig(output_dir=str(out), stages=[{"demos": 0, "steps": 2}], prompts_per_step=2, num_generations=2,
                      micro_batch_size=2, eval_every=0, save_every=1, progress=False, check_demo_budgets=False,
                      probe_demos=0, model=ModelConfig(name=str(model_dir), dtype="fp32"),
                      rollout=RolloutConfig(max_turns=1, max_turn_tokens=8, max_response_tokens=24, temperature=1.0))
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


def scalar_events(log_dir: Path, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir))
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


def test_report_to_none_trains_without_importing_any_tracker(tiny_model_dir, tmp_path):
    script = f"""
import json, sys, torch
torch.set_num_threads(1)
from pathlib import Path
sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_tracking import tiny_config
from icrl_lite.trainer import Trainer
cfg = tiny_config({str(tiny_model_dir)!r}, Path({str(tmp_path / 'run')!r}), stages=[{{"demos": 0, "steps": 1}}])
assert cfg.report_to == "none"
Trainer(cfg).train()
print(json.dumps([m for m in {TRACKER_MODULES!r} if m in sys.modules]))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 1


def test_tensorboard_gets_each_steps_scalars_and_metrics_jsonl_is_still_written(tiny_model_dir, tmp_path):
    pytest.importorskip("tensorboard")
    out = tmp_path / "run"
    Trainer(tiny_config(tiny_model_dir, out, report_to="tensorboard")).train()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for key in ("reward", "loss", "lr", "response_tokens"):
        assert scalar_events(out / "tensorboard", key) == [(r["step"], pytest.approx(r[key])) for r in rows]


def test_a_resumed_tensorboard_log_replaces_the_steps_after_the_checkpoint(tmp_path):
    pytest.importorskip("tensorboard")
    first = open_tracker("tensorboard", tmp_path, {}, start_step=0)
    for step in (1, 2, 3):  # killed after logging step 3; the checkpoint holds step 1
        first.log({"reward": float(step)}, step)
    first.close()
    resumed = open_tracker("tensorboard", tmp_path, {}, start_step=1)
    for step in (2, 3):
        resumed.log({"reward": 10.0 * step}, step)
    resumed.close()
    assert scalar_events(tmp_path / "tensorboard", "reward") == [(1, 1.0), (2, 20.0), (3, 30.0)]


def test_only_numbers_are_logged():
    assert tracking.scalars({"step": 3, "reward": 0.5, "note": "x", "nested": {"a": 1}}) == {"step": 3.0, "reward": 0.5}


def test_an_unknown_tracker_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="report_to='mlflow': use one of none, tensorboard, wandb, trackio"):
        load_config(TrainConfig, None, ["report_to=mlflow"])


@pytest.mark.parametrize("name", ["tensorboard", "wandb", "trackio"])
def test_a_missing_tracker_package_is_named_with_its_pip_command_before_any_model_work(monkeypatch, capsys, name):
    real = tracking.importlib.util.find_spec
    monkeypatch.setattr(tracking.importlib.util, "find_spec", lambda module, *a: None if module == name else real(module, *a))
    assert main(["train", f"report_to={name}"]) == 2
    err = capsys.readouterr().err
    assert f"report_to={name} needs the {name} package: pip install {name}" in err and "report_to=none" in err


def fake_wandb(calls: list) -> types.ModuleType:
    """A stand-in `wandb` module that records init / log / finish."""
    module = types.ModuleType("wandb")
    module.__spec__ = ModuleSpec("wandb", None)
    module.util = types.SimpleNamespace(generate_id=lambda: f"id{len(calls)}")

    class Run:
        def log(self, metrics, step):
            calls.append(("log", metrics, step))

        def finish(self):
            calls.append(("finish",))

    def init(**kwargs):
        calls.append(("init", kwargs))
        return Run()

    module.init = init
    return module


def test_wandb_logs_each_step_and_a_resume_continues_the_same_run(monkeypatch, tmp_path):
    calls: list = []
    monkeypatch.setitem(sys.modules, "wandb", fake_wandb(calls))
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    run_dir = tmp_path / "my-run"
    run_dir.mkdir()
    tracker = open_tracker("wandb", run_dir, {"seed": 0}, start_step=0)
    tracker.log({"reward": 0.5, "note": "x"}, 1)
    tracker.close()
    open_tracker("wandb", run_dir, {"seed": 0}, start_step=1).close()
    (_, first), (_, again) = [c for c in calls if c[0] == "init"]
    assert first["project"] == "icrl-lite" and first["name"] == "my-run" and first["config"] == {"seed": 0}
    assert again["id"] == first["id"] and again["resume"] == "allow"
    assert ("log", {"reward": 0.5}, 1) in calls
