"""Tests for the disk BM25 index's build (icrl_lite.tools.search._build_disk_index) when it is killed: what it
finished is kept, a piece the kill cut short is redone, and the index comes out byte for byte as an uninterrupted
build's."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_store import Killed, queries, synthetic_records, write_jsonl

import icrl_lite.tools.search as search_module
from icrl_lite.tools import BM25Search

RUNS = 7  # 2,000 passages in runs of 300
INDEX_FILES = ["data.csc.index.npy", "indices.csc.index.npy", "indptr.csc.index.npy", "params.index.json",
               "vocab.sqlite"]


class Spy:
    """Stands in for `search_module.<name>`: records each call's arguments and raises Killed at call `kill_at`."""

    def __init__(self, monkeypatch, name: str, kill_at: int | None = None):
        self.real, self.calls, self.kill_at = getattr(search_module, name), [], kill_at
        monkeypatch.setattr(search_module, name, self)

    def __call__(self, *args):
        self.calls.append(args)
        if len(self.calls) == self.kill_at:
            raise Killed
        return self.real(*args)

    def reset(self) -> None:
        self.calls.clear()
        self.kill_at = None


@pytest.fixture
def corpus(tmp_path, monkeypatch):
    """2,000 passages, indexed in 7 runs of 300 documents and slices of 2,000 postings (about 25)."""
    monkeypatch.setattr(search_module, "_RUN_DOCS", 300)
    monkeypatch.setattr(search_module, "_SLICE_POSTINGS", 2000)
    return write_jsonl(tmp_path / "corpus.jsonl", synthetic_records(2000))


def build(corpus, folder):
    return BM25Search(corpus, top_k=10, store="disk", cache_dir=folder)


def index_bytes(searcher) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(searcher.index_path.iterdir())}


def test_build_killed_while_tokenising_redoes_only_the_unfinished_runs(corpus, tmp_path, monkeypatch):
    whole = build(corpus, tmp_path / "whole")
    tokenize = Spy(monkeypatch, "_tokenize_ids", kill_at=4)  # runs 0-2 written, killed in run 3
    with pytest.raises(Killed):
        build(corpus, tmp_path / "resumed")
    pieces = next((tmp_path / "resumed").glob("*.partial")) / "build"
    assert sorted(path.name for path in pieces.glob("run-*.json")) == [f"run-0000{i}.json" for i in range(3)]
    (pieces / "run-00003.bin").write_bytes(b"\xff" * 1000)  # run 3's arrays, its record never written
    (pieces / "run-00003.json.tmp").write_text('{"docs": 300, "postings"')  # a record cut short

    tokenize.reset()
    resumed = build(corpus, tmp_path / "resumed")
    assert len(tokenize.calls) == RUNS - 3
    first = synthetic_records(2000)[900]  # the first document of run 3
    assert tokenize.calls[0][0][0] == f"{first['title']}\n{first['text']}"
    assert sorted(index_bytes(resumed)) == INDEX_FILES  # the pieces are gone
    assert index_bytes(resumed) == index_bytes(whole)
    assert resumed.batch_search(queries()) == whole.batch_search(queries())
    assert {path.name for path in (tmp_path / "resumed").iterdir()} == {
        "corpus.jsonl.store.sqlite", resumed.index_path.name}  # no partial build, no lock file


def test_build_killed_while_weighing_redoes_only_the_slice_it_cut_short(corpus, tmp_path, monkeypatch):
    gather = Spy(monkeypatch, "_gather")
    whole = build(corpus, tmp_path / "whole")
    slices = [c0 for _, c0, _ in gather.calls]
    assert len(slices) > 10

    gather.reset()
    gather.kill_at = 5  # slices 0-3 written, killed in slice 4
    tokenize = Spy(monkeypatch, "_tokenize_ids")
    with pytest.raises(Killed):
        build(corpus, tmp_path / "resumed")
    partial = next((tmp_path / "resumed").glob("*.partial"))
    next_term = json.loads((partial / "build" / "weighed.json").read_text())["next_term"]
    assert next_term == slices[4]
    first = int(np.load(partial / "indptr.csc.index.npy")[next_term])
    for name, garbage in (("data", np.nan), ("indices", -1)):  # slice 4 and after: as if half-written
        array = np.load(partial / f"{name}.csc.index.npy", mmap_mode="r+")
        array[first:] = garbage
        array.flush()
        del array

    gather.reset()
    tokenize.reset()
    resumed = build(corpus, tmp_path / "resumed")
    assert tokenize.calls == []  # every run was finished
    assert [c0 for _, c0, _ in gather.calls] == slices[4:]
    assert index_bytes(resumed) == index_bytes(whole)
    assert resumed.batch_search(queries()) == whole.batch_search(queries())


def test_pieces_of_a_build_with_another_run_size_are_not_used(corpus, tmp_path, monkeypatch):
    whole = build(corpus, tmp_path / "whole")
    tokenize = Spy(monkeypatch, "_tokenize_ids", kill_at=4)
    with pytest.raises(Killed):
        build(corpus, tmp_path / "resumed")

    monkeypatch.setattr(search_module, "_RUN_DOCS", 500)
    tokenize.reset()
    resumed = build(corpus, tmp_path / "resumed")
    assert len(tokenize.calls) == 4  # 2,000 / 500: every run, from the first
    assert resumed.batch_search(queries()) == whole.batch_search(queries())


def test_stale_partial_builds_are_pruned_unless_being_built(corpus):
    cache = corpus.with_name("corpus.jsonl.bm25-disk")
    stale, busy = "a" * 32, "b" * 32
    for key in (stale, busy):
        (cache / f"{key}.partial" / "build").mkdir(parents=True)
    with search_module._exclusive(cache / f"{busy}.lock"):  # another process is building `busy`
        searcher = BM25Search(corpus, store="disk")
    assert {path.name for path in cache.iterdir()} == {f"{busy}.lock", f"{busy}.partial", searcher.index_path.name}
