"""icrl-lite's benchmark suite: one command, `python -m benchmarks run [--quick] [--only NAME,...] [--output DIR]`.

- machine.py: what the machine is and can do (matmul FLOP/s per dtype, memory bandwidth, the decode bound);
- multiturn.py: multi-turn search rollouts, the engine's KV reuse vs re-encoding the context every turn;
- grpo_step.py: a GRPO step, TRL's GRPOTrainer vs icrl-lite's Trainer, 0 and 3 demos, KL off and on;
- sweep.py: GRPO step time of both against group size and response length, and its figure;
- loss_memory.py: log-prob memory vs sequence length, chunked vs full logits;
- corpus_scale.py: BM25 search as the corpus grows, in memory vs the disk store (build time, disk, RSS, latency);
  run on its own (`python -m benchmarks.corpus_scale --sizes 100000 1000000`), not by `run`;
- gpu_check.py: the GPU check scripts/gpu_check.sh runs (2-step training runs on one GPU against the memory
  estimate and the decode bound); run on its own (`python -m benchmarks.gpu_check`), not by `run`;
- run.py runs them and report.py writes results.json and results.md.

Run from the repository root; it is not part of the installed package.
"""
