"""Web search for the `<search>` tool through DuckDuckGo, with retries, a rate limit and an on-disk cache.

`WebSearch(top_k=3).as_tool()` is a drop-in for the BM25 tool: the model writes `<search>query</search>` and
sees the same "Doc 1(Title: T) text" observation, here built from the title and snippet of each web result.
The client is the maintained `ddgs` package (`pip install ddgs`); the older `duckduckgo_search` is used if it
is the only one installed, and tests inject a fake client.

- Cache: results are stored as JSON in `cache_dir` (default `$ICRL_LITE_CACHE/web`, else
  `~/.cache/icrl-lite/web`), one file per sha256 of (query lower-cased with whitespace collapsed, top_k,
  region), written atomically. A hit makes no request. Failures and empty results are not cached.
- Rate limit: requests start at least `min_interval` seconds apart, across all threads of the process.
- Retries: network errors, timeouts and rate limits are retried up to `max_retries` tries in all, sleeping
  `backoff * 2**i` seconds after the i-th failure (i = 0, 1, ...). After the last try the tool's observation
  says why the search failed ("web search unavailable: ..."); errors in our code or the client's still raise.

Results come from the live web and change over time: a run is reproducible only if its cache is kept.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from icrl_lite.tools.base import Tool
from icrl_lite.tools.search import format_documents


class SearchClient(Protocol):
    """What WebSearch needs from a client: `ddgs.DDGS`, `duckduckgo_search.DDGS` or a fake."""

    def text(self, query: str, **kwargs: Any) -> list[dict[str, Any]]: ...


class WebSearchUnavailable(RuntimeError):
    """The search failed on every try (offline, timed out or rate-limited); the message says which."""


def _error_classes() -> tuple[tuple[type[Exception], ...], ...]:
    """(any client error, rate limit, timeout) classes of the installed packages; OSError is a network error."""
    client, ratelimit, timeout = [OSError], [], [TimeoutError]
    for package, base in (("ddgs", "DDGSException"), ("duckduckgo_search", "DuckDuckGoSearchException")):
        try:
            exceptions = importlib.import_module(f"{package}.exceptions")
        except ImportError:
            continue
        client.append(getattr(exceptions, base))
        ratelimit.append(exceptions.RatelimitException)
        timeout.append(exceptions.TimeoutException)
    return tuple(client), tuple(ratelimit), tuple(timeout)


_CLIENT_ERRORS, _RATELIMIT_ERRORS, _TIMEOUT_ERRORS = _error_classes()

# ddgs 9 raises DDGSException with this message instead of returning [] (also when every engine answered
# with a non-200 status, which is how it reports being rate-limited).
_DDGS_NO_RESULTS = "No results found."


def _default_cache_dir() -> Path:
    return Path(os.environ.get("ICRL_LITE_CACHE", Path.home() / ".cache" / "icrl-lite")) / "web"


def _ddgs_client(timeout: float) -> SearchClient:
    """The real DuckDuckGo client from `ddgs`, else from `duckduckgo_search`."""
    try:
        from ddgs import DDGS
    except ImportError:
        try:
            from duckduckgo_search import DDGS
        except ImportError:
            raise ImportError("web search needs the DuckDuckGo client: pip install ddgs") from None
    return DDGS(timeout=timeout)


class WebSearch:
    """DuckDuckGo text search returning up to `top_k` results as {"title", "text", "url"} dicts.

    `timeout` (seconds) is given to the real client; `client` replaces it (any object with
    `.text(query, max_results=..., region=...)`). `region` is a DuckDuckGo region code ("wt-wt": none).
    `sleep` and `clock` (time.sleep, time.monotonic) drive backoff and rate limit, so tests need not wait.
    """

    def __init__(
        self,
        top_k: int = 3,
        timeout: float = 10.0,
        max_retries: int = 3,
        backoff: float = 1.0,
        min_interval: float = 1.0,
        cache_dir: str | Path | None = None,
        region: str = "wt-wt",
        client: SearchClient | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ):
        if top_k < 1 or max_retries < 1:
            raise ValueError(f"top_k and max_retries must be >= 1, got top_k={top_k}, max_retries={max_retries}")
        if timeout <= 0 or backoff < 0 or min_interval < 0:
            raise ValueError(
                f"need timeout > 0, backoff >= 0 and min_interval >= 0 seconds, "
                f"got timeout={timeout}, backoff={backoff}, min_interval={min_interval}"
            )
        self.top_k, self.timeout, self.max_retries, self.backoff = top_k, timeout, max_retries, backoff
        self.min_interval, self.region = min_interval, region
        self.cache_dir = _default_cache_dir() if cache_dir is None else Path(cache_dir)
        self._client, self._sleep, self._clock = client, sleep, clock
        self._lock = threading.Lock()
        self._next_start = float("-inf")  # earliest clock() at which the next request may start

    def search(self, query: str) -> list[dict]:
        """The results for `query`, from the cache or the web; [] for an empty query or when nothing is found.

        Raises WebSearchUnavailable when every try failed with a network, timeout or rate-limit error.
        """
        query = " ".join(query.split())
        if not query:
            return []
        key = json.dumps([query.casefold(), self.top_k, self.region])
        path = self.cache_dir / f"{hashlib.sha256(key.encode()).hexdigest()}.json"
        if path.is_file():
            return json.loads(path.read_text(encoding="utf-8"))["results"]
        results = self._fetch(query)
        if results:
            self._store(path, {"query": query, "top_k": self.top_k, "region": self.region, "results": results})
        return results

    def as_tool(self) -> Tool:
        """The `<search>query</search>` tool; its observation lists the results, or says why there are none."""

        def run_search(query: str) -> str:
            try:
                return format_documents(self.search(query)) or "No results found."
            except WebSearchUnavailable as e:
                return f"web search unavailable: {e}"

        return Tool(name="search", open_tag="<search>", close_tag="</search>", fn=run_search)

    def _fetch(self, query: str) -> list[dict]:
        """Ask the client, retrying network errors with exponential backoff."""
        error: Exception | None = None
        for attempt in range(self.max_retries):
            self._wait_turn()
            try:
                raw = self._get_client().text(query, max_results=self.top_k, region=self.region)
            except _CLIENT_ERRORS as e:
                if str(e) == _DDGS_NO_RESULTS:
                    return []
                error = e
            else:
                return [
                    {"title": r.get("title", ""), "text": r.get("body", ""), "url": r.get("href", "")}
                    for r in (raw or [])[: self.top_k]
                ]
            if attempt + 1 < self.max_retries:
                self._sleep(self.backoff * 2**attempt)
        tries = f"{self.max_retries} {'try' if self.max_retries == 1 else 'tries'}"
        if isinstance(error, _RATELIMIT_ERRORS):
            raise WebSearchUnavailable(f"rate-limited by DuckDuckGo after {tries}; try again later")
        if isinstance(error, _TIMEOUT_ERRORS):
            raise WebSearchUnavailable(f"timed out after {self.timeout:g} s on each of {tries}")
        raise WebSearchUnavailable(
            f"cannot reach DuckDuckGo after {tries} ({type(error).__name__}: {error}); check the network"
        )

    def _wait_turn(self) -> None:
        """Sleep until this request may start: at least `min_interval` after the previous one, in any thread."""
        with self._lock:
            now = self._clock()
            start = max(now, self._next_start)
            self._next_start = start + self.min_interval
        if start > now:
            self._sleep(start - now)

    def _get_client(self) -> SearchClient:
        with self._lock:
            if self._client is None:
                self._client = _ddgs_client(self.timeout)
            return self._client

    def _store(self, path: Path, entry: dict) -> None:
        """Write `entry` to `path` atomically (temp file, then rename); warn if the cache cannot be written."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=path.parent)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    json.dump(entry, f, ensure_ascii=False)
                os.replace(tmp, path)
            except BaseException:
                os.unlink(tmp)
                raise
        except OSError as e:
            warnings.warn(f"cannot cache web results in {path.parent} ({e}); not cached", stacklevel=3)
