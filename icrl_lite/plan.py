"""Plan a training run on GPUs before renting one: its memory estimate and expected wall time, from arithmetic.

`icrl-lite plan --config NAME [--gpu T4 ...]` prints, for each GPU, whether the run fits (memory.py's estimate
against the card's memory, with the knobs to turn when it does not) and how long a step and the run should take.
Nothing here is measured: the time is FLOPs and bytes per step over the vendor's peak, times efficiencies that
are assumptions, stated below, so read it as "about", and as the reason a card is slow (decode is bandwidth bound,
the update compute bound). Works offline for the models recipes name (`SHAPES`) and any local model directory.

Per step, with R = prompts_per_step x num_generations rollouts, P prompt tokens (demos included), S response
tokens (the budget: an upper bound), N matmul weights of the model (every linear layer and the LM head):
- sampling: S decode steps (rows decode together until the longest is done), each reading the weights and the
  KV cache once (bandwidth) or doing R x 2N FLOPs (compute), whichever is slower, plus a fixed per-step cost of
  launching every layer's kernels; the prompts' prefill, 2N FLOPs a token, once per group;
- update: updates_per_step x (prompts x P + R x S) tokens x (2N forward + 2N input gradient, + 2N recomputed with
  gradient checkpointing; the frozen base needs no weight gradient), plus a reference forward when beta > 0,
  plus the attention's 4 x layers x heads x head_dim FLOPs per token and position attended.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from .memory import GB, ModelShape, estimate_memory, knobs


@dataclass(frozen=True)
class Gpu:
    name: str
    memory_gb: float
    tflops: float
    """Dense 16-bit tensor-core peak (bf16; fp16 on a T4), from the vendor's data sheet."""
    bandwidth_gbs: float
    """Memory bandwidth, from the data sheet."""
    bf16: bool = True


GPUS = {gpu.name: gpu for gpu in (
    Gpu("T4", 16, 65, 320, bf16=False),
    Gpu("L4", 24, 121, 300),
    Gpu("A10", 24, 125, 600),
    Gpu("RTX 4090", 24, 165, 1008),
    Gpu("A100-80GB", 80, 312, 2039),
    Gpu("H100", 80, 989, 3350),
)}

# Assumptions, not measurements (no GPU has run these recipes here; see docs/recipes.md):
MATMUL_EFFICIENCY = 0.4  # of the tensor peak, for the update's matmuls through transformers + peft
FOUR_BIT_SLOWDOWN = 1.5  # bitsandbytes dequantizes each 4-bit weight to 16 bits on every use in training
BANDWIDTH_EFFICIENCY = 0.6  # of the data-sheet bandwidth, for a decode step's weight and cache reads
FOUR_BIT_DECODE_BYTES = 4.5  # per weight at a decode step: 4-bit read (0.5), 16-bit copy written and read (2 + 2)
LAUNCH_SECONDS_PER_LAYER = 0.5e-3  # a decode step's fixed cost per decoder layer: Python and ~15 kernel launches

SHAPES = {  # config.json of each model (hidden, intermediate, layers, heads, kv heads, vocab, tied), for planning offline
    "Qwen/Qwen2.5-0.5B-Instruct": ModelShape(151936, 896, 4864, 24, 14, 2, 64, True),
    "Qwen/Qwen2.5-1.5B-Instruct": ModelShape(151936, 1536, 8960, 28, 12, 2, 128, True),
    "Qwen/Qwen2.5-3B-Instruct": ModelShape(151936, 2048, 11008, 36, 16, 2, 128, True),
    "Qwen/Qwen2.5-7B-Instruct": ModelShape(152064, 3584, 18944, 28, 28, 4, 128, False),
    "smollm2-135m": ModelShape(49152, 576, 1536, 30, 9, 3, 64, True),
}


@dataclass
class StepTime:
    """Seconds of one GRPO step by phase, and the arithmetic behind them."""

    decode: float
    prefill: float
    update: float
    decode_bound: str  # "bandwidth" or "compute": what limits a decode step
    update_tflop: float
    sampled_tokens: int

    @property
    def total(self) -> float:
        return self.decode + self.prefill + self.update


