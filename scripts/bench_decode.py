"""The lean decode step against transformers' forward: the linear layers alone, then whole decode runs.

    python scripts/bench_decode.py [--dtype bf16|fp32] [--rows 32] [--tokens 128] [--rounds 2]

1. SmolLM2-135M's linear layers at decode shapes (30 layers of distinct random weights, so that they come from
   memory as in a real step): separate vs fused (q/k/v, gate/up) and plain `F.linear` vs oneDNN-prepacked.
2. The engine's pure decode (`benchmarks.multiturn.pure_decode`: `--rows` test questions, greedy, exactly `--tokens`
   tokens each) with `rollout.fast_decode` off and on, alternated `--rounds` times, and whether the greedy tokens
   agree. Run it alone on the machine: the figures to compare are the ratios within one run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F


def seconds(fn, repeat: int = 10) -> float:
    fn(), fn()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def linear_layers(dtype: torch.dtype, rows: int, layers: int = 30) -> dict:
    from icrl_lite.cpu.decode import Linear, can_pack

    shapes = {"q": 576, "k": 192, "v": 192, "o": 576, "gate": 1536, "up": 1536}
    weights = []
    for _ in range(layers):
        w = {name: (torch.randn(n, 576) * 0.02).to(dtype) for name, n in shapes.items()}
        w["down"] = (torch.randn(576, 1536) * 0.02).to(dtype)
        w["qkv"], w["gate_up"] = torch.cat([w["q"], w["k"], w["v"]]), torch.cat([w["gate"], w["up"]])
        weights.append(w)
    x, wide = torch.randn(rows, 576).to(dtype), torch.randn(rows, 1536).to(dtype)
    separate = ("q", "k", "v", "o", "gate", "up")

    def run(fused: bool, linear):
        for w in weights:
            for name in (("qkv", "o", "gate_up") if fused else separate):
                linear(x, w[name])
            linear(wide, w["down"])

    out = {f"{'fused' if fused else 'separate'}": seconds(lambda: run(fused, F.linear)) for fused in (False, True)}
    if can_pack(dtype, torch.device("cpu")):
        packed = [{name: Linear(t, None, pack=True) for name, t in w.items()} for w in weights]
        for fused in (False, True):
            def run_packed():
                for w in packed:
                    for name in (("qkv", "o", "gate_up") if fused else separate):
                        w[name](x)
                    w["down"](wide)
            out[f"packed {'fused' if fused else 'separate'}"] = seconds(run_packed)
    return out


def decode_runs(dtype: str, rows: int, tokens: int, rounds: int) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for `benchmarks`
    import benchmarks.multiturn as multiturn
    from icrl_lite.policy import ModelConfig, load_policy
    from icrl_lite.prompts import render_prompt
    from icrl_lite.rollout import RolloutConfig, RolloutEngine
    from icrl_lite.tasks import get_task

    model, tokenizer = load_policy(ModelConfig(dtype=dtype))
    task = get_task("qa")
    questions = task.load(task.bundled("test"))
    prompts = [render_prompt(tokenizer, [{"role": "user", "content": questions[i % len(questions)]["question"]}])
               for i in range(rows)]
    engine_class = multiturn.RolloutEngine
    for _ in range(rounds):
        for fast in (False, True):
            class Engine(engine_class):
                def __init__(self, *args, **kwargs):
                    super().__init__(*args, **kwargs)
                    self.cfg.fast_decode = fast

            multiturn.RolloutEngine = Engine
            result = multiturn.pure_decode(model, tokenizer, prompts, tokens)
            print(f"  fast_decode={fast}: {result['tokens_per_s']:.1f} tok/s", flush=True)
    multiturn.RolloutEngine = engine_class
    runs = {}
    for fast in (False, True):
        cfg = RolloutConfig(max_turns=0, max_turn_tokens=tokens, max_response_tokens=tokens + 1, temperature=0.0,
                            fast_decode=fast)
        runs[fast] = RolloutEngine(model, tokenizer, [], cfg, final_stops=[]).generate(prompts, 1)
    same = sum(a.response_ids == b.response_ids for a, b in zip(runs[False], runs[True]))
    print(f"  greedy rollouts token-identical with and without: {same} of {rows}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"])
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    print(f"linear layers of one decode step, {args.rows} rows, {args.dtype}, {torch.get_num_threads()} threads:")
    for name, s in linear_layers(dtype, args.rows).items():
        print(f"  {name}: {s * 1e3:.1f} ms")
    print(f"pure decode, {args.rows} rows x {args.tokens} tokens:")
    decode_runs(args.dtype, args.rows, args.tokens, args.rounds)


if __name__ == "__main__":
    main()
