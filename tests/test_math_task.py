"""Tests for the bundled math task (scripts/make_math_task.py, data/math/)."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import re
from collections import Counter
from fractions import Fraction
from pathlib import Path

import pytest

from icrl_lite.data import DATA_DIR, bundled_math_path, load_demos, load_math
from icrl_lite.rewards import math_reward

ROOT = Path(__file__).resolve().parent.parent
SPLITS = ("train", "dev", "test")
FILES = ["README.md", "demos.jsonl", "dev.jsonl", "test.jsonl", "train.jsonl"]


def _generator():
    spec = importlib.util.spec_from_file_location("make_math_task", ROOT / "scripts" / "make_math_task.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def splits() -> dict[str, list[dict]]:
    return {split: load_math(bundled_math_path(split)) for split in SPLITS}


@pytest.fixture(scope="module")
def demos() -> list[dict]:
    return load_demos(bundled_math_path("demos"))


def numbers(question: str) -> tuple:
    """The numbers of a question in order of appearance; "3/8" is one Fraction."""
    return tuple(Fraction(int(num), int(den)) if den else int(whole)
                 for num, den, whole in re.findall(r"(\d+)/(\d+)|(\d+)", question))


def _sum_of_multiples(k: int, low: int, high: int) -> int:
    first = -(-low // k) * k
    return sum(range(first, high + 1, k))


# Independent recomputation of each template's answer from the numbers in its question text.
FORMULAS = {
    "product_difference": lambda a, b, c: a * b - c,
    "sum_of_products": lambda a, b, c, d: a * b + c * d,
    "division_remainder": lambda n, k: n % k,
    "percentage": lambda base, p: Fraction(base * (100 + p), 100),
    "fraction_sum": lambda x, y, z: x + y + z,
    "fraction_of_remainder": lambda total, x, y: total * (1 - x) * (1 - y),
    "modular": lambda a, b, m: a * b % m,
    "arithmetic_series": lambda a, d, n: sum(a + d * i for i in range(n)),
    "unit_conversion": lambda days, hours: (days * 24 + hours) * 60,
    "multiples_sum": _sum_of_multiples,
    "exponential_growth": lambda start, factor, periods: start * factor**periods,
}


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
        bundled = DATA_DIR / "math" / path.name
        assert path.read_bytes() == bundled.read_bytes(), f"rerun make_math_task.py ({path.name})"


# ---------------------------------------------------------------------------------------------- contents
def test_split_sizes_and_every_template_in_every_split(splits, demos):
    assert {split: len(records) for split, records in splits.items()} == {"train": 1000, "dev": 100, "test": 200}
    assert len(demos) == 12
    for split, records in splits.items():
        counts = Counter(r["template"] for r in records)
        assert set(counts) == set(FORMULAS), split
        assert max(counts.values()) - min(counts.values()) <= 1, split  # templates taken in turn
    assert set(FORMULAS) <= {d["template"] for d in demos}


def test_records_have_the_documented_fields(splits):
    for records in splits.values():
        for r in records:
            assert set(r) == {"id", "question", "answers", "template", "steps"}
            assert len(r["answers"]) == 1 and 1 <= r["steps"] <= 3


def test_no_problem_is_shared_between_files(splits, demos):
    keys = {name: {(r["template"], numbers(r["question"])) for r in records}
            for name, records in {**splits, "demos": demos}.items()}
    for name, records in {**splits, "demos": demos}.items():
        assert len(keys[name]) == len(records), f"{name} repeats a problem"
    names = list(keys)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not keys[a] & keys[b], f"{a} and {b} share a (template, numbers) problem"
    train_questions = {r["question"] for r in splits["train"]}
    assert not train_questions & {r["question"] for r in splits["dev"] + splits["test"]}


def test_answers_match_an_independent_recomputation(splits, demos):
    for records in [*splits.values(), demos]:
        for r in records:
            expected = FORMULAS[r["template"]](*numbers(r["question"]))
            assert Fraction(r["answers"][0]) == expected, r
            assert r["answers"][0] == str(expected)  # canonical: "5963" or "17/24" in lowest terms


def test_numbers_are_too_big_for_mental_arithmetic(splits):
    # products, sums and powers reach 4+ digits; remainders, fractions and what is left after two fractions
    # are taken may be small, but the work to get them is not
    small_ok = {"division_remainder", "modular", "fraction_sum", "fraction_of_remainder"}
    for r in splits["train"]:
        if r["template"] not in small_ok:
            assert len(r["answers"][0]) >= 4, r


# ---------------------------------------------------------------------------------------------- demos
BLOCK = re.compile(r"<think> [^<]+ </think>\n<python>\n(.+?)\n</python>\n\n<output>(.*?)</output>\n\n", re.DOTALL)
ENDING = re.compile(r"<think> [^<]+ </think>\n<answer> (\S+) </answer>")


def _blocks(solution: str) -> list[tuple[str, str]]:
    """(code, output) of each tool call; asserts the whole solution follows the demo layout."""
    blocks, pos = [], 0
    while match := BLOCK.match(solution, pos):
        blocks.append(match.groups())
        pos = match.end()
    assert blocks and ENDING.fullmatch(solution, pos), solution
    return blocks


def test_demos_follow_the_trajectory_layout(demos):
    for demo in demos:
        _blocks(demo["solution"])
        assert ENDING.search(demo["solution"]).group(1) == demo["answers"][0]


def test_demo_outputs_are_what_the_code_really_prints(demos):
    for demo in demos:
        namespace: dict = {}
        for code, output in _blocks(demo["solution"]):
            buffer = io.StringIO()
            with contextlib.redirect_stdout(buffer):
                exec(code, namespace)
            assert buffer.getvalue().rstrip("\n") == output, (demo["id"], code)


def test_some_demos_reuse_state_across_two_python_blocks(demos):
    two_block = [d for d in demos if len(_blocks(d["solution"])) == 2]
    assert len(two_block) >= 3
    for demo in two_block:
        (_, _), (second, _) = _blocks(demo["solution"])
        with pytest.raises(NameError), contextlib.redirect_stdout(io.StringIO()):
            exec(second, {})  # the second block needs a variable of the first


def test_demos_earn_the_full_math_reward(demos):
    for demo in demos:
        reward, metrics = math_reward(demo["solution"], demo["answers"])
        assert reward == 1.0, (demo["id"], metrics)
