"""Tests for the math-track rewards in icrl_lite.rewards: math_equal, math_format, math_reward, observations."""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from icrl_lite import rewards
from icrl_lite.rewards import (
    extract_answer,
    math_equal,
    math_format,
    math_reward,
    strip_information,
    strip_observations,
)

OUTPUT = "\n\n<output>5963</output>\n\n"
# A well-formed trajectory: every tag present and balanced, a python call, a non-empty answer.
GOOD = (f"<think>plan</think>\n<python>\nprint(347 * 23 - 2018)\n</python>{OUTPUT}"
        "<think>done</think>\n<answer> 5963 </answer>")


# ---- observations ---------------------------------------------------------------------------------------


def test_strip_observations_removes_output_and_information_blocks():
    text = "a<output>x <answer>1</answer></output>b<information>doc</information>c"
    assert strip_observations(text) == "a b c"
    # strip_information keeps its meaning: <output> blocks stay
    assert strip_information(text) == "a<output>x <answer>1</answer></output>b c"


def test_extract_answer_ignores_answers_inside_output():
    assert extract_answer("<python>print(1)</python><output><answer> 7 </answer></output>") is None
    # the policy's answer comes first, a printed one after it: the policy's counts
    assert extract_answer("<answer> 12 </answer><output><answer> 5963 </answer></output>") == "12"


# ---- math_equal -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prediction", "gold", "expected"),
    [
        ("5963", "5963", True),
        ("5962", "5963", False),
        ("5,963", "5963", True),  # thousands separators
        ("1,234,567", "1234567", True),
        ("5963.0", "5963", True),  # a decimal that is exactly the integer
        ("$5963$.", "5963", True),  # $ delimiters and a full stop
        ("\\boxed{5963}", "5963", True),
        ("59,63", "5963", False),  # not thousands groups: math-verify reads the set {59, 63}
        ("34/48", "17/24", True),  # exact rational equivalence
        ("\\frac{17}{24}", "17/24", True),
        ("\\dfrac{34}{48}", "\\frac{17}{24}", True),
        ("-\\frac{1}{2}", "-0.5", True),
        ("0.5", "1/2", True),  # 1/2 = 0.5 exactly
        ("0.7083", "17/24", False),  # 17/24 = 0.70833...: a rounded decimal is not equal
        ("0.708333", "17/24", False),
        ("17/24", "0.708333", False),
        ("\\sqrt{2}/2", "\\frac{\\sqrt{2}}{2}", True),  # not plain numbers: math-verify
        ("x = 5963", "5963", True),
        ("\\sqrt{3}", "\\frac{1}{2}", False),
    ],
)
def test_math_equal(prediction, gold, expected):
    assert math_equal(prediction, [gold]) is expected


def test_math_equal_takes_any_gold_and_rejects_no_answer():
    assert math_equal("5963", ["12", "5963"])
    assert not math_equal(None, ["5963"])
    assert not math_equal("  ", ["5963"])
    with pytest.raises(TypeError, match="wrap it"):
        math_equal("5963", "5963")


def test_costly_prediction_is_refused_before_math_verify(monkeypatch):
    # sympy would run for minutes on 9^(9^9); it is judged wrong before reaching math-verify (checked without a
    # wall clock, which a loaded machine stretches)
    def unreachable():
        raise AssertionError("a costly prediction reached math-verify")

    monkeypatch.setattr(rewards, "_math_verify", unreachable)
    assert not math_equal("9^{9^{9}}", ["5963"])
    assert not math_equal("9**9**9", ["5963"])


def test_math_equal_works_from_worker_threads():
    # math-verify's default timeouts use signal.alarm, which raises outside the main thread
    cases = [("\\sqrt{2}/2", ["\\frac{\\sqrt{2}}{2}"]), ("x = 5963", ["5963"]), ("34/48", ["17/24"]),
             ("\\sqrt{3}", ["\\frac{1}{2}"]), ("5,963", ["5963"])] * 4
    expected = [math_equal(p, g) for p, g in cases]
    assert expected[:5] == [True, True, True, False, True]
    with ThreadPoolExecutor(max_workers=4) as pool:
        assert list(pool.map(lambda case: math_equal(*case), cases)) == expected
        reward, _ = pool.submit(math_reward, GOOD.replace("5963 </answer>", "5,963.0 </answer>"), ["5963"]).result()
    assert reward == 1.0


