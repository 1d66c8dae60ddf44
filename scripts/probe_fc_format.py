"""How often does the untrained model write a parseable ToolRL call? (the fc reward's spread, before training)

Samples `--samples` rollouts for each of `--questions` bundled training queries, with `--demos` chat-turn
demonstrations, and reports the mean ToolRL reward, the share of rollouts whose calls parse, whose
<tool_call> block does not parse, and whose format is exact.

    python scripts/probe_fc_format.py --temperature 1.0 --demos 3
"""

from __future__ import annotations

import argparse
import random

import torch

from icrl_lite.evaluate import load_for_inference
from icrl_lite.function_calls import parse_response, toolrl_reward
from icrl_lite.policy import ModelConfig
from icrl_lite.prompts import build_messages, render_prompt
from icrl_lite.rollout import RolloutConfig, RolloutEngine
from icrl_lite.tasks import get_task


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--demos", type=int, default=3)
    parser.add_argument("--questions", type=int, default=8)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=128)
    args = parser.parse_args()

    model, tok, _ = load_for_inference("base", ModelConfig())
    task = get_task("fc")
    train, demos = task.load(task.bundled("train")), task.load_demos(task.bundled("demos"))
    rng = random.Random(0)
    questions = rng.sample(train, args.questions)
    prompts = [render_prompt(tok, build_messages(q, rng.sample(demos, args.demos), "chat", task.instruction))
               for q in questions]
    budget = RolloutConfig(temperature=args.temperature, max_turns=1, max_turn_tokens=args.max_tokens,
                           max_response_tokens=args.max_tokens)
    rollouts = RolloutEngine(model, tok, [], budget, final_stops=task.final_stops).generate(
        prompts, args.samples, torch.Generator().manual_seed(0))
    totals = {"reward": 0.0, "parsed": 0.0, "parse_error": 0.0, "format": 0.0, "exact": 0.0}
    for i, rollout in enumerate(rollouts):
        reward, metrics = toolrl_reward(rollout.policy_text, questions[i // args.samples]["ground_truth"])
        totals["reward"] += reward
        totals["parsed"] += parse_response(rollout.policy_text).calls is not None
        for key in ("parse_error", "format", "exact"):
            totals[key] += metrics[key]
    mean_prompt = sum(map(len, prompts)) / len(prompts)
    print(f"{len(rollouts)} rollouts, {args.demos} demos (prompt {mean_prompt:.0f} tokens), T={args.temperature}: "
          + ", ".join(f"{k} {v / len(rollouts):.3f}" for k, v in totals.items()))


if __name__ == "__main__":
    main()
