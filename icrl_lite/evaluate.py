"""Evaluate a policy on a task: accuracy (EM / answer-correct), format-valid rate, tool calls per question, length.

Zero-shot by default (no demonstrations), greedy decoding, the same rollout engine, tools and reward as
training. Writes one JSONL record per question with the full trajectory. Also here: loading a trained run for
inference (`load_for_inference`, its settings as evaluation keys), the per-rollout metrics and bootstrap intervals
the trainer logs, and the untrained-vs-trained table. The trainer imports this module, never the reverse.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from .checkpoints import resolve_checkpoint
from .config import apply, read_config_file
from .curriculum import DEMO_CHOICES, choose_demos
from .policy import ModelConfig, load_policy
from .preflight import check_model_source
from .prompts import build_messages, render_prompt
from .rewards import answer_in_text, extract_answer, normalize_answer
from .rollout import Rollout, RolloutConfig
from .tasks import TOOL_METRICS, Task, setup_task, validate_task_fields
from .tools import PythonConfig, SearchConfig, Tool
from .vllm_engine import make_engine


@dataclass
class EvalConfig:
    checkpoint: str = "base"
    """A checkpoint directory written by `icrl-lite train` (or its run directory: the latest checkpoint), or `base` for the untrained model."""
    task: str = ""
    """qa (search a corpus) | math (compute with the restricted Python tool) | fc (function calling) | a task registered by `plugins`; empty = the checkpoint's task (qa for base)."""
    split: str = "test"
    """Bundled split (train | dev | test) or, with `dataset`, the split of a hub dataset."""
    dataset: str = ""
    """Question file (JSONL/JSON) or HF dataset name; qa: question + answers (or FlashRAG golden_answers), math: ours, GSM8K or MATH format, fc: ours, xLAM, ToolACE or ToolRL (rlla, .json or .parquet) format; empty = the bundled task."""
    corpus: str = ""
    """Corpus JSONL (id, title, text) for search; empty = the bundled corpus."""
    tools: list[str] = field(default_factory=list)
    """Tools by name (search, python, or registered through plugins); empty = the task's tools."""
    plugins: list[str] = field(default_factory=list)
    """Python files or modules to import first, e.g. ones that register tools."""
    functions: str = ""
    """fc only: Python implementations of the functions (a .py file or module; its IMPLEMENTATIONS dict or its
    public functions by name). Calls are then executed, their results come back in <obs>, and the episode
    goes on until a <response> (multi-step; turns capped by rollout.max_turns). Empty = one turn."""
    instruction: str = ""
    """Prompt template with {question}; empty = the task's instruction."""
    demos: int = 0
    """In-context demonstrations in each prompt (0 = zero-shot, the default for evaluation)."""
    demo_pool: str = ""
    """Demonstration pool JSONL; empty = the bundled pool."""
    demo_layout: str = "chat"
    """chat (demos as prior chat turns) | user (the paper's layout, inside the user message)."""
    demo_choice: str = "per_prompt"
    """per_prompt: each question gets its own demos | per_step: the same demos for every question, so their
    prefix is run once per batch (much faster with --demos on a CPU)."""
    limit: int = 0
    """Evaluate only the first N questions (0 = all)."""
    batch_size: int = 16
    """Questions decoded together."""
    temperature: float = 0.0
    """Decoding temperature (0 = greedy; the paper uses 0.1)."""
    seed: int = 0
    """Seed for sampling and demo choice."""
    output: str = ""
    """Where to write per-question records (JSONL); empty = next to the checkpoint, or ./eval-base-<split>.jsonl."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """The base model (ignored for checkpoints, which record their own)."""
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    """Rollout budgets used during evaluation (its temperature is replaced by `temperature`); when none is set, a checkpoint is evaluated with the budgets it was trained with."""
    search: SearchConfig = field(default_factory=SearchConfig)
    """The search tool."""
    python: PythonConfig = field(default_factory=PythonConfig)
    """The Python tool's limits."""

    def validate(self) -> None:
        if self.demos < 0 or self.limit < 0 or self.batch_size < 1:
            raise ValueError("eval: demos and limit must be >= 0, batch_size >= 1")
        if self.demo_layout not in ("chat", "user"):
            raise ValueError(f"eval.demo_layout={self.demo_layout!r}: use chat or user")
        if self.demo_choice not in DEMO_CHOICES:
            raise ValueError(f"eval.demo_choice={self.demo_choice!r}: use per_prompt or per_step")
        validate_task_fields(self)
        self.model.validate()
        self.rollout.validate()


