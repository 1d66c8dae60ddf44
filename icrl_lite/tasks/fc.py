"""The fc task: function calling with ToolRL's reward, one turn or, with implementations, several.

Records: `question`, `functions` (JSON schemas) and `ground_truth` (the calls), in our format, xLAM's or ToolACE's,
read by `data.load_fc`. The bundled set is data/fc/ (generated over 44 tool schemas, train and test share no
function; made by scripts/make_fc_task.py). The prompt lists the question's functions; the policy answers in one
turn with `<think>`, `<tool_call>` (one JSON object per line) and/or `<response>`, scored by ToolRL's reward
(`function_calls.toolrl_reward`: format 0/1 + correctness in [-3, 3], or the `coarse` / `dynamic` variants).
With `functions=` (Python implementations) the episode is multi-step (`with_implementations`): calls run, their
results come back in `<obs>`, and the policy continues to a `<response>`.
"""

from __future__ import annotations

from dataclasses import replace

from ..data import bundled_fc_path, load_fc
from ..function_calls import toolrl_reward
from .base import Task, register_task

REWARD_VARIANTS = ("fine", "coarse", "dynamic")

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


def function_call_reward(multi_step: bool):
    """ToolRL's reward as a task reward, logging `em` (exact calls) and `format_valid` like every task."""
    def score(response, gold, alpha=0.8, variant="fine", progress=0.0):
        reward, metrics = toolrl_reward(response, gold, variant=variant, progress=progress, multi_step=multi_step)
        metrics["em"] = metrics["exact"]  # the accuracy every task logs
        metrics["format_valid"] = float(metrics["format"] == 1.0)
        return reward, metrics

    return score


def with_implementations(task: Task) -> Task:
    """The fc task made multi-step: `<tool_call>` runs the calls (the `functions` tool) and only `</response>`
    ends the episode; the instruction says results come back in <obs>; format accepts several call turns."""
    return replace(task, instruction=FUNCTION_STEPS_INSTRUCTION, invalid_message=INVALID_FUNCTION,
                   reward=function_call_reward(True), final_stops=("</response>",))


FC = register_task(Task(
    name="fc",
    instruction=FUNCTION_INSTRUCTION,
    invalid_message="",
    default_tools=(),
    reward=function_call_reward(False),
    load=load_fc,
    bundled=bundled_fc_path,
    gold_field="ground_truth",
    final_stops=("</tool_call>", "</response>"),
    with_functions=with_implementations,
))
