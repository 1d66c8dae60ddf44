"""The `<search>` tool backed by a retrieval server with Search-R1's HTTP API (`search.backend=remote`).

Search-R1 serves its retriever (E5 over the 21M passages of Wikipedia-2018, or BM25) with
`search_r1/search/retrieval_server.py`: POST {"queries": [...], "topk": k, "return_scores": true} to
http://127.0.0.1:8000/retrieve and it answers {"result": [[{"document": {...}, "score": s}, ...], ...]}, one list
per query, best first; without `return_scores` the inner items are the documents themselves. A document is a
FlashRAG record {"id", "contents": '"Title"\\ntext'} (the BM25 retriever also adds "title" and "text").
`RemoteSearch` is a client for it, standard library only. Documents are read with `icrl_lite.data.document` and
shown with `format_documents`, so on the same corpus the observation is the local BM25 tool's, character for
character. That also means the title is shown without its quotes, where Search-R1's own agent keeps them.

- Health check: the constructor sends one query and checks the answer, so a server that is down, a wrong URL or
  another API stops the run at startup, with the command that starts Search-R1's server.
- Retries: connection errors, timeouts and 5xx answers are retried `retries` times, sleeping `backoff * 2**i`
  seconds after the i-th failure, so a call ends within (retries + 1) * timeout plus the sleeps; a 4xx or
  malformed answer is not retried. Then `RemoteSearchError` is raised. In a rollout the tool turns it into the
  observation "error: RemoteSearchError: ..." (as tools do with their failures, see tools/base.py) and warns on
  stderr: a server that dies mid-run shows in the log, and the run goes on rather than losing its progress.
- Cache: results are kept in memory by (query, k), the least recently used dropped first, so a query repeated
  within a step (the rollouts of one question often search alike) is sent once.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.request
import warnings

from icrl_lite.data import document
from icrl_lite.tools.base import ResultCache, Tool
from icrl_lite.tools.search import format_documents

DEFAULT_URL = "http://127.0.0.1:8000/retrieve"
START_SERVER = ("start Search-R1's server (python search_r1/search/retrieval_server.py --index_path <e5_Flat.index> "
                "--corpus_path <wiki-18.jsonl> --topk 3 --retriever_name e5 --retriever_model intfloat/e5-base-v2) "
                "and wait until it listens, or set search.backend=bm25")
_QUOTE_CHARS = 300  # how much of a malformed answer an error message quotes


class RemoteSearchError(RuntimeError):
    """The retrieval server could not be reached, timed out, or gave an answer that is not Search-R1's."""


