"""Tests for the held-out QA set (scripts/make_qa_heldout.py, data/qa_heldout/): fresh names, answerable, searchable."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from icrl_lite.data import bundled_qa_path, load_corpus, load_qa
from icrl_lite.tasks import get_task
from icrl_lite.tools.search import BM25Search

ROOT = Path(__file__).resolve().parent.parent
HELDOUT = ROOT / "data" / "qa_heldout"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def corpus() -> list[dict]:
    return load_corpus(HELDOUT / "corpus.jsonl")


@pytest.fixture(scope="module")
def questions() -> list[dict]:
    return load_qa(HELDOUT / "test.jsonl")


def test_files_are_what_the_generator_writes(tmp_path):
    _script("make_qa_heldout").main(["--out-dir", str(tmp_path)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md", "corpus.jsonl", "test.jsonl"]
    for path in tmp_path.iterdir():
        assert path.read_bytes() == (HELDOUT / path.name).read_bytes(), f"rerun make_qa_heldout.py ({path.name})"


def test_no_invented_name_occurs_in_the_bundled_corpus(monkeypatch, tmp_path, corpus):
    make = _script("make_qa_heldout")
    stems = []

    class RecordingNameMaker(make.NameMaker):
        def stem(self, *args, **kwargs):
            stems.append(super().stem(*args, **kwargs))
            return stems[-1]

    monkeypatch.setattr(make, "NameMaker", RecordingNameMaker)
    make.generate(tmp_path)
    held_out_text = "\n".join(d["title"] + "\n" + d["text"] for d in corpus)
    assert len(stems) > 150 and all(stem in held_out_text for stem in stems)
    bundled = bundled_qa_path("corpus").read_text(encoding="utf-8").lower()
    assert [stem for stem in stems if stem.lower() in bundled] == []


def test_question_phrasings_differ_from_the_bundled_templates(questions):
    bundled = _script("make_qa_task")
    templates = [t for t, _, _ in bundled.RELATIONS.values()] + list(bundled.TWO_HOP.values())
    patterns = [re.compile(re.escape(t).replace(re.escape("{s}"), ".+")) for t in templates]
    assert [q["question"] for q in questions if any(p.fullmatch(q["question"]) for p in patterns)] == []


def test_sizes_and_hop_mix(corpus, questions):
    assert 150 <= len(corpus) <= 250
    assert len(questions) == 100
    assert sum(q["hops"] == 2 for q in questions) == 40
    assert all(len(q["entities"]) == q["hops"] for q in questions)
    assert len({q["entities"][0] for q in questions}) == len(questions)  # no subject asked twice


def test_every_answer_is_in_the_documents_of_its_question(corpus, questions):
    text_of = {d["title"]: d["text"] for d in corpus}
    for q in questions:
        assert all(name in text_of for name in q["entities"]), q["id"]
        last_hop = text_of[q["entities"][-1]]
        assert all(answer in last_hop for answer in q["answers"]), q["id"]
        if q["hops"] == 2:
            assert not any(a.lower() in text_of[q["entities"][0]].lower() for a in q["answers"]), q["id"]


def test_the_qa_task_loads_the_files(questions):
    task = get_task("qa")
    assert task.load(HELDOUT / "test.jsonl") == questions
    assert {"id", "question", "answers", "hops", "entities", "relation"} <= set(questions[0])


def test_bm25_finds_each_hop_by_its_entity_name(corpus, questions):
    search = BM25Search(corpus, top_k=3)
    hops = [name for q in questions for name in q["entities"]]
    found = [name in [d["title"] for d in docs] for name, docs in zip(hops, search.batch_search(hops))]
    assert sum(found) / len(found) >= 0.9
