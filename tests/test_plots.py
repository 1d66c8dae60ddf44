"""Plots of a run's metrics.jsonl: the training curves and the tool-use health monitor, through the CLI too."""

from __future__ import annotations

import json

import pytest

from icrl_lite.cli import main
from icrl_lite.plots import calls_at, plot_health, pushed_up_right

ROWS = [  # a run's metrics, as the trainer writes them (per-hop keys only on steps that drew both hop counts)
    {"step": 1, "demos": 3, "reward": 0.2, "em": 0.0, "searches": 1.0, "format": 0.9, "response_tokens": 80.0,
     "no_spread_groups": 0.5, "spread/em": 0.0, "spread/format": 0.1, "pushed_up_correct": 0, "pushed_up_wrong": 4,
     "closed_book": 0.0, "repeated_calls": 0.0, "invalid_turns": 0.2, "searches@1hop": 1.0, "searches@2hop": 1.0,
     "em@1hop": 0.0, "em@2hop": 0.0, "questions@1hop": 2.0, "questions@2hop": 2.0},
    {"step": 2, "demos": 0, "reward": 0.5, "em": 0.4, "searches": 1.5, "format": 1.0, "response_tokens": 70.0,
     "no_spread_groups": 0.25, "spread/em": 0.4, "spread/format": 0.0, "pushed_up_correct": 3, "pushed_up_wrong": 1,
     "closed_book": 0.1, "repeated_calls": 0.5, "invalid_turns": 0.0},
]


@pytest.fixture
def run_dir(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return tmp_path


def test_health_values_come_from_the_right_keys():
    assert pushed_up_right(ROWS[0]) == 0.0 and pushed_up_right(ROWS[1]) == 0.75
    assert pushed_up_right({"pushed_up_correct": 0, "pushed_up_wrong": 0}) is None  # nothing pushed up
    assert calls_at(ROWS[0], 2) == 1.0 and calls_at(ROWS[1], 2) is None  # the step drew no 2-hop question
    assert calls_at({"em@1hop": 1.0, "questions@1hop": 3.0, "repeated_calls@1hop": 2.0}, 1) is None  # not tool calls
    assert calls_at({"searches@1hop": 1.0, "python_calls@1hop": 2.0}, 1) == 3.0


def test_plot_health_writes_a_png_beside_the_run(run_dir):
    out = plot_health(run_dir)
    assert out == run_dir / "health.png" and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_plot_command_draws_the_curves_and_the_health(run_dir, tmp_path, capsys):
    assert main(["plot", str(run_dir), "--output", str(tmp_path / "mine.png")]) == 0
    assert capsys.readouterr().out.split() == [str(tmp_path / "mine.png"), str(tmp_path / "mine-health.png")]
    assert (tmp_path / "mine.png").stat().st_size > 1000 and (tmp_path / "mine-health.png").stat().st_size > 1000
