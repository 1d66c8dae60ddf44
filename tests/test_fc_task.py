"""Tests for the bundled function-calling task (scripts/make_fc_task.py, data/fc/)."""

from __future__ import annotations

import datetime
import importlib.util
import json
import re
from collections import Counter
from pathlib import Path

import pytest

from icrl_lite.data import DATA_DIR, bundled_fc_path, load_fc

ROOT = Path(__file__).resolve().parent.parent
SPLITS = ("train", "dev", "test")
FILES = ["README.md", "demos.jsonl", "dev.jsonl", "test.jsonl", "train.jsonl"]
MIX = {"single": 0.35, "multiple": 0.25, "parallel": 0.25, "no_call": 0.15}
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]


def _generator():
    spec = importlib.util.spec_from_file_location("make_fc_task", ROOT / "scripts" / "make_fc_task.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def files() -> dict[str, list[dict]]:
    return {name: load_fc(bundled_fc_path(name)) for name in (*SPLITS, "demos")}


def _all(files: dict[str, list[dict]]) -> list[dict]:
    return [r for records in files.values() for r in records]


# ---------------------------------------------------------------------------------------------- generator
def test_generator_is_deterministic(tmp_path):
    make = _generator()
    make.main(["--out-dir", str(tmp_path / "a")])
    make.main(["--out-dir", str(tmp_path / "b")])
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == FILES
    for name in FILES:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_bundled_files_are_what_the_generator_writes(tmp_path):
    _generator().generate(tmp_path)
    for path in tmp_path.iterdir():
        assert path.read_bytes() == (DATA_DIR / "fc" / path.name).read_bytes(), f"rerun make_fc_task.py ({path.name})"


def test_catalog_is_split_into_train_and_test_tools():
    catalog = _generator().CATALOG
    names = [t.schema["name"] for t in catalog]
    assert len(names) == len(set(names)) and 35 <= len(names) <= 50
    assert {t.split for t in catalog} == {"train", "test"}
    assert sum(t.split == "test" for t in catalog) >= 12


# ---------------------------------------------------------------------------------------------- splits
def test_sizes_and_kind_mix(files):
    assert {name: len(records) for name, records in files.items()} == {"train": 800, "dev": 100, "test": 200,
                                                                        "demos": 12}
    for split in SPLITS:
        counts = Counter(r["kind"] for r in files[split])
        for kind, share in MIX.items():
            assert counts[kind] / len(files[split]) == pytest.approx(share, abs=0.02), (split, kind)


def test_each_kind_has_its_shape(files):
    for r in _all(files):
        n_functions, n_calls = len(r["functions"]), len(r["ground_truth"])
        if r["kind"] == "single":
            assert n_functions == 1 and n_calls == 1, r["id"]
        elif r["kind"] == "multiple":
            assert 2 <= n_functions <= 4 and n_calls == 1, r["id"]
        elif r["kind"] == "parallel":
            assert 2 <= n_calls <= 3 and n_functions <= len({c["name"] for c in r["ground_truth"]}) + 2, r["id"]
        else:
            assert r["kind"] == "no_call" and n_calls == 0 and 1 <= n_functions <= 3, r["id"]


def test_parallel_examples_repeat_one_function_and_mix_several(files):
    parallel = [r for r in files["train"] if r["kind"] == "parallel"]
    same = sum(len({c["name"] for c in r["ground_truth"]}) == 1 for r in parallel)
    assert 0.3 < same / len(parallel) < 0.7
    assert any(len(r["ground_truth"]) == 3 for r in parallel)


def test_train_and_test_share_no_function(files):
    offered = {name: {f["name"] for r in records for f in r["functions"]} for name, records in files.items()}
    train_side = offered["train"] | offered["dev"] | offered["demos"]
    assert not train_side & offered["test"]
    assert offered["dev"] <= offered["train"] and offered["demos"] <= offered["train"]


def test_question_texts_are_unique_across_files(files):
    questions = [r["question"] for r in _all(files)]
    assert len(questions) == len(set(questions))


def test_no_call_never_offers_a_search_engine(files):
    # a search tool could serve almost any request, so it would make "no call" the wrong answer
    for r in _all(files):
        if r["kind"] == "no_call":
            assert not {f["name"] for f in r["functions"]} & {"web_search", "search_news"}, r["id"]


# ---------------------------------------------------------------------------------------------- calls
def _fits(value, spec: dict) -> bool:
    """Whether `value` has the schema's type (an int is a valid float, as in BFCL) and is one of its enum values."""
    kind = spec["type"]
    if "enum" in spec and value not in spec["enum"]:
        return False
    if kind == "string":
        return isinstance(value, str)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "array":
        return isinstance(value, list) and bool(value) and all(_fits(v, spec["items"]) for v in value)
    raise AssertionError(f"unexpected type {kind!r}")


def test_every_call_names_an_offered_function_with_valid_arguments(files):
    for r in _all(files):
        offered = {f["name"]: f["parameters"] for f in r["functions"]}
        assert len(offered) == len(r["functions"]), r["id"]
        for call in r["ground_truth"]:
            params = offered[call["name"]]
            assert params["type"] == "dict"
            assert set(call["arguments"]) <= set(params["properties"]), (r["id"], call)
            assert set(params["required"]) <= set(call["arguments"]), (r["id"], call)
            for name, value in call["arguments"].items():
                assert _fits(value, params["properties"][name]), (r["id"], name, value)


def test_schemas_use_every_parameter_type(files):
    specs = [s for r in _all(files) for f in r["functions"] for s in f["parameters"]["properties"].values()]
    assert {s["type"] for s in specs} == {"string", "integer", "float", "boolean", "array"}
    assert any("enum" in s for s in specs) and any("default" in s for s in specs)
    for s in specs:
        assert s["description"] and ("default" not in s or _fits(s["default"], s))


def _written_forms(value: str) -> list[str]:
    """How a request may write a string argument: as it is, or a date / time in words."""
    forms = [value]
    if re.fullmatch(r"\d{4}-\d\d-\d\d", value):
        day = datetime.date.fromisoformat(value)
        forms.append(f"{MONTHS[day.month - 1]} {day.day}, {day.year}")
    if re.fullmatch(r"\d\d:\d\d", value):
        hour, minute = map(int, value.split(":"))
        forms.append(f"{(hour - 1) % 12 + 1}:{minute:02d} {'am' if hour < 12 else 'pm'}")
    return forms


def test_arguments_are_stated_in_the_question(files):
    for r in _all(files):
        schemas = {f["name"]: f["parameters"]["properties"] for f in r["functions"]}
        numbers = {float(x) for x in re.findall(r"-?\d+(?:\.\d+)?", r["question"])}
        for call in r["ground_truth"]:
            for name, value in call["arguments"].items():
                spec = schemas[call["name"]][name]
                for item in value if isinstance(value, list) else [value]:
                    if isinstance(item, str) and "enum" not in spec:
                        assert any(form in r["question"] for form in _written_forms(item)), (r["id"], name, item)
                    elif isinstance(item, (int, float)) and not isinstance(item, bool):
                        assert float(item) in numbers, (r["id"], name, item)


# ---------------------------------------------------------------------------------------------- demos
TOOL_CALL = re.compile(r"<think> [^<]+ </think>\n<tool_call>\n(.+)\n</tool_call>", re.DOTALL)
RESPONSE = re.compile(r"<think> [^<]+ </think>\n<response> [^<]+ </response>")


def test_demos_are_toolrl_responses_equal_to_their_ground_truth(files):
    assert Counter(d["kind"] for d in files["demos"]) == {"single": 4, "multiple": 3, "parallel": 3, "no_call": 2}
    for demo in files["demos"]:
        if not demo["ground_truth"]:
            assert RESPONSE.fullmatch(demo["solution"]), demo["id"]
            continue
        match = TOOL_CALL.fullmatch(demo["solution"])
        assert match, demo["id"]
        calls = [json.loads(line) for line in match.group(1).split("\n")]
        assert all(set(c) == {"name", "parameters"} for c in calls)
        assert [{"name": c["name"], "arguments": c["parameters"]} for c in calls] == demo["ground_truth"]


def test_readme_reports_the_files(files):
    readme = (DATA_DIR / "fc" / "README.md").read_text(encoding="utf-8")
    for name in SPLITS:
        counts = Counter(r["kind"] for r in files[name])
        assert f"| {len(files[name])} ({counts['single']} single, {counts['multiple']} multiple" in readme
