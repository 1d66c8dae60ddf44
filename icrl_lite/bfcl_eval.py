"""`icrl-lite eval bfcl`: a checkpoint (or the base model) on BFCL's Python single-turn categories.

Each entry's first turn is rendered with one of two prompts, generated greedily in batches by the rollout
engine (no tools run), decoded into calls and scored by our AST checker (`icrl_lite.bfcl`):
- `bfcl`: the leaderboard's default prompting system prompt (the functions as indented JSON, answers as a
  Python list of calls `[f(a=1), g(b="x")]`), exactly as `bfcl-eval` builds it for prompting models;
- `toolrl`: our function-calling instruction (the prompt `task=fc` trains with), answers in `<tool_call>`
  JSON lines.
Compare a trained checkpoint with the base model under the SAME prompt: the published anchors use each
model's best prompt.

`bfcl` outputs are decoded as the leaderboard decodes them (`decode=official`, bfcl-eval's decoder: a
```python fence or prose around the list is not a call); `decode=lenient` reads fenced lists too and is named
as such in the report header, since its scores are not the leaderboard's.

The report gives the per-category accuracies, then the leaderboard's summary columns (Non-Live, Live, Multi Turn,
Relevance, Irrelevance, Overall Acc) computed as its own code aggregates them, for v4 (bfcl-eval 2026.3.23, whose
data this runs) and v3 (the version ToolRL reports). The multi-turn, agentic and Java / JavaScript categories do not
run here (`bfcl.NOT_SUPPORTED` says why): each Overall Acc is given over the columns that ran, with their share of
its weight, beside the number the leaderboard's code prints, which scores what did not run as 0. Neither is the
leaderboard's full Overall: compare Overall numbers only with others over the same columns.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch
from tqdm import tqdm

from .bfcl import (CATEGORIES, DECODES, category_size, check, decode_python_calls, decode_toolrl_calls, format_summary,
                   format_table, load_category, summarize)
from .evaluate import load_for_inference
from .policy import ModelConfig
from .prompts import fill, render_prompt
from .rollout import RolloutConfig, RolloutEngine
from .tasks.fc import FUNCTION_INSTRUCTION

PROMPTS = ("bfcl", "toolrl")

# The leaderboard's default system prompt for prompting models (bfcl-eval, style "classic", plaintext,
# functions as JSON, return format python, no tool-call tag). Its persona and task run together as in bfcl-eval.
BFCL_SYSTEM_PROMPT = (
    "You are an expert in composing functions.You are given a question and a set of possible functions. Based on "
    "the question, you will need to make one or more function/tool calls to achieve the purpose. If none of the "
    "functions can be used, point it out. If the given question lacks the parameters required by the function, "
    "also point it out.\n\nYou should only return the function calls in your response.\n\nIf you decide to invoke "
    "any of the function(s), you MUST put it in the format of [func_name1(params_name1=params_value1, "
    "params_name2=params_value2...), func_name2(params)].  You SHOULD NOT include any other text in the "
    "response.\n\nAt each turn, you should try your best to complete the tasks requested by the user within the "
    "current turn. Continue to output functions to call until you have fulfilled the user's request to the best "
    "of your ability. Once you have no more functions to call, the system will consider the current turn "
    "complete and proceed to the next turn or task.\n\nHere is a list of functions in json format that you can "
    "invoke.\n{functions}\n"
)


@dataclass
class BfclConfig:
    checkpoint: str = "base"
    """A checkpoint or run directory written by `icrl-lite train`, or `base` for the untrained model."""
    categories: list[str] = field(default_factory=lambda: list(CATEGORIES))
    """BFCL categories to run (Python single-turn)."""
    prompt: str = "bfcl"
    """bfcl (the leaderboard's prompting system prompt, calls as a Python list) | toolrl (our function-calling instruction, <tool_call> JSON lines)."""
    decode: str = "official"
    """How `prompt=bfcl` outputs are decoded: official (bfcl-eval's decoder, as the leaderboard scores: a ```python
    fence or prose around the call list fails to decode) | lenient (also reads the first markdown code block, and
    unary +/- as Python does; not a leaderboard score, and the report says so)."""
    limit: int = 0
    """First N entries of each category (0 = all)."""
    sample: int = 0
    """A seeded random sample of N entries per category, kept in file order (the whole category when it has
    at most N; 0 = all). Unlike `limit`, it spreads over each file, whose entries are grouped by source."""
    seed: int = 0
    """Seed of `sample`."""
    batch_size: int = 32
    """Most entries generated together (sorted by prompt length to waste little padding)."""
    max_batch_tokens: int = 16384
    """Most prompt tokens in one batch (padding included): long prompts go in smaller batches, so that
    the prefill's attention stays within memory (live_multiple has prompts of 5,000+ tokens)."""
    max_new_tokens: int = 192
    """Tokens generated per entry."""
    output: str = ""
    """JSONL of raw outputs and verdicts; empty = next to the checkpoint, or ./bfcl-base-<prompt>.jsonl."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """The base model (ignored for checkpoints, which record their own)."""

    def validate(self) -> None:
        unknown = sorted(set(self.categories) - set(CATEGORIES))
        if unknown:
            raise ValueError(f"unknown BFCL categories {unknown}; choose from {', '.join(CATEGORIES)}")
        if self.prompt not in PROMPTS:
            raise ValueError(f"prompt={self.prompt!r}: use bfcl or toolrl")
        if self.decode not in DECODES:
            raise ValueError(f"decode={self.decode!r}: use official (the leaderboard's decoder) or lenient")
        if self.prompt == "toolrl" and self.decode != "official":
            raise ValueError("decode=lenient applies to prompt=bfcl (Python call lists); toolrl outputs are read by "
                             "the ToolRL <tool_call> parser: drop decode= or use prompt=bfcl")
        if self.limit and self.sample:
            raise ValueError("give limit (the first N entries) or sample (N random entries), not both")
        if self.sample < 0 or self.limit < 0 or self.batch_size < 1 or self.max_new_tokens < 1 or self.max_batch_tokens < 1:
            raise ValueError("limit must be >= 0; batch_size, max_batch_tokens and max_new_tokens >= 1")
        self.model.validate()


def bfcl_messages(entry, prompt: str) -> list[dict[str, str]]:
    """The chat messages of an entry's first turn under `prompt`."""
    turn = [dict(m) for m in entry.question]
    if prompt == "bfcl":
        system = BFCL_SYSTEM_PROMPT.format(functions=json.dumps(entry.functions, indent=4))
        if turn and turn[0]["role"] == "system":  # bfcl-eval puts its prompt first and keeps the entry's after it
            turn[0]["content"] = system + "\n\n" + turn[0]["content"]
            return turn
        return [{"role": "system", "content": system}] + turn
    context = "\n".join(m["content"] for m in turn if m["role"] == "system")
    question = "\n".join(m["content"] for m in turn if m["role"] != "system")
    text = fill(FUNCTION_INSTRUCTION, {"question": question, "functions": entry.functions})
    return [{"role": "user", "content": f"{context}\n\n{text}" if context else text}]


def run_bfcl(cfg: BfclConfig, progress: bool = True) -> dict:
    """Generate and score every entry; writes the JSONL of outputs; returns accuracies, counts and the
    leaderboard summary (`bfcl.summarize`: v4 and v3 columns and Overall Acc, the categories not run and why)."""
    cfg.validate()
    entries = {c: pick(load_category(c, limit=cfg.limit or None), cfg.sample, cfg.seed) for c in cfg.categories}
    model, tokenizer, source = load_for_inference(cfg.checkpoint, cfg.model)
    context = getattr(model.config, "max_position_embeddings", 8192)
    budget = RolloutConfig(temperature=0.0, max_turns=1, max_turn_tokens=cfg.max_new_tokens,
                           max_response_tokens=cfg.max_new_tokens, max_context_tokens=context)
    stops = ("</tool_call>", "</response>") if cfg.prompt == "toolrl" else ()
    engine = RolloutEngine(model, tokenizer, [], budget, final_stops=stops)
    decode = decode_toolrl_calls if cfg.prompt == "toolrl" else partial(decode_python_calls, decode=cfg.decode)
    output = Path(cfg.output) if cfg.output else (
        source / f"bfcl-{cfg.prompt}.jsonl" if source is not None else Path(f"bfcl-base-{cfg.prompt}.jsonl"))
    output.parent.mkdir(parents=True, exist_ok=True)
    accuracy, counts = {}, {}
    started, total = time.time(), sum(len(e) for e in entries.values())
    bar = tqdm(total=total, desc="bfcl", disable=not progress, dynamic_ncols=True)
    generator = torch.Generator(device=model.device).manual_seed(0)
    with output.open("w") as f:
        for category, items in entries.items():
            prompts = [render_prompt(tokenizer, bfcl_messages(e, cfg.prompt)) for e in items]
            correct = 0
            for batch in length_batches([len(p) for p in prompts], cfg.batch_size, cfg.max_batch_tokens):
                rollouts = engine.generate([prompts[i] for i in batch], 1, generator)
                for i, rollout in zip(batch, rollouts):
                    calls = decode(rollout.policy_text)
                    valid, error = check(calls, items[i])
                    if len(prompts[i]) >= context:
                        valid, error = False, f"prompt of {len(prompts[i])} tokens is longer than the model's context"
                    correct += valid
                    f.write(json.dumps({"id": items[i].id, "category": category, "prompt_tokens": len(prompts[i]),
                                        "output": rollout.policy_text, "calls": jsonable(calls), "valid": valid,
                                        "error": error}) + "\n")
                bar.update(len(batch))
            accuracy[category], counts[category] = correct / max(1, len(items)), len(items)
            bar.set_postfix({category: f"{accuracy[category]:.3f}"})
    bar.close()
    sizes = {c: category_size(c) for c in CATEGORIES}  # full sizes weigh the live columns, also for a sample
    return {"accuracy": accuracy, "counts": counts, "summary": summarize(accuracy, sizes), "records": str(output),
            "seconds": time.time() - started, "prompt": cfg.prompt, "decode": cfg.decode}


def pick(entries: list, n: int, seed: int) -> list:
    """`n` entries drawn at random with `seed` (all when n is 0 or covers them), in their original order."""
    if not n or n >= len(entries):
        return entries
    return [entries[i] for i in sorted(random.Random(seed).sample(range(len(entries)), n))]


def length_batches(lengths: list[int], batch_size: int, max_tokens: int) -> list[list[int]]:
    """Indices sorted by length, cut into batches of at most `batch_size` rows and `max_tokens` padded
    tokens (rows x the longest); a prompt longer than `max_tokens` is a batch of its own."""
    batches: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        if batches and len(batches[-1]) < batch_size and (len(batches[-1]) + 1) * lengths[i] <= max_tokens:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def report_header(prompt: str, decode: str) -> str:
    """The report's first line: the prompt and how outputs were decoded (lenient scores are not BFCL's)."""
    if prompt == "toolrl":
        reading = "ToolRL <tool_call> JSON lines (our prompt and format, not the leaderboard's)"
    elif decode == "lenient":
        reading = "lenient (code fences read, unary +/- as in Python): NOT the leaderboard's scores"
    else:
        reading = "official (bfcl-eval's decoder, as the leaderboard)"
    return f"BFCL v4, Python single-turn | prompt {prompt} | decode {reading}"


def jsonable(value):
    """A decoded value as JSON can hold it: bytes, complex numbers, sets and keys JSON lacks become their repr."""
    if isinstance(value, dict):
        return {k if isinstance(k, str | int | float | bool) else repr(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value if value is None or isinstance(value, str | int | float | bool) else repr(value)


def format_report(report: dict) -> str:
    """The header (prompt, decoding), the per-category table, the leaderboard columns with the categories not run
    (`bfcl.format_summary`), and where the records are."""
    return "\n".join([report_header(report["prompt"], report["decode"]),
                      format_table(report["accuracy"], report["counts"]), "",
                      format_summary(report["summary"]), "",
                      f"records: {report['records']}  ({report['seconds']:.0f} s)"])
