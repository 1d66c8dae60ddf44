"""ICRL rollout prompts: the search instruction and the in-context demonstration block.

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

PYTHON_INSTRUCTION = (
    "Solve the problem step by step. Every time you receive new information, first reason inside <think> and "
    "</think>. Do not compute in your head: write Python code between <python> and </python> and print the "
    "values you need; the output comes back between <output> and </output>. Variables persist from one "
    "<python> block to the next. Once you have the result, give the final answer inside <answer> and </answer>: "
    "only the number, with no explanation.\n"
    "Question: {question}\n"
)

# The corrective message forced after a turn with no valid action (ICRL's loop), one per task.
INVALID_ACTION = (
    "\nMy previous action is invalid. If I want to search, I should put the query between <search> and "
    "</search>. If I want to give the final answer, I should put the answer between <answer> and </answer>. "
    "Let me try again.\n"
)
INVALID_PYTHON = (
    "\nMy previous action is invalid. If I want to compute, I should put Python code between <python> and "
    "</python>. If I want to give the final answer, I should put the answer between <answer> and </answer>. "
    "Let me try again.\n"
)

FUNCTION_INSTRUCTION = (
    "You can call these functions, given as JSON schemas:\n{functions}\n"
    "First reason inside <think> and </think>. To call functions, write <tool_call>, then one JSON object per "
    'line, {{"name": "function name", "parameters": {{"parameter name": value}}}}, then </tool_call>. Use only the '
    "functions and parameter names listed above, with the values the question gives. If no function fits the "
    "question, say so inside <response> and </response> instead of calling one.\n"
    "Question: {question}\n"
)

# Multi-step function calling (the task provides implementations): calls run and their results come back.
FUNCTION_STEPS_INSTRUCTION = (
    "You can call these functions, given as JSON schemas:\n{functions}\n"
    "First reason inside <think> and </think>. To call functions, write <tool_call>, then one JSON object per "
    'line, {{"name": "function name", "parameters": {{"parameter name": value}}}}, then </tool_call>. Use only the '
    "functions and parameter names listed above, with the values the question gives. The results come back "
    "between <obs> and </obs>, one JSON object per call; you may then call more functions. When you are done, or "
    "if no function fits the question, give your final answer inside <response> and </response>.\n"
    "Question: {question}\n"
)
INVALID_FUNCTION = (
    "\nMy previous action is invalid. If I want to call functions, I should put one JSON object per line between "
    "<tool_call> and </tool_call>. If I want to give the final answer, I should put it between <response> and "
    "</response>. Let me try again.\n"
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
