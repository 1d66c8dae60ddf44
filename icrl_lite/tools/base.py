"""The tool interface: a tool is a pair of tags around a call and a function from call text to observation.

The model calls a tool by writing `<search>query</search>`; generation stops at the closing tag, the rollout
runs the tool and appends its observation wrapped in `<information>...</information>` (masked out of the
loss), then lets the model continue. Every tool (BM25 search, restricted Python, web search, function calls)
is a `Tool`; `find_call` is the one parser that recognises calls, whichever tools are enabled.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Protocol


class ToolSession(Protocol):
    """Per-rollout state of a stateful tool (the Python interpreter of one rollout)."""

    def run(self, call_text: str) -> str: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Tool:
    """A tool the model calls by writing `open_tag` + call text + `close_tag`."""

    name: str  # "search"
    open_tag: str  # "<search>"
    close_tag: str  # "</search>"
    fn: Callable[[str], str]  # call text (stripped) -> observation text
    result_open: str = "<information>"
    result_close: str = "</information>"
    session: Callable[[], ToolSession] | None = None  # stateful tools: one session per rollout

    def run(self, call_text: str, session: ToolSession | None = None) -> str:
        """Run the tool (in `session`, when the tool keeps per-rollout state) and return its observation.

        A failure of the tool (bad query, code that raises, timeout) is an observation the model sees,
        "error: ValueError: ...", not a crash of the rollout. Only `Exception` is caught, so
        KeyboardInterrupt and SystemExit still stop the program.
        """
        try:
            return session.run(call_text) if session is not None else self.fn(call_text)
        except Exception as e:  # noqa: BLE001 - the failure is reported to the model, see docstring
            return f"error: {type(e).__name__}: {e}"

    def wrap(self, observation: str) -> str:
        """The observation as it is appended to the context: "\\n\\n<information>...</information>\\n\\n"."""
        return f"\n\n{self.result_open}{observation}{self.result_close}\n\n"


class ResultCache:
    """Search results by (query, k), shared by the threads of a step's rollouts: a group's samples often search
    the same words, and each search is then run once. The least recently used entry goes beyond `size`."""

    def __init__(self, size: int = 10_000):
        if size < 0:
            raise ValueError(f"cache size must be >= 0, got {size}")
        self.size = size
        self._results: OrderedDict[tuple[str, int], list[dict]] = OrderedDict()
        self._lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            self._results.clear()

    def lookup(self, queries: Sequence[str], k: int, fetch: Callable[[list[str]], list[list[dict]]]) -> list[list[dict]]:
        """The results of `queries`: cached ones from the cache, the others from one `fetch` call with each distinct
        missing query once (in order). A blank query gets [] without asking. Returns copies, so that a caller's
        edits do not reach the cache. Two threads missing the same query at once both fetch it (same answer)."""
        results: list[list[dict] | None] = [[] if not q.strip() else None for q in queries]
        with self._lock:
            for i, query in enumerate(queries):
                if results[i] is None and (query, k) in self._results:
                    self._results.move_to_end((query, k))
                    results[i] = self._results[(query, k)]
        missing = list(dict.fromkeys(q for q, found in zip(queries, results) if found is None))
        if missing:
            answers = dict(zip(missing, fetch(missing)))
            with self._lock:
                for query, docs in answers.items():
                    self._results[(query, k)] = docs
                    self._results.move_to_end((query, k))
                while len(self._results) > self.size:
                    self._results.popitem(last=False)
            results = [answers[q] if found is None else found for q, found in zip(queries, results)]
        return [[dict(doc) for doc in docs] for docs in results]


def find_call(text: str, tools: Sequence[Tool]) -> tuple[Tool, str] | None:
    """Return (tool, call text) of the tool call that ends one generation turn, or None.

    A turn is generated until a tool's closing tag (a stop string), so the call is the one whose closing
    tag comes first in `text`; anything after it is ignored. Its content runs from the LAST opening tag of
    the same tool before that closing tag (so "<search>a <search>b</search>" calls with "b"), and is
    stripped of surrounding whitespace. If the first closing tag has no opening tag before it, the turn holds
    no complete call and the result is None: a later call in the same text is not looked for, because
    generation would have stopped at the first closing tag. When several tools share a closing tag, the
    first of them in `tools` wins.
    """
    first: tuple[int, Tool] | None = None
    for tool in tools:
        end = text.find(tool.close_tag)
        if end != -1 and (first is None or end < first[0]):
            first = (end, tool)
    if first is None:
        return None
    end, tool = first
    start = text.rfind(tool.open_tag, 0, end)
    if start == -1:
        return None
    return tool, text[start + len(tool.open_tag) : end].strip()


def import_source(source: str, what: str) -> ModuleType:
    """A module given as a `.py` file (imported once per resolved path) or as an importable dotted name;
    `what` names it in the error for a missing file ("plugin file", "functions=")."""
    if not source.endswith(".py"):
        return importlib.import_module(source)
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {source!r} not found")
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]
    name = f"icrl_lite_user_{path.stem}_{digest}"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]  # a broken file is not cached: fixing it and retrying works
            raise
    return sys.modules[name]
