"""Does the untrained model search a second time on two-hop questions? The base model, greedy, with 3 two-hop demos
of the bundled pool (one set for all questions), on the first N two-hop questions of the bundled dev split, with
and without `rollout.after_observation` ("<think>" forced after every search result). Prints searches per
question, EM and one trajectory each; the numbers behind the *-think arms of the qa-learn study.

    python scripts/probe_second_search.py [--limit 32] [--opener "<think>"]
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
from pathlib import Path

from icrl_lite.data import bundled_qa_path
from icrl_lite.evaluate import EvalConfig, evaluate
from icrl_lite.rollout import RolloutConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=32, help="two-hop dev questions")
    parser.add_argument("--opener", default="<think>", help="the after_observation text of the second condition")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="probe-second-search-"))
    two_hop = [line for line in bundled_qa_path("dev").read_text().splitlines() if json.loads(line)["hops"] == 2]
    (work / "dev-2hop.jsonl").write_text("\n".join(two_hop[: args.limit]) + "\n")
    demos = [line for line in bundled_qa_path("demos").read_text().splitlines() if json.loads(line).get("hops") == 2]
    (work / "demos-2hop.jsonl").write_text("\n".join(demos) + "\n")
    for opener in ("", args.opener):
        out = work / f"eval-{'opener' if opener else 'plain'}.jsonl"
        cfg = EvalConfig(checkpoint="base", dataset=str(work / "dev-2hop.jsonl"), demos=3, demo_choice="per_step",
                         demo_pool=str(work / "demos-2hop.jsonl"), output=str(out),
                         rollout=RolloutConfig(after_observation=opener))
        summary = evaluate(cfg)
        records = [json.loads(line) for line in out.read_text().splitlines()]
        searches = collections.Counter(len(r["tool_calls"]) for r in records)
        print(f"\nafter_observation={opener!r}: EM {summary['em']:.3f}, searches per question {dict(sorted(searches.items()))} "
              f"over {len(records)} two-hop questions\n--- {records[1]['question']}\n{records[1]['trajectory'][-600:]}")


if __name__ == "__main__":
    main()
