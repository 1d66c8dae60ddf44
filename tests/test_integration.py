"""End to end on the real embedded model: `icrl-lite train` with a tiny budget, then `icrl-lite eval` of its run."""

from __future__ import annotations

import json

import pytest

from icrl_lite.cli import main


@pytest.mark.integration
def test_train_then_eval_with_the_cli(tmp_path, capsys):
    run, records = tmp_path / "run", tmp_path / "eval.jsonl"
    budget = ["rollout.max_turns=1", "rollout.max_turn_tokens=48", "rollout.max_response_tokens=160"]
    code = main(["train", "--config", "smoke", f"output_dir={run}", "stages=[{demos: 1, steps: 1}, {demos: 0, steps: 1}]",
                 "eval_every=0", "progress=false", "prompts_per_step=2", "num_generations=2", "check_demo_budgets=false",
                 "final_eval_size=2", *budget])
    assert code == 0, capsys.readouterr().err
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
    assert (run / "checkpoint-2" / "adapter" / "adapter_config.json").exists()

    code = main(["eval", "--checkpoint", str(run), "--limit", "2", "--output", str(records), *budget])
    assert code == 0, capsys.readouterr().err
    rows = [json.loads(line) for line in records.read_text().splitlines()]
    assert len(rows) == 2
    assert all(isinstance(r["trajectory"], str) and r["trajectory"].strip() for r in rows)
    assert "EM " in capsys.readouterr().out
