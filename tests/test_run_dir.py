"""Runs that survive people and crashes, tested with real processes on a tiny random model: the run-dir lock,
SIGKILL at chosen points then resume (bit-identical to an uninterrupted run), Ctrl-C, and `--resume` taking the
run's own config."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from icrl_lite import trainer as trainer_module
from icrl_lite.checkpoints import RunDirLocked, RunLock, latest_checkpoint
from icrl_lite.cli import main
from icrl_lite.config import load_config
from icrl_lite.trainer import TrainConfig, Trainer

TIMING_KEYS = {"step_seconds", "gen_seconds", "gen_tokens_per_s"}

# Rewards 0, 1, 0, 1, ... so every group of 2 is informative and every step updates the adapter. Each step scores
# an even number of rollouts, so the pattern is the same per step in every process. KILL_AT picks a kill point.
DRIVER = textwrap.dedent('''
    import itertools, os, shutil, signal, sys
    from pathlib import Path
    import torch
    from icrl_lite import trainer

    real_score, counter = trainer.score, itertools.count()

    def varied(rollout, gold, *args):
        metrics = real_score(rollout, gold, *args)
        metrics["reward"] = float(next(counter) % 2)
        return metrics

    trainer.score = varied
    kill_at = os.environ.get("KILL_AT", "")
    real_save, real_rmtree = torch.save, shutil.rmtree

    def save(obj, path, *args, **kwargs):
        if kill_at == "first-state-write" and str(path).endswith("trainer_state.pt"):
            Path(path).write_bytes(b"half")
            os.kill(os.getpid(), signal.SIGKILL)
        return real_save(obj, path, *args, **kwargs)

    def rmtree(path, *args, **kwargs):
        name = Path(path).name
        if kill_at == "pruning" and Path(path).is_dir() and "checkpoint-" in name and not name.startswith(".tmp"):
            (Path(path) / "trainer_state.pt").unlink(missing_ok=True)  # deletion got this far
            os.kill(os.getpid(), signal.SIGKILL)
        return real_rmtree(path, *args, **kwargs)

    torch.save, shutil.rmtree = save, rmtree
    from icrl_lite.cli import main
    sys.exit(main(sys.argv[1:]))
''')


@pytest.fixture(scope="module")
def run_setup(tiny_model_dir, tmp_path_factory):
    """(config YAML, folder) for a 3-step run on the tiny model, short prompts and responses, that saves every
    step and keeps one checkpoint."""
    root = tmp_path_factory.mktemp("runs")
    demos = root / "demos.jsonl"
    demos.write_text(json.dumps({"question": "Where?", "answers": ["a"], "solution": "<answer>a</answer>"}) + "\n")
    config = {
        "demo_pool": str(demos), "instruction": "Q: {question}", "stages": [{"demos": 1, "steps": 1}, {"demos": 0, "steps": 2}],
        "prompts_per_step": 2, "num_generations": 2, "micro_batch_size": 2, "eval_every": 0, "save_every": 1,
        "keep_checkpoints": 1, "progress": False, "probe_demos": 0, "final_eval": "",
        "model": {"name": str(tiny_model_dir), "dtype": "fp32"},
        "rollout": {"max_turns": 1, "max_turn_tokens": 8, "max_response_tokens": 16, "temperature": 1.0},
    }
    known = {f for f in TrainConfig.__dataclass_fields__}
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in config.items() if k in known}))
    (root / "driver.py").write_text(DRIVER)
    return path, root


def config_for(run_setup, run_dir: Path, *overrides: str) -> TrainConfig:
    return load_config(TrainConfig, run_setup[0], [f"output_dir={run_dir}", *overrides])


@pytest.fixture(scope="module")
def straight(run_setup):
    """An uninterrupted run, trained in this process: (metrics rows, final checkpoint)."""
    run_dir = run_setup[1] / "straight"
    with pytest.MonkeyPatch.context() as mp:
        counter, real_score = itertools.count(), trainer_module.score
        mp.setattr(trainer_module, "score", lambda r, g, *a: {**real_score(r, g, *a), "reward": float(next(counter) % 2)})
        Trainer(config_for(run_setup, run_dir)).train()
    return read_metrics(run_dir), latest_checkpoint(run_dir)


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def start(run_setup, *args: str, kill_at: str = "") -> subprocess.Popen:
    env = {**os.environ, "KILL_AT": kill_at, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, str(run_setup[1] / "driver.py"), *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for_lines(run_dir: Path, count: int, process: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    log = run_dir / "metrics.jsonl"
    while time.time() < deadline:
        if log.exists() and log.read_text().count("\n") >= count:
            return
        assert process.poll() is None, process.communicate()
        time.sleep(0.02)
    raise TimeoutError(f"{log} did not reach {count} lines")


def assert_same_run(run_dir: Path, straight) -> None:
    """Same metrics (every value but timings, bit for bit), same final adapter and optimizer state."""
    rows, final = straight
    got = read_metrics(run_dir)
    assert [r["step"] for r in got] == [r["step"] for r in rows]
    for a, b in zip(got, rows):
        assert {k: v for k, v in a.items() if k not in TIMING_KEYS} == {k: v for k, v in b.items() if k not in TIMING_KEYS}
    assert any(r["grad_norm"] > 0 for r in rows)  # the runs did update the adapter
    mine = latest_checkpoint(run_dir)
    assert mine.name == final.name
    a, b = load_file(mine / "adapter" / "adapter_model.safetensors"), load_file(final / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    opt_a = torch.load(mine / "trainer_state.pt", weights_only=False)["optimizer"]["state"]
    opt_b = torch.load(final / "trainer_state.pt", weights_only=False)["optimizer"]["state"]
    assert all(torch.equal(opt_a[i][k], opt_b[i][k]) for i in opt_b for k in ("exp_avg", "exp_avg_sq"))
    assert sorted(p.name for p in run_dir.iterdir() if p.name.startswith((".tmp", ".trash", "checkpoint-"))) == [final.name]


# ---- kills -------------------------------------------------------------------------------------------
def test_a_run_killed_writing_its_first_checkpoint_restarts_to_the_uninterrupted_result(run_setup, straight, varied_rewards, tmp_path):
    # metrics.jsonl holds step 1 but no checkpoint does: the old code logged step 1 twice after a restart
    run_dir = tmp_path / "run"
    process = start(run_setup, "train", "--config", str(run_setup[0]), f"output_dir={run_dir}", kill_at="first-state-write")
    process.communicate(timeout=600)
    assert process.returncode == -signal.SIGKILL and (run_dir / ".tmp-checkpoint-1").exists()
    Trainer(config_for(run_setup, run_dir), resume=True).train()
    assert_same_run(run_dir, straight)


def test_sigkill_while_deleting_an_old_checkpoint_then_resume_equals_an_uninterrupted_run(run_setup, straight, varied_rewards, tmp_path):
    # the old code left the deleted checkpoint half-deleted for good
    run_dir = tmp_path / "run"
    process = start(run_setup, "train", "--config", str(run_setup[0]), f"output_dir={run_dir}", kill_at="pruning")
    process.communicate(timeout=600)
    assert process.returncode == -signal.SIGKILL
    assert main(["train", "--resume", f"output_dir={run_dir}"]) == 0  # no --config: the run's own
    assert_same_run(run_dir, straight)


# ---- the lock ----------------------------------------------------------------------------------------
def test_a_second_run_on_a_locked_run_dir_is_refused_until_the_holder_dies(run_setup, tmp_path, capsys):
    run_dir = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", f"from icrl_lite.checkpoints import RunLock; "
                               f"RunLock({str(run_dir)!r}).acquire(); print('locked', flush=True); "
                               f"import time; time.sleep(300)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert main(["train", "--config", str(run_setup[0]), f"output_dir={run_dir}"]) == 2
        err = capsys.readouterr().err
        assert f"in use by another run (pid {holder.pid} " in err and "output_dir=" in err
        assert sorted(p.name for p in run_dir.iterdir()) == [".lock"]  # the refused run wrote nothing
    finally:
        holder.kill()
        holder.wait()
    RunLock(run_dir).acquire().release()  # the kernel dropped the lock of the killed holder


def test_in_one_process_a_newer_trainer_takes_the_lock_and_the_older_cannot_train(run_setup, tmp_path):
    cfg = config_for(run_setup, tmp_path / "run", "stages=[{demos: 0, steps: 1}]")
    older = Trainer(cfg)  # e.g. abandoned in a notebook
    Trainer(cfg).train()
    with pytest.raises(RunDirLocked, match="newer Trainer"):
        older.train()


# ---- Ctrl-C ------------------------------------------------------------------------------------------
def test_ctrl_c_stops_without_a_traceback_and_prints_the_resume_command(run_setup, tmp_path):
    run_dir = tmp_path / "run"
    process = start(run_setup, "train", "--config", str(run_setup[0]), f"output_dir={run_dir}",
                    "stages=[{demos: 0, steps: 200}]")
    wait_for_lines(run_dir, 1, process)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    latest = latest_checkpoint(run_dir)  # None if the signal came before step 1 was logged
    assert f"A resume continues from {latest.name if latest else 'step 0'}" in err
    assert f"icrl-lite train --resume output_dir={run_dir}\n" in err
    assert not list(run_dir.glob(".tmp-*"))
    steps = [r["step"] for r in read_metrics(run_dir)]
    assert steps == list(range(1, len(steps) + 1))


def test_ctrl_c_saves_a_finished_step_on_the_way_out_and_never_a_step_half_done(run_setup, tmp_path, monkeypatch, capsys):
    cfg = config_for(run_setup, tmp_path / "run", "stages=[{demos: 0, steps: 2}]", "save_every=2")
    trainer = Trainer(cfg)
    real_step, real_save = Trainer.step, Trainer.save

    def interrupted_in_step_two(self):
        if self.step_index == 1:  # step 1 is finished and logged; step 2 is under way
            raise KeyboardInterrupt
        return real_step(self)

    monkeypatch.setattr(Trainer, "step", interrupted_in_step_two)
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    assert "interrupted during step 2 of 2. A resume continues from step 0" in capsys.readouterr().err
    assert latest_checkpoint(cfg.output_dir) is None

    calls = iter([KeyboardInterrupt, None])

    def save_interrupted_once(self):
        if next(calls) is KeyboardInterrupt:  # Ctrl-C while checkpoint-2 is being written: step 2 is finished
            raise KeyboardInterrupt
        return real_save(self)

    monkeypatch.setattr(Trainer, "step", real_step)
    monkeypatch.setattr(Trainer, "save", save_interrupted_once)
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    assert "A resume continues from checkpoint-2 (saved just now)" in capsys.readouterr().err
    assert latest_checkpoint(cfg.output_dir).name == "checkpoint-2"


# ---- resume takes the run's config -------------------------------------------------------------------
def test_resume_without_config_continues_under_the_runs_config_and_names_overrides(run_setup, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["train", "--config", str(run_setup[0]), f"output_dir={run_dir}", "stages=[{demos: 0, steps: 1}]"]) == 0
    saved = (run_dir / "config.yaml").read_text()
    capsys.readouterr()

    assert main(["train", "--resume", f"output_dir={run_dir}"]) == 0  # finished: nothing to train
    assert (run_dir / "config.yaml").read_text() == saved  # not replaced by the default config
    assert "[icrl-lite] warning" not in capsys.readouterr().err

    assert main(["train", "--resume", f"output_dir={run_dir}", "learning_rate=0.0001"]) == 0
    err = capsys.readouterr().err
    assert "[icrl-lite] warning" in err and f"learning_rate: {TrainConfig().learning_rate} -> 0.0001" in err
    changed = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert changed["learning_rate"] == 0.0001 and changed["stages"] == [{"demos": 0, "steps": 1}]


def test_a_fresh_start_after_a_crash_before_any_checkpoint_logs_from_step_one(run_setup, tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text(json.dumps({"step": 1, "reward": 0.0}) + "\n")  # no checkpoint holds it
    Trainer(config_for(run_setup, run_dir, "stages=[{demos: 0, steps: 1}]")).train()
    assert [r["step"] for r in read_metrics(run_dir)] == [1]
