"""Tools the model can call, their config sections, and a registry for tools users bring.

Built-in: `search` (backend `bm25` | `dense` | `hybrid` | `web` | `remote`, see `SearchConfig`) and `python` (the
restricted interpreter, see `PythonConfig`); `functions` (functions.py) runs the `<tool_call>` blocks of multi-step
function calling with a task's Python implementations (config `functions=`). A tool of your own is a name, its
tags and a function from call text to an observation string; register a factory for it and select it by name in the config:

    # my_tools.py
    from icrl_lite.tools import Tool, register_tool

    def lookup(key: str) -> str:            # raise freely: an exception becomes "error: ..." for the model
        return {"pi": "3.14159"}[key]

    register_tool("lookup", lambda: Tool("lookup", "<lookup>", "</lookup>", lookup))

    $ icrl-lite train plugins=[my_tools.py] tools=[search,lookup] instruction="... {question}"

This package is a leaf: it imports nothing else from icrl_lite but `data` and `function_calls` (pure parsing),
and loads no language model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from icrl_lite.tools.base import Tool, ToolSession, find_call
from icrl_lite.tools.python import DEFAULT_MODULES, PythonSandbox, SandboxLimits, python_tool
from icrl_lite.tools.search import STORE_MODES, BM25Search, format_documents
from icrl_lite.tools.store import CorpusStore

__all__ = [
    "BM25Search", "CorpusStore", "PythonConfig", "PythonSandbox", "SearchConfig", "Tool", "ToolSession",
    "available_tools", "build_python", "build_search", "find_call", "format_documents", "make_tool", "register_tool",
]

SEARCH_BACKENDS = ("bm25", "dense", "hybrid", "web", "remote")
DENSE_INDEXES = ("flat", "ivfpq")


@dataclass
class SearchConfig:
    backend: str = "bm25"
    """bm25 (local corpus) | dense (sentence-transformers embeddings of the corpus) | hybrid (both, rank fusion) | web (DuckDuckGo through `ddgs`) | remote (a retrieval server with Search-R1's API at search.remote_url, e.g. its E5 index of Wikipedia-2018)."""
    top_k: int = 3
    """Documents returned per search."""
    dense_model: str = "all-minilm-l6-v2"
    """Embedding model for dense/hybrid: a sentence-transformers name or directory (e5 models get query:/passage: prefixes); the default is bundled offline."""
    web_timeout: float = 10.0
    """Seconds per web request."""
    web_min_interval: float = 1.0
    """Minimum seconds between web requests (a rate limit shared by all rollouts)."""
    web_cache_dir: str = ""
    """Where web results are cached by query; empty = ~/.cache/icrl-lite/web (or $ICRL_LITE_CACHE/web)."""
    remote_url: str = "http://127.0.0.1:8000/retrieve"
    """Address of the retrieval server for search.backend=remote: Search-R1's search_r1/search/retrieval_server.py, or any server with its POST API."""
    store: str = "auto"
    """Where bm25 keeps the corpus and its index: memory (the documents as Python objects, ~3x the file in RAM) | disk (for Wikipedia-scale corpora: the file is streamed once into <corpus>.store.sqlite, resumable, and indexed into <corpus>.bm25-disk/, memory-mapped; a search reads only its words' postings and its top documents) | auto (disk for corpus files above 200 MB). Same results either way; dense and hybrid keep the corpus in memory unless search.dense_index=ivfpq."""
    dense_index: str = "flat"
    """Index of dense/hybrid: flat (exact; the corpus and every float32 embedding in memory: 64 GB for 21M e5-base passages) | ivfpq (for Wikipedia-scale corpora: the documents in <corpus>.store.sqlite, the passages encoded in resumable chunks; in memory a faiss IVF-PQ index of dim/8 + 8 bytes a passage, ~2.2 GB for 21M e5-base passages, whose candidates are re-ranked by their exact float16 vectors read from disk, 32 GB there; in <corpus>.dense-ivfpq/; needs faiss and >= 1,000 passages; hybrid then runs BM25 from disk too)."""
    dense_nprobe: int = 128
    """IVF lists the ivfpq index scans per query, of about 4 x sqrt(passages) (512 at 20k, 16,384 at 21M): more finds more of the exact neighbours and is slower (docs/performance.md measures both)."""

    def validate(self) -> None:
        if self.backend not in SEARCH_BACKENDS:
            raise ValueError(f"search.backend={self.backend!r}: use one of {', '.join(SEARCH_BACKENDS)}")
        if self.store not in STORE_MODES:
            raise ValueError(f"search.store={self.store!r}: use one of {', '.join(STORE_MODES)}")
        if self.dense_index not in DENSE_INDEXES:
            raise ValueError(f"search.dense_index={self.dense_index!r}: use flat (exact, in memory) or ivfpq "
                             "(compressed, the corpus on disk)")
        if self.dense_nprobe < 1:
            raise ValueError(f"search.dense_nprobe={self.dense_nprobe}: give the number of IVF lists to scan, >= 1 "
                             "(default 128)")
        dense_on_disk = self.dense_index == "ivfpq"
        if self.store == "disk" and self.backend in ("dense", "hybrid") and not dense_on_disk:
            raise ValueError(f"search.store=disk works with search.backend=bm25 only, or with search.dense_index=ivfpq "
                             f"({self.backend} with the flat index keeps the corpus in memory); set "
                             "search.dense_index=ivfpq, or use search.store=auto")
        if self.store == "memory" and self.backend in ("dense", "hybrid") and dense_on_disk:
            raise ValueError("search.dense_index=ivfpq reads the documents from disk (<corpus>.store.sqlite); use "
                             "search.store=auto or disk, or search.dense_index=flat")
        if not self.remote_url.startswith(("http://", "https://")):
            raise ValueError(f"search.remote_url={self.remote_url!r}: give the server's http:// or https:// address, "
                             "e.g. http://127.0.0.1:8000/retrieve")
        if self.top_k < 1 or self.web_timeout <= 0 or self.web_min_interval < 0:
            raise ValueError("search.top_k must be >= 1, search.web_timeout > 0 and search.web_min_interval >= 0")


@dataclass
class PythonConfig:
    timeout: float = 5.0
    """Wall-clock seconds per <python> call; the interpreter is killed and restarted after it."""
    cpu_seconds: int = 30
    """CPU seconds per rollout's interpreter."""
    memory_mb: int = 512
    """Memory the code may allocate (address space above the warm interpreter's)."""
    max_output: int = 1000
    """Characters of output shown to the model."""
    modules: list[str] = field(default_factory=lambda: list(DEFAULT_MODULES))
    """Modules the code may import (with their submodules)."""

    def limits(self) -> SandboxLimits:
        return SandboxLimits(timeout=self.timeout, cpu_seconds=self.cpu_seconds, memory_mb=self.memory_mb,
                             max_output=self.max_output, modules=tuple(self.modules))

    def validate(self) -> None:
        self.limits()  # SandboxLimits checks the values


def build_search(cfg: SearchConfig, corpus: str | Path | list[dict] | None) -> Tool:
    """The `<search>` tool for `cfg.backend` (`corpus` is ignored by the web and remote backends)."""
    cfg.validate()
    if cfg.backend == "remote":
        from icrl_lite.tools.remote import RemoteSearch

        return RemoteSearch(cfg.remote_url, top_k=cfg.top_k).as_tool()
    if cfg.backend == "web":
        from icrl_lite.tools.web import WebSearch

        return WebSearch(top_k=cfg.top_k, timeout=cfg.web_timeout, min_interval=cfg.web_min_interval,
                         cache_dir=cfg.web_cache_dir or None).as_tool()
    if cfg.backend == "bm25":
        return BM25Search(corpus, top_k=cfg.top_k, store=cfg.store).as_tool()
    from icrl_lite.tools.dense import DenseSearch, HybridSearch, IVFPQSearch

    if cfg.dense_index == "ivfpq":
        dense = IVFPQSearch(corpus, model=cfg.dense_model, top_k=cfg.top_k, nprobe=cfg.dense_nprobe)
    else:
        dense = DenseSearch(corpus, model=cfg.dense_model, top_k=cfg.top_k)
    if cfg.backend == "dense":
        return dense.as_tool()
    bm25_store = "disk" if cfg.dense_index == "ivfpq" else "memory"  # the same corpus, held the way dense holds it
    return HybridSearch(BM25Search(corpus, top_k=cfg.top_k, store=bm25_store), dense, top_k=cfg.top_k).as_tool()


def build_python(cfg: PythonConfig) -> Tool:
    """The `<python>` tool: one jailed interpreter per rollout (see `icrl_lite.tools.python`)."""
    return PythonSandbox(cfg.limits()).as_tool()


_FACTORIES: dict[str, Callable[..., Tool]] = {}


def register_tool(name: str, factory: Callable[..., Tool]) -> None:
    """Make `make_tool(name, **kwargs)` call `factory(**kwargs)`; the factory returns a `Tool`."""
    if name in _FACTORIES:
        raise ValueError(f"a tool named {name!r} is already registered; pick another name")
    _FACTORIES[name] = factory


def make_tool(name: str, **kwargs) -> Tool:
    """Build the tool registered as `name` with the given keyword arguments."""
    if name not in _FACTORIES:
        raise ValueError(f"unknown tool {name!r}; available tools: {', '.join(available_tools())} "
                         "(register your own with icrl_lite.tools.register_tool, loaded through plugins=[file.py])")
    tool = _FACTORIES[name](**kwargs)
    if not isinstance(tool, Tool):
        raise TypeError(f"the factory of tool {name!r} returned {type(tool).__name__}, not an icrl_lite.tools.Tool")
    return tool


def available_tools() -> list[str]:
    """The registered tool names, sorted."""
    return sorted(_FACTORIES)


def _make_search(corpus: str | Path | list[dict], top_k: int = 3, cache_dir: str | Path | None = None,
                 store: str = "auto") -> Tool:
    return BM25Search(corpus, top_k=top_k, cache_dir=cache_dir, store=store).as_tool()


register_tool("search", _make_search)
register_tool("python", python_tool)