def score(rollout: Rollout, gold, task: Task, tools: Sequence[Tool], alpha: float = 0.8, variant: str = "fine",
          progress: float = 0.0, tool_penalty: float | None = None, credit: str = "em") -> dict[str, float]:
    """Reward metrics of one rollout plus its tool use and length (`gold`: the record's answers or calls).
    `tool_penalty` (None: the task's own) and `credit` (qa: em | f1) are passed to the task's reward only when
    they differ from its defaults."""
    options = {} if tool_penalty is None else {"tool_penalty": tool_penalty}
    if credit != "em":
        options["credit"] = credit
    _, metrics = task.reward(rollout.policy_text, gold, alpha=alpha, variant=variant, progress=progress, **options)
    for tool in tools:
        metrics[task.tool_metric(tool.name)] = float(sum(c["tool"] == tool.name for c in rollout.tool_calls))
    metrics["invalid_turns"] = float(rollout.invalid_turns)
    metrics["response_tokens"] = float(rollout.sampled_tokens)
    metrics["truncated"] = float(rollout.truncated)
    metrics.update(tool_use_health(rollout, gold, metrics["em"]))
    return metrics


def tool_use_health(rollout: Rollout, gold, correct: float) -> dict[str, float]:
    """How a rollout used its tools, beyond the reward: `repeated_calls` (calls repeating an earlier call of the
    same tool with the same query, case and spacing aside), `answer_is_query` (1 when the answer is what it searched
    for: the entity copied instead of read from the results) and, where the gold is answer strings,
    `answer_retrieved` (1 when a gold answer appears in some tool result) and `closed_book` (1 when the answer is
    right but no tool result held it: guessed or remembered, not read)."""
    calls = [(c["tool"], " ".join(str(c["query"]).lower().split())) for c in rollout.tool_calls]
    answer = extract_answer(rollout.policy_text)
    copied = answer is not None and normalize_answer(answer) != "" and any(
        normalize_answer(answer) == normalize_answer(str(c["query"])) for c in rollout.tool_calls)
    health = {"repeated_calls": float(len(calls) - len(set(calls))), "answer_is_query": float(copied)}
    answers = [gold] if isinstance(gold, str) else gold
    if isinstance(answers, (list, tuple)) and answers and all(isinstance(a, str) for a in answers):
        found = answer_in_text(answers, "\n".join(str(c["observation"]) for c in rollout.tool_calls))
        health["answer_retrieved"] = float(found)
        health["closed_book"] = float(correct == 1.0 and not found)
    return health


