"""Tests for icrl_lite.tools.web: results, cache, retries, rate limit and failure observations, on fake clients.

No test touches the network: every WebSearch gets a fake client, and building the real DDGS client fails.
"""

from __future__ import annotations

import sys
import threading

import ddgs
import pytest
from ddgs.exceptions import DDGSException, RatelimitException, TimeoutException

from icrl_lite.tools.web import WebSearch, WebSearchUnavailable

HITS = [
    {"title": "Zorblat River", "href": "https://example.org/zorblat", "body": "The Zorblat flows to Quenmoor."},
    {"title": "Quenmoor", "href": "https://example.org/quenmoor", "body": "Quenmoor is a mountain town."},
    {"title": "Copper bells", "href": "https://example.org/bells", "body": "Bells cast from copper."},
    {"title": "Tessaly", "href": "https://example.org/tessaly", "body": "A coastal city."},
]


class FakeClient:
    """Answers `.text` from `outcomes` in order (an exception is raised, a list returned); records each call."""

    def __init__(self, *outcomes):
        self.outcomes = list(outcomes) or [HITS]
        self.calls: list[tuple[str, dict]] = []

    def text(self, query, **kwargs):
        self.calls.append((query, kwargs))
        outcome = self.outcomes[min(len(self.calls), len(self.outcomes)) - 1]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome[: kwargs["max_results"]]


