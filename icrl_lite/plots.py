"""Plot a run's metrics.jsonl: reward, accuracy, tool calls, response length, with curriculum stages shaded, and the
tool-use health monitor (where the reward's spread comes from, guessing, repeated and failed calls, length drift)."""

from __future__ import annotations

import json
from pathlib import Path

PANELS = (("reward", "reward"), ("em", "accuracy (exact match)"), ("searches", "searches / rollout"),
          ("python_calls", "python calls / rollout"), ("format", "format score"),
          ("response_tokens", "sampled tokens / rollout"))


def read_metrics(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: point at a run directory written by `icrl-lite train`")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_run(run_dir: str | Path, output: str | Path | None = None) -> Path:
    """Write a PNG of the run's training curves (default: <run_dir>/curves.png) and return its path."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("plotting needs matplotlib: pip install 'icrl-lite[plot]'") from None
    rows = read_metrics(run_dir)
    steps = [r["step"] for r in rows]
    panels = [(key, title) for key, title in PANELS if key in rows[0]][:4]  # the task's tool and score panels
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2))
    for ax, (key, title) in zip(axes, panels):
        ax.plot(steps, [r[key] for r in rows], marker=".", label="train rollouts")
        evals = [(r["step"], r[f"eval/{key}"]) for r in rows if f"eval/{key}" in r]
        if evals:
            ax.plot(*zip(*evals), "s--", label="dev, zero-shot greedy")
        for step, row in zip(steps, rows):  # shade by demos in the prompt
            ax.axvspan(step - 0.5, step + 0.5, color=("C1", "C2", "C3", "C4")[min(row["demos"], 3)], alpha=0.06 * (1 + row["demos"]), lw=0)
        ax.set_title(title)
        ax.set_xlabel("step (shade: demos in prompt)")
    for ax in axes:
        if len(ax.get_lines()) > 1:
            ax.legend(fontsize=7)
            break
    else:
        axes[0].legend(fontsize=7)
    fig.tight_layout()
    out = Path(output) if output else Path(run_dir) / "curves.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def pushed_up_right(row: dict) -> float | None:
    """The share of a step's pushed-up rollouts (those whose probability the update raises) with the right answer."""
    right, wrong = row.get("pushed_up_correct"), row.get("pushed_up_wrong")
    return right / (right + wrong) if right is not None and wrong is not None and right + wrong else None


def calls_at(row: dict, hops: int) -> float | None:
    """Tool calls per rollout on the step's questions needing `hops` hops (None where the step had none)."""
    values = [v for k, v in row.items() if k.endswith(f"@{hops}hop") and is_tool_metric(k.split("@")[0])]
    return sum(values) if values else None


# the health monitor's panels: title, then (label, value of a metrics row or None where the row lacks it)
HEALTH_PANELS = (
    ("where the reward's spread comes from", (
        ("groups without spread (share)", lambda r: r.get("no_spread_groups")),
        ("correctness spread (within group)", lambda r: r.get("spread/em")),
        ("format spread (within group)", lambda r: r.get("spread/format")))),
    ("answers", (
        ("right answer (share of rollouts)", lambda r: r.get("em")),
        ("right among pushed-up rollouts", pushed_up_right),
        ("right without the answer retrieved", lambda r: r.get("closed_book")),
        ("answer = a query (entity copied)", lambda r: r.get("answer_is_query")))),
    ("tool use", (
        ("calls, 1-hop questions", lambda r: calls_at(r, 1)),
        ("calls, 2-hop questions", lambda r: calls_at(r, 2)),
        ("repeated identical calls", lambda r: r.get("repeated_calls")),
        ("invalid turns (parse failures)", lambda r: r.get("invalid_turns")))),
    ("length", (("sampled tokens / rollout", lambda r: r.get("response_tokens")),)),
)


def plot_health(run_dir: str | Path, output: str | Path | None = None) -> Path:
    """Write a PNG of the run's tool-use health per step (default: <run_dir>/health.png) and return its path:
    the share of groups without reward spread and the within-group spread of correctness vs format; right answers
    overall, among the rollouts the update pushes up, and without the answer in any tool result (guessing); tool
    calls by hop count, repeated calls and invalid turns; sampled tokens per rollout."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("plotting needs matplotlib: pip install 'icrl-lite[plot]'") from None
    rows = read_metrics(run_dir)
    fig, axes = plt.subplots(1, len(HEALTH_PANELS), figsize=(4.2 * len(HEALTH_PANELS), 3.4))
    for ax, (title, curves) in zip(axes, HEALTH_PANELS):
        for label, value in curves:
            points = [(r["step"], v) for r in rows if (v := value(r)) is not None]
            if points:
                ax.plot(*zip(*points), marker=".", label=label)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        if ax.get_lines():
            ax.legend(fontsize=6)
    fig.tight_layout()
    out = Path(output) if output else Path(run_dir) / "health.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def tool_calls(row: dict) -> float:
    """Tool calls per rollout in a metrics row: the sum of its per-tool counts (searches, python_calls, ...)."""
    return float(sum(v for k, v in row.items() if is_tool_metric(k)))


def is_tool_metric(key: str) -> bool:
    """Whether a metrics key counts tool calls (searches, python_calls, ...; not repeated_calls)."""
    from .tasks import TOOL_METRICS

    return key != "repeated_calls" and (key in TOOL_METRICS.values() or key.endswith("_calls"))


def plot_overlay(runs: dict[str, list[str | Path]], output: str | Path) -> Path:
    """Overlay several arms' training curves (each arm: its seeds' run dirs): reward and tool calls per rollout vs step.

    One colour per arm: the mean over seeds as a thick line, each seed as a thin one.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("plotting needs matplotlib: pip install 'icrl-lite[plot]'") from None
    panels = (("reward", "reward", lambda r: r["reward"]), ("tool_calls", "tool calls / rollout", tool_calls))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.4))
    for colour, (arm, run_dirs) in enumerate(runs.items()):
        curves = [read_metrics(d) for d in run_dirs]
        for ax, (_, title, value) in zip(axes, panels):
            for rows in curves if len(curves) > 1 else []:
                ax.plot([r["step"] for r in rows], [value(r) for r in rows], color=f"C{colour}", lw=0.6, alpha=0.5)
            steps = min(len(rows) for rows in curves)  # the mean over seeds where every seed has the step
            mean = [sum(value(rows[i]) for rows in curves) / len(curves) for i in range(steps)]
            ax.plot([r["step"] for r in curves[0][:steps]], mean, color=f"C{colour}", lw=2, marker=".", label=arm)
            ax.set_title(title)
            ax.set_xlabel("step")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    out = Path(output)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
