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


@pytest.mark.integration
def test_the_papers_pipeline_at_cpu_size(tmp_path, capsys):
    """The path a GPU user takes to the papers' table, at CPU size: Search-R1's NQ + HotpotQA training mix (FlashRAG
    fixture files), a Wikipedia-style corpus in the disk store, SmolLM2, one training step, then `eval qa7` of the
    run on all seven datasets' fixtures."""
    from pathlib import Path

    flashrag = Path(__file__).parent / "fixtures" / "flashrag"
    corpus = tmp_path / "wiki.jsonl"  # a copy: the disk store and index are written beside the corpus
    corpus.write_text((flashrag / "wiki-mini.jsonl").read_text())
    run = tmp_path / "run"
    budget = ["rollout.max_turns=2", "rollout.max_turn_tokens=32", "rollout.max_response_tokens=96"]
    code = main(["train", "--config", "smoke", f"output_dir={run}", "stages=[{demos: 0, steps: 1}]", "eval_every=0",
                 "progress=false", "prompts_per_step=2", "num_generations=2", "check_demo_budgets=false",
                 "final_eval=", f"corpus={corpus}", "search.store=disk",
                 f"train_data={flashrag / 'nq' / 'train.jsonl'}+{flashrag / 'hotpotqa' / 'train.jsonl'}", *budget])
    assert code == 0, capsys.readouterr().err
    assert (corpus.parent / "wiki.jsonl.store.sqlite").exists()  # searched from the disk store
    code = main(["eval", "qa7", "--checkpoint", str(run), "--source", str(flashrag), "--corpus", str(corpus),
                 "--limit", "1", "search.store=disk", *budget])
    out = capsys.readouterr().out
    assert code == 0, out
    table = (run / "checkpoint-1" / "qa7-0shot" / "qa7.md").read_text()
    assert table.splitlines()[4].startswith("| questions | 1 | 1 | 1 | 1 | 1 | 1 | 1 |")
    assert "| Method | NQ | TriviaQA | PopQA | HotpotQA | 2Wiki | MuSiQue | Bamboogle |" in out
