"""The task interface and its registry: a task is an instruction, tools, a reward, a data loader and bundled files.

A task is one `Task` value, registered by name with `register_task` (the bundled ones in qa.py, math.py and
fc.py; yours in a plugin file loaded with `plugins=[my_task.py]`) and selected with `task=<name>`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..data import load_demos

# how each tool's calls are counted in the metrics
TOOL_METRICS = {"search": "searches", "python": "python_calls", "functions": "function_turns"}


@dataclass(frozen=True)
class Task:
    """What a task decides: what goes into the prompt, which tools run, where a rollout stops, how it is scored.

    `reward(response, gold, alpha=, variant=, progress=)` scores the policy's response (observations included,
    prompt excluded) against the record's `gold_field` and returns (reward, metrics); the metrics dict has the same
    keys on every call, among them `reward`, `em` (the accuracy every task logs) and `format_valid`.
    """

    name: str
    instruction: str  # the prompt template, with {question} (and {functions} for function calling)
    invalid_message: str  # forced after a turn without a valid action
    default_tools: tuple[str, ...]
    reward: Callable[..., tuple[float, dict[str, float]]]  # (response, gold, alpha, variant, progress)
    load: Callable[..., list[dict]]  # (source, split=, limit=) -> records with `question` and the gold field
    bundled: Callable[[str], Path]  # bundled file by name: train | dev | test | demos | corpus
    gold_field: str = "answers"  # the record field the reward compares with
    final_stops: tuple[str, ...] = ("</answer>",)  # strings that end a rollout
    metrics: tuple[str, ...] = ()  # more reward metrics averaged in evaluation summaries (em, f1, format_valid are)
    with_functions: Callable[[Task], Task] | None = None  # the task made multi-step by `functions=` (fc only)

    def tool_metric(self, tool: str) -> str:
        return TOOL_METRICS.get(tool, f"{tool}_calls")

    def load_demos(self, path: str | Path) -> list[dict]:
        """Worked demonstrations: records of the task's format with a `solution` (the full trajectory)."""
        return load_demos(path, self.load)


TASKS: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    """Make `task=<task.name>` select `task`; returns it. Called by a task's module when it is imported."""
    if not isinstance(task, Task):
        raise TypeError(f"register_task takes an icrl_lite.tasks.Task, not {type(task).__name__}")
    if task.name in TASKS:
        raise ValueError(f"a task named {task.name!r} is already registered; pick another name")
    TASKS[task.name] = task
    return task


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"task={name!r}: use one of {', '.join(TASKS)} (or register your own with "
                         f"icrl_lite.tasks.register_task in a file loaded through plugins=[file.py])")
    return TASKS[name]


def answer_reward(reward: Callable[..., tuple[float, dict[str, float]]]):
    """A reward of (response, gold answers, alpha) as a task reward (it takes no variant or progress). Other
    keywords (the train config's `tool_penalty`, when set) go to the reward."""
    def score(response, gold, alpha=0.8, variant="fine", progress=0.0, **options):
        return reward(response, gold, alpha=alpha, **options)

    return score
