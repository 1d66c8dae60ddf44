"""No-search baselines on the bundled QA task (data/qa/): what a model scores by memorising train answers.

Two baselines, fitted on train.jsonl only and scored on dev and test (EM: SQuAD-normalised exact match
against any gold answer, icrl_lite.rewards.exact_match):

- majority: for each question template (the question with its subject name replaced by a placeholder; the
  `relation` field names it), predict the most common train answer of that template.
- memorised: a lookup from every train question's final fact (its last entity and the attribute read there)
  and from its question text to its answer; predict the memorised answer when a question's final fact (or,
  failing that, its text) was seen in train, else nothing.

A split built by fact graph (no entity shared with train) leaves `memorised` at 0 and `majority` at what
guessing the commonest value of each template gets. Prints a Markdown table; `--json PATH` writes the numbers.

    python scripts/qa_baselines.py [--data-dir data/qa] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing the package

from icrl_lite.rewards import exact_match  # noqa: E402

DATA_DIR = ROOT / "data" / "qa"
EVAL_SPLITS = ("dev", "test")


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def template(q: dict) -> str:
    """The question's template: its `relation` field, or the question text with the subject replaced by {s}."""
    return q.get("relation") or q["question"].replace(q["entities"][0], "{s}")


def final_fact(q: dict) -> tuple[str, str]:
    """(last entity, final attribute): e.g. ("Velmlow", "town.river") for "person.birthplace>town.river"."""
    return q["entities"][-1], q["relation"].split(">")[-1]


def majority_baseline(train: list[dict]):
    """A predictor: the commonest train answer (first alias) of the question's template; "" for unseen templates."""
    counts: dict[str, Counter] = {}
    for q in train:
        counts.setdefault(template(q), Counter())[q["answers"][0]] += 1
    best = {key: c.most_common(1)[0][0] for key, c in counts.items()}
    return lambda q: best.get(template(q), "")


def memorised_baseline(train: list[dict]):
    """A predictor: the train answer of the same final fact, else of the same question text, else ""."""
    by_fact = {final_fact(q): q["answers"][0] for q in train}
    by_text = {q["question"]: q["answers"][0] for q in train}
    return lambda q: by_fact.get(final_fact(q), by_text.get(q["question"], ""))


BASELINES = {"majority": majority_baseline, "memorised": memorised_baseline}


def score(predict, questions: list[dict]) -> dict[str, float | int]:
    """EM overall and by hop count, with the number of questions in each."""
    hits = {q["id"]: exact_match(predict(q), q["answers"]) for q in questions}
    out: dict[str, float | int] = {}
    for label, group in (("all", questions), ("1-hop", [q for q in questions if q["hops"] == 1]),
                         ("2-hop", [q for q in questions if q["hops"] == 2])):
        out[f"em_{label}"] = round(sum(hits[q["id"]] for q in group) / len(group), 4) if group else 0.0
        out[f"n_{label}"] = len(group)
    return out


def run(data_dir: Path = DATA_DIR) -> dict[str, dict[str, dict]]:
    """{split: {baseline: scores}} for dev and test, every baseline fitted on train."""
    train = read_jsonl(data_dir / "train.jsonl")
    predictors = {name: make(train) for name, make in BASELINES.items()}
    return {split: {name: score(predict, read_jsonl(data_dir / f"{split}.jsonl"))
                    for name, predict in predictors.items()} for split in EVAL_SPLITS}


def table(results: dict[str, dict[str, dict]]) -> str:
    rows = ["| split | baseline | EM all | EM 1-hop | EM 2-hop | questions (1-hop / 2-hop) |",
            "|---|---|---|---|---|---|"]
    for split, by_name in results.items():
        for name, s in by_name.items():
            rows.append(f"| {split} | {name} | {s['em_all']:.3f} | {s['em_1-hop']:.3f} | {s['em_2-hop']:.3f} | "
                        f"{s['n_all']} ({s['n_1-hop']} / {s['n_2-hop']}) |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR, help="folder with train/dev/test.jsonl")
    parser.add_argument("--json", type=Path, help="also write the numbers to this JSON file")
    args = parser.parse_args(argv)
    results = run(args.data_dir)
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
