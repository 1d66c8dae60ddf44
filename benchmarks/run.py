"""`python -m benchmarks run`: the machine, then each selected benchmark, then results.json and results.md.

The machine's limits are measured first in every run (the other benchmarks are read against them). The sizes
of each benchmark are in `SIZES`: `full` runs in minutes on a 2-core CPU with SmolLM2-135M, `quick` in well
under a minute per benchmark. A benchmark that fails is recorded with its traceback and the others still run;
the exit status is then 1.
"""

from __future__ import annotations

import time
import traceback
from datetime import datetime
from pathlib import Path

from benchmarks.grpo_step import run_grpo_step
from benchmarks.loss_memory import run_loss_memory
from benchmarks.machine import decode_bound, decode_bounds, describe_machine, dtype_name, machine_limits, policy_size
from benchmarks.multiturn import run_multiturn
from benchmarks.report import BENCHMARKS, write_results
from benchmarks.sweep import run_sweep


SIZES = {
    "quick": {
        "machine": {"cpu": (512, 64), "cuda": (4096, 1024)},  # matmul size, MiB of the bandwidth tensor
        "rollouts": [{"name": "3 demos", "demos": 3, "questions": 2, "max_turns": 2, "max_turn_tokens": 32,
                      "max_response_tokens": 256}],
        "decode": {"batch": 4, "new_tokens": 8},
        "grpo": [
            {"name": "0 demos", "demos": 0, "prompts": 2, "group": 2, "max_new_tokens": 8, "warmup": 1, "steps": 1,
             "betas": [0.0]},
            # ~1,500-1,900 prompt tokens: TRL's step takes a minute even at this size; 2 micro-batches of 2 rows
            {"name": "3 demos", "demos": 3, "prompts": 2, "group": 2, "max_new_tokens": 4, "warmup": 0, "steps": 1,
             "betas": [0.0], "trl_micro_batch": 2},
        ],
        "sweep": {"prompts": 1, "groups": [2, 3], "group_axis_tokens": 4, "lengths": [4, 8], "length_axis_group": 2,
                  "warmup": 1, "steps": 1},
        "loss_memory": {"lengths": [256, 1024], "chunk": 256},
    },
    "full": {
        "machine": {"cpu": (2048, 1024), "cuda": (8192, 4096)},
        "rollouts": [
            {"name": "3 demos", "demos": 3, "questions": 32, "max_turns": 4, "max_turn_tokens": 64,
             "max_response_tokens": 1024},
            {"name": "0 demos", "demos": 0, "questions": 32, "max_turns": 4, "max_turn_tokens": 64,
             "max_response_tokens": 1024},
        ],
        "decode": {"batch": 32, "new_tokens": 128},  # pure decode, read against the decode bound at that batch
        "grpo": [
            {"name": "0 demos", "demos": 0, "prompts": 4, "group": 4, "max_new_tokens": 128, "warmup": 1, "steps": 3,
             "betas": [0.0, 0.04]},
            # ~1,500-2,000 prompt tokens, which TRL runs for every rollout: 2 rows per forward/backward (8 micro-batches
            # accumulated into the one update) keep its process within 24 GB on a CPU (4 rows: killed at 19 GB RSS)
            {"name": "3 demos", "demos": 3, "prompts": 4, "group": 4, "max_new_tokens": 128, "warmup": 1, "steps": 2,
             "betas": [0.0], "trl_micro_batch": 2},
        ],
        "sweep": {"prompts": 2, "groups": [2, 4, 8], "group_axis_tokens": 64, "lengths": [32, 64, 128],
                  "length_axis_group": 4, "warmup": 1, "steps": 2},
        "loss_memory": {"lengths": [512, 1024, 2048, 4096], "chunk": 1024},  # chunk: TrainConfig.logprob_chunk
    },
}


def default_output() -> Path:
    return Path("runs") / "bench" / datetime.now().strftime("%Y%m%d-%H%M%S")


