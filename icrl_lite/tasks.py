"""Tasks: what the policy is trained on — instruction, tools, reward, data and demonstrations.

`qa`: answer questions by searching a corpus (ICRL's setting; reward 0.8 * EM + 0.2 * format).
`math`: solve word problems with the restricted Python tool (reward 0.8 * answer-correct + 0.2 * format,
answers compared with math-verify).
`fc`: function calling (ToolRL): the prompt lists the question's functions as JSON schemas, the policy answers
in one turn with `<think>` / `<tool_call>` (JSON lines) / `<response>`, scored by ToolRL's reward
(format + correctness in [-3, 4], or its coarse / dynamic variants). With `functions=` (Python implementations)
the episode is multi-step: calls run, results come back in `<obs>`, and the policy continues to a `<response>`.
All share the rollout engine, GRPO and the demonstration curriculum; a task only decides what goes into
the prompt, which tools run, where a rollout stops, and how a response is scored.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from .data import bundled_fc_path, bundled_math_path, bundled_qa_path, load_corpus, load_demos, load_fc, load_math, load_qa
from .function_calls import toolrl_reward
from .prompts import (FUNCTION_INSTRUCTION, FUNCTION_STEPS_INSTRUCTION, INVALID_ACTION, INVALID_FUNCTION, INVALID_PYTHON,
                      PYTHON_INSTRUCTION, SEARCH_INSTRUCTION)
from .rewards import icrl_reward, math_reward
from .tools import PythonConfig, SearchConfig, Tool, build_python, build_search, make_tool
from .tools.base import import_source
from .tools.functions import function_tool, load_implementations

# how each tool's calls are counted in the metrics
TOOL_METRICS = {"search": "searches", "python": "python_calls", "functions": "function_turns"}


REWARD_VARIANTS = ("fine", "coarse", "dynamic")


@dataclass(frozen=True)
class Task:
    name: str
    instruction: str  # the prompt template, with {question} (and {functions} for function calling)
    invalid_message: str  # forced after a turn without a valid action
    default_tools: tuple[str, ...]
    reward: Callable[..., tuple[float, dict[str, float]]]  # (response, gold, alpha, variant, progress)
    load: Callable[..., list[dict]]  # (source, split=, limit=) -> records with `question` and the gold field
    bundled: Callable[[str], Path]  # bundled file by name: train | dev | test | demos | corpus
    gold_field: str = "answers"  # the record field the reward compares with
    final_stops: tuple[str, ...] = ("</answer>",)  # strings that end a rollout

    def tool_metric(self, tool: str) -> str:
        return TOOL_METRICS.get(tool, f"{tool}_calls")

    def load_demos(self, path: str | Path) -> list[dict]:
        """Worked demonstrations: records of the task's format with a `solution` (the full trajectory)."""
        return load_demos(path, self.load)


def _answer_reward(reward):
    def score(response, gold, alpha=0.8, variant="fine", progress=0.0):
        return reward(response, gold, alpha=alpha)

    return score


def _function_call_reward(multi_step: bool):
    def score(response, gold, alpha=0.8, variant="fine", progress=0.0):
        reward, metrics = toolrl_reward(response, gold, variant=variant, progress=progress, multi_step=multi_step)
        metrics["em"] = metrics["exact"]  # the accuracy every task logs
        metrics["format_valid"] = float(metrics["format"] == 1.0)
        return reward, metrics

    return score


TASKS = {
    "qa": Task("qa", SEARCH_INSTRUCTION, INVALID_ACTION, ("search",), _answer_reward(icrl_reward), load_qa,
               bundled_qa_path),
    "math": Task("math", PYTHON_INSTRUCTION, INVALID_PYTHON, ("python",), _answer_reward(math_reward), load_math,
                 bundled_math_path),
    "fc": Task("fc", FUNCTION_INSTRUCTION, "", (), _function_call_reward(False), load_fc, bundled_fc_path,
               gold_field="ground_truth", final_stops=("</tool_call>", "</response>")),
}


def with_implementations(task: Task) -> Task:
    """The fc task made multi-step: `<tool_call>` runs the calls (the `functions` tool) and only `</response>`
    ends the episode; the instruction says results come back in <obs>; format accepts several call turns."""
    return replace(task, instruction=FUNCTION_STEPS_INSTRUCTION, invalid_message=INVALID_FUNCTION,
                   reward=_function_call_reward(True), final_stops=("</response>",))


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"task={name!r}: use one of {', '.join(TASKS)}")
    return TASKS[name]


def build_tools(names: Sequence[str], search: SearchConfig, python: PythonConfig, corpus: str | Path | None) -> list[Tool]:
    """Tools by name: `search` and `python` from their config sections, anything else from the registry."""
    tools = []
    for name in names:
        if name == "search":
            tools.append(build_search(search, corpus))
        elif name == "python":
            tools.append(build_python(python))
        else:
            tools.append(make_tool(name))
    return tools


def load_plugins(plugins: Sequence[str]) -> None:
    """Import modules (dotted names or .py files) that register tools with `icrl_lite.tools.register_tool`."""
    for plugin in plugins:
        try:
            import_source(plugin, "plugin file")
        except FileNotFoundError:
            raise
        except Exception as e:  # any error in the user's file: name the file, the line and the error, not our stack
            raise ImportError(f"plugin {plugin} failed to import{error_site(e, plugin)}: {type(e).__name__}: {e}; "
                              f"fix it or remove it from plugins=") from e


def error_site(error: BaseException, source: str) -> str:
    """Where `error` was raised, as " (at file:line)": in the user's file `source` if it was, else the deepest
    frame outside importlib and icrl_lite ("" when there is none)."""
    ours = Path(__file__).resolve().parent
    frames = [f for f in traceback.extract_tb(error.__traceback__)  # not importlib's machinery nor ours
              if not f.filename.startswith("<") and "importlib" not in Path(f.filename).parts
              and ours not in Path(f.filename).resolve().parents]
    own = [f for f in frames if source.endswith(".py") and Path(f.filename).resolve() == Path(source).resolve()]
    site = (own or frames)[-1:]
    return f" (at {site[0].filename}:{site[0].lineno})" if site else ""


def validate_task_fields(cfg) -> None:
    """Checks shared by the train and eval configs: task, instruction, tool sections."""
    if cfg.task:
        get_task(cfg.task)
    if cfg.instruction and "{question}" not in cfg.instruction:
        raise ValueError("instruction must contain {question}, where the question goes")
    cfg.search.validate()
    cfg.python.validate()


def setup_task(cfg) -> tuple[Task, list[Tool], str]:
    """The task, its tools and its instruction for a train or eval config (loads plugins, checks the corpus)."""
    task = get_task(cfg.task)
    if cfg.functions and task.name != "fc":
        raise ValueError(f"functions= gives implementations of function-calling tools: it needs task=fc, not {task.name}")
    load_plugins(cfg.plugins)
    names = cfg.tools or list(task.default_tools)
    corpus = None
    if "search" in names and cfg.search.backend != "web":
        corpus = cfg.corpus or bundled_corpus(task)
        load_corpus(corpus)  # clear errors for a missing or malformed corpus before any model work
    tools = build_tools(names, cfg.search, cfg.python, corpus)
    if cfg.functions:
        task = with_implementations(task)
        tools.append(function_tool(load_implementations(cfg.functions)))
    return task, tools, cfg.instruction or task.instruction


def bundled_corpus(task: Task) -> Path:
    path = task.bundled("corpus")
    if not path.exists():
        raise ValueError(f"the {task.name} task ships no corpus for the search tool: give corpus=<file.jsonl>")
    return path
