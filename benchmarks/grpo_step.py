"""A GRPO step, TRL's GRPOTrainer vs icrl-lite's Trainer, on the same single-turn workloads.

Both get the same model (weights in the same dtype; on a CPU the same attention kernel), LoRA (rank, alpha,
targets, no dropout), the same P prompts every step (bundled QA train questions through the search instruction
and the chat template), group size G, temperature, AdamW learning rate, clip range, beta, and one update per
batch. TRL: num_iterations=1 and one generation of all P x G rows per optimizer step, trained in micro-batches
of the workload's `trl_micro_batch` rows (per_device_train_batch_size; default: all P x G) accumulated into that
one step (gradient_accumulation_steps = steps_per_generation = P x G / micro-batch); every step is checked to
have run one generation of P x G rows, those micro-batches and one optimizer step. icrl-lite: updates_per_step=1,
one forward/backward per prompt for its G rollouts (micro_batch_size=G). Neither uses gradient checkpointing
(icrl-lite's default; TRL's default is on).

Two workloads. **0 demos**: the instruction and the question. **3 demos** (the ICRL workload): every prompt of a
step carries the same 3 worked demonstrations before its question, chosen and rendered as icrl-lite's Trainer
does (`choose_demos` with demo_choice=per_step, `build_messages`, `render_prompt`), a new set each step; both
systems score the rollouts in the loss under that same demo prompt (icrl-lite: demo_loss_prompt=own; TRL gets
the demos in its prompt messages). TRL 1.16 has no prompt-length limit (max_prompt_length is gone), and each
system records the token ids of every prompt it ran: the report says whether they were identical. What differs
is each system's own design: icrl-lite's engine prefills the demo block once per step and its loss runs each
prompt once for its G rollouts; TRL encodes prompt + completion for each of the P x G rows, in generation and
in the loss.

Every rollout samples exactly N tokens (EOS and stop strings off: TRL through min_new_tokens=N, icrl-lite with
the engine's EOS ids and final stops emptied and no tool turns), so both sample the same number of tokens per
step. The reward is the rollout's index in its group, (i mod G) / (G - 1): it says nothing about quality, but
every group has a spread, so both systems train on every rollout (icrl-lite leaves groups without a spread out
of its update; TRL keeps them with advantage 0). Time per step = median over the steps after `warmup`, from the
start of sampling to the end of the optimizer step; peak memory = the process's peak RSS on a CPU, max allocated
on a GPU. Each system runs in its own process (`python -m benchmarks.grpo_step SPEC OUT`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

TRL_VERSION = "1.16.0"
INSTALL_TRL = f'pip install -e ".[bench]"   (or: pip install trl=={TRL_VERSION})'
SYSTEMS = ("trl", "icrl-lite")
WORKLOAD_KEYS = ("prompts", "group", "max_new_tokens", "warmup", "steps")  # what a workload sets, besides its demos


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process so far: max allocated on a GPU, peak RSS on a CPU.

    On Linux the peak RSS is read from /proc/self/status (VmHWM, this process's own address space): getrusage's
    ru_maxrss survives exec, so a child started by a large parent reported the parent's peak (on 2026-11-29 the
    full suite's icrl-lite children all reported 7,064 MiB, the multi-turn benchmark's RSS in the parent, against
    2,393 MiB when the GRPO benchmark ran alone)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB; macOS bytes


def positional_rewards(n: int, group: int) -> list[float]:
    """(i mod G) / (G - 1) for the n rollouts of a step, laid out group by group: every group spans [0, 1]."""
    return [(i % group) / (group - 1) for i in range(n)]


def summarize(seconds: list[float], warmup: int, sampled_per_step: list[int], peak_mb: float) -> dict:
    measured = seconds[warmup:]
    median = statistics.median(measured)
    tokens = statistics.median(sampled_per_step[warmup:])
    return {"step_seconds": measured, "median_step_s": median, "sampled_tokens_per_step": tokens,
            "sampled_tokens_per_s": tokens / median, "peak_memory_mb": peak_mb}


def prompt_record(steps: list[list[list[int]]]) -> dict:
    """What a system prompted with: the token count of each distinct prompt of each step, their mean, and a
    digest of the token ids (each step's prompts sorted by their ids, so the order of the questions in a step does
    not count)."""
    steps = [sorted(step) for step in steps]
    digest = hashlib.sha256(json.dumps(steps).encode()).hexdigest()
    counts = [[len(p) for p in step] for step in steps]
    flat = [n for step in counts for n in step]
    return {"prompt_tokens": counts, "prompt_tokens_mean": sum(flat) / len(flat), "prompt_digest": digest}


# ---- the two systems, each run in its own process ------------------------------------------------------
def measure_icrl(spec: dict) -> dict:
    """icrl-lite's Trainer.step, `warmup + steps` times; records the rollouts of each forward/backward of the
    last step's update."""
    from icrl_lite import trainer as trainer_module
    from icrl_lite.policy import ModelConfig
    from icrl_lite.rollout import RolloutConfig
    from icrl_lite.trainer import TrainConfig, Trainer

    group, n, demos = spec["group"], spec["max_new_tokens"], spec.get("demos", 0)
    cfg = TrainConfig(
        output_dir=str(Path(spec["workdir"]) / "icrl-lite"), seed=spec["seed"], train_data=spec["questions"],
        eval_data=spec["questions"], stages=[{"demos": demos, "steps": spec["warmup"] + spec["steps"]}],
        demo_choice="per_step", demo_loss_prompt="own",  # the same demos for every prompt of a step, scored under them
        prompts_per_step=spec["prompts"], num_generations=group, micro_batch_size=group,
        learning_rate=spec["learning_rate"], warmup_ratio=0.0, beta=spec["beta"], epsilon=spec["epsilon"],
        updates_per_step=1, probe_demos=0, eval_every=0, final_eval="", save_every=0, progress=False,
        check_demo_budgets=False,
        model=ModelConfig(name=spec["model"], dtype=spec["dtype"], device=spec["device"], lora_rank=spec["lora_rank"],
                          lora_alpha=spec["lora_alpha"], lora_target_modules=list(spec["lora_targets"])),
        rollout=RolloutConfig(max_turns=0, max_turn_tokens=n, max_response_tokens=n + 1,
                              temperature=spec["temperature"]),
    )
    counter = itertools.count()
    real_score = trainer_module.score

    def score(rollout, gold, *args):  # the rollout's index in its group: every group has a spread
        metrics = real_score(rollout, gold, *args)
        metrics["reward"] = positional_rewards(group, group)[next(counter) % group]
        return metrics

    real_logprobs = trainer_module.response_logprobs
    batches: list[list[int]] = []

    def logprobs(model, prompt, responses, *args, **kwargs):  # the update's forward passes (with gradients)
        if torch.is_grad_enabled():
            batches[-1].append(len(responses))
        return real_logprobs(model, prompt, responses, *args, **kwargs)

    seconds, sampled, trained, prompts = [], [], [], []
    trainer_module.score, trainer_module.response_logprobs = score, logprobs
    try:
        trainer = Trainer(cfg)
        trainer.engine.eos_ids = set()  # every rollout samples exactly n tokens, as TRL's min_new_tokens=n
        trainer.engine.final_stops = []
        generate = trainer.engine.generate

        def recording(step_prompts, *args, **kwargs):  # the token ids of the step's prompts, one per group
            prompts.append([list(p) for p in step_prompts])
            return generate(step_prompts, *args, **kwargs)

        trainer.engine.generate = recording
        try:
            for _ in range(spec["warmup"] + spec["steps"]):
                batches.append([])
                start = time.perf_counter()
                metrics = trainer.step()
                seconds.append(time.perf_counter() - start)
                trainer.step_index += 1
                sampled.append(round(metrics["gen_tokens_per_s"] * metrics["gen_seconds"]))
                trained.append(metrics["trained_rollouts"])
        finally:
            trainer.lock.release()
    finally:
        trainer_module.score, trainer_module.response_logprobs = real_score, real_logprobs
    out = summarize(seconds, spec["warmup"], sampled, peak_memory_mb(trainer.model.device))
    out["trained_rollouts_per_step"] = trained
    out["update_batches"] = batches[-1]
    out["dtype"] = str(trainer.model.dtype).removeprefix("torch.")
    return {**out, **prompt_record(prompts)}


