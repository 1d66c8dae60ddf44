"""Tests for icrl_lite.tools.store (the SQLite corpus store: round trip, resume, rebuild, errors, batched reads) and
for BM25Search on disk (the same results as in memory, without loading the corpus, its index reused)."""

from __future__ import annotations

import gzip
import json
import random
import sqlite3

import pytest

import icrl_lite.tools.search as search_module
import icrl_lite.tools.store as store_module
from icrl_lite.tools import BM25Search, CorpusStore, SearchConfig

DOCS = [
    {"id": "1", "title": "Zorblat River", "text": "The Zorblat River flows through the valley of Quenmoor."},
    {"id": "2", "title": "Quenmoor", "text": "Quenmoor is a mountain town famous for its copper bells."},
    {"id": "3", "title": "", "text": "An orchestra founded by the composer Ilsa Varn, née Ströme."},
]
WORDS = ("river town composer orchestra mountain valley copper bell salt trade city coast founded born war king "
         "queen battle album song film island church school bridge railway station village lake forest").split()


class Killed(BaseException):
    """Stands for the process being killed: raised from inside the build loop, caught by no `except Exception`."""


def write_jsonl(path, records):
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
    return path


def synthetic_records(n, seed=0):
    """`n` passages over a Zipf-weighted vocabulary of common words and made-up names, with repeated titles."""
    rng = random.Random(seed)
    names = ["".join(rng.choices("bcdfghklmnprstvz", k=2)) + rng.choice(["ora", "en", "ilo", "ath"]) for _ in range(400)]
    vocab = WORDS + names
    weights = [1 / (rank + 1) for rank in range(len(vocab))]
    return [{"id": f"p{i}", "title": " ".join(rng.choices(names, k=rng.randint(1, 2))).title(),
             "text": " ".join(rng.choices(vocab, weights, k=rng.randint(0, 40)))} for i in range(n)]


def table(path):
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT row, id, title, text FROM docs ORDER BY row").fetchall()
    finally:
        db.close()


# ---- the store ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["corpus.jsonl", "corpus.jsonl.gz"])
def test_store_round_trips_documents(tmp_path, name):
    source = write_jsonl(tmp_path / name, DOCS)
    store = CorpusStore.build(source, tmp_path / "store.sqlite", progress=False)
    assert len(store) == 3
    assert store.get([0, 1, 2]) == DOCS
    assert [text for batch in store.iter_texts(2) for text in batch] == [f"{d['title']}\n{d['text']}" for d in DOCS]


def test_store_splits_flashrag_contents(tmp_path):
    records = [{"id": "a", "contents": '"Zorblat River"\nThe Zorblat River flows.'}, {"contents": "Just text."}]
    store = CorpusStore.build(write_jsonl(tmp_path / "flashrag.jsonl", records), tmp_path / "s.sqlite", progress=False)
    assert store.get([0, 1]) == [{"id": "a", "title": "Zorblat River", "text": "The Zorblat River flows."},
                                 {"id": "1", "title": "", "text": "Just text."}]


def test_rows_are_positions_in_the_file_and_blank_lines_do_not_count(tmp_path):
    source = tmp_path / "c.jsonl"
    source.write_text("\n" + json.dumps(DOCS[0]) + "\n\n" + json.dumps(DOCS[1]) + "\n", encoding="utf-8")
    store = CorpusStore.build(source, tmp_path / "s.sqlite", progress=False)
    assert [doc["id"] for doc in store.get([0, 1])] == ["1", "2"]


@pytest.mark.parametrize("name", ["corpus.jsonl", "corpus.jsonl.gz"])
def test_killed_build_resumes_and_ends_with_the_same_store(tmp_path, monkeypatch, name):
    source = write_jsonl(tmp_path / name, synthetic_records(50))
    whole = CorpusStore.build(source, tmp_path / "whole.sqlite", progress=False, commit_every=7)

    real_document, calls = store_module.document, []

    def killed_at_record_19(record, index, origin):
        calls.append(index)
        if index == 19 and len(calls) == 20:  # the first build only
            raise Killed
        return real_document(record, index, origin)

    monkeypatch.setattr(store_module, "document", killed_at_record_19)
    target = tmp_path / "resumed.sqlite"
    with pytest.raises(Killed):
        CorpusStore.build(source, target, progress=False, commit_every=7)
    assert not target.exists() and target.with_name("resumed.sqlite.partial").exists()

    calls.clear()
    resumed = CorpusStore.build(source, target, progress=False, commit_every=7)
    assert calls[0] == 14 and len(calls) == 50 - 14  # two commits of 7 survived the kill; nothing is read twice
    assert len(resumed) == len(whole) == 50
    assert table(target) == table(tmp_path / "whole.sqlite")
    assert not target.with_name("resumed.sqlite.partial").exists()


