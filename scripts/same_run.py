"""Whether two training runs computed the same thing: every record of their metrics, samples and evaluation files
equal, timings aside. Proof that a refactor left behaviour unchanged: run the same command on the commit before and
after it (the same machine and thread count), then

    python scripts/same_run.py runs/before runs/after [--ignore KEY ...]

prints what differs and exits 1, or says how many records matched and exits 0. `--ignore source` skips keys that
name the checkout the run read its data from (two clones: the same files at different paths).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

TIMING = ("seconds", "tok_s", "tokens_per_s", "time", "elapsed", "memory", "peak")  # keys that may differ run to run


def comparable(record, ignore: tuple[str, ...] = ()):
    if isinstance(record, dict):
        return {k: comparable(v, ignore) for k, v in record.items() if not any(t in k for t in TIMING) and k not in ignore}
    if isinstance(record, list):
        return [comparable(v, ignore) for v in record]
    return record


def records(path: Path, ignore: tuple[str, ...] = ()) -> list:
    if path.suffix == ".jsonl":
        return [comparable(json.loads(line), ignore) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [comparable(json.loads(path.read_text(encoding="utf-8")), ignore)]


def differences(before: Path, after: Path, ignore: tuple[str, ...] = ()) -> tuple[list[str], int]:
    names = sorted({p.name for d in (before, after) for p in d.iterdir() if p.suffix in (".jsonl", ".json")})
    problems, matched = [], 0
    for name in names:
        if not (before / name).exists() or not (after / name).exists():
            problems.append(f"{name}: only in {before if (before / name).exists() else after}")
            continue
        a, b = records(before / name, ignore), records(after / name, ignore)
        if len(a) != len(b):
            problems.append(f"{name}: {len(a)} vs {len(b)} records")
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                keys = sorted(k for k in set(x) | set(y) if x.get(k) != y.get(k)) if isinstance(x, dict) else ["(value)"]
                problems.append(f"{name} record {i + 1}: differs in {', '.join(keys[:8])}")
            else:
                matched += 1
    return problems, matched


def main(argv: list[str]) -> int:
    ignore = tuple(argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "--ignore")
    runs = [arg for i, arg in enumerate(argv) if arg != "--ignore" and (i == 0 or argv[i - 1] != "--ignore")]
    if len(runs) != 2:
        print(__doc__)
        return 2
    before, after = map(Path, runs)
    for d in (before, after):
        if not d.is_dir():
            print(f"{d} is not a run directory")
            return 2
    problems, matched = differences(before, after, ignore)
    for problem in problems:
        print(problem)
    print(f"{matched} records equal, {len(problems)} differences")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