def trl_prompts(spec: dict) -> list[list[dict]]:
    """TRL's dataset, in the order it reads it (no shuffling): for each step, the P questions with that step's
    demos, chosen and laid out as icrl-lite's `Trainer.prompt` does with demo_choice=per_step."""
    from icrl_lite.curriculum import choose_demos
    from icrl_lite.prompts import build_messages
    from icrl_lite.tasks import get_task

    task = get_task("qa")
    questions, pool = task.load(spec["questions"]), task.load_demos(task.bundled("demos"))
    rows = []
    for step in range(spec["warmup"] + spec["steps"]):
        demos = [pool[j] for j in choose_demos(len(pool), spec.get("demos", 0), spec["seed"], step, 0)]
        rows += [build_messages(q, demos, "chat", task.instruction) for q in questions]
    return rows


TRL_BATCHING = ("per_device_train_batch_size", "gradient_accumulation_steps", "steps_per_generation",
                "generation_batch_size", "num_iterations")  # how TRL ran a step, recorded with its result


def trl_config(spec: dict, use_cpu: bool):
    """TRL's GRPOConfig for a spec. A step's P x G rows are generated together (generation_batch_size = P x G,
    so rewards and advantages see whole groups) and trained `trl_micro_batch` rows per forward/backward (default:
    all of them), accumulated into one optimizer step: steps_per_generation = gradient_accumulation_steps makes
    TRL generate once per optimizer step, and num_iterations=1 uses each generation once."""
    from trl import GRPOConfig

    rows, group, n = spec["prompts"] * spec["group"], spec["group"], spec["max_new_tokens"]
    micro = spec.get("trl_micro_batch") or rows
    if rows % micro:
        raise ValueError(f"trl_micro_batch={micro} must divide the step's prompts x group = {rows} rows")
    passes = rows // micro
    return GRPOConfig(
        output_dir=str(Path(spec["workdir"]) / "trl"), seed=spec["seed"], max_steps=spec["warmup"] + spec["steps"],
        per_device_train_batch_size=micro, gradient_accumulation_steps=passes, steps_per_generation=passes,
        num_generations=group, num_iterations=1, max_completion_length=n, generation_kwargs={"min_new_tokens": n},
        temperature=spec["temperature"], top_p=1.0, top_k=0, beta=spec["beta"], epsilon=spec["epsilon"],
        loss_type="dapo", scale_rewards="group", learning_rate=spec["learning_rate"], lr_scheduler_type="constant",
        warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0, gradient_checkpointing=False, bf16=False, fp16=False,
        use_cpu=use_cpu, shuffle_dataset=False, report_to=[], logging_steps=10**6, save_strategy="no",
        disable_tqdm=True, dataloader_num_workers=0,
    )