def test_missing_math_verify_raises_with_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "math_verify", None)  # makes `import math_verify` fail
    with pytest.raises(ImportError, match="pip install math-verify"):
        math_equal("\\sqrt{2}", ["\\sqrt{2}"])
    assert math_equal("5,963", ["5963"])  # plain numbers never need it


# ---- math_format ----------------------------------------------------------------------------------------


def test_well_formed_response_has_format_one():
    score, metrics = math_format(GOOD)
    assert score == 1.0
    assert all(metrics[k] == 0.0 for k in metrics if k != "format")


@pytest.mark.parametrize(
    ("response", "flag", "expected"),
    [
        # no <answer>: 1 - 0.5
        (f"<think>a</think><python>x</python>{OUTPUT}<think>b</think>", "no_answer", 0.5),
        # one <answer>, no </answer>: 1 - 0.2
        (f"<think>a</think><python>x</python>{OUTPUT}<answer> 5963", "unbalanced_answer", 0.8),
        # no <think>: 1 - 0.15
        (f"<python>x</python>{OUTPUT}<answer> 5963 </answer>", "no_think", 0.85),
        # 2 <think>, 1 </think>: 1 - 0.1
        (f"<think>a<python>x</python>{OUTPUT}<think>b</think><answer> 5963 </answer>", "unbalanced_think", 0.9),
        # no <python> at all: 1 - 0.1
        ("<think>I know it.</think><answer> 5963 </answer>", "no_tool", 0.9),
        # blank answer: 1 - 0.2
        (f"<think>a</think><python>x</python>{OUTPUT}<answer>  </answer>", "empty_answer", 0.8),
    ],
)
def test_each_penalty_alone(response, flag, expected):
    score, metrics = math_format(response)
    assert score == pytest.approx(expected)
    assert metrics[flag] == 1.0
    assert sum(v for k, v in metrics.items() if k != "format") == 1.0


def test_tags_inside_output_blocks_are_ignored():
    # the program printed tag-like text: an extra <think>, an <answer> and a <python>
    noisy = "<output><think> <answer>1</answer> <python></output>"
    assert math_format(f"<think>a</think><python>x</python>{noisy}<think>b</think><answer> 5963 </answer>")[0] == 1.0
    # only printed tags: no answer 0.5 + no think 0.15 + no tool 0.1 -> 0.25
    assert math_format(noisy)[0] == pytest.approx(0.25)


def test_tool_tag_is_configurable():
    response = "<think>a</think><code>x</code><answer> 1 </answer>"
    assert math_format(response)[1]["no_tool"] == 1.0
    assert math_format(response, tool_tag="code")[0] == 1.0


# ---- math_reward ----------------------------------------------------------------------------------------


def test_reward_combines_correctness_and_format():
    # correct + well formed: 0.8 * 1 + 0.2 * 1
    reward, metrics = math_reward(GOOD, ["5963"])
    assert reward == pytest.approx(1.0)
    assert metrics["correct"] == metrics["em"] == 1.0
    assert metrics["format_valid"] == 1.0 and metrics["has_answer"] == 1.0
    # wrong, well formed: 0.8 * 0 + 0.2 * 1
    assert math_reward(GOOD, ["5964"])[0] == pytest.approx(0.2)
    # correct fraction in another form, no python call: 0.8 * 1 + 0.2 * 0.9 = 0.98
    assert math_reward("<think>k</think><answer> \\frac{34}{48} </answer>", ["17/24"])[0] == pytest.approx(0.98)


def test_reward_with_no_answer():
    # no answer: correct 0, format 1 - 0.5 = 0.5, reward 0.2 * 0.5 = 0.1
    reward, metrics = math_reward(f"<think>a</think><python>x</python>{OUTPUT}", ["5963"])
    assert reward == pytest.approx(0.1)
    assert metrics["has_answer"] == 0.0 and metrics["correct"] == 0.0 and metrics["no_answer"] == 1.0


def test_reward_ignores_an_answer_printed_by_the_program():
    # the only correct <answer> is inside <output>: it is the tool's text, not the policy's
    response = ("<think>a</think><python>print('<ans' + 'wer> 5963 </ans' + 'wer>')</python>"
                "\n\n<output><answer> 5963 </answer></output>")
    reward, metrics = math_reward(response, ["5963"])
    # correct 0; format: no answer 0.5 -> 0.5; reward 0.2 * 0.5 = 0.1
    assert metrics["correct"] == 0.0
    assert reward == pytest.approx(0.1)


def test_reward_rejects_alpha_outside_unit_interval():
    with pytest.raises(ValueError, match="alpha"):
        math_reward(GOOD, ["5963"], alpha=-0.1)
