"""Executing function calls: multi-step function-calling episodes.

When a function-calling task comes with Python implementations of its functions (`functions: impl.py` in
the config), a `<tool_call>` block is not the end of the episode: its calls run, their results come back
between `<obs>` and `</obs>` (one JSON object per call, in call order) and the model continues, calling
more functions or answering in `<response>`. Without implementations the episode is one turn.

Implementations are the user's own code (like plugins): they run in this process, in worker threads, each
call with a timeout. A call that raises, names a function with no implementation, passes arguments the
function does not take or runs past the timeout becomes an error result the model sees; the rollout goes on.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from ..function_calls import parse_calls
from .base import Tool, import_source

CALL_POOL = ThreadPoolExecutor(max_workers=8, thread_name_prefix="icrl-fn")
MAX_RESULT_CHARS = 2000


def load_implementations(source: str) -> dict[str, Callable[..., Any]]:
    """Function implementations from a `.py` file or an importable module.

    The module's `IMPLEMENTATIONS` dict ({function name: callable}) if it defines one, else every public
    function defined in the module itself (not the ones it imports), under its own name.
    """
    module = import_source(source, "functions=")
    table = getattr(module, "IMPLEMENTATIONS", None)
    if table is None:
        table = {name: fn for name, fn in vars(module).items()
                 if inspect.isfunction(fn) and not name.startswith("_") and fn.__module__ == module.__name__}
    if not isinstance(table, Mapping) or not all(callable(fn) for fn in table.values()):
        raise ValueError(f"functions={source!r}: IMPLEMENTATIONS must be a dict of function name -> callable")
    if not table:
        raise ValueError(f"functions={source!r} defines no public function: nothing could be executed")
    return dict(table)


def execute_calls(call_text: str, implementations: Mapping[str, Callable[..., Any]], timeout: float = 10.0) -> str:
    """Run the calls of one `<tool_call>` block; one JSON line per call, {"name", "result"} or {"name", "error"}."""
    calls = parse_calls(call_text)
    if calls is None:
        return ('error: the tool_call block must hold JSON objects {"name": "function name", "parameters": '
                '{...}}, one per line')
    if not calls:
        return "error: the tool_call block is empty"
    futures = [CALL_POOL.submit(_call, implementations[c["name"]], c["parameters"]) if c["name"] in implementations
               else None for c in calls]  # all calls of a block run concurrently (parallel calls)
    lines = []
    for call, future in zip(calls, futures):
        if future is None:
            outcome = {"error": f"unknown function {call['name']!r}"}
        else:
            try:
                outcome = future.result(timeout=timeout)
            except FutureTimeout:
                outcome = {"error": f"timed out after {timeout:g} s"}
        lines.append(_line(call["name"], outcome))
    return "\n".join(lines)


def _line(name: str, outcome: dict) -> str:
    """One call's JSON line; a result JSON cannot hold becomes its text, a long one is cut (still valid JSON)."""
    try:
        line = json.dumps({"name": name, **outcome}, ensure_ascii=False, default=str)
    except (TypeError, ValueError):  # e.g. dict keys that are not strings, circular structures
        outcome = {key: repr(value) for key, value in outcome.items()}
        line = json.dumps({"name": name, **outcome}, ensure_ascii=False)
    if len(line) > MAX_RESULT_CHARS:
        key, value = next(iter(outcome.items()))
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
        line = json.dumps({"name": name, key: text[: MAX_RESULT_CHARS - 100] + " ...(cut)"}, ensure_ascii=False)
    return line


def _call(fn: Callable[..., Any], parameters: dict) -> dict:
    try:
        return {"result": fn(**parameters)}
    except BaseException as e:  # noqa: BLE001 - the model sees the failure (sys.exit() included) as the result
        return {"error": f"{type(e).__name__}: {e}"}


def function_tool(implementations: Mapping[str, Callable[..., Any]], timeout: float = 10.0) -> Tool:
    """The tool that executes `<tool_call>` blocks and returns `<obs>` results."""
    return Tool(name="functions", open_tag="<tool_call>", close_tag="</tool_call>",
                fn=lambda text: execute_calls(text, implementations, timeout),
                result_open="<obs>\n", result_close="\n</obs>")