def test_unchanged_source_is_opened_and_changed_source_is_rebuilt(tmp_path, monkeypatch):
    source = write_jsonl(tmp_path / "c.jsonl", DOCS)
    target = tmp_path / "s.sqlite"
    CorpusStore.build(source, target, progress=False).close()

    real_document = store_module.document
    monkeypatch.setattr(store_module, "document", lambda *args: pytest.fail("an up-to-date store was read again"))
    assert CorpusStore.build(source, target, progress=False).get([2]) == [DOCS[2]]

    monkeypatch.setattr(store_module, "document", real_document)
    changed = [{**DOCS[0], "text": "The Zorblat River dried up."}] + DOCS[1:]
    write_jsonl(source, changed)
    assert CorpusStore.build(source, target, progress=False).get([0, 1, 2]) == changed


def test_partial_build_of_another_source_is_not_resumed(tmp_path, monkeypatch):
    source = write_jsonl(tmp_path / "c.jsonl", synthetic_records(30))
    target = tmp_path / "s.sqlite"
    real_document = store_module.document

    def killed_at_record_10(record, index, origin):
        if index == 10:
            raise Killed
        return real_document(record, index, origin)

    monkeypatch.setattr(store_module, "document", killed_at_record_10)
    with pytest.raises(Killed):
        CorpusStore.build(source, target, progress=False, commit_every=1)  # rows 0-9 of the old source committed
    monkeypatch.setattr(store_module, "document", real_document)
    write_jsonl(source, DOCS)
    store = CorpusStore.build(source, target, progress=False)
    assert len(store) == 3 and store.get([0, 1, 2]) == DOCS


