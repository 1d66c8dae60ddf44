"""Tools the model can call, and a registry to build them by name.

`make_tool("search", corpus="data/corpus.jsonl", top_k=3)` builds the BM25 search tool; new tools plug in
with `register_tool(name, factory)`, where the factory takes keyword arguments and returns a `Tool`.
This package is a leaf: it imports nothing else from icrl_lite and loads no model.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from icrl_lite.tools.base import Tool, find_call
from icrl_lite.tools.search import BM25Search, format_documents

__all__ = [
    "BM25Search",
    "Tool",
    "available_tools",
    "find_call",
    "format_documents",
    "make_tool",
    "register_tool",
]

_FACTORIES: dict[str, Callable[..., Tool]] = {}


def register_tool(name: str, factory: Callable[..., Tool]) -> None:
    """Make `make_tool(name, **kwargs)` call `factory(**kwargs)`."""
    if name in _FACTORIES:
        raise ValueError(f"a tool named {name!r} is already registered; pick another name")
    _FACTORIES[name] = factory


def make_tool(name: str, **kwargs) -> Tool:
    """Build the tool registered as `name` with the given keyword arguments."""
    if name not in _FACTORIES:
        raise ValueError(f"unknown tool {name!r}; available tools: {', '.join(available_tools())}")
    return _FACTORIES[name](**kwargs)


def available_tools() -> list[str]:
    """The registered tool names, sorted."""
    return sorted(_FACTORIES)


def _make_search(corpus: str | Path | list[dict], top_k: int = 3, cache_dir: str | Path | None = None) -> Tool:
    return BM25Search(corpus, top_k=top_k, cache_dir=cache_dir).as_tool()


register_tool("search", _make_search)
