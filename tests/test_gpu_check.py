"""benchmarks/gpu_check.py on a CPU: its dry run trains and measures through the code scripts/gpu_check.sh runs on
a GPU, and the report carries every number the check promises; without CUDA the real check stops, saying so."""

from __future__ import annotations

import json

import torch

from benchmarks.gpu_check import main


def test_the_dry_run_reports_step_time_tokens_per_s_peak_memory_and_the_estimate(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the run's process: a tiny model is fastest on one thread
    code = main(["--device", "cpu", "--dry-run", "--runs", "4bit,qwen3b", "--steps", "1", "--output", str(tmp_path)])
    report = json.loads((tmp_path / "report.json").read_text())
    run = report["runs"]["qwen3b"]
    assert code == 0 and run["status"] == "ok", run.get("log_tail")
    assert run["finite"] and len(run["steps"]) == 1
    assert run["step_seconds"] > 0 and run["tokens_per_s"] > 0
    assert run["memory"]["peak_bytes"] > 0 and run["memory"]["estimate_bytes"] > 0
    assert run["memory"]["longest_prompt_tokens"] > 0
    assert run["decode"]["tokens_per_s"] > 0 and run["decode"]["fraction_of_bound"] > 0
    assert report["runs"]["4bit"]["status"] == "skipped"  # bitsandbytes trains 4-bit layers on CUDA only
    assert "| qwen3b |" in (tmp_path / "report.md").read_text()


def test_the_check_without_cuda_fails_saying_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["--output", str(tmp_path)]) == 2
    assert "CUDA is not available" in capsys.readouterr().err
    assert not (tmp_path / "report.json").exists()
