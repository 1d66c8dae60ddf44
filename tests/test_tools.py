"""Tests for icrl_lite.tools: the Tool interface, find_call, BM25 search and its on-disk cache, the registry."""

from __future__ import annotations

import json

import pytest

import icrl_lite.tools.search as search_module
from icrl_lite.tools import BM25Search, Tool, available_tools, find_call, format_documents, make_tool

DOCS = [
    {"id": "1", "title": "Zorblat River", "text": "The Zorblat River flows through the valley of Quenmoor."},
    {"id": "2", "title": "Quenmoor", "text": "Quenmoor is a mountain town famous for its copper bells."},
    {"id": "3", "title": "Yellow Finch Orchestra", "text": "An orchestra founded by the composer Ilsa Varn."},
    {"id": "4", "title": "Ilsa Varn", "text": "Ilsa Varn was a composer born in Tessaly in 1821."},
    {"id": "5", "title": "Tessaly", "text": "Tessaly is a coastal city known for salt trading."},
    {"id": "6", "title": "Copper bells", "text": "Bells cast from copper ring with a warm tone."},
]


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture
def corpus_path(tmp_path):
    return write_jsonl(tmp_path / "corpus.jsonl", DOCS)


def forbid_index_build(monkeypatch):
    def fail(docs):
        raise AssertionError("the index was rebuilt instead of loaded from the cache")

    monkeypatch.setattr(search_module, "_build_index", fail)


# ---- search ---------------------------------------------------------------------------------------------


def test_right_document_ranks_first(corpus_path):
    results = BM25Search(corpus_path).search("Which composer founded the Yellow Finch Orchestra?")
    assert results[0]["id"] == "3"
    assert results[0]["score"] > 0


def test_top_k_is_respected(corpus_path):
    searcher = BM25Search(corpus_path, top_k=2)
    assert len(searcher.search("copper bells Quenmoor composer Tessaly")) == 2
    assert len(searcher.search("copper bells Quenmoor composer Tessaly", k=4)) == 4


def test_documents_sharing_no_word_are_left_out(corpus_path):
    results = BM25Search(corpus_path, top_k=5).search("Zorblat")
    assert [doc["id"] for doc in results] == ["1"]


def test_empty_query_returns_nothing(corpus_path):
    searcher = BM25Search(corpus_path)
    assert searcher.search("") == []
    assert searcher.search("   \n") == []


def test_stopword_and_unknown_word_query_returns_nothing(corpus_path):
    searcher = BM25Search(corpus_path)
    assert searcher.search("the of and is") == []
    assert searcher.search("xylophonic qwertyuiop") == []


def test_batch_search_matches_single_searches(corpus_path):
    searcher = BM25Search(corpus_path)
    queries = ["Ilsa Varn birthplace", "the and", "copper bells", ""]
    assert searcher.batch_search(queries) == [searcher.search(q) for q in queries]


def test_format_documents_exact_string():
    docs = [{"title": "T", "text": "text"}, {"title": "T2", "text": "text2"}]
    assert format_documents(docs) == "Doc 1(Title: T) text\nDoc 2(Title: T2) text2"


def test_search_tool_observation(corpus_path):
    tool = BM25Search(corpus_path, top_k=1).as_tool()
    assert (tool.name, tool.open_tag, tool.close_tag) == ("search", "<search>", "</search>")
    assert tool.run("Zorblat River") == f"Doc 1(Title: Zorblat River) {DOCS[0]['text']}"
    assert tool.run("the") == "No results found."


def test_flashrag_contents_corpus(tmp_path):
    records = [{"id": str(i), "contents": f"{d['title']}\n{d['text']}"} for i, d in enumerate(DOCS)]
    searcher = BM25Search(write_jsonl(tmp_path / "flashrag.jsonl", records))
    best = searcher.search("Tessaly salt trading")[0]
    assert (best["title"], best["text"]) == ("Tessaly", DOCS[4]["text"])


def test_list_corpus_is_searchable_without_files(tmp_path):
    searcher = BM25Search(DOCS)
    assert searcher.index_path is None
    assert searcher.search("Quenmoor copper bells town")[0]["id"] == "2"


# ---- cache ----------------------------------------------------------------------------------------------


def test_cache_is_written_next_to_the_corpus_and_reused(corpus_path, monkeypatch):
    first = BM25Search(corpus_path)
    assert not first.loaded_from_cache
    assert first.index_path.parent == corpus_path.with_name("corpus.jsonl.bm25")
    assert [p.name for p in first.index_path.parent.iterdir()] == [first.index_path.name]  # no temp dir left

    forbid_index_build(monkeypatch)
    second = BM25Search(corpus_path)
    assert second.loaded_from_cache
    assert second.search("Ilsa Varn composer") == first.search("Ilsa Varn composer")


def test_cache_is_rebuilt_when_the_corpus_changes(corpus_path):
    old = BM25Search(corpus_path)
    write_jsonl(corpus_path, DOCS + [{"id": "7", "title": "Glimmerfen", "text": "A marsh of glowing reeds."}])
    new = BM25Search(corpus_path)
    assert not new.loaded_from_cache
    assert new.index_path != old.index_path
    assert not old.index_path.exists()  # the stale index is deleted
    assert new.search("glowing marsh")[0]["id"] == "7"