def shape_of(name: str) -> ModelShape:
    """A model's shape: from `SHAPES`, else its config.json (a local directory, or the Hub when online)."""
    if name in SHAPES:
        return SHAPES[name]
    from transformers import AutoConfig

    try:
        return ModelShape.from_config(AutoConfig.from_pretrained(name))
    except OSError as e:
        raise ValueError(f"plan: no shape for model {name!r} offline ({str(e).splitlines()[0][:120]}); known: "
                         f"{', '.join(SHAPES)}, or a local model directory") from None


def matmul_weights(shape: ModelShape) -> int:
    """Weights a token multiplies through: every decoder layer's linear layers and the LM head."""
    return shape.layers * sum(a * b for a, b in shape.linears().values()) + shape.vocab * shape.hidden


def step_time(shape: ModelShape, gpu: Gpu, *, prompts: int, generations: int, prompt_tokens: int, response_tokens: int,
              updates: int, checkpointing: bool, reference: bool, four_bit: bool) -> StepTime:
    """Expected seconds of one step of `prompts` x `generations` rollouts on `gpu` (see the module docstring)."""
    rows, n = prompts * generations, matmul_weights(shape)
    peak = gpu.tflops * 1e12 * MATMUL_EFFICIENCY / (FOUR_BIT_SLOWDOWN if four_bit else 1)
    attention = 4 * shape.layers * shape.heads * shape.head_dim  # FLOPs per token per position attended
    # sampling: per decode step, the weights and every row's cache (at its mean length) are read once
    mean_context = prompt_tokens + response_tokens / 2
    weight_bytes = n * (FOUR_BIT_DECODE_BYTES if four_bit else 2)
    cache_bytes = rows * mean_context * shape.kv_bytes_per_token(2)
    read = (weight_bytes + cache_bytes) / (gpu.bandwidth_gbs * 1e9 * BANDWIDTH_EFFICIENCY)
    compute = rows * (2 * n + attention * mean_context) / peak
    launch = shape.layers * LAUNCH_SECONDS_PER_LAYER
    decode = response_tokens * (max(read, compute) + launch)
    prefill = prompts * prompt_tokens * (2 * n + attention * prompt_tokens / 2) / peak
    # the update: each group's prompt once, every response; forward, input gradient, maybe recompute and reference
    tokens = prompts * prompt_tokens + rows * response_tokens
    passes = updates * (3 if checkpointing else 2) + (1 if reference else 0)
    flops = passes * tokens * (2 * n + attention * mean_context)
    return StepTime(decode=decode, prefill=prefill, update=flops / peak, decode_bound="bandwidth" if read > compute else "compute",
                    update_tflop=flops / 1e12, sampled_tokens=rows * response_tokens)


def prompt_length(demos: int, question_tokens: int, demo_tokens: int, context: int, response: int) -> int:
    """A prompt of `demos` demonstrations, within the context budget left for the response."""
    return max(1, min(question_tokens + demos * demo_tokens, context - response))


@dataclass
class GpuPlan:
    gpu: Gpu
    peak_gb: float
    fits: bool
    knobs: list[str]
    steps: list[tuple[int, int, StepTime]]  # (demos, steps, per-step time) by stage
    eval_seconds: float

    @property
    def hours(self) -> float:
        return (sum(n * t.total for _, n, t in self.steps) + self.eval_seconds) / 3600


