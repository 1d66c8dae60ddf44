"""Tests for the bundled QA task (scripts/make_qa_task.py, data/qa/) and the loaders in icrl_lite.data."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

from icrl_lite.data import DATA_DIR, bundled_qa_path, load_corpus, load_demos, load_qa, read_jsonl

ROOT = Path(__file__).resolve().parent.parent
SPLITS = ("train", "dev", "test")


def _generator():
    spec = importlib.util.spec_from_file_location("make_qa_task", ROOT / "scripts" / "make_qa_task.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def corpus() -> dict[str, str]:
    """Title -> text of the bundled corpus."""
    return {d["title"]: d["text"] for d in load_corpus(bundled_qa_path("corpus"))}


@pytest.fixture(scope="module")
def splits() -> dict[str, list[dict]]:
    return {split: load_qa(bundled_qa_path(split)) for split in SPLITS}


# ---------------------------------------------------------------------------------------------- generator
def test_generator_is_deterministic(tmp_path):
    make = _generator()
    make.main(["--out-dir", str(tmp_path / "a")])
    make.main(["--out-dir", str(tmp_path / "b")])
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == ["corpus.jsonl", "demos.jsonl", "dev.jsonl", "test.jsonl", "train.jsonl"]
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_bundled_files_are_what_the_generator_writes(tmp_path):
    _generator().generate(tmp_path)
    for path in tmp_path.iterdir():
        assert path.read_bytes() == (DATA_DIR / "qa" / path.name).read_bytes(), f"rerun make_qa_task.py ({path.name})"


def test_split_sizes_and_hop_mix(splits, corpus):
    assert 450 <= len(corpus) <= 600  # the train world (400 documents) plus the smaller dev and test worlds
    assert {split: len(qs) for split, qs in splits.items()} == {"train": 1200, "dev": 240, "test": 200}
    for qs in splits.values():
        assert sum(q["hops"] == 2 for q in qs) / len(qs) == pytest.approx(0.4)


def test_splits_share_no_subject_entity(splits):
    subjects = {split: {q["entities"][0] for q in qs} for split, qs in splits.items()}
    assert not subjects["train"] & subjects["test"]
    assert not subjects["train"] & subjects["dev"]
    assert not subjects["dev"] & subjects["test"]


def test_subject_is_named_in_the_question(splits):
    for q in [q for qs in splits.values() for q in qs]:
        assert q["entities"][0] in q["question"], q["id"]


def test_every_answer_appears_in_a_document(splits, corpus):
    all_text = "\n".join(corpus.values())
    for q in [q for qs in splits.values() for q in qs]:
        for answer in q["answers"]:
            assert answer in all_text, (q["id"], answer)


def test_single_hop_answer_is_in_the_subject_document(splits, corpus):
    for q in [q for qs in splits.values() for q in qs if q["hops"] == 1]:
        assert q["answers"][0] in corpus[q["entities"][0]], q["id"]


def test_two_hop_questions_need_two_documents(splits, corpus):
    for q in [q for qs in splits.values() for q in qs if q["hops"] == 2]:
        subject, bridge = q["entities"]
        assert bridge in corpus[subject], q["id"]  # the first document leads to the second
        assert q["answers"][0] in corpus[bridge], q["id"]
        assert not any(a.lower() in corpus[subject].lower() for a in q["answers"]), q["id"]


# ---------------------------------------------------------------------------------------------- demos
THINK = r"<think> [^<\n]+ </think>\n"
SEARCH = (r"<search> ([^<\n]+) </search>\n\n<information>"
          + "\n".join(rf"Doc {i}\(Title: ([^)\n]+)\) [^<\n]+" for i in (1, 2, 3)) + r"</information>\n\n")


def test_demos_follow_the_search_r1_tag_format(corpus):
    demos = load_demos(bundled_qa_path("demos"))
    assert len(demos) == 12 and sum(d["hops"] == 2 for d in demos) == 6
    for demo in demos:
        pattern = THINK + (SEARCH + THINK) * demo["hops"] + r"<answer> ([^<\n]+) </answer>"
        match = re.fullmatch(pattern, demo["solution"])
        assert match, demo["id"]
        *steps, answer = match.groups()
        assert answer == demo["answers"][0]
        queries, gold_titles = steps[0::4], steps[1::4]
        assert queries == gold_titles == demo["entities"]  # each search returns its gold document first


def test_demo_documents_are_corpus_documents(corpus):
    for demo in load_demos(bundled_qa_path("demos")):
        for title, text in re.findall(r"Doc \d\(Title: ([^)\n]+)\) ([^<\n]+)", demo["solution"]):
            assert corpus[title] == text, (demo["id"], title)


def test_demos_use_train_entities_only(splits):
    held_out = {q["entities"][0] for split in ("dev", "test") for q in splits[split]}
    for demo in load_demos(bundled_qa_path("demos")):
        titles = set(re.findall(r"Title: ([^)\n]+)\)", demo["solution"]))
        assert not (titles | set(demo["entities"]) | set(demo["answers"])) & held_out, demo["id"]


# ---------------------------------------------------------------------------------------------- loaders
def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_bundled_qa_path_rejects_unknown_names():
    assert bundled_qa_path("dev") == DATA_DIR / "qa" / "dev.jsonl"
    with pytest.raises(ValueError, match="choose one of: corpus, train"):
        bundled_qa_path("validation")


def test_load_qa_reads_jsonl_and_keeps_extra_fields(tmp_path):
    path = _write(tmp_path / "q.jsonl", '{"question": "Q1?", "answers": "A", "hops": 1}\n\n{"id": 7, '
                                        '"question": "Q2?", "answers": ["B", "b"]}\n')
    assert load_qa(path) == [{"id": "0", "question": "Q1?", "answers": ["A"], "hops": 1},
                             {"id": "7", "question": "Q2?", "answers": ["B", "b"]}]
    assert len(load_qa(path, limit=1)) == 1


def test_load_qa_reads_a_json_list(tmp_path):
    path = _write(tmp_path / "q.json", json.dumps([{"question": "Q?", "answers": [1873]}]))
    assert load_qa(path) == [{"id": "0", "question": "Q?", "answers": ["1873"]}]


def test_load_qa_accepts_flashrag_golden_answers(tmp_path):
    path = _write(tmp_path / "nq.jsonl", '{"id": "test_0", "question": "Q?", "golden_answers": ["A", "a"]}\n')
    assert load_qa(path) == [{"id": "test_0", "question": "Q?", "answers": ["A", "a"]}]


def test_load_qa_missing_fields_error_names_record_and_fields(tmp_path):
    path = _write(tmp_path / "q.jsonl", '{"question": "Q?", "answers": "A"}\n{"query": "Q?", "answer": "A"}\n')
    with pytest.raises(ValueError, match=r"record 1 .*'question' and 'answers'.*found fields \['answer', 'query'\]"):
        load_qa(path)


def test_load_qa_missing_local_file_is_not_sent_to_the_hub(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file; check the path"):
        load_qa(tmp_path / "missing.jsonl")


def test_load_qa_reads_a_dataset_saved_to_disk(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = [{"question": f"Q{i}?", "golden_answers": [f"A{i}"]} for i in range(3)]
    datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "saved"))
    questions = load_qa(tmp_path / "saved", split="test", limit=2)
    assert questions == [{"id": "0", "question": "Q0?", "answers": ["A0"]},
                         {"id": "1", "question": "Q1?", "answers": ["A1"]}]
    with pytest.raises(ValueError, match="no split 'train'; available: test"):
        load_qa(tmp_path / "saved", split="train")


def test_load_qa_hub_name_with_config(monkeypatch):
    datasets = pytest.importorskip("datasets")
    calls = []

    def fake_load_dataset(path, name=None, split=None):
        calls.append((path, name, split))
        return datasets.Dataset.from_list([{"id": "dev_0", "question": "Q?", "golden_answers": ["A"]}])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    assert load_qa("RUC-NLPIR/FlashRAG_datasets:nq", split="dev") == [{"id": "dev_0", "question": "Q?",
                                                                       "answers": ["A"]}]
    load_qa("someone/plain_qa", split="test")
    assert calls == [("RUC-NLPIR/FlashRAG_datasets", "nq", "dev"), ("someone/plain_qa", None, "test")]


def test_load_qa_without_datasets_says_how_to_install(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_datasets(name, *args, **kwargs):
        if name == "datasets":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_datasets)
    with pytest.raises(ImportError, match=r"pip install datasets"):
        load_qa("someone/plain_qa")


def test_read_jsonl_malformed_line_names_file_and_line(tmp_path):
    path = _write(tmp_path / "bad.jsonl", '{"question": "Q?"}\n{"question": \n')
    with pytest.raises(ValueError, match=re.escape(f"{path}:2: invalid JSON")):
        read_jsonl(path)


def test_read_jsonl_rejects_non_objects_and_empty_files(tmp_path):
    with pytest.raises(ValueError, match=r":1: expected a JSON object, got list"):
        read_jsonl(_write(tmp_path / "list.jsonl", "[1, 2]\n"))
    with pytest.raises(ValueError, match="is empty"):
        read_jsonl(_write(tmp_path / "empty.jsonl", "\n"))
    with pytest.raises(FileNotFoundError, match="missing.jsonl: no such file"):
        read_jsonl(tmp_path / "missing.jsonl")


def test_load_corpus_splits_search_r1_contents(tmp_path):
    path = _write(tmp_path / "wiki.jsonl", '{"id": "12", "contents": "\\"Treslow\\"\\nTreslow is a town."}\n'
                                           '{"title": "Velm", "text": "A river."}\n')
    assert load_corpus(path) == [{"id": "12", "title": "Treslow", "text": "Treslow is a town."},
                                 {"id": "1", "title": "Velm", "text": "A river."}]


def test_load_corpus_requires_text(tmp_path):
    path = _write(tmp_path / "c.jsonl", '{"id": "d1", "title": "Only a title"}\n')
    with pytest.raises(ValueError, match=r"record 0 \(id 'd1'\): a document needs 'text'"):
        load_corpus(path)


def test_load_demos_requires_a_solution(tmp_path):
    path = _write(tmp_path / "demos.jsonl", '{"question": "Q?", "answers": ["A"]}\n')
    with pytest.raises(ValueError, match="needs 'question', 'answers' and 'solution'"):
        load_demos(path)
