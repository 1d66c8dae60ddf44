"""Decode attention on a CPU: torch's fused kernel vs `attention.grouped_attention`, and what it does to rollouts.

    python scripts/bench_attention.py              # the attention call alone, then SmolLM2 rollouts (bf16)
    python scripts/bench_attention.py --calls-only

Part 1 times one attention call (query of 1 position, 9 query heads / 3 KV heads, head size 64, a padding mask)
in fp32 and bf16 with torch's kernel and with the two-matmul path. Part 2 runs the rollout engine on the embedded
SmolLM2-135M in bf16 (greedy, fixed length) with the kernel forced and with the default, alternating them, and
reports generated tokens/s of each run and how many rollouts came out token-identical.
"""

from __future__ import annotations

import argparse
import time

import torch

from icrl_lite import cpu
from icrl_lite.attention import grouped_attention


def time_call(fn, reps: int = 10) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - start) / reps * 1e3  # ms


def calls() -> None:
    sdpa = torch.nn.functional.scaled_dot_product_attention
    for dtype in (torch.float32, torch.bfloat16):
        for batch, keys in ((16, 600), (16, 1500), (4, 1500)):
            gen = torch.Generator().manual_seed(0)
            q = torch.randn(batch, 9, 1, 64, generator=gen).to(dtype)
            k, v = (torch.randn(batch, 3, keys, 64, generator=gen).to(dtype) for _ in range(2))
            mask = torch.ones(batch, 1, 1, keys, dtype=torch.bool)
            mask[..., :50] = False
            kernel = time_call(lambda: sdpa(q, k, v, attn_mask=mask, enable_gqa=True))
            mine = time_call(lambda: grouped_attention(q, k, v, mask))
            print(f"{str(dtype)[6:]:9} {batch:3} rows x {keys:5} keys: kernel {kernel:6.2f} ms   matmuls {mine:6.2f} ms")


def rollouts(rounds: int = 2) -> None:
    from icrl_lite.data import bundled_qa_path, load_qa
    from icrl_lite.policy import ModelConfig, load_policy
    from icrl_lite.prompts import build_messages, render_prompt
    from icrl_lite.rollout import RolloutConfig, RolloutEngine

    model, tok = load_policy(ModelConfig(dtype="bf16"))
    prompts = [render_prompt(tok, build_messages(q, [])) for q in load_qa(bundled_qa_path("dev"))[:8]]
    engine = RolloutEngine(model, tok, [], RolloutConfig(temperature=0.0, max_turns=0, max_turn_tokens=96,
                                                         max_response_tokens=97), final_stops=[])
    engine.eos_ids = set()  # every rollout decodes exactly 96 tokens
    default, outputs = cpu.short_query_fits, {}
    for _ in range(rounds):
        for name in ("kernel", "matmuls"):
            cpu.short_query_fits = default if name == "matmuls" else (lambda *a, **k: False)
            start = time.perf_counter()
            out = engine.generate(prompts, 2)
            seconds = time.perf_counter() - start
            outputs[name] = [r.response_ids for r in out]
            print(f"{name:8} {sum(r.sampled_tokens for r in out) / seconds:6.1f} generated tok/s")
    cpu.short_query_fits = default
    same = sum(a == b for a, b in zip(outputs["kernel"], outputs["matmuls"]))
    print(f"token-identical rollouts: {same} of {len(outputs['kernel'])}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls-only", action="store_true")
    args = parser.parse_args()
    calls()
    if not args.calls_only:
        rollouts()