def bootstrap_ci(values: Sequence[float], resamples: int = 2000, confidence: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values` (per-question scores), seeded."""
    x = np.asarray(values, dtype=float)  # (n,)
    if x.size == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)  # (resamples,)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


def side_by_side(results: dict, task: Task, tools: Sequence[Tool]) -> str:
    """The summaries of `Trainer.final_evaluation` (untrained, untrained with demos when run, trained) as a table
    with 95% intervals (tool-use health too: repeated calls, answers found in a tool result, right answers that were
    not), then the EM and tool calls by hop count where the questions say how many hops they need."""
    keys = [("em", "EM" if "f1" in results["trained"] else "accuracy"), ("f1", "F1"), ("format_valid", "format-valid")]
    keys += [(m, m.replace("_", " ")) for m in task.metrics]
    keys += [(task.tool_metric(t.name), f"{t.name} calls / question") for t in tools]
    keys += [("repeated_calls", "repeated calls"), ("answer_is_query", "answer = a query"), ("answer_retrieved", "answer in a result"),
             ("closed_book", "right, not retrieved"), ("response_tokens", "response tokens"), ("truncated", "truncated")]
    hops = sorted(int(m.group(2)) for m in map(HOP_KEY.fullmatch, results["trained"]) if m and m.group(1) == "questions")
    for h in hops:
        keys += [(f"em@{h}hop", f"EM, {h}-hop ({results['trained'][f'questions@{h}hop']:.0f})")]
        keys += [(f"{task.tool_metric(t.name)}@{h}hop", f"{t.name} calls, {h}-hop") for t in tools]
    columns = [("untrained", "untrained")]
    if "untrained_demos" in results:
        columns.append(("untrained_demos", f"untrained, {results['untrained_demos']['demos']} demos"))
    columns.append(("trained", f"trained (step {results['trained']['step']})"))
    n = int(results["trained"]["questions"])
    also = f" (and the untrained model with {results['untrained_demos']['demos']} demos)" if "untrained_demos" in results else ""
    lines = [f"zero-shot, greedy, {n} questions of {results['eval']['source']}{also}:",
             f"  {'':24}" + "".join(f"{title:>28}" for _, title in columns)]
    for key, label in keys:
        if key not in results["trained"]:
            continue
        cells = []
        for name, _ in columns:
            value = results[name].get(key)
            low, high = results[name].get("intervals", {}).get(key, (None, None))
            digits = 1 if key == "response_tokens" else 3
            cells.append("-" if value is None else f"{value:.{digits}f}" + (
                f" [{low:.{digits}f}, {high:.{digits}f}]" if low is not None else ""))
        lines.append(f"  {label:24}" + "".join(f"{c:>28}" for c in cells))
    return "\n".join(lines)


def mean_metrics(rows: list[dict[str, float]]) -> dict[str, float]:
    keys = rows[0].keys() if rows else []
    return {k: sum(r[k] for r in rows) / len(rows) for k in keys}


def run_eval(model, tokenizer, examples: list[dict], task: Task, tools: list[Tool], instruction: str, cfg: EvalConfig,
             demo_pool: list[dict] = (), progress: bool = True) -> tuple[dict[str, float], list[dict]]:
    """Greedy (or sampled) rollouts for every question; returns (mean metrics, per-question records)."""
    engine = make_engine(model, tokenizer, tools, replace(cfg.rollout, temperature=cfg.temperature),
                         final_stops=task.final_stops, invalid_message=task.invalid_message)
    records: list[dict] = []
    generator = torch.Generator(device=model.device).manual_seed(cfg.seed)
    started, sampled = time.time(), 0
    bar = tqdm(total=len(examples), desc="eval", disable=not progress, dynamic_ncols=True)
    for start in range(0, len(examples), cfg.batch_size):
        batch = examples[start:start + cfg.batch_size]
        prompts = []
        for i, ex in enumerate(batch):
            index = start + i if cfg.demo_choice == "per_prompt" else 0
            demos = [demo_pool[j] for j in choose_demos(len(demo_pool), cfg.demos, cfg.seed, -1, index)] if cfg.demos else []
            prompts.append(render_prompt(tokenizer, build_messages(ex, demos, cfg.demo_layout, instruction)))
        for ex, rollout in zip(batch, engine.generate(prompts, 1, generator)):
            metrics = score(rollout, ex[task.gold_field], task, tools)
            sampled += rollout.sampled_tokens
            records.append({
                "id": ex["id"], "question": ex["question"], task.gold_field: ex[task.gold_field],
                **({"hops": ex["hops"]} if "hops" in ex else {}),
                "prediction": extract_answer(rollout.policy_text), **metrics,
                "tool_calls": rollout.tool_calls, "trajectory": rollout.text,
            })
        bar.update(len(batch))
        bar.set_postfix(em=f"{sum(r['em'] for r in records) / len(records):.3f}")
    bar.close()
    keys = ("em", "f1", "format_valid", *task.metrics, *(task.tool_metric(t.name) for t in tools), "invalid_turns",
            "repeated_calls", "answer_is_query", "answer_retrieved", "closed_book", "response_tokens", "truncated")
    summary = mean_metrics([{k: r[k] for k in keys if k in r} for r in records])
    summary.update(by_hops(records, ("em", *(task.tool_metric(t.name) for t in tools))))
    summary["questions"] = float(len(records))
    summary["tokens_per_s"] = sampled / max(time.time() - started, 1e-9)
    return summary, records


HOP_KEY = re.compile(r"(.+)@(\d+)hop")  # em@2hop: a metric over the questions needing 2 hops


def intervals(summary: dict, records: list[dict], resamples: int = 2000) -> dict[str, list[float]]:
    """95% bootstrap intervals over questions of every per-question metric of `summary`, the `key@Nhop` ones over
    that hop count's questions."""
    out = {}
    for key in summary:
        per_hop = HOP_KEY.fullmatch(key)
        name = per_hop.group(1) if per_hop else key
        rows = [r for r in records if not per_hop or r.get("hops") == int(per_hop.group(2))]
        if rows and name in rows[0] and name != "hops":
            out[key] = list(bootstrap_ci([r[name] for r in rows], resamples))
    return out


def by_hops(records: list[dict], keys: Sequence[str]) -> dict[str, float]:
    """`key@Nhop`: the mean of each key over the records of questions needing N hops (where the data says, in a
    `hops` field, and has more than one hop count), and `questions@Nhop`."""
    hops = sorted({r["hops"] for r in records if "hops" in r})
    out: dict[str, float] = {}
    if len(hops) < 2:
        return out
    for h in hops:
        rows = [r for r in records if r.get("hops") == h]
        out.update({f"{k}@{h}hop": sum(r[k] for r in rows) / len(rows) for k in keys if k in rows[0]})
        out[f"questions@{h}hop"] = float(len(rows))
    return out


def evaluate(cfg: EvalConfig) -> dict[str, float]:
    """Load the checkpoint (or base model), run the evaluation, write records; returns the summary."""
    cfg.validate()
    use_run_settings(cfg)
    task, tools, instruction = setup_task(cfg)
    examples = task.load(cfg.dataset, split=cfg.split) if cfg.dataset else task.load(task.bundled(cfg.split))
    if cfg.limit:
        examples = examples[: cfg.limit]
    pool = task.load_demos(cfg.demo_pool or task.bundled("demos")) if cfg.demos else []
    model, tokenizer, source = load_for_inference(cfg.checkpoint, cfg.model)
    summary, records = run_eval(model, tokenizer, examples, task, tools, instruction, cfg, pool)
    output = Path(cfg.output) if cfg.output else default_output(source, cfg)
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("w") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
    summary["records"] = str(output)  # type: ignore[assignment]
    return summary


def use_run_settings(cfg: EvalConfig) -> EvalConfig | None:
    """Fill what `cfg` leaves open from the run of its checkpoint: the task, the plugins (a task of your own is
    registered by them), for that task the functions (a multi-step run is evaluated multi-step), and, when no
    rollout budget is set, the budgets it trained with. The base model's task defaults to qa. Returns the run's
    settings (`run_settings`; None for `base`)."""
    trained = None
    if cfg.checkpoint != "base":
        trained = run_settings(resolve_checkpoint(cfg.checkpoint))
        cfg.task = cfg.task or trained.task
        cfg.plugins = cfg.plugins or trained.plugins
        if not cfg.functions and cfg.task == trained.task:
            cfg.functions = trained.functions
        if cfg.rollout == RolloutConfig():
            cfg.rollout = trained.rollout
    cfg.task = cfg.task or "qa"
    return trained


def run_settings(checkpoint: Path) -> EvalConfig:
    """What the run of `checkpoint` was trained with, as evaluation keys: the keys of its config.yaml that training
    and evaluation share (task, plugins, tools, functions, instruction, corpus, demo_pool, demo_layout, model,
    rollout, search, python, ...). Not validated, so a task of your own is not looked up before its plugins load."""
    settings = EvalConfig(checkpoint=str(checkpoint), task="qa")
    saved = checkpoint / "config.yaml"
    if saved.exists():
        shared = {f.name for f in fields(EvalConfig)}
        apply(settings, {k: v for k, v in read_config_file(saved).items() if k in shared}, where=str(saved))
    return settings


def load_for_inference(checkpoint: str, base: ModelConfig):
    """(model, tokenizer, checkpoint dir or None) for `base`, a checkpoint dir, or a run dir."""
    if checkpoint == "base":
        check_model_source(base.name)
        model, tokenizer = load_policy(base, max_seq_length=RolloutConfig().max_context_tokens)
        return model, tokenizer, None
    path = resolve_checkpoint(checkpoint)  # checks the adapter
    trained = run_settings(path)
    check_model_source(trained.model.name)
    model, tokenizer = load_policy(trained.model, adapter=path / "adapter", max_seq_length=trained.rollout.max_context_tokens)
    return model, tokenizer, path


def default_output(source: Path | None, cfg: EvalConfig) -> Path:
    name = f"eval-{'' if cfg.task == 'qa' else cfg.task + '-'}{cfg.split}-{cfg.demos}shot.jsonl"
    return (source / name) if source is not None else Path(f"eval-base-{name[5:]}")


def format_summary(summary: dict) -> str:
    accuracy = f"EM {summary['em']:.3f}  F1 {summary['f1']:.3f}" if "f1" in summary else f"accuracy {summary['em']:.3f}"
    calls = "  ".join(f"{k.replace('_', ' ')}/q {v:.2f}" for k, v in summary.items() if k in TOOL_METRICS.values() or k.endswith("_calls"))
    return (
        f"{accuracy}  format-valid {summary['format_valid']:.3f}  {calls}  invalid turns/q {summary['invalid_turns']:.2f}  "
        f"avg length {summary['response_tokens']:.0f} tok  ({int(summary['questions'])} questions, "
        f"{summary['tokens_per_s']:.0f} tok/s)"
    )
