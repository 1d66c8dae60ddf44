"""Per-stage means of a run's metrics.jsonl (the tables in docs/results.md).

    python scripts/summarize_run.py runs/fc [reward format correctness exact parse_error ...]
"""

from __future__ import annotations

import json
import statistics
import sys
from itertools import groupby
from pathlib import Path

DEFAULT = ["reward", "format", "correctness", "exact", "parse_error", "name_jaccard", "reward_std"]


def main() -> None:
    run, keys = Path(sys.argv[1]), sys.argv[2:] or DEFAULT
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    print("| stage | steps | " + " | ".join(keys) + " | informative groups | median step s |")
    print("|---" * (len(keys) + 4) + "|")
    for demos, group in groupby(rows, key=lambda r: r["demos"]):
        group = list(group)
        means = [f"{statistics.mean(r.get(k, 0.0) for r in group):.2f}" for k in keys]
        informative = f"{sum(r['informative_groups'] for r in group)} of {sum(r['groups'] for r in group)}"
        steps = f"{group[0]['step']}-{group[-1]['step']}"
        median = statistics.median(r["step_seconds"] for r in group)
        print(f"| {demos} demos | {steps} | " + " | ".join(means) + f" | {informative} | {median:.0f} |")
    evals = {k: v for k, v in rows[-1].items() if k.startswith("eval/")}
    if evals:
        print("\nlast evaluation: " + ", ".join(f"{k[5:]} {v:.3f}" for k, v in sorted(evals.items())))


if __name__ == "__main__":
    main()