def measure_trl(spec: dict) -> dict:
    """TRL's GRPOTrainer.train for `warmup + steps` optimizer steps, each timed by a callback from its start (its
    first micro-batch, which generates) to the end of its optimizer step. What ran inside each timed step is
    counted, and anything but one generation of P x G rows, the micro-batches and one optimizer step raises."""
    import trl
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import GRPOTrainer

    from icrl_lite.attention import register_attention
    from icrl_lite.policy import load_tokenizer, resolve_device, resolve_dtype, resolve_model_path

    device = resolve_device(spec["device"])
    dtype = resolve_dtype(spec["dtype"], device)
    kwargs = {"dtype": dtype}
    if device.type == "cpu":  # the attention kernel icrl-lite's policy uses on a CPU
        kwargs["attn_implementation"] = register_attention()
    model = AutoModelForCausalLM.from_pretrained(resolve_model_path(spec["model"]), **kwargs).to(device)
    tokenizer = load_tokenizer(spec["model"])
    dataset = Dataset.from_list([{"prompt": messages} for messages in trl_prompts(spec)])
    group = spec["group"]
    sampled: list[int] = []
    prompts: list[list[list[int]]] = []

    def positional(completions, completion_ids, **kwargs):
        sampled.append(sum(len(c) for c in completion_ids))
        return positional_rewards(len(completion_ids), group)

    class StepTimer(TrainerCallback):
        """Step seconds, and per step: the rows of each generation, the rows of each micro-batch trained, and
        the optimizer steps."""

        def __init__(self):
            self.seconds: list[float] = []
            self.steps: list[dict] = []

        def on_step_begin(self, args, state, control, **kwargs):
            self.steps.append({"generations": [], "micro_batches": [], "optimizer_steps": 0})
            self.start = time.perf_counter()

        def on_optimizer_step(self, args, state, control, **kwargs):
            self.steps[-1]["optimizer_steps"] += 1

        def on_step_end(self, args, state, control, **kwargs):
            self.seconds.append(time.perf_counter() - self.start)

    args = trl_config(spec, use_cpu=device.type == "cpu")
    lora = LoraConfig(r=spec["lora_rank"], lora_alpha=spec["lora_alpha"], lora_dropout=0.0,
                      target_modules=list(spec["lora_targets"]), task_type="CAUSAL_LM")
    timer = StepTimer()
    trainer = GRPOTrainer(model=model, reward_funcs=positional, args=args, train_dataset=dataset,
                          processing_class=tokenizer, peft_config=lora, callbacks=[timer])
    tokenize = trainer._tokenize_prompts  # the token ids TRL generates from and trains on, untruncated
    generate_and_score = trainer._generate_and_score_completions
    prepare = trainer._prepare_inputs

    def recording(batch):  # P x G prompts, each repeated G times in a row
        prompt_ids, *rest = tokenize(batch)
        prompts.append([list(p) for p in prompt_ids[::group]])
        return (prompt_ids, *rest)

    def generation(batch):  # samples, rewards and advantages for these rows together
        timer.steps[-1]["generations"].append(len(batch))
        return generate_and_score(batch)

    def micro_batch(batch):  # the rows the next forward/backward trains on
        inputs = prepare(batch)
        timer.steps[-1]["micro_batches"].append(len(inputs["completion_ids"]))
        return inputs

    trainer._tokenize_prompts, trainer._generate_and_score_completions, trainer._prepare_inputs = (
        recording, generation, micro_batch)
    trainer.train()
    expected = {"generations": [spec["prompts"] * group], "optimizer_steps": 1,
                "micro_batches": [args.per_device_train_batch_size] * args.gradient_accumulation_steps}
    if len(timer.steps) != args.max_steps or any(step != expected for step in timer.steps):
        raise RuntimeError(f"TRL's timed steps ran {timer.steps}; each should be {expected} (check trl_config)")
    out = summarize(timer.seconds, spec["warmup"], sampled, peak_memory_mb(device))
    out["trl_version"] = trl.__version__
    out["trl_batching"] = {k: getattr(args, k) for k in TRL_BATCHING}
    out["update_batches"] = expected["micro_batches"]
    out["dtype"] = str(dtype).removeprefix("torch.")
    return {**out, **prompt_record(prompts)}


