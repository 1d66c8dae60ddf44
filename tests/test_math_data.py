"""Tests for the math loaders in icrl_lite.data: load_math (bundled, GSM8K, MATH formats), last_boxed, paths."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from icrl_lite.data import bundled_math_path, last_boxed, load_math

GSM8K = [
    {"question": "Tom has 3 boxes of 415 pens. How many pens?",
     "answer": "3 boxes of 415 pens is 3*415=<<3*415=1245>>1245 pens.\n#### 1,245"},
    {"question": "Ann has 5 apples and eats 2. How many are left?", "answer": "5-2=<<5-2=3>>3\n#### 3"},
]
MATH = [
    {"problem": "What is $\\frac{1}{4} + \\frac{1}{4}$?", "level": "Level 1", "type": "Prealgebra",
     "solution": "We add: $\\frac{1}{4} + \\frac{1}{4} = \\boxed{\\frac{1}{2}}$."},
    {"problem": "Solve for $x$.", "level": "Level 3", "type": "Algebra",
     "solution": "First $\\boxed{3}$ is wrong; the answer is $\\boxed{x^{2}+\\frac{a}{b}}$."},
]


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------- formats
def test_bundled_format_loads_with_its_fields():
    problems = load_math(bundled_math_path("test"))
    assert len(problems) == 200
    assert set(problems[0]) == {"id", "question", "answers", "template", "steps"}
    assert problems[0]["id"] == "test-0001"


def test_gsm8k_final_answer_after_hashes_without_commas(tmp_path):
    problems = load_math(write_jsonl(tmp_path / "gsm8k.jsonl", GSM8K))
    assert [p["answers"] for p in problems] == [["1245"], ["3"]]
    assert problems[0] == {"id": "0", "question": GSM8K[0]["question"], "answers": ["1245"]}  # solution dropped


def test_math_solution_gives_the_last_boxed_answer_with_nested_braces(tmp_path):
    problems = load_math(write_jsonl(tmp_path / "math.jsonl", MATH))
    assert [p["answers"] for p in problems] == [["\\frac{1}{2}"], ["x^{2}+\\frac{a}{b}"]]
    assert problems[0]["question"] == MATH[0]["problem"]
    assert problems[0]["level"] == "Level 1" and "solution" not in problems[0]  # other fields kept


def test_math500_answer_field_wins_and_unique_id_is_the_id(tmp_path):
    record = {"problem": "Compute $2+2$.", "solution": "It is \\boxed{4}.", "answer": "4",
              "unique_id": "test/prealgebra/1.json"}
    [problem] = load_math(write_jsonl(tmp_path / "math500.jsonl", [record]))
    assert problem == {"id": "test/prealgebra/1.json", "question": "Compute $2+2$.", "answers": ["4"]}


def test_json_list_file_and_limit(tmp_path):
    path = tmp_path / "gsm8k.json"
    path.write_text(json.dumps(GSM8K), encoding="utf-8")
    assert [p["answers"] for p in load_math(path, limit=1)] == [["1245"]]


def test_saved_dataset_directory(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.DatasetDict({"test": datasets.Dataset.from_list(GSM8K)}).save_to_disk(str(tmp_path / "gsm8k"))
    assert [p["answers"] for p in load_math(tmp_path / "gsm8k", split="test")] == [["1245"], ["3"]]


# ---------------------------------------------------------------------------------------------- errors
def test_record_of_no_known_format_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(GSM8K[0]) + "\n\n" + json.dumps({"text": "2+2?", "label": 4}) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.jsonl:3: not a math record.*found fields \['label', 'text'\]"):
        load_math(path)


def test_gsm8k_answer_without_hashes_is_an_error(tmp_path):
    path = write_jsonl(tmp_path / "gsm8k.jsonl", [{"question": "q", "answer": "the answer is 4"}])
    with pytest.raises(ValueError, match=r"gsm8k\.jsonl:1: a GSM8K 'answer' must end with '#### "):
        load_math(path)


def test_math_solution_without_boxed_is_an_error(tmp_path):
    path = write_jsonl(tmp_path / "math.jsonl", [{"problem": "p", "solution": "It is 4."}])
    with pytest.raises(ValueError, match=r"math\.jsonl:1: no \\boxed"):
        load_math(path)


def test_unknown_bundled_math_file():
    assert bundled_math_path("demos").name == "demos.jsonl"
    with pytest.raises(ValueError, match="train, dev, test, demos"):
        bundled_math_path("corpus")


# ---------------------------------------------------------------------------------------------- last_boxed
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$\\boxed{\\frac{1}{2}}$", "\\frac{1}{2}"),
        ("\\boxed{1} then \\boxed{\\sqrt{\\frac{a}{b}}}", "\\sqrt{\\frac{a}{b}}"),
        ("\\fbox{7}", "7"),
        ("\\boxed {12}", "12"),
        ("\\boxed{3} and an unclosed \\boxed{4", "3"),  # the last *closed* box
        ("no box here", None),
    ],
)
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected
