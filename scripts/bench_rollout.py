"""Rollout throughput: icrl-lite's engine vs transformers' `generate`, same model, prompts and budget.

One generation turn (no tool calls, so both do the same work): B questions x G samples, each prompt the ICRL
instruction with `--demos` chat-turn demonstrations, `--tokens` new tokens per row (EOS disabled so every row
decodes the full budget), sampling at temperature 0.8. Prints sampled tokens per second for each.

    python scripts/bench_rollout.py --questions 4 --samples 4 --demos 3 --tokens 64
"""

from __future__ import annotations

import argparse
import time

import torch

from icrl_lite.data import bundled_qa_path, load_demos, load_qa
from icrl_lite.policy import ModelConfig, load_policy, merged_adapter
from icrl_lite.prompts import build_messages, render_prompt
from icrl_lite.rollout import RolloutConfig, RolloutEngine


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--questions", type=int, default=4)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--demos", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()

    model, tok = load_policy(ModelConfig())
    demos = load_demos(bundled_qa_path("demos"))[: args.demos]
    questions = load_qa(bundled_qa_path("test"))[: args.questions]
    prompts = [render_prompt(tok, build_messages(q["question"], demos)) for q in questions]
    print(f"{len(prompts)} prompts x {args.samples} samples, prompt length ~{sum(map(len, prompts)) // len(prompts)} tokens")

    never = RolloutConfig(max_turns=0, max_turn_tokens=args.tokens, max_response_tokens=args.tokens + 1, temperature=0.8)
    engine = RolloutEngine(model, tok, [], never)
    engine.eos_ids = set()  # decode the full budget, like generate with min_new_tokens
    engine.generate(prompts[:1], 1, torch.Generator().manual_seed(0))  # warm-up
    started = time.time()
    rollouts = engine.generate(prompts, args.samples, torch.Generator().manual_seed(0))
    seconds = time.time() - started
    sampled = sum(r.sampled_tokens for r in rollouts)
    print(f"icrl-lite engine: {sampled} tokens in {seconds:.1f} s = {sampled / seconds:.1f} tok/s")

    tok.padding_side = "left"
    rows = [p for p in prompts for _ in range(args.samples)]
    batch = tok.pad({"input_ids": rows}, return_tensors="pt")
    model.eval()
    with torch.no_grad(), merged_adapter(model):
        kwargs = dict(do_sample=True, temperature=0.8, top_p=1.0, top_k=0, max_new_tokens=args.tokens,
                      min_new_tokens=args.tokens, pad_token_id=tok.pad_token_id)
        model.generate(**tok.pad({"input_ids": rows[:1]}, return_tensors="pt"), **{**kwargs, "max_new_tokens": 4, "min_new_tokens": 4})
        started = time.time()
        out = model.generate(**batch, **kwargs)
        seconds = time.time() - started
    sampled = (out.shape[1] - batch["input_ids"].shape[1]) * len(rows)
    print(f"transformers generate: {sampled} tokens in {seconds:.1f} s = {sampled / seconds:.1f} tok/s")


if __name__ == "__main__":
    main()
