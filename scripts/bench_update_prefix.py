"""The update with and without the shared prompt prefix, on the embedded SmolLM2-135M and the ICRL workload.

    python scripts/bench_update_prefix.py                 # 4 questions x 4 rollouts, 3 demos (one set per step)
    python scripts/bench_update_prefix.py --dtype fp32 --rounds 3

One step's rollouts are sampled once (3 demos, `demo_choice=per_step`, the loss under the demo prompt as ICRL
scores it), then `Trainer.update` runs on the same items from the same adapter with `rollout.shared_prefix_min`
64 (the default: the demos' keys/values computed once per update) and 0 (each prompt run in full, as before),
alternating, `--rounds` times each. Reports the median seconds of each, their ratio, and the largest difference
between the two adapters after the update (the gradients are exact, so only rounding separates them).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--group", type=int, default=4)
    parser.add_argument("--updates", type=int, default=1, help="updates_per_step")
    args = parser.parse_args()

    from icrl_lite.policy import ModelConfig
    from icrl_lite.trainer import LossItem, TrainConfig, Trainer

    out = tempfile.mkdtemp(prefix="bench-update-prefix-")
    cfg = TrainConfig(output_dir=out, stages=[{"demos": 3, "steps": 1}], demo_choice="per_step", demo_loss_prompt="own",
                      prompts_per_step=args.prompts, num_generations=args.group, micro_batch_size=args.group,
                      updates_per_step=args.updates, beta=0.0, eval_every=0, save_every=0, final_eval="", progress=False,
                      probe_demos=0, model=ModelConfig(dtype=args.dtype))  # the default run's rollout budgets
    trainer = Trainer(cfg)
    try:
        questions = trainer.train_set[: args.prompts]
        prompts = [trainer.prompt(q, 3, 0, i) for i, q in enumerate(questions)]
        rollouts = trainer.engine.generate(prompts, args.group, torch.Generator().manual_seed(0))
        advantages = [(-1.0) ** n * (1 + n % 3) / 2 for n in range(len(rollouts))]  # every rollout trained
        items = [LossItem(r, r.prompt_ids, a) for r, a in zip(rollouts, advantages)]
        start_state = copy.deepcopy(trainer.model.state_dict())
        start_optim = copy.deepcopy(trainer.optimizer.state_dict())
        print(f"dtype {trainer.model.dtype}, {len(prompts)} prompts of {[len(p) for p in prompts]} tokens, "
              f"shared prefix {len(trainer.shared_prefix(prompts))} tokens, "
              f"{sum(r.sampled_tokens for r in rollouts)} sampled tokens")
        seconds: dict[int, list[float]] = {64: [], 0: []}
        after: dict[int, dict] = {}
        for _ in range(args.rounds):
            for least in (64, 0):
                trainer.model.load_state_dict(start_state)
                trainer.optimizer.load_state_dict(start_optim)
                trainer.cfg.rollout.shared_prefix_min = least
                began = time.perf_counter()
                trainer.update(items)
                seconds[least].append(time.perf_counter() - began)
                after[least] = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
        shared, full = statistics.median(seconds[64]), statistics.median(seconds[0])
        diff = max((after[64][n].float() - after[0][n].float()).abs().max().item() for n in after[64])
        print(f"update, prefix shared: {shared:.2f} s (runs {', '.join(f'{s:.2f}' for s in seconds[64])})")
        print(f"update, each prompt in full: {full:.2f} s (runs {', '.join(f'{s:.2f}' for s in seconds[0])})")
        print(f"ratio shared / full: {shared / full:.2f}; largest adapter difference after the update: {diff:.2e}")
    finally:
        trainer.lock.release()


if __name__ == "__main__":
    main()