def grpo_workloads(workloads: list[dict], names: list[str] | None, betas: list[float] | None) -> list[dict]:
    """The GRPO workloads named in `names` (all when None), each with only the `betas` asked for (all when None)."""
    known = [w["name"] for w in workloads]
    unknown = sorted(set(names or ()) - set(known))
    if unknown:
        raise ValueError(f"unknown GRPO workloads {unknown}; choose from {', '.join(known)}")
    chosen = [{**w, "betas": [b for b in w["betas"] if betas is None or b in betas]}
              for w in workloads if names is None or w["name"] in names]
    if not all(w["betas"] for w in chosen):
        raise ValueError(f"no workload runs at beta {betas}: the workloads' betas are {[w['betas'] for w in chosen]}")
    return chosen


def run(only: list[str] | None = None, quick: bool = False, output: Path | None = None, model: str = "smollm2-135m",
        dtype: str = "auto", device: str = "auto", log=print, workloads: list[str] | None = None,
        betas: list[float] | None = None) -> tuple[dict, Path]:
    """Run the machine section and the benchmarks in `only` (all when None); returns (results, output dir).
    `workloads` / `betas` cut the GRPO benchmark to those workloads (by name) and KL coefficients."""
    from icrl_lite.policy import resolve_device, resolve_dtype

    unknown = sorted(set(only or ()) - set(BENCHMARKS))
    if unknown:
        raise ValueError(f"unknown benchmarks {unknown}; choose from {', '.join(BENCHMARKS)} (the machine always runs)")
    output = Path(output) if output else default_output()
    output.mkdir(parents=True, exist_ok=True)
    sizes = SIZES["quick" if quick else "full"]
    grpo = grpo_workloads(sizes["grpo"], workloads, betas)
    where = resolve_device(device)
    precision = resolve_dtype(dtype, where)
    name = dtype_name(precision)  # children get the resolved dtype: `auto` measures again and could differ
    results = {
        "command": {"quick": quick, "only": only or list(BENCHMARKS), "model": model, "dtype": name,
                    "device": str(where), "output": str(output), "workloads": workloads, "betas": betas},
        "machine": describe_machine(where),
        "benchmarks": {},
    }
    started = time.perf_counter()
    matmul, mbytes = sizes["machine"]["cuda" if where.type == "cuda" else "cpu"]
    limits = machine_limits(where, matmul, mbytes, also=(name,))
    size = policy_size(model, precision)
    limits["policy"] = size
    limits["decode_bounds"] = decode_bounds(limits, size)
    results["limits"] = limits
    log(f"[bench] machine limits: {time.perf_counter() - started:.0f} s")

    def bound_at(batch: int) -> float:
        return decode_bound(size["weight_bytes"], size["params"], limits["bandwidth_gbs"]["read"] * 1e9,
                            limits["matmul_gflops"][name] * 1e9, batch)["tokens_per_s"]

    jobs = {
        "rollouts": lambda: run_multiturn(model, name, str(where), sizes["rollouts"], bound_at, sizes["decode"]),
        "grpo": lambda: run_grpo_step(model, name, str(where), grpo, output / "work" / "grpo", log=log),
        "sweep": lambda: run_sweep(model, name, str(where), sizes["sweep"], output / "work" / "sweep",
                                   output / "sweep.png", log=log),
        "loss_memory": lambda: run_loss_memory(model, precision, where, sizes["loss_memory"]["lengths"],
                                               sizes["loss_memory"]["chunk"], output / "work" / "loss_memory"),
    }
    for bench in [b for b in BENCHMARKS if not only or b in only]:
        started = time.perf_counter()
        try:
            result = jobs[bench]()
        except Exception:  # noqa: BLE001 - recorded in the results and the exit status; the other benchmarks still run
            result = {"error": traceback.format_exc()}
        result["seconds"] = time.perf_counter() - started
        results["benchmarks"][bench] = result
        state = "skipped" if "skipped" in result else "FAILED" if "error" in result else "done"
        log(f"[bench] {bench}: {state} in {result['seconds']:.0f} s")
        write_results(results, output)  # after each benchmark: a killed run keeps what it measured
    return results, output


def failed(results: dict) -> bool:
    return any("error" in r for r in results["benchmarks"].values())