def test_malformed_line_names_the_file_and_line(tmp_path):
    source = tmp_path / "bad.jsonl"
    source.write_text(json.dumps(DOCS[0]) + "\n\n" + json.dumps(DOCS[1]) + '\n{"id": "4", "text": \n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.jsonl:4: invalid JSON"):
        CorpusStore.build(source, tmp_path / "s.sqlite", progress=False)


def test_record_without_text_names_the_line(tmp_path):
    source = write_jsonl(tmp_path / "bad.jsonl", [DOCS[0], {"id": "x", "title": "No text"}])
    with pytest.raises(ValueError, match=r"bad\.jsonl:2 record 1 \(id 'x'\): a document needs 'text'"):
        CorpusStore.build(source, tmp_path / "s.sqlite", progress=False)


def test_empty_corpus_is_an_error(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n", encoding="utf-8")
    with pytest.raises(ValueError, match="empty"):
        CorpusStore.build(tmp_path / "empty.jsonl", tmp_path / "s.sqlite", progress=False)


def test_get_is_one_query_in_the_requested_order(tmp_path):
    records = synthetic_records(100)
    store = CorpusStore.build(write_jsonl(tmp_path / "c.jsonl", records), tmp_path / "s.sqlite", progress=False)
    statements = []
    store._db.set_trace_callback(statements.append)
    rows = [57, 3, 99, 3, 0]
    assert [doc["id"] for doc in store.get(rows)] == [records[row]["id"] for row in rows]
    assert len(statements) == 1
    with pytest.raises(IndexError, match="rows \\[100\\]"):
        store.get([1, 100])


# ---- BM25 on disk ---------------------------------------------------------------------------------------


@pytest.fixture
def big_corpus(tmp_path, monkeypatch):
    """2,000 passages, indexed on disk in runs of 300 documents and slices of 2,000 postings (many of each)."""
    monkeypatch.setattr(search_module, "_RUN_DOCS", 300)
    monkeypatch.setattr(search_module, "_SLICE_POSTINGS", 2000)
    return write_jsonl(tmp_path / "corpus.jsonl", synthetic_records(2000))


def queries(n=150, seed=1):
    rng = random.Random(seed)
    names = {word.lower() for record in synthetic_records(2000) for word in record["title"].split()}
    pool = WORDS + sorted(names) + ["the", "unknownword"]
    return [" ".join(rng.choices(pool, k=rng.randint(1, 5))) for _ in range(n)] + ["", "the of and"]


def test_disk_search_returns_what_memory_search_returns(big_corpus):
    memory = BM25Search(big_corpus, top_k=10, store="memory")
    disk = BM25Search(big_corpus, top_k=10, store="disk")
    assert disk.store is not None and memory.store is None
    asked = queries()
    expected = memory.batch_search(asked)
    assert sum(map(len, expected)) > 1000  # most queries find documents
    assert disk.batch_search(asked) == expected  # ids, order and scores, bit for bit
    assert disk.search(asked[0], k=3) == memory.search(asked[0], k=3)
    assert disk.as_tool().run(asked[1]) == memory.as_tool().run(asked[1])


def test_disk_index_holds_the_postings_bm25s_builds(big_corpus):
    memory = BM25Search(big_corpus, store="memory").retriever
    disk = BM25Search(big_corpus, store="disk")
    db = sqlite3.connect(disk.index_path / "vocab.sqlite")
    disk_ids = dict(db.execute("SELECT token, id FROM vocab"))
    db.close()
    assert set(disk_ids) == set(memory.vocab_dict) - {""}
    ours, theirs = disk.retriever.scores, memory.scores
    for token, disk_id in disk_ids.items():
        i, j = memory.vocab_dict[token], disk_id
        rows, weights = (theirs[name][theirs["indptr"][i]:theirs["indptr"][i + 1]] for name in ("indices", "data"))
        assert ours["indices"][ours["indptr"][j]:ours["indptr"][j + 1]].tolist() == rows.tolist(), token
        assert ours["data"][ours["indptr"][j]:ours["indptr"][j + 1]].tobytes() == weights.tobytes(), token


def test_disk_search_never_loads_the_corpus(big_corpus, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the disk path loaded the whole corpus")

    monkeypatch.setattr(search_module, "load_corpus", fail)
    searcher = BM25Search(big_corpus, store="disk")
    assert not hasattr(searcher, "docs")
    assert searcher.search("river copper")[0]["score"] > 0


def test_disk_index_and_store_are_reused(big_corpus, monkeypatch):
    first = BM25Search(big_corpus, store="disk")
    assert not first.loaded_from_cache
    assert first.store.path == big_corpus.with_name("corpus.jsonl.store.sqlite")
    assert first.index_path.parent == big_corpus.with_name("corpus.jsonl.bm25-disk")

    monkeypatch.setattr(search_module, "_build_disk_index", lambda *args: pytest.fail("the index was rebuilt"))
    second = BM25Search(big_corpus, store="disk")
    assert second.loaded_from_cache
    assert second.search("battle king") == first.search("battle king")


def test_changed_corpus_gets_a_new_disk_index(big_corpus):
    old = BM25Search(big_corpus, store="disk")
    write_jsonl(big_corpus, DOCS)
    new = BM25Search(big_corpus, store="disk")
    assert not new.loaded_from_cache and not old.index_path.exists()
    assert new.search("Zorblat")[0]["id"] == "1"


def test_auto_store_goes_to_disk_above_the_threshold(tmp_path, monkeypatch):
    corpus = write_jsonl(tmp_path / "corpus.jsonl", DOCS)
    assert BM25Search(corpus).store is None
    monkeypatch.setattr(search_module, "DISK_STORE_BYTES", 100)
    assert BM25Search(corpus).store is not None
    assert BM25Search(DOCS).store is None  # a list is always searched in memory


def test_bad_store_values_say_what_to_use():
    with pytest.raises(ValueError, match="needs a corpus file"):
        BM25Search(DOCS, store="disk")
    with pytest.raises(ValueError, match="use one of auto, memory, disk"):
        BM25Search(DOCS, store="sqlite")
    with pytest.raises(ValueError, match="search.store=disk works with search.backend=bm25 only"):
        SearchConfig(backend="hybrid", store="disk").validate()


def test_a_run_with_a_disk_store_never_loads_the_corpus_into_memory(big_corpus, monkeypatch):
    # the task setup's corpus check and the tool both stream it: a 21M-passage corpus never sits in RAM
    import icrl_lite.tasks as tasks_module
    from icrl_lite.evaluate import EvalConfig
    from icrl_lite.tasks import setup_task

    def fail(*args, **kwargs):
        raise AssertionError("the whole corpus was loaded")

    monkeypatch.setattr(tasks_module, "load_corpus", fail)
    monkeypatch.setattr(search_module, "load_corpus", fail)
    cfg = EvalConfig(task="qa", corpus=str(big_corpus), search=SearchConfig(store="disk"))
    _, tools, _ = setup_task(cfg)
    assert "Doc 1(Title:" in next(t for t in tools if t.name == "search").run("river copper")
    with pytest.raises(AssertionError, match="whole corpus"):  # (the memory store does load it, and is checked)
        setup_task(EvalConfig(task="qa", corpus=str(big_corpus), search=SearchConfig(store="memory")))
