"""The math task: solve word problems by computing with the restricted Python tool.

Records: `question` and `answers`, in our format, GSM8K's (`answer` ending "#### 42") or MATH's (`\\boxed{}`
solutions or an `answer` field), read by `data.load_math`. The bundled task is data/math/ (arithmetic word problems
and Python-tool demos; made by scripts/make_math_task.py). Tool: `python` (limits from the config's `python`
section); successive blocks of one rollout share variables. Reward 0.8 * answer-correct (exact rationals, else
math-verify; `rewards.math_reward`) + 0.2 * format, where the format's tool penalty is "no <python> call at all";
metrics log `python_calls`.
"""

from __future__ import annotations

from ..data import bundled_math_path, load_math
from ..rewards import math_reward
from .base import Task, answer_reward, register_task

PYTHON_INSTRUCTION = (
    "Solve the problem step by step. Every time you receive new information, first reason inside <think> and "
    "</think>. Do not compute in your head: write Python code between <python> and </python> and print the "
    "values you need; the output comes back between <output> and </output>. Variables persist from one "
    "<python> block to the next. Once you have the result, give the final answer inside <answer> and </answer>: "
    "only the number, with no explanation.\n"
    "Question: {question}\n"
)

# The corrective message forced after a turn with no valid action (ICRL's loop).
INVALID_PYTHON = (
    "\nMy previous action is invalid. If I want to compute, I should put Python code between <python> and "
    "</python>. If I want to give the final answer, I should put the answer between <answer> and </answer>. "
    "Let me try again.\n"
)

MATH = register_task(Task(
    name="math",
    instruction=PYTHON_INSTRUCTION,
    invalid_message=INVALID_PYTHON,
    default_tools=("python",),
    reward=answer_reward(math_reward),
    load=load_math,
    bundled=bundled_math_path,
))
