"""Run directories on disk: atomic checkpoints, crash-safe pruning, repair of what a kill leaves, metrics trimming,
and one-line errors for damaged adapters and trainer states. No model: the files are written by hand."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from icrl_lite import checkpoints
from icrl_lite.checkpoints import (RunDirLocked, RunLock, check_adapter, latest_checkpoint, load_trainer_state,
                                   repair_run_dir, resolve_checkpoint, save_checkpoint, trim_metrics)


def write_files(staging: Path) -> None:
    """What Trainer.save writes, in miniature."""
    (staging / "adapter").mkdir()
    (staging / "adapter" / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2}))
    save_file({"base_model.model.layer.lora_A.weight": torch.zeros(2, 2)}, staging / "adapter" / "adapter_model.safetensors")
    torch.save({"step": int(staging.name.rsplit("-", 1)[1])}, staging / "trainer_state.pt")
    (staging / "config.yaml").write_text("seed: 0\n")


def make_run(run: Path, steps: list[int], keep: int = 10) -> None:
    for step in steps:
        save_checkpoint(run, step, write_files, keep)


def names(run: Path) -> list[str]:
    return sorted(p.name for p in run.iterdir())


def test_save_writes_complete_checkpoints_names_the_latest_and_prunes(tmp_path):
    make_run(tmp_path, [1, 2, 3], keep=2)
    assert names(tmp_path) == ["checkpoint-2", "checkpoint-3", "latest"]  # no staging, trash or pointer temp left
    assert (tmp_path / "latest").read_text().strip() == "checkpoint-3"
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-3"


def test_a_kill_while_pruning_never_leaves_a_half_deleted_checkpoint_under_its_name(tmp_path, monkeypatch):
    make_run(tmp_path, [1, 2], keep=2)
    real_rmtree = shutil.rmtree

    def killed_midway(path, *args, **kwargs):
        (Path(path) / "trainer_state.pt").unlink()  # rmtree got this far...
        raise KeyboardInterrupt  # ...when the process died

    monkeypatch.setattr(shutil, "rmtree", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, 3, write_files, keep=2)
    monkeypatch.setattr(shutil, "rmtree", real_rmtree)
    assert not (tmp_path / "checkpoint-1").exists()
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-3"
    repair_run_dir(tmp_path)
    assert names(tmp_path) == ["checkpoint-2", "checkpoint-3", "latest"]


def test_repair_removes_staging_trash_and_incomplete_checkpoints_and_fixes_latest(tmp_path):
    make_run(tmp_path, [1, 2, 3])
    (tmp_path / "checkpoint-3" / "trainer_state.pt").unlink()  # half-deleted by an older version
    (tmp_path / ".tmp-checkpoint-4" / "adapter").mkdir(parents=True)  # killed while writing checkpoint-4
    (tmp_path / ".trash-checkpoint-0").mkdir()  # killed while deleting checkpoint-0
    (tmp_path / ".latest.tmp").write_text("checkpoint-4")
    notes = repair_run_dir(tmp_path)
    assert names(tmp_path) == ["checkpoint-1", "checkpoint-2", "latest"]
    assert (tmp_path / "latest").read_text().strip() == "checkpoint-2"
    assert any("checkpoint-3" in n for n in notes) and any(".tmp-checkpoint-4" in n for n in notes)


def test_latest_checkpoint_skips_incomplete_ones_whatever_the_pointer_says(tmp_path):
    make_run(tmp_path, [1, 2])
    shutil.rmtree(tmp_path / "checkpoint-2" / "adapter")
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-1"
    (tmp_path / "checkpoint-1" / "trainer_state.pt").unlink()
    assert latest_checkpoint(tmp_path) is None


def test_repair_with_no_checkpoint_left_removes_the_pointer(tmp_path):
    make_run(tmp_path, [1])
    (tmp_path / "checkpoint-1" / "trainer_state.pt").unlink()
    repair_run_dir(tmp_path)
    assert names(tmp_path) == []


def metrics_lines(steps: list[int]) -> str:
    return "".join(json.dumps({"step": s, "reward": 0.5}) + "\n" for s in steps)


def test_trim_metrics_keeps_the_steps_of_the_checkpoint_and_drops_a_line_cut_short(tmp_path):
    log = tmp_path / "metrics.jsonl"
    log.write_text(metrics_lines([1, 2, 3, 4]) + '{"step": 5, "rew')
    assert "3, 4" in trim_metrics(tmp_path, 2)
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1, 2]
    assert trim_metrics(tmp_path, 2) is None  # already agrees


def test_trim_metrics_without_a_checkpoint_empties_the_log(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(metrics_lines([1]))
    trim_metrics(tmp_path, 0)
    assert (tmp_path / "metrics.jsonl").read_text() == ""


@pytest.mark.parametrize("damage, named", [
    (lambda a: (a / "adapter_config.json").write_text("{not json"), "adapter_config.json"),
    (lambda a: (a / "adapter_config.json").write_text('{"foo": 1}'), "adapter_config.json"),
    (lambda a: (a / "adapter_model.safetensors").write_bytes(b"\x00garbage" * 10), "adapter_model.safetensors"),
    (lambda a: save_file({"w": torch.zeros(1)}, a / "adapter_model.safetensors"), "adapter_model.safetensors"),
    (lambda a: (a / "adapter_model.safetensors").unlink(), "adapter_model.safetensors"),
])
def test_a_damaged_adapter_is_one_error_naming_the_file(tmp_path, damage, named):
    make_run(tmp_path, [1])
    adapter = tmp_path / "checkpoint-1" / "adapter"
    check_adapter(adapter)
    damage(adapter)
    with pytest.raises(ValueError, match=named):
        check_adapter(adapter)


def test_resolve_checkpoint_checks_the_adapter_of_a_bare_adapter_dir(tmp_path):
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text("garbage")
    with pytest.raises(ValueError, match="adapter_config.json"):
        resolve_checkpoint(tmp_path)


def test_a_damaged_trainer_state_is_one_error_naming_the_file_and_the_fix(tmp_path):
    make_run(tmp_path, [1])
    (tmp_path / "checkpoint-1" / "trainer_state.pt").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"trainer_state.pt is unreadable.*delete"):
        load_trainer_state(tmp_path / "checkpoint-1")


def test_a_trainer_state_saved_on_a_gpu_loads_on_a_cpu(tmp_path, monkeypatch):
    import torch
    import torch.serialization

    make_run(tmp_path, [1])
    monkeypatch.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")  # as a CUDA run saves it
    torch.save({"step": 1, "optimizer": {"exp_avg": torch.ones(3)}}, tmp_path / "checkpoint-1" / "trainer_state.pt")
    monkeypatch.undo()
    state = load_trainer_state(tmp_path / "checkpoint-1")
    assert state["step"] == 1 and state["optimizer"]["exp_avg"].device.type == "cpu"


def test_a_lock_taken_over_in_this_process_never_acquires_again(tmp_path):
    # an abandoned Trainer's view of the run is stale: it must not train on after a newer one did
    older = RunLock(tmp_path).acquire(take_over=True)
    newer = RunLock(tmp_path).acquire(take_over=True)
    assert older.file is None and newer.file is not None
    newer.release()
    with pytest.raises(RunDirLocked, match="newer Trainer"):
        older.acquire()
    newer.acquire().release()


def test_checkpoints_module_imports_without_torch():
    # the lock and the repair run before any model work; a process that only locks stays light
    import subprocess
    import sys

    code = f"import sys; sys.path.insert(0, {str(Path(checkpoints.__file__).parent.parent)!r}); " \
           "import icrl_lite.checkpoints; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