def measure_points(spec: dict) -> dict:
    """`spec["points"]` ({group, max_new_tokens} each) one after another in this process, each with its own
    trainer and warm-up; only the step times mean anything (the peak memory is the process's over all points)."""
    measure = measure_trl if spec["system"] == "trl" else measure_icrl
    points = []
    for point in spec["points"]:
        folder = f"g{point['group']}-n{point['max_new_tokens']}"
        result = measure({**spec, **point, "workdir": str(Path(spec["workdir"]) / folder)})
        points.append({**point, **{k: result[k] for k in ("median_step_s", "step_seconds", "sampled_tokens_per_step",
                                                           "sampled_tokens_per_s", "dtype")}})
    return {"points": points}


# ---- the parent: both systems, each workload, KL off and on ----------------------------------------------
def trl_available() -> bool:
    return importlib.util.find_spec("trl") is not None


def base_spec(model: str, dtype: str, device: str, questions: Path) -> dict:
    """What both systems share in every run: the model, the questions file, sampling and optimizer settings
    and icrl-lite's default LoRA."""
    from icrl_lite.policy import ModelConfig

    lora = ModelConfig()  # icrl-lite's default LoRA, given to both
    return {"model": model, "dtype": dtype, "device": device, "questions": str(questions), "seed": 0,
            "temperature": 0.8, "learning_rate": 1e-5, "epsilon": 0.2, "lora_rank": lora.lora_rank,
            "lora_alpha": lora.lora_alpha, "lora_targets": lora.lora_target_modules}


