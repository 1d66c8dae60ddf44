"""Tasks: what the policy is trained on — instruction, tools, reward, data and demonstrations.

`qa`: answer questions by searching a corpus (ICRL's setting; reward 0.8 * EM + 0.2 * format).
`math`: solve word problems with the restricted Python tool (reward 0.8 * answer-correct + 0.2 * format,
answers compared with math-verify). Both share the rollout engine, GRPO and the demonstration curriculum;
a task only decides what goes into the prompt, which tools run, and how a response is scored.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .data import bundled_math_path, bundled_qa_path, load_math, load_qa
from .prompts import INVALID_ACTION, INVALID_PYTHON, PYTHON_INSTRUCTION, SEARCH_INSTRUCTION
from .rewards import icrl_reward, math_reward
from .tools import PythonConfig, SearchConfig, Tool, build_python, build_search, make_tool

# how each tool's calls are counted in the metrics
TOOL_METRICS = {"search": "searches", "python": "python_calls"}


@dataclass(frozen=True)
class Task:
    name: str
    instruction: str  # the prompt template, with {question}
    invalid_message: str  # forced after a turn without a valid action
    default_tools: tuple[str, ...]
    reward: Callable[..., tuple[float, dict[str, float]]]  # (response, answers, alpha) -> (reward, metrics)
    load: Callable[..., list[dict]]  # (source, split=, limit=) -> [{id, question, answers}]
    bundled: Callable[[str], Path]  # bundled file by name: train | dev | test | demos | corpus

    def tool_metric(self, tool: str) -> str:
        return TOOL_METRICS.get(tool, f"{tool}_calls")


TASKS = {
    "qa": Task("qa", SEARCH_INSTRUCTION, INVALID_ACTION, ("search",), icrl_reward, load_qa, bundled_qa_path),
    "math": Task("math", PYTHON_INSTRUCTION, INVALID_PYTHON, ("python",), math_reward, load_math, bundled_math_path),
}


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
        path = Path(plugin)
        if plugin.endswith(".py"):
            if not path.is_file():
                raise FileNotFoundError(f"plugin file {plugin!r} not found")
            name = f"icrl_lite_plugin_{path.stem}"
            if name in sys.modules:
                continue
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
        else:
            importlib.import_module(plugin)