def test_explicit_cache_dir(corpus_path, tmp_path, monkeypatch):
    cache_dir = tmp_path / "cache"
    BM25Search(DOCS, cache_dir=cache_dir)
    forbid_index_build(monkeypatch)
    assert BM25Search(DOCS, cache_dir=cache_dir).loaded_from_cache


def test_unwritable_cache_falls_back_to_memory_with_a_warning(corpus_path, tmp_path):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("")
    with pytest.warns(UserWarning, match="keeping it in memory"):
        searcher = BM25Search(corpus_path, cache_dir=blocker / "cache")
    assert searcher.index_path is None
    assert searcher.search("Zorblat")[0]["id"] == "1"


# ---- corpus errors --------------------------------------------------------------------------------------


def test_missing_corpus_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        BM25Search(tmp_path / "missing.jsonl")


def test_empty_corpus_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        BM25Search(write_jsonl(tmp_path / "empty.jsonl", []))


def test_record_without_text_names_the_line(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [DOCS[0], {"id": "x", "title": "No text"}])
    with pytest.raises(ValueError, match=r"bad\.jsonl record 1 \(id 'x'\): a document needs 'text'"):
        BM25Search(path)


# ---- Tool and find_call ---------------------------------------------------------------------------------


def echo(name):
    return Tool(name=name, open_tag=f"<{name}>", close_tag=f"</{name}>", fn=lambda text: f"{name}:{text}")


SEARCH, PYTHON = echo("search"), echo("python")


def test_find_call_single_call():
    text = "I should look it up. <search> capital of France </search>"
    assert find_call(text, [SEARCH]) == (SEARCH, "capital of France")


def test_find_call_two_tools_picks_the_earliest_close():
    text = "<python>1+1</python> then <search>q</search>"
    assert find_call(text, [SEARCH, PYTHON]) == (PYTHON, "1+1")


def test_find_call_close_without_open_is_none():
    assert find_call("no call here </search>", [SEARCH]) is None
    assert find_call("<search>unfinished", [SEARCH]) is None
    assert find_call("plain answer", [SEARCH, PYTHON]) is None


def test_find_call_uses_the_last_open_before_the_close():
    assert find_call("<search>first <search> second </search>", [SEARCH]) == (SEARCH, "second")


def test_find_call_ignores_text_after_the_close():
    text = "<search>q1</search> <information>x</information> <search>q2</search>"
    assert find_call(text, [SEARCH]) == (SEARCH, "q1")


def test_tool_run_returns_the_observation():
    assert SEARCH.run("q") == "search:q"


def test_tool_run_turns_an_exception_into_an_error_observation():
    def fail(text):
        raise ValueError("bad query")

    assert Tool("t", "<t>", "</t>", fail).run("x") == "error: ValueError: bad query"


def test_tool_run_lets_keyboard_interrupt_through():
    def interrupt(text):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Tool("t", "<t>", "</t>", interrupt).run("x")


def test_wrap():
    assert SEARCH.wrap("obs") == "\n\n<information>obs</information>\n\n"


# ---- registry -------------------------------------------------------------------------------------------


def test_make_tool_builds_search(corpus_path):
    tool = make_tool("search", corpus=corpus_path, top_k=1)
    assert tool.name == "search"
    assert tool.run("Zorblat").startswith("Doc 1(Title: Zorblat River)")


def test_unknown_tool_error_lists_available_names():
    assert "search" in available_tools()
    with pytest.raises(ValueError, match="unknown tool 'calculator'; available tools: .*search"):
        make_tool("calculator")


def test_a_repeated_search_is_scored_once(tmp_path):
    docs = [{"id": "a", "title": "Vorbam", "text": "Vorbam River flows north."},
            {"id": "b", "title": "Skorvilow", "text": "Skorvilow was founded in 1600."}]
    search = BM25Search(docs, top_k=1)
    calls = []
    retrieve = search.retriever.retrieve
    search.retriever.retrieve = lambda queries, **kw: (calls.append(len(queries)), retrieve(queries, **kw))[1]
    first = search.batch_search(["Vorbam river", "Skorvilow founded", "Vorbam river"])
    assert calls == [2]  # the two distinct queries, in one call
    first[0][0]["title"] = "edited by the caller"
    assert search.search("Vorbam river") == [{**docs[0], "score": first[2][0]["score"]}] and calls == [2]


def test_the_result_cache_drops_the_least_recently_used():
    from icrl_lite.tools.base import ResultCache

    cache, asked = ResultCache(size=2), []

    def fetch(queries):
        asked.extend(queries)
        return [[{"id": q}] for q in queries]

    cache.lookup(["a", "b"], 1, fetch)
    cache.lookup(["a", "c"], 1, fetch)  # a is used again: b is now the oldest, and goes
    assert cache.lookup(["a", "c", "b", " "], 1, fetch) == [[{"id": "a"}], [{"id": "c"}], [{"id": "b"}], []]
    assert asked == ["a", "b", "c", "b"]