def write_questions(path: Path, count: int) -> Path:
    """The first `count` bundled QA train questions: each step of either system prompts with exactly these."""
    from icrl_lite.data import bundled_qa_path, load_qa

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for q in load_qa(bundled_qa_path("train"))[:count]:
            f.write(json.dumps({"question": q["question"], "answers": q["answers"]}) + "\n")
    return path


def run_grpo_step(model: str, dtype: str, device: str, sizes: list[dict], workdir: Path, log=print) -> dict:
    """Each workload in `sizes` ({name, demos, prompts, group, max_new_tokens, warmup, steps, betas, and optionally
    trl_micro_batch: TRL's rows per forward/backward, default all P x G}) x each of its betas x each system, one
    process each. Skipped (with the install command) when TRL is not installed; a process that fails is reported
    with the end of its log."""
    if not trl_available():
        return {"skipped": f"TRL is not installed: {INSTALL_TRL}"}
    workdir.mkdir(parents=True, exist_ok=True)
    variants, base = [], None
    for workload in sizes:
        slug = workload["name"].replace(" ", "")
        questions = write_questions(workdir / slug / "questions.jsonl", workload["prompts"])
        base = base_spec(model, dtype, device, questions)
        for beta in workload["betas"]:
            variant = {"workload": workload["name"], "demos": workload["demos"], "beta": beta,
                       **{k: workload[k] for k in WORKLOAD_KEYS}, "trl_micro_batch": workload.get("trl_micro_batch")}
            for system in SYSTEMS:
                folder = workdir / slug / f"{system}-beta{beta}"
                spec = {**base, **variant, "system": system, "workdir": str(folder)}
                variant[system] = run_child(spec, folder)
                log(f"  grpo {workload['name']} {system} beta={beta}: " + (
                    f"{variant[system]['median_step_s']:.2f} s/step" if "error" not in variant[system] else "failed"))
            if all("error" not in variant[s] for s in SYSTEMS):
                ours, theirs = variant["icrl-lite"], variant["trl"]
                variant["prompt_tokens_per_prompt"] = theirs["prompt_tokens_mean"]
                variant["same_prompt_ids"] = ours["prompt_digest"] == theirs["prompt_digest"]
                variant["ratio"] = ratios(ours, theirs)
            variants.append(variant)
    settings = {k: base[k] for k in ("temperature", "learning_rate", "epsilon", "lora_rank", "lora_alpha",
                                     "lora_targets")}
    return {"settings": settings, "workloads": sizes, "variants": variants}


def ratios(ours: dict, theirs: dict) -> dict:
    """icrl-lite / TRL: below 1 = icrl-lite takes less."""
    return {"step_time": ours["median_step_s"] / theirs["median_step_s"],
            "time_per_sampled_token": (ours["median_step_s"] / ours["sampled_tokens_per_step"])
            / (theirs["median_step_s"] / theirs["sampled_tokens_per_step"]),
            "peak_memory": ours["peak_memory_mb"] / theirs["peak_memory_mb"]}


def run_child(spec: dict, folder: Path) -> dict:
    """Run one system in a fresh process; its result, or {"error": ..., "log": the end of its output}."""
    folder.mkdir(parents=True, exist_ok=True)
    spec_path, out_path, log_path = folder / "spec.json", folder / "result.json", folder / "log.txt"
    spec_path.write_text(json.dumps(spec, indent=1))
    root = Path(__file__).resolve().parent.parent
    with log_path.open("w") as log:
        done = subprocess.run([sys.executable, "-m", "benchmarks.grpo_step", str(spec_path), str(out_path)],
                              cwd=root, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode != 0 or not out_path.exists():
        return {"error": f"exit code {done.returncode}", "log": log_path.read_text()[-3000:]}
    return json.loads(out_path.read_text())


def main(argv: list[str]) -> None:
    spec_path, out_path = argv
    spec = json.loads(Path(spec_path).read_text())
    if "points" in spec:
        result = measure_points(spec)
    else:
        result = (measure_trl if spec["system"] == "trl" else measure_icrl)(spec)
    Path(out_path).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
