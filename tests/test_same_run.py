"""scripts/same_run.py: two runs are the same when every record but its timings is equal."""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("same_run", ROOT / "scripts" / "same_run.py")
same_run = importlib.util.module_from_spec(spec)
spec.loader.exec_module(same_run)


def write_run(folder: Path, loss: float, step_seconds: float, text: str = "<answer>x</answer>") -> Path:
    folder.mkdir()
    rows = [{"step": 1, "loss": loss, "step_seconds": step_seconds, "gen_tokens_per_s": 1 / step_seconds}]
    (folder / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (folder / "samples.jsonl").write_text(json.dumps({"step": 1, "text": text}) + "\n")
    (folder / "summary.json").write_text(json.dumps({"em": 0.25, "eval_seconds": step_seconds}))
    return folder


def test_runs_that_differ_only_in_timings_are_the_same(tmp_path, capsys):
    a, b = write_run(tmp_path / "a", -0.5, 10.0), write_run(tmp_path / "b", -0.5, 31.0)
    assert same_run.main([str(a), str(b)]) == 0
    assert "3 records equal, 0 differences" in capsys.readouterr().out


def test_a_different_loss_or_sample_or_missing_file_is_reported(tmp_path, capsys):
    a = write_run(tmp_path / "a", -0.5, 10.0)
    b = write_run(tmp_path / "b", -0.5000001, 10.0, text="<answer>y</answer>")
    (b / "summary.json").unlink()
    assert same_run.main([str(a), str(b)]) == 1
    out = capsys.readouterr().out
    assert "metrics.jsonl record 1: differs in loss" in out
    assert "samples.jsonl record 1: differs in text" in out
    assert "summary.json: only in" in out


def test_ignored_keys_are_left_out_at_any_depth(tmp_path, capsys):
    a, b = write_run(tmp_path / "a", -0.5, 10.0), write_run(tmp_path / "b", -0.5, 10.0)
    (a / "final_eval.json").write_text('{"eval": {"source": "/clone-a/data/qa/test.jsonl", "em": 0.1}}')
    (b / "final_eval.json").write_text('{"eval": {"source": "/clone-b/data/qa/test.jsonl", "em": 0.1}}')
    assert same_run.main([str(a), str(b)]) == 1
    assert "final_eval.json record 1: differs in eval" in capsys.readouterr().out
    assert same_run.main([str(a), "--ignore", "source", str(b)]) == 0