class RemoteSearch:
    """Client of a Search-R1 retrieval server at `url`, returning the `top_k` best documents per query.

    `timeout` is in seconds per request; `retries` and `backoff` are explained in the module docstring.
    `cache_size` is the number of (query, k) results kept. The constructor checks that the server answers.
    """

    def __init__(self, url: str = DEFAULT_URL, top_k: int = 3, timeout: float = 30.0, retries: int = 2,
                 backoff: float = 1.0, cache_size: int = 10_000):
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"url={url!r}: give the server's http:// or https:// address, e.g. {DEFAULT_URL}")
        if top_k < 1 or timeout <= 0 or retries < 0 or backoff < 0 or cache_size < 0:
            raise ValueError(f"need top_k >= 1, timeout > 0, retries >= 0, backoff >= 0 and cache_size >= 0, got "
                             f"top_k={top_k}, timeout={timeout}, retries={retries}, backoff={backoff}, "
                             f"cache_size={cache_size}")
        self.url, self.top_k, self.timeout = url, top_k, timeout
        self.retries, self.backoff, self.cache_size = retries, backoff, cache_size
        self._cache = ResultCache(cache_size)
        try:
            self._retrieve(["health check"], 1, tries=1)
        except RemoteSearchError as e:
            raise RemoteSearchError(f"{e}; {START_SERVER}") from None

    def search(self, query: str, k: int | None = None) -> list[dict]:
        """The best documents for `query`, each {"id", "title", "text"} and the server's "score"."""
        return self.batch_search([query], k)[0]

    def batch_search(self, queries: list[str], k: int | None = None) -> list[list[dict]]:
        """`search` for many queries in one request (none when all are cached or blank).

        At most `k` (default `top_k`) documents per query, best first; a blank query gets [] without asking.
        Two threads missing the cache on the same query at once both ask the server; the answers are the same.
        """
        k = self.top_k if k is None else k
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        return self._cache.lookup(queries, k, lambda missing: self._retrieve(missing, k, tries=self.retries + 1))

    def as_tool(self) -> Tool:
        """The `<search>query</search>` tool; its observation lists the documents found, as the BM25 tool's does.

        A failed request raises `RemoteSearchError`, which the rollout shows the model as "error: ..."; it is
        also warned about, so that the run's log shows the server failing.
        """

        def run_search(query: str) -> str:
            try:
                return format_documents(self.search(query)) or "No results found."
            except RemoteSearchError as e:
                warnings.warn(f"remote search failed: {e}", RuntimeWarning, stacklevel=2)
                raise

        return Tool(name="search", open_tag="<search>", close_tag="</search>", fn=run_search)

    def _retrieve(self, queries: list[str], k: int, tries: int) -> list[list[dict]]:
        """One POST for `queries`, retried on network errors, timeouts and 5xx answers; the parsed documents."""
        body = json.dumps({"queries": queries, "topk": k, "return_scores": True}).encode()
        request = urllib.request.Request(self.url, data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        for attempt in range(tries):
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return self._parse(response.read(), len(queries), k)
            except urllib.error.HTTPError as e:
                if e.code < 500:
                    raise RemoteSearchError(f"the retrieval server at {self.url} answered HTTP {e.code}: "
                                            f"{_quote(e.read())}") from None
                error: Exception = e
            except (OSError, http.client.HTTPException) as e:  # refused, reset, timed out, cut-off answer
                error = e
            if attempt + 1 < tries:
                time.sleep(self.backoff * 2**attempt)
        times = "once" if tries == 1 else f"{tries} times"
        raise RemoteSearchError(f"cannot reach the retrieval server at {self.url} (tried {times}, timeout "
                                f"{self.timeout:g} s; last error {type(error).__name__}: {error})")

    def _parse(self, raw: bytes, n_queries: int, k: int) -> list[list[dict]]:
        """The documents of each query in Search-R1's answer, with or without scores; raises on any other shape."""
        try:
            result = json.loads(raw)["result"]
            if not isinstance(result, list) or len(result) != n_queries:
                raise ValueError(f"expected 'result' to be a list of {n_queries} lists")
            docs = []
            for hits in result:
                if not isinstance(hits, list):
                    raise ValueError("expected a list of documents per query")
                docs.append([_document(hit, rank) for rank, hit in enumerate(hits[:k])])
            return docs
        except (ValueError, KeyError, TypeError) as e:  # json.JSONDecodeError is a ValueError
            raise RemoteSearchError(f"the retrieval server at {self.url} answered in a format that is not "
                                    f"Search-R1's ({e}): {_quote(raw)}") from None


def _document(hit: dict, rank: int) -> dict:
    """One result as {"id", "title", "text"} (and "score" when the server sent one); `rank` is the id of a
    document without one."""
    if isinstance(hit, dict) and "document" in hit:
        return {**document(hit["document"], rank, "retrieval server"), "score": float(hit["score"])}
    return document(hit, rank, "retrieval server")


def _quote(raw: bytes) -> str:
    """The start of a server's answer, for an error message."""
    text = raw.decode("utf-8", errors="replace")
    return repr(text[:_QUOTE_CHARS] + ("..." if len(text) > _QUOTE_CHARS else ""))
