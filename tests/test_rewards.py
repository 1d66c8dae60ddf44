"""Tests for icrl_lite.rewards: SQuAD metrics, answer extraction, the ICRL format penalties and the reward."""

from __future__ import annotations

import pytest

from icrl_lite.rewards import (
    answer_in_text,
    exact_match,
    extract_answer,
    f1_score,
    icrl_format,
    icrl_reward,
    normalize_answer,
)

INFO = "\n\n<information>Doc 1(Title: Beijing) Beijing is the capital of China.</information>\n\n"
# A well-formed trajectory: every tag present and balanced, a non-empty answer.
GOOD = (
    f"<think>I need the capital.</think><search> capital of China </search>{INFO}"
    "<think>Found it.</think><answer> Beijing </answer>"
)


# ---- normalisation, EM, F1 ------------------------------------------------------------------------------


def test_normalize_answer_lowercases_strips_punctuation_articles_and_spaces():
    # "The  Beijing!" -> lower "the  beijing!" -> no punct "the  beijing" -> no article "  beijing" -> "beijing"
    assert normalize_answer("The  Beijing!") == "beijing"
    # articles are whole words only: "Theory" keeps its "the"
    assert normalize_answer("The Theory of an Apple") == "theory of apple"


def test_exact_match_uses_normalisation_and_any_gold():
    assert exact_match("The  Beijing!", ["beijing"]) == 1.0
    assert exact_match("Peking", ["Beijing", "peking"]) == 1.0  # second gold matches
    assert exact_match("Beijing city", ["beijing"]) == 0.0  # extra token: not exact


def test_f1_partial_overlap_max_over_golds():
    # pred "barack obama jr" (3 tokens) vs gold "barack obama" (2): common 2, P = 2/3, R = 1,
    # F1 = 2 * (2/3) * 1 / (2/3 + 1) = (4/3) / (5/3) = 0.8.
    # vs gold "obama": common 1, P = 1/3, R = 1, F1 = (2/3) / (4/3) = 0.5.  Max = 0.8.
    assert f1_score("Barack Obama Jr.", ["Obama", "Barack Obama"]) == pytest.approx(0.8)
    assert f1_score("Paris", ["Beijing"]) == 0.0


def test_golds_given_as_a_string_raise():
    # a bare string would be iterated character by character
    with pytest.raises(TypeError, match="wrap it"):
        exact_match("b", "beijing")


# ---- answer extraction ----------------------------------------------------------------------------------


def test_extract_answer_takes_last_complete_block_stripped():
    assert extract_answer("<answer> Paris </answer> then <answer> Beijing </answer>") == "Beijing"
    # an unclosed trailing <answer> is not complete: the earlier block counts
    assert extract_answer("<answer>Paris</answer> <answer> Beij") == "Paris"
    # a stray inner <answer> pairs the last </answer> with the nearest opening tag
    assert extract_answer("<answer> a <answer> b </answer>") == "b"
    assert extract_answer("no tags here") is None
    assert extract_answer("<answer> only opened") is None


def test_extract_answer_ignores_answers_inside_information():
    response = "<search>q</search><information>Doc 1 says <answer>Paris</answer></information>"
    assert extract_answer(response) is None


# ---- format penalties: one crafted response per row of the table ----------------------------------------


def test_well_formed_response_has_format_one():
    score, metrics = icrl_format(GOOD)
    assert score == 1.0
    assert metrics["format"] == 1.0
    assert all(metrics[k] == 0.0 for k in metrics if k != "format")


@pytest.mark.parametrize(
    ("response", "flag", "expected"),
    [
        # no <answer>: 1 - 0.5 = 0.5 (answer tags 0 == 0, so balanced)
        (f"<think>a</think><search>q</search>{INFO}<think>b</think>", "no_answer", 0.5),
        # unbalanced <answer>: one opening, no closing -> 1 - 0.2 = 0.8 (not "empty": no complete block)
        (f"<think>a</think><search>q</search>{INFO}<think>b</think><answer> Beijing", "unbalanced_answer", 0.8),
        # no <think>: 1 - 0.15 = 0.85
        (f"<search>q</search>{INFO}<answer> Beijing </answer>", "no_think", 0.85),
        # unbalanced <think>: 2 opening, 1 closing -> 1 - 0.1 = 0.9
        (f"<think>a<search>q</search>{INFO}<think>b</think><answer> Beijing </answer>", "unbalanced_think", 0.9),
        # no <search>: 1 - 0.1 = 0.9
        ("<think>I know it.</think><answer> Beijing </answer>", "no_search", 0.9),
        # empty answer: 1 - 0.2 = 0.8
        (f"<think>a</think><search>q</search>{INFO}<think>b</think><answer>   </answer>", "empty_answer", 0.8),
    ],
)
def test_each_penalty_alone(response, flag, expected):
    score, metrics = icrl_format(response)
    assert score == pytest.approx(expected)
    assert metrics[flag] == 1.0
    assert sum(v for k, v in metrics.items() if k != "format") == 1.0  # only that flag is raised


