"""Evaluate a policy on QA with search: EM, F1, format-valid rate, searches per question, response length.

Zero-shot by default (no demonstrations), greedy decoding, the same rollout engine and tools as training.
Writes one JSONL record per question with the full trajectory.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import torch
from tqdm import tqdm

from .curriculum import choose_demos
from .data import bundled_qa_path, load_corpus, load_demos, load_qa
from .model import ModelConfig
from .prompts import build_messages, render_prompt
from .rewards import extract_answer, icrl_reward
from .rollout import Rollout, RolloutConfig, RolloutEngine
from .tools import BM25Search


@dataclass
class EvalConfig:
    checkpoint: str = "base"
    """A checkpoint directory written by `icrl-lite train` (or its run directory: the latest checkpoint), or `base` for the untrained model."""
    split: str = "test"
    """Bundled split (train | dev | test) or, with `dataset`, the split of a hub dataset."""
    dataset: str = ""
    """QA file (JSONL/JSON with question + answers, or FlashRAG golden_answers) or HF dataset name; empty = the bundled task."""
    corpus: str = ""
    """Corpus JSONL (id, title, text) searched by BM25; empty = the bundled corpus."""
    demos: int = 0
    """In-context demonstrations in each prompt (0 = zero-shot, the default for evaluation)."""
    demo_pool: str = ""
    """Demonstration pool JSONL; empty = the bundled pool."""
    demo_layout: str = "chat"
    """chat (demos as prior chat turns) | user (the paper's layout, inside the user message)."""
    limit: int = 0
    """Evaluate only the first N questions (0 = all)."""
    batch_size: int = 16
    """Questions decoded together."""
    top_k: int = 3
    """Documents returned per search."""
    temperature: float = 0.0
    """Decoding temperature (0 = greedy; the paper uses 0.1)."""
    seed: int = 0
    """Seed for sampling and demo choice."""
    output: str = ""
    """Where to write per-question records (JSONL); empty = next to the checkpoint, or ./eval-base-<split>.jsonl."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """The base model (ignored for checkpoints, which record their own)."""
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    """Rollout budgets used during evaluation (its temperature is replaced by `temperature`)."""

    def validate(self) -> None:
        if self.demos < 0 or self.limit < 0 or self.batch_size < 1 or self.top_k < 1:
            raise ValueError("eval: demos and limit must be >= 0, batch_size and top_k >= 1")
        if self.demo_layout not in ("chat", "user"):
            raise ValueError(f"eval.demo_layout={self.demo_layout!r}: use chat or user")
        self.model.validate()
        self.rollout.validate()


def score(rollout: Rollout, answers: Sequence[str], alpha: float = 0.8) -> dict[str, float]:
    """Reward metrics of one rollout plus its tool use and length."""
    _, metrics = icrl_reward(rollout.policy_text, answers, alpha=alpha)
    metrics["searches"] = float(sum(c["tool"] == "search" for c in rollout.tool_calls))
    metrics["invalid_turns"] = float(rollout.invalid_turns)
    metrics["response_tokens"] = float(rollout.sampled_tokens)
    metrics["truncated"] = float(rollout.truncated)
    return metrics


def mean_metrics(rows: list[dict[str, float]]) -> dict[str, float]:
    keys = rows[0].keys() if rows else []
    return {k: sum(r[k] for r in rows) / len(rows) for k in keys}


def run_eval(model, tokenizer, examples: list[dict], search: BM25Search, cfg: EvalConfig,
             demo_pool: list[dict] = (), progress: bool = True) -> tuple[dict[str, float], list[dict]]:
    """Greedy (or sampled) rollouts for every question; returns (mean metrics, per-question records)."""
    engine = RolloutEngine(model, tokenizer, [search.as_tool()], replace(cfg.rollout, temperature=cfg.temperature))
    records: list[dict] = []
    generator = torch.Generator(device=model.device).manual_seed(cfg.seed)
    started, sampled = time.time(), 0
    bar = tqdm(total=len(examples), desc="eval", disable=not progress, dynamic_ncols=True)
    for start in range(0, len(examples), cfg.batch_size):
        batch = examples[start:start + cfg.batch_size]
        prompts = []
        for i, ex in enumerate(batch):
            demos = [demo_pool[j] for j in choose_demos(len(demo_pool), cfg.demos, cfg.seed, -1, start + i)] if cfg.demos else []
            prompts.append(render_prompt(tokenizer, build_messages(ex["question"], demos, cfg.demo_layout)))
        for ex, rollout in zip(batch, engine.generate(prompts, 1, generator)):
            metrics = score(rollout, ex["answers"])
            sampled += rollout.sampled_tokens
            records.append({
                "id": ex["id"], "question": ex["question"], "answers": ex["answers"],
                "prediction": extract_answer(rollout.policy_text), **metrics,
                "tool_calls": rollout.tool_calls, "trajectory": rollout.text,
            })
        bar.update(len(batch))
        summary = mean_metrics([{k: r[k] for k in ("em", "f1")} for r in records])
        bar.set_postfix(em=f"{summary['em']:.3f}", f1=f"{summary['f1']:.3f}")
    bar.close()
    keys = ("em", "f1", "format_valid", "searches", "invalid_turns", "response_tokens", "truncated")
    summary = mean_metrics([{k: r[k] for k in keys} for r in records])
    summary["questions"] = float(len(records))
    summary["tokens_per_s"] = sampled / max(time.time() - started, 1e-9)
    return summary, records


def evaluate(cfg: EvalConfig) -> dict[str, float]:
    """Load the checkpoint (or base model), run the evaluation, write records; returns the summary."""
    from .trainer import load_for_inference

    cfg.validate()
    model, tokenizer, source = load_for_inference(cfg.checkpoint, cfg.model)
    examples = load_qa(cfg.dataset, split=cfg.split) if cfg.dataset else load_qa(bundled_qa_path(cfg.split))
    if cfg.limit:
        examples = examples[: cfg.limit]
    corpus = cfg.corpus or bundled_qa_path("corpus")
    load_corpus(corpus)  # clear errors for a missing or malformed corpus before any model work
    search = BM25Search(corpus, top_k=cfg.top_k)
    pool = load_demos(cfg.demo_pool or bundled_qa_path("demos")) if cfg.demos else []
    summary, records = run_eval(model, tokenizer, examples, search, cfg, pool)
    output = Path(cfg.output) if cfg.output else default_output(source, cfg)
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("w") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
    summary["records"] = str(output)  # type: ignore[assignment]
    return summary


def default_output(source: Path | None, cfg: EvalConfig) -> Path:
    name = f"eval-{cfg.split}-{cfg.demos}shot.jsonl"
    return (source / name) if source is not None else Path(f"eval-base-{name[5:]}")


def format_summary(summary: dict) -> str:
    return (
        f"EM {summary['em']:.3f}  F1 {summary['f1']:.3f}  format-valid {summary['format_valid']:.3f}  "
        f"searches/q {summary['searches']:.2f}  invalid turns/q {summary['invalid_turns']:.2f}  "
        f"avg length {summary['response_tokens']:.0f} tok  ({int(summary['questions'])} questions, "
        f"{summary['tokens_per_s']:.0f} tok/s)"
    )
