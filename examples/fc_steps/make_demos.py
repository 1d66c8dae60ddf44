"""Multi-step demonstrations for `functions=examples/fc_steps/functions.py`, written to demos.jsonl here,
and dev.jsonl: the bundled dev queries whose gold calls this example implements (to evaluate multi-step).

Takes the bundled demos whose gold calls this example implements (and the no-call ones), RUNS the gold
calls with the implementations, and writes each trajectory as the policy should produce it:
<think> + <tool_call> + the real <obs> results + <think> + <response>. Deterministic.

    python examples/fc_steps/make_demos.py
"""

from __future__ import annotations

import json
from pathlib import Path

from icrl_lite.data import bundled_fc_path, load_fc
from icrl_lite.tools.functions import execute_calls, load_implementations

HERE = Path(__file__).parent


def main() -> None:
    table = load_implementations(str(HERE / "functions.py"))
    demos = []
    for record in load_fc(bundled_fc_path("demos")):
        gold = record["ground_truth"]
        if not gold:
            demos.append(record)  # no function fits: think + response, as in one-turn episodes
            continue
        if not all(call["name"] in table for call in gold):
            continue
        first_turn = record["solution"]  # <think> ... </think>\n<tool_call> ... </tool_call>
        block = first_turn[first_turn.index("<tool_call>") + len("<tool_call>"):first_turn.index("</tool_call>")]
        observation = execute_calls(block, table)
        results = [json.loads(line) for line in observation.splitlines()]
        said = "; ".join(f"{r['name']} gave {json.dumps(r.get('result', r.get('error')))}" for r in results)
        record["solution"] = (f"{first_turn}\n\n<obs>\n{observation}\n</obs>\n\n"
                              f"<think> The results are in: {said}. </think>\n<response> {said}. </response>")
        demos.append(record)
    write(HERE / "demos.jsonl", demos)
    write(HERE / "dev.jsonl", [r for r in load_fc(bundled_fc_path("dev"))
                               if r["ground_truth"] and all(c["name"] in table for c in r["ground_truth"])])


def write(path: Path, records: list[dict]) -> None:
    with path.open("w") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    print(f"{len(records)} records -> {path}")


if __name__ == "__main__":
    main()
