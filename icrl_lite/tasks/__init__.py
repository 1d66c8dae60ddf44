"""Tasks: what the policy is trained on — instruction, tools, reward, data and demonstrations, one module each.

Bundled: `qa` (qa.py: answer questions by searching a corpus, ICRL's setting), `math` (math.py: solve word
problems with the restricted Python tool) and `fc` (fc.py: function calling with ToolRL's reward, multi-step when
`functions=` gives implementations). All share the rollout engine, GRPO and the demonstration curriculum; a task
only decides what goes into the prompt, which tools run, where a rollout stops, and how a response is scored.

Your own task is one file that registers a `Task` (and any tool it needs), loaded with `plugins=`:

    # my_task.py
    from icrl_lite.tasks import Task, register_task
    register_task(Task(name="mine", instruction="... {question}\\n", invalid_message="...", default_tools=("lookup",),
                       reward=my_reward, load=my_loader, bundled=my_files))

    $ icrl-lite train plugins=[my_task.py] task=mine

examples/sql/ is a worked example (text-to-SQL against a bundled SQLite database).
"""

from __future__ import annotations

import traceback
from collections.abc import Sequence
from pathlib import Path

from ..data import load_corpus
from ..tools import PythonConfig, SearchConfig, Tool, build_python, build_search, make_tool
from ..tools.search import uses_disk_store
from ..tools.base import import_source
from ..tools.functions import function_tool, load_implementations
from .base import TASKS, TOOL_METRICS, Task, answer_reward, get_task, register_task
# the bundled tasks register themselves when imported, in this order (the order `get_task` lists them in)
from .qa import QA
from .math import MATH
from .fc import FC, REWARD_VARIANTS, function_call_reward, with_implementations

__all__ = [
    "FC", "MATH", "QA", "REWARD_VARIANTS", "TASKS", "TOOL_METRICS", "Task", "answer_reward", "build_tools",
    "bundled_corpus", "error_site", "function_call_reward", "get_task", "load_plugins", "register_task",
    "setup_task", "validate_task_fields", "with_implementations",
]


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
    """Import modules (dotted names or .py files) that register tools (`icrl_lite.tools.register_tool`) or tasks
    (`register_task`). A file is imported once per process, however often it is named."""
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
    ours = Path(__file__).resolve().parents[1]  # the icrl_lite package
    frames = [f for f in traceback.extract_tb(error.__traceback__)  # not importlib's machinery nor ours
              if not f.filename.startswith("<") and "importlib" not in Path(f.filename).parts
              and ours not in Path(f.filename).resolve().parents]
    own = [f for f in frames if source.endswith(".py") and Path(f.filename).resolve() == Path(source).resolve()]
    site = (own or frames)[-1:]
    return f" (at {site[0].filename}:{site[0].lineno})" if site else ""


def validate_task_fields(cfg) -> None:
    """Checks shared by the train and eval configs: plugins (loaded first: they may register the task), task,
    instruction, tool sections."""
    load_plugins(cfg.plugins)
    if cfg.task:
        get_task(cfg.task)
    if cfg.instruction and "{question}" not in cfg.instruction:
        raise ValueError("instruction must contain {question}, where the question goes")
    cfg.search.validate()
    cfg.python.validate()


def setup_task(cfg) -> tuple[Task, list[Tool], str]:
    """The task, its tools and its instruction for a train or eval config (loads plugins, checks the corpus)."""
    load_plugins(cfg.plugins)
    task = get_task(cfg.task)
    if cfg.functions and task.with_functions is None:
        raise ValueError(f"functions= gives implementations of function-calling tools: it needs task=fc, not {task.name}")
    names = cfg.tools or list(task.default_tools)
    corpus = None
    if "search" in names and cfg.search.backend not in ("web", "remote"):  # those search no corpus file
        corpus = cfg.corpus or bundled_corpus(task)
        if not (cfg.search.backend == "bm25" and uses_disk_store(corpus, cfg.search.store)):
            load_corpus(corpus)  # clear errors for a missing or malformed corpus before any model work
        # (a disk store is streamed into SQLite by build_tools below, which checks every line as it goes)
    tools = build_tools(names, cfg.search, cfg.python, corpus)
    if cfg.functions:
        task = task.with_functions(task)
        tools.append(function_tool(load_implementations(cfg.functions)))
    return task, tools, cfg.instruction or task.instruction


def bundled_corpus(task: Task) -> Path:
    path = task.bundled("corpus")
    if not path.exists():
        raise ValueError(f"the {task.name} task ships no corpus for the search tool: give corpus=<file.jsonl>")
    return path
