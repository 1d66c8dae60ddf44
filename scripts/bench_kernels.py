"""The C++ CPU kernels (icrl_lite/cpu/csrc/cpu_kernels.cpp) on and off, alternating in one process.

    python scripts/bench_kernels.py [--rows 16 32] [--tokens 128] [--steps 6]

1. Pure decode (`benchmarks.multiturn.pure_decode`: test questions in the chat template, greedy, exactly `--tokens`
   tokens per row) at each `--rows`, the kernels' decode step against the torch ops, alternated twice.
2. `HeadLogprobs` forward + backward over 512 positions of the real LM head, kernels against torch ops.
3. The single-turn GRPO step of the benchmark (`benchmarks.grpo_step`'s workload: 4 prompts x 4 rollouts x
   128 tokens, beta 0, every group with a reward spread) with all kernels on and all off on alternate steps:
   the median sampling and update time of `--steps` steps each after one warm-up step each.

bf16 on a CPU with AVX-512 BF16 only (elsewhere the kernels are not used). Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


@contextmanager
def kernels_off(off: bool):
    """Every user of the kernels sees none while `off` (the decoder, the LM head, the fused norms and MLPs)."""
    from icrl_lite import logprobs
    from icrl_lite.cpu import decode, fused

    saved = decode.cpu_kernels, fused.kernels_for, logprobs.head_kernels
    if off:
        decode.cpu_kernels, fused.kernels_for, logprobs.head_kernels = (lambda: None), (lambda x: None), (lambda h, w: None)
    try:
        yield
    finally:
        decode.cpu_kernels, fused.kernels_for, logprobs.head_kernels = saved


def pure_decode_rates(model, tokenizer, rows: int, tokens: int) -> dict[str, list[float]]:
    from benchmarks.multiturn import pure_decode
    from icrl_lite.prompts import render_prompt
    from icrl_lite.tasks import get_task

    task = get_task("qa")
    questions = task.load(task.bundled("test"))[:rows]
    prompts = [render_prompt(tokenizer, [{"role": "user", "content": q["question"]}]) for q in questions]
    rates = {"kernels": [], "torch ops": []}
    for off in (False, True, False, True):
        with kernels_off(off):
            rates["torch ops" if off else "kernels"].append(pure_decode(model, tokenizer, prompts, tokens)["tokens_per_s"])
    return rates


def head_times(model) -> dict[str, float]:
    from icrl_lite.logprobs import HEAD_BLOCK, HeadLogprobs

    torch.manual_seed(0)
    weight = model.get_output_embeddings().weight.detach()
    hidden = torch.randn(512, weight.shape[1]).to(weight.dtype)
    targets = torch.randint(0, weight.shape[0], (512,))
    grad = torch.randn(512)

    def once():
        h = hidden.clone().requires_grad_()
        HeadLogprobs.apply(h, weight, targets, 1.0, HEAD_BLOCK, False).backward(grad)

    times = {"kernels": [], "torch ops": []}
    for off in (False, True) * 3:
        with kernels_off(off):
            once()
            start = time.perf_counter()
            once()
            times["torch ops" if off else "kernels"].append(time.perf_counter() - start)
    return {k: min(v) for k, v in times.items()}


def grpo_steps(steps: int) -> dict[str, dict[str, float]]:
    import benchmarks.grpo_step as bench
    from icrl_lite import trainer as trainer_module
    from icrl_lite.rollout import RolloutConfig
    from icrl_lite.trainer import TrainConfig, Trainer

    work = Path(tempfile.mkdtemp(prefix="bench-kernels-"))
    questions = bench.write_questions(work / "questions.jsonl", 4)
    cfg = TrainConfig(output_dir=str(work / "run"), seed=0, train_data=str(questions), eval_data=str(questions),
                      stages=[{"demos": 0, "steps": 2 * steps + 2}], prompts_per_step=4, num_generations=4,
                      micro_batch_size=4, learning_rate=1e-5, warmup_ratio=0.0, beta=0.0, updates_per_step=1,
                      probe_demos=0, eval_every=0, final_eval="", save_every=0, progress=False,
                      check_demo_budgets=False,
                      rollout=RolloutConfig(max_turns=0, max_turn_tokens=128, max_response_tokens=129, temperature=0.8))
    counter, real_score = itertools.count(), trainer_module.score

    def score(rollout, gold, *args):  # the rollout's index in its group: every group has a spread
        metrics = real_score(rollout, gold, *args)
        metrics["reward"] = (next(counter) % 4) / 3
        return metrics

    trainer_module.score = score
    trainer = Trainer(cfg)
    trainer.engine.eos_ids, trainer.engine.final_stops = set(), []
    timed = {}
    for name in ("generate", "update"):
        target, attr = (trainer.engine, "generate") if name == "generate" else (trainer, "update")
        real = getattr(target, attr)

        def wrapper(*a, real=real, name=name, **k):
            start = time.perf_counter()
            out = real(*a, **k)
            timed[name] = time.perf_counter() - start
            return out

        setattr(target, attr, wrapper)
    results = {"kernels": {"generate": [], "update": []}, "torch ops": {"generate": [], "update": []}}
    try:
        for i in range(2 * steps + 2):
            off = i % 2 == 1
            with kernels_off(off):
                trainer.step()
                trainer.step_index += 1
            if i >= 2:  # one warm-up step each
                for name in ("generate", "update"):
                    results["torch ops" if off else "kernels"][name].append(timed[name])
    finally:
        trainer_module.score = real_score
        trainer.lock.release()
    return {side: {name: statistics.median(v) for name, v in r.items()} for side, r in results.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()
    from icrl_lite.cpu.kernels import cpu_kernels
    from icrl_lite.policy import ModelConfig, load_policy

    if cpu_kernels() is None:
        sys.exit("the kernels are not available here (see the note above): nothing to compare")
    model, tokenizer = load_policy(ModelConfig(dtype="bf16"))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, bf16")
    for rows in args.rows:
        rates = pure_decode_rates(model, tokenizer, rows, args.tokens)
        print(f"pure decode, {rows} rows x {args.tokens} tokens: kernels "
              + ", ".join(f"{r:.1f}" for r in rates["kernels"]) + " tok/s; torch ops "
              + ", ".join(f"{r:.1f}" for r in rates["torch ops"]) + " tok/s")
    head = head_times(model)
    print(f"HeadLogprobs, 512 positions forward + backward (best of 3): kernels {head['kernels'] * 1e3:.0f} ms, "
          f"torch ops {head['torch ops'] * 1e3:.0f} ms")
    del model
    steps = grpo_steps(args.steps)
    for side, t in steps.items():
        print(f"GRPO step, single turn (4 x 4 x 128), {side}: sampling {t['generate']:.2f} s, update "
              f"{t['update']:.2f} s, step {t['generate'] + t['update']:.2f} s (medians of {args.steps})")


if __name__ == "__main__":
    main()