def test_format_is_clipped_at_zero():
    # "</answer></think>": no <answer> 0.5 + unbalanced answer 0.2 + no <think> 0.15 + unbalanced think 0.1
    # + no <search> 0.1 = 1.05 -> 1 - 1.05 = -0.05 -> clipped to 0.
    score, _ = icrl_format("</answer></think>")
    assert score == 0.0


def test_plain_text_penalties_add_up():
    # no answer 0.5 + no think 0.15 + no search 0.1 = 0.75 -> 0.25
    score, _ = icrl_format("The answer is Beijing.")
    assert score == pytest.approx(0.25)


def test_tags_inside_information_blocks_are_ignored():
    # The document contains tag-like text that would balance/unbalance counts if it were counted:
    # an extra <think>, an <answer> and a <search>. Only the policy's tags count -> the same as GOOD.
    noisy = "<information>Doc 1(Title: X) <think> <answer>Paris</answer> <search> </information>"
    response = f"<think>a</think><search>q</search>{noisy}<think>b</think><answer> Beijing </answer>"
    assert icrl_format(response)[0] == 1.0
    # and a response whose only tags sit inside an information block has them all missing:
    # no answer 0.5 + no think 0.15 + no search 0.1 = 0.75 -> 0.25
    assert icrl_format(noisy)[0] == pytest.approx(0.25)


# ---- reward ---------------------------------------------------------------------------------------------


def test_reward_combines_em_and_format():
    # correct + well formed: 0.8 * 1 + 0.2 * 1 = 1.0
    reward, metrics = icrl_reward(GOOD, ["beijing"])
    assert reward == pytest.approx(1.0)
    assert metrics["em"] == 1.0 and metrics["format_valid"] == 1.0 and metrics["has_answer"] == 1.0
    # wrong answer, well formed: 0.8 * 0 + 0.2 * 1 = 0.2
    assert icrl_reward(GOOD, ["Shanghai"])[0] == pytest.approx(0.2)
    # correct, no search: 0.8 * 1 + 0.2 * 0.9 = 0.98
    assert icrl_reward("<think>k</think><answer>The  Beijing!</answer>", ["beijing"])[0] == pytest.approx(0.98)


def test_reward_metrics_report_f1_and_missing_answer():
    reward, metrics = icrl_reward("<think>k</think><search>q</search>", ["Beijing"])
    # no answer: em 0, f1 0, format 1 - 0.5 = 0.5, reward 0.2 * 0.5 = 0.1
    assert reward == pytest.approx(0.1)
    assert metrics["has_answer"] == 0.0 and metrics["f1"] == 0.0 and metrics["format_valid"] == 0.0
    assert metrics["no_answer"] == 1.0


def test_reward_scores_the_response_only():
    # The prompt's demos are full of tags. Scoring prompt + response (the released code) would hide the
    # response's missing <think> and <search>; scoring the response alone does not.
    prompt = "Example Solution: <think>x</think><search>y</search><answer>z</answer>\nQuestion: capital of China?"
    response = "<answer> Beijing </answer>"
    # response only: format 1 - 0.15 - 0.1 = 0.75; reward 0.8 + 0.2 * 0.75 = 0.95
    reward, metrics = icrl_reward(response, ["Beijing"])
    assert metrics["format"] == pytest.approx(0.75)
    assert reward == pytest.approx(0.95)
    # the buggy prompt + response scoring would have reported a perfect format
    assert icrl_format(prompt + response)[0] == 1.0


def test_reward_rejects_alpha_outside_unit_interval():
    with pytest.raises(ValueError, match="alpha"):
        icrl_reward(GOOD, ["Beijing"], alpha=1.5)


def test_f1_credit_pays_a_partly_right_answer_and_em_credit_does_not():
    partial = GOOD.replace("<answer> Beijing </answer>", "<answer> Beijing city </answer>")  # F1 2/3, EM 0
    em_reward, em_metrics = icrl_reward(partial, ["Beijing"])
    f1_reward, f1_metrics = icrl_reward(partial, ["Beijing"], credit="f1")
    assert em_reward == pytest.approx(0.2) and f1_reward == pytest.approx(0.8 * 2 / 3 + 0.2)
    assert em_metrics == {**f1_metrics, "reward": em_reward}  # the same metrics, only the reward differs
    with pytest.raises(ValueError, match="credit"):
        icrl_reward(GOOD, ["Beijing"], credit="recall")


def test_answer_in_text_matches_whole_normalised_words():
    assert answer_in_text(["The Beijing"], "Doc 1 (Title: X) ... capital is beijing.")
    assert not answer_in_text(["Bei"], "Beijing is the capital")  # part of a word is not the answer
    assert not answer_in_text(["1600"], "founded in 16000")
    assert not answer_in_text(["", "  "], "anything")  # a blank gold matches nothing