def plan_run(cfg, gpus: list[str], question_tokens: int = 250, demo_tokens: int = 500) -> list[GpuPlan]:
    """Memory and wall time of the TrainConfig `cfg` on each GPU of `gpus` (names of `GPUS`)."""
    unknown = [g for g in gpus if g not in GPUS]
    if unknown:
        raise ValueError(f"plan: unknown GPU(s) {', '.join(unknown)}; choose from {', '.join(GPUS)}")
    shape, r = shape_of(cfg.model.name), cfg.rollout
    most_demos = max(stage["demos"] for stage in cfg.stages)
    longest = prompt_length(most_demos, question_tokens, demo_tokens, r.max_context_tokens, r.max_response_tokens)
    plans = []
    for name in gpus:
        gpu = GPUS[name]
        estimate = estimate_memory(
            shape, dtype=torch.bfloat16 if gpu.bf16 else torch.float16, load_in_4bit=cfg.model.load_in_4bit,
            lora_rank=cfg.model.lora_rank, target_modules=cfg.model.lora_target_modules,
            prompts_per_step=cfg.prompts_per_step, num_generations=cfg.num_generations, prompt_tokens=longest,
            max_response_tokens=r.max_response_tokens, max_context_tokens=r.max_context_tokens, max_turns=r.max_turns,
            max_obs_tokens=r.max_obs_tokens, merge_lora=r.merge_lora, fast_decode=r.fast_decode,
            logprob_chunk=cfg.logprob_chunk, micro_batch_size=cfg.micro_batch_size,
            gradient_checkpointing=cfg.model.gradient_checkpointing, cuda=True)
        stages = []
        for stage in cfg.stages:
            prompt = prompt_length(stage["demos"], question_tokens, demo_tokens, r.max_context_tokens, r.max_response_tokens)
            stages.append((stage["demos"], stage["steps"], step_time(
                shape, gpu, prompts=cfg.prompts_per_step, generations=cfg.num_generations, prompt_tokens=prompt,
                response_tokens=r.max_response_tokens, updates=cfg.updates_per_step,
                checkpointing=cfg.model.gradient_checkpointing, reference=cfg.beta > 0, four_bit=cfg.model.load_in_4bit)))
        total_steps = sum(stage["steps"] for stage in cfg.stages)
        evals = (total_steps // cfg.eval_every if cfg.eval_every else 0) * cfg.eval_size
        one_eval = step_time(shape, gpu, prompts=16, generations=1, prompt_tokens=question_tokens,
                             response_tokens=r.max_response_tokens, updates=0, checkpointing=False, reference=False,
                             four_bit=cfg.model.load_in_4bit)
        eval_seconds = math.ceil(evals / 16) * (one_eval.decode + one_eval.prefill)
        plans.append(GpuPlan(gpu, estimate.peak / GB, estimate.peak <= gpu.memory_gb * GB * 0.95,
                             knobs(cfg, estimate), stages, eval_seconds))
    return plans


def format_plan(cfg, plans: list[GpuPlan], source: str = "") -> str:
    """The plan as text: per GPU, fit and memory, then per stage the step time and its arithmetic."""
    r = cfg.rollout
    lines = [f"plan for {source or cfg.output_dir}: {cfg.model.name}{' (4-bit)' if cfg.model.load_in_4bit else ''}, "
             f"{cfg.prompts_per_step} x {cfg.num_generations} rollouts x up to {r.max_response_tokens} response tokens, "
             f"{cfg.updates_per_step} update(s) a step, stages "
             + " -> ".join(f"{s['demos']} demos x {s['steps']}" for s in cfg.stages),
             "estimates from arithmetic (icrl_lite/plan.py: data-sheet peaks x assumed efficiencies), not measurements"]
    for plan in plans:
        gpu = plan.gpu
        verdict = "fits" if plan.fits else "does NOT fit"
        lines.append(f"\n{gpu.name} ({gpu.memory_gb:g} GB, {gpu.tflops:g} TFLOP/s, {gpu.bandwidth_gbs:g} GB/s): "
                     f"{verdict}, peak {plan.peak_gb:.1f} GB; about "
                     + (f"{plan.hours:.1f} h" if plan.hours >= 1 else f"{plan.hours * 60:.0f} min") + " for the run"
                     + (f" incl. {plan.eval_seconds / 60:.0f} min of evaluation" if plan.eval_seconds else ""))
        if not plan.fits:
            lines += [f"  turn: {knob}" for knob in plan.knobs[:3]]
        for demos, steps, t in plan.steps:
            lines.append(f"  {demos} demos: ~{t.total:.0f} s/step x {steps} (sampling {t.decode + t.prefill:.0f} s, "
                         f"{t.sampled_tokens} tokens, decode {t.decode_bound}-bound; update {t.update:.0f} s, "
                         f"{t.update_tflop:.0f} TFLOP)")
    return "\n".join(lines)


def recipe_gpus(path: str | Path) -> list[str]:
    """The GPUs a config names in a `# plan: T4, L4` comment line; empty when it names none."""
    for line in Path(path).read_text().splitlines():
        if line.strip().startswith("# plan:"):
            return [name.strip() for name in line.split(":", 1)[1].split(",") if name.strip()]
    return []