class FakeTime:
    """A clock that only moves when `sleep` is called; `sleeps` records every sleep."""

    def __init__(self):
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture(autouse=True)
def forbid_real_client(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the real DDGS client was built: tests must not touch the network")

    monkeypatch.setattr(ddgs, "DDGS", fail)


def make_search(tmp_path, client, fake_time=None, **kwargs):
    fake_time = fake_time or FakeTime()
    return WebSearch(cache_dir=tmp_path, client=client, sleep=fake_time.sleep, clock=fake_time.clock, **kwargs)


def test_results_are_formatted_like_bm25_documents(tmp_path):
    tool = make_search(tmp_path, FakeClient(), top_k=2).as_tool()
    assert (tool.name, tool.open_tag, tool.close_tag) == ("search", "<search>", "</search>")
    assert tool.fn("zorblat river") == (
        "Doc 1(Title: Zorblat River) The Zorblat flows to Quenmoor.\n"
        "Doc 2(Title: Quenmoor) Quenmoor is a mountain town."
    )


def test_search_returns_title_text_url_and_asks_for_top_k_in_region(tmp_path):
    client = FakeClient()
    results = make_search(tmp_path, client, top_k=1, region="uk-en").search("zorblat")
    assert results == [{"title": "Zorblat River", "text": "The Zorblat flows to Quenmoor.", "url": HITS[0]["href"]}]
    assert client.calls == [("zorblat", {"max_results": 1, "region": "uk-en"})]


def test_cache_hit_makes_no_request_and_survives_a_new_instance(tmp_path):
    first = make_search(tmp_path, FakeClient())
    results = first.search("Zorblat  river")
    client = FakeClient(AssertionError("a cached query was sent again"))
    again = make_search(tmp_path, client)
    assert again.search("  zorblat RIVER ") == results  # normalised: case and whitespace
    assert client.calls == []


def test_cache_misses_on_a_different_top_k(tmp_path):
    make_search(tmp_path, FakeClient(), top_k=2).search("zorblat")
    client = FakeClient()
    assert len(make_search(tmp_path, client, top_k=3).search("zorblat")) == 3
    assert len(client.calls) == 1


def test_cache_dir_defaults_to_icrl_lite_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ICRL_LITE_CACHE", str(tmp_path))
    assert WebSearch(client=FakeClient()).cache_dir == tmp_path / "web"


def test_retries_with_backoff_then_succeeds(tmp_path):
    fake_time = FakeTime()
    client = FakeClient(ConnectionError("reset"), TimeoutException("timed out"), HITS)
    search = make_search(tmp_path, client, fake_time, backoff=0.5, min_interval=0.0)
    assert len(search.search("zorblat")) == 3
    assert len(client.calls) == 3
    assert fake_time.sleeps == [0.5, 1.0]


def test_rate_limited_on_every_try_becomes_an_observation_after_backoff(tmp_path):
    fake_time = FakeTime()
    client = FakeClient(RatelimitException("202 Ratelimit"))
    search = make_search(tmp_path, client, fake_time, max_retries=3, backoff=1.0, min_interval=0.0)
    observation = search.as_tool().fn("zorblat")
    assert observation == "web search unavailable: rate-limited by DuckDuckGo after 3 tries; try again later"
    assert len(client.calls) == 3
    assert fake_time.sleeps == [1.0, 2.0]  # no sleep after the last try


def test_failed_search_is_not_cached(tmp_path):
    with pytest.raises(WebSearchUnavailable):
        make_search(tmp_path, FakeClient(RatelimitException("202 Ratelimit"))).search("zorblat")
    client = FakeClient()
    make_search(tmp_path, client).search("zorblat")
    assert len(client.calls) == 1


def test_offline_becomes_an_observation(tmp_path):
    client = FakeClient(DDGSException("ConnectError: error sending request"))
    observation = make_search(tmp_path, client, max_retries=2).as_tool().fn("zorblat")
    assert observation.startswith("web search unavailable: cannot reach DuckDuckGo after 2 tries")
    assert "ConnectError" in observation


def test_timeout_becomes_an_observation(tmp_path):
    client = FakeClient(TimeoutException("operation timed out"))
    observation = make_search(tmp_path, client, timeout=4.0, max_retries=1).as_tool().fn("zorblat")
    assert observation == "web search unavailable: timed out after 4 s on each of 1 try"


def test_requests_are_spaced_by_min_interval(tmp_path):
    fake_time = FakeTime()
    search = make_search(tmp_path, FakeClient(), fake_time, min_interval=2.0)
    search.search("first")
    fake_time.now += 0.5
    search.search("second")
    assert fake_time.sleeps == [1.5]
    fake_time.now += 10.0
    search.search("third")
    assert fake_time.sleeps == [1.5]


def test_concurrent_requests_take_distinct_slots(tmp_path):
    fake_time = FakeTime()  # the clock stands still, so each request waits for its own slot
    search = WebSearch(cache_dir=tmp_path, client=FakeClient(), min_interval=1.0, clock=fake_time.clock,
                       sleep=fake_time.sleeps.append)
    threads = [threading.Thread(target=search.search, args=(f"query {i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(fake_time.sleeps) == [1.0, 2.0, 3.0]


@pytest.mark.parametrize("outcome", [[], DDGSException("No results found.")], ids=["empty list", "ddgs 9"])
def test_no_results_becomes_an_observation_and_is_not_retried(tmp_path, outcome):
    client = FakeClient(outcome)
    assert make_search(tmp_path, client).as_tool().fn("zorblat") == "No results found."
    assert len(client.calls) == 1


def test_programming_error_in_the_client_propagates(tmp_path):
    client = FakeClient(TypeError("text() got an unexpected keyword argument"))
    with pytest.raises(TypeError):
        make_search(tmp_path, client).as_tool().fn("zorblat")
    assert len(client.calls) == 1


def test_real_client_is_built_lazily_with_the_timeout(tmp_path, monkeypatch):
    built = []

    class FakeDDGS(FakeClient):
        def __init__(self, timeout):
            super().__init__()
            built.append(timeout)

    monkeypatch.setattr(ddgs, "DDGS", FakeDDGS)
    search = WebSearch(cache_dir=tmp_path, timeout=7.0, min_interval=0.0)
    assert built == []
    assert len(search.search("zorblat")) == 3
    assert built == [7.0]


def test_missing_package_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ddgs", None)
    monkeypatch.setitem(sys.modules, "duckduckgo_search", None)
    with pytest.raises(ImportError, match="pip install ddgs"):
        WebSearch(cache_dir=tmp_path).search("zorblat")
