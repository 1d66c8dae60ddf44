"""ICRL rollout prompts: the search instruction and the in-context demonstration block.

The search instruction and its corrective message are ICRL's, used by the qa task and as the prompt builders'
defaults; each other task keeps its own texts in its module (icrl_lite/tasks/).

Two demonstration layouts:
- `user`: the paper's layout, every demonstration inside the one user message
  (`=====Example k=====` / `Example Problem:` / `Example Solution:`), then the actual problem.
- `chat`: each demonstration is a prior chat exchange (user: the instruction with the demo question,
  assistant: the full trajectory). Small models copy the tool format far more reliably this way
  (SmolLM2-135M: a valid `<search>` call in 7/8 samples vs 0/8 with the paper's layout), so it is our
  default; the paper's layout stays selectable.
"""

from __future__ import annotations

import json
from typing import Sequence

SEARCH_INSTRUCTION = (
    "Solve the question step by step. Every time you receive new information, first reason inside "
    "<think> and </think>. If you find you are missing some knowledge, call the search engine with "
    "<search> query </search>; its top results come back between <information> and </information>. "
    "You may search as many times as you need. Once you have enough information, give the final answer "
    "inside <answer> and </answer> with no explanation, for example <answer> Beijing </answer>.\n"
    "Question: {question}\n"
)

# The corrective message forced after a turn with no valid action (ICRL's loop); the other tasks' own are in
# their modules (icrl_lite/tasks/).
INVALID_ACTION = (
    "\nMy previous action is invalid. If I want to search, I should put the query between <search> and "
    "</search>. If I want to give the final answer, I should put the answer between <answer> and </answer>. "
    "Let me try again.\n"
)

DEMO_HEADER = "Here are some existing QA examples that you can refer to:\n"
DEMO_FOOTER = "Do not answer the example problems above. Now solve the following problem.\n"

LAYOUTS = ("chat", "user")


def format_functions(functions: Sequence[dict]) -> str:
    """Function schemas for a prompt, one compact JSON object per line."""
    return "\n".join(json.dumps(f, ensure_ascii=False) for f in functions)


def fill(instruction: str, item: str | dict) -> str:
    """The instruction for one question (a string, or a record with `question` and optional `functions`)."""
    if isinstance(item, str):
        item = {"question": item}
    return instruction.format(question=item["question"], functions=format_functions(item.get("functions", ())))


def build_messages(
    question: str | dict,
    demos: Sequence[dict] = (),
    layout: str = "chat",
    instruction: str = SEARCH_INSTRUCTION,
) -> list[dict[str, str]]:
    """Chat messages for one rollout prompt; `demos` have `question` and `solution` (a full trajectory).

    `question` is the question text or its record (function-calling records carry their `functions`).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"demo layout {layout!r} is not one of {LAYOUTS}: use `chat` (small models) or `user` (the paper's)")
    if layout == "chat":
        messages = []
        for demo in demos:
            messages.append({"role": "user", "content": fill(instruction, demo)})
            messages.append({"role": "assistant", "content": demo["solution"]})
        messages.append({"role": "user", "content": fill(instruction, question)})
        return messages
    if not demos:
        return [{"role": "user", "content": fill(instruction, question)}]
    head, _, _ = fill(instruction, question).partition("Question:")
    blocks = [
        f"=====Example {k}=====\nExample Problem: {demo['question']}\nExample Solution: {demo['solution']}\n"
        for k, demo in enumerate(demos, start=1)
    ]
    text = question if isinstance(question, str) else question["question"]
    content = head + DEMO_HEADER + "".join(blocks) + DEMO_FOOTER + f"Question: {text}\n"
    return [{"role": "user", "content": content}]


def render_prompt(tokenizer, messages: list[dict[str, str]]) -> list[int]:
    """Token ids of the chat-templated prompt, ending with the assistant's generation header."""
    if tokenizer.chat_template:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    else:  # base models without a template: plain concatenation
        text = "\n\n".join(m["content"] for m in messages) + "\n"
    return tokenizer(text, add_special_tokens=False)["input_ids"]
