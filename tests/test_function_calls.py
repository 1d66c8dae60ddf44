"""Tests for icrl_lite.function_calls: parsing ToolRL responses, the format / correctness reward and its variants."""

from __future__ import annotations

import json

import pytest

from icrl_lite.function_calls import (
    FORMATS,
    correctness_reward,
    expected_blocks,
    format_reward,
    match_score,
    parse_response,
    toolrl_reward,
    values_equal,
)


def call(name: str, **parameters) -> dict:
    return {"name": name, "parameters": parameters}


def respond(*calls: dict, think: str = "I should call the tool.") -> str:
    """A well-formed think + tool_call response with one JSON object per line."""
    lines = "\n".join(json.dumps(c) for c in calls)
    return f"<think>{think}</think>\n<tool_call>\n{lines}\n</tool_call>"


PARIS = call("get_weather", city="Paris", unit="c")  # 2 parameters
UTC = call("get_time", tz="UTC")  # 1 parameter
# S_max for [PARIS] = 1 + (1 + 2) = 4


# ---- parsing ----------------------------------------------------------------------------------------------


def test_parse_reads_blocks_in_order_with_their_contents():
    p = parse_response('<think> plan </think>\n<tool_call>\n{"name": "f", "parameters": {"x": 1}}\n</tool_call>\n'
                       "<response> done </response>")
    assert p.blocks == ("think", "tool_call", "response")
    assert p.calls == [call("f", x=1)]
    assert (p.think, p.response, p.outside_text) == ("plan", "done", "")


def test_parse_accepts_json_lines_multiline_object_and_list():
    lines = '{"name": "f", "parameters": {"x": 1}}\n{"name": "g", "parameters": {}}'
    multiline = '{\n  "name": "f",\n  "parameters": {\n    "x": 1\n  }\n}'
    as_list = '[{"name": "f", "parameters": {"x": 1}},\n {"name": "g", "parameters": {}}]'
    assert parse_response(f"<tool_call>{lines}</tool_call>").calls == [call("f", x=1), call("g")]
    assert parse_response(f"<tool_call>\n{multiline}\n</tool_call>").calls == [call("f", x=1)]
    assert parse_response(f"<tool_call>{as_list}</tool_call>").calls == [call("f", x=1), call("g")]


def test_parse_empty_tool_call_block_is_empty_list_and_missing_block_is_none():
    assert parse_response("<think>t</think><tool_call>\n  \n</tool_call>").calls == []
    assert parse_response("<think>t</think><response>r</response>").calls is None


@pytest.mark.parametrize("body", [
    '{"name": "f", "parameters": {"x": 1,}}',  # trailing comma: not JSON
    '{"name": "f", "parameters": {"x": 1}},\n{"name": "g", "parameters": {}}',  # comma between objects
    '{"name": "f"}',  # no parameters
    '{"name": "f", "parameters": "{\\"x\\": 1}"}',  # parameters as a string
    '{"name": 3, "parameters": {}}',  # name not a string
    '{"name": "f", "parameters": {}, "id": 1}',  # extra key
    '{"name": "f", "parameters": {}, "arguments": {}}',  # both spellings
    '"f(x=1)"',  # a JSON value that is not a call object
])
def test_parse_any_bad_call_makes_the_list_none(body):
    assert parse_response(f"<think>t</think><tool_call>\n{body}\n</tool_call>").calls is None


def test_parse_arguments_alias_becomes_parameters():
    p = parse_response('<tool_call>{"name": "f", "arguments": {"x": 1}}</tool_call>')
    assert p.calls == [call("f", x=1)]


def test_parse_repeated_blocks_are_all_kept_and_calls_concatenated():
    p = parse_response(respond(call("f")) + "\n" + respond(call("g"), think="again"))
    assert p.blocks == ("think", "tool_call", "think", "tool_call")
    assert p.calls == [call("f"), call("g")]
    assert p.think == "I should call the tool.\nagain"


def test_parse_unclosed_tag_stops_parsing_and_the_rest_is_outside():
    p = parse_response('<think>t</think><tool_call>{"name": "f", "parameters": {}}')
    assert p.blocks == ("think",)
    assert p.calls is None and p.unclosed == "tool_call"
    assert p.outside_text.startswith("<tool_call>")


def test_values_equal_numbers_by_value_other_types_strictly():
    assert values_equal(1, 1.0)
    assert values_equal({"a": [1, 2.0]}, {"a": [1.0, 2]})
    assert not values_equal("1", 1)
    assert not values_equal(True, 1)
    assert not values_equal([1, 2], [2, 1])  # lists are ordered


# ---- format reward ----------------------------------------------------------------------------------------

BLOCK_TEXT = {"think": "<think>t</think>", "tool_call": '<tool_call>\n{"name": "f", "parameters": {}}\n</tool_call>',
              "response": "<response>r</response>"}


@pytest.mark.parametrize("expected", FORMATS)
def test_format_is_one_exactly_for_the_expected_blocks(expected):
    for blocks in FORMATS:
        text = "\n".join(BLOCK_TEXT[b] for b in blocks)
        assert format_reward(parse_response(text), expected) == float(blocks == expected)


def test_format_is_zero_with_text_outside_blocks_wrong_order_or_repeats():
    expected = ("think", "tool_call")
    good = BLOCK_TEXT["think"] + "\n" + BLOCK_TEXT["tool_call"]
    assert format_reward(parse_response("  \n" + good + "\n\n"), expected) == 1.0  # whitespace is fine
    assert format_reward(parse_response("Sure! " + good), expected) == 0.0
    assert format_reward(parse_response(good + " Done."), expected) == 0.0
    assert format_reward(parse_response(BLOCK_TEXT["tool_call"] + BLOCK_TEXT["think"]), expected) == 0.0
    assert format_reward(parse_response(good + BLOCK_TEXT["tool_call"]), expected) == 0.0


def test_format_does_not_judge_the_json():
    text = "<think>t</think><tool_call>not json</tool_call>"
    assert format_reward(parse_response(text), ("think", "tool_call")) == 1.0


def test_expected_blocks_from_gold():
    assert expected_blocks([PARIS]) == ("think", "tool_call")
    assert expected_blocks([PARIS], gold_response="It is sunny.") == ("think", "tool_call", "response")
    assert expected_blocks([PARIS], gold_response="  ") == ("think", "tool_call")  # blank: no response
    assert expected_blocks([]) == ("think", "response")
    with pytest.raises(ValueError, match="expected_blocks"):
        format_reward(parse_response(""), ("tool_call",))


# ---- correctness ------------------------------------------------------------------------------------------


def test_no_call_expected_gives_correctness_zero_and_format_from_blocks():
    reward, m = toolrl_reward("<think>t</think><response>No function fits.</response>", [])
    assert (reward, m["format"], m["correctness"], m["exact"], m["no_call_expected"]) == (1.0, 1.0, 0.0, 1.0, 1.0)
    # calling anyway: correctness still 0, but the blocks are wrong (format 0) and it is not exact
    reward, m = toolrl_reward(respond(PARIS), [])
    assert (reward, m["format"], m["correctness"], m["exact"]) == (0.0, 0.0, 0.0, 0.0)


def test_missing_tool_call_block_gives_minus_three():
    reward, m = toolrl_reward("<think>t</think><response>It is sunny.</response>", [PARIS])
    assert (m["correctness"], m["format"], reward, m["parse_error"]) == (-3.0, 0.0, -3.0, 0.0)


def test_malformed_json_gives_minus_three_but_keeps_format():
    text = '<think>t</think>\n<tool_call>\n{"name": "get_weather", "parameters": {"city": "Paris",}}\n</tool_call>'
    reward, m = toolrl_reward(text, [PARIS])
    # blocks are right (format 1), calls unparseable (-3): 1 - 3 = -2
    assert (m["format"], m["correctness"], reward, m["parse_error"]) == (1.0, -3.0, -2.0, 1.0)


def test_exact_match_with_reordered_parallel_calls_gives_plus_three():
    reward, m = toolrl_reward(respond(UTC, PARIS), [PARIS, UTC])
    assert (m["correctness"], m["exact"], reward) == (3.0, 1.0, 4.0)


def test_extra_call():
    # names {get_weather} vs {get_weather, get_time}: J = 1/2; get_weather matched: J 1 + 2 equal = 3
    # score = 0.5 + 3 = 3.5, S_max = 4: 6 * 3.5 / 4 - 3 = 5.25 - 3 = 2.25
    assert correctness_reward([PARIS, UTC], [PARIS]) == pytest.approx(2.25)


def test_missing_call():
    # gold [PARIS, UTC], pred [PARIS]: names J = 1/2; PARIS 1 + 2 = 3; UTC unmatched 0
    # score = 3.5, S_max = 1 + (1 + 2) + (1 + 1) = 6: 6 * 3.5 / 6 - 3 = 0.5
    assert correctness_reward([PARIS], [PARIS, UTC]) == pytest.approx(0.5)


def test_extra_parameter():
    # params {city, unit} vs {city, unit, days}: J = 2/3; 2 equal values; names 1
    # score = 1 + 2/3 + 2 = 11/3, S_max = 4: 6 * (11/3) / 4 - 3 = 5.5 - 3 = 2.5
    assert correctness_reward([call("get_weather", city="Paris", unit="c", days=3)], [PARIS]) == pytest.approx(2.5)


def test_missing_parameter():
    # params {city} vs {city, unit}: J = 1/2; 1 equal value; names 1
    # score = 1 + 0.5 + 1 = 2.5, S_max = 4: 6 * 2.5 / 4 - 3 = 0.75
    assert correctness_reward([call("get_weather", city="Paris")], [PARIS]) == pytest.approx(0.75)


def test_wrong_value():
    # same names and parameter names (J 1, J 1), unit "f" != "c": 1 equal value
    # score = 1 + 1 + 1 = 3, S_max = 4: 6 * 3 / 4 - 3 = 1.5
    assert correctness_reward([call("get_weather", city="Paris", unit="f")], [PARIS]) == pytest.approx(1.5)


def test_string_five_is_not_the_number_five_but_five_point_zero_is():
    gold = [call("set_timer", minutes=5)]  # S_max = 1 + (1 + 1) = 3
    # "5" != 5: score = 1 + 1 + 0 = 2: 6 * 2 / 3 - 3 = 1
    assert correctness_reward([call("set_timer", minutes="5")], gold) == pytest.approx(1.0)
    assert correctness_reward([call("set_timer", minutes=5.0)], gold) == 3.0


def test_same_name_gold_calls_take_the_best_unused_prediction():
    gold = [PARIS, call("get_weather", city="Rome", unit="f")]  # S_max = 1 + 3 + 3 = 7
    pred = [call("get_weather", city="Paris", unit="f"), PARIS]
    # gold PARIS: pred[0] scores 1 + 1 = 2, pred[1] scores 1 + 2 = 3 -> takes pred[1]
    # gold Rome/f: only pred[0] unused: 1 + 1 (unit f) = 2
    # score = 1 (names) + 3 + 2 = 6: 6 * 6 / 7 - 3 = 15/7 (taking pred[0] first would give 3/7)
    assert correctness_reward(pred, gold) == pytest.approx(15 / 7)


def test_a_prediction_is_used_once():
    gold = [PARIS, PARIS]  # S_max = 7
    pred = [PARIS, call("get_weather", city="Rome", unit="f")]
    # first PARIS takes pred[0] (3); the second only has pred[1]: 1 + 0 = 1
    # score = 1 + 3 + 1 = 5: 6 * 5 / 7 - 3 = 9/7 (reusing pred[0] would give +3)
    assert correctness_reward(pred, gold) == pytest.approx(9 / 7)


def test_ties_go_to_the_earliest_prediction_greedily():
    gold = [PARIS, call("get_weather", city="Rome", unit="c")]  # S_max = 7
    pred = [call("get_weather", city="Rome", unit="c"), call("get_weather", city="Paris", unit="f")]
    # gold PARIS: pred[0] 1 + 1 (unit) = 2, pred[1] 1 + 1 (city) = 2: tie -> pred[0]
    # gold Rome/c: pred[1] 1 + 0 = 1.  score = 1 + 2 + 1 = 4: 6 * 4 / 7 - 3 = 3/7 (optimal would be 9/7)
    assert correctness_reward(pred, gold) == pytest.approx(3 / 7)


def test_s_max_arithmetic_on_two_calls():
    gold = [PARIS, UTC]
    pred = [call("get_weather", city="Paris", unit="f"), UTC]
    # S_max = 1 + (1 + 2) + (1 + 1) = 6
    # names J = 1; get_weather: J 1 + 1 equal = 2; get_time: J 1 + 1 equal = 2; params = 4
    # score = 5: 6 * 5 / 6 - 3 = 2
    assert match_score(pred, gold) == (1.0, 4.0, 6.0)
    assert correctness_reward(pred, gold) == pytest.approx(2.0)


def test_arguments_alias_matches_exactly():
    text = '<think>t</think>\n<tool_call>\n{"name": "get_time", "arguments": {"tz": "UTC"}}\n</tool_call>'
    reward, m = toolrl_reward(text, [UTC])
    assert (reward, m["exact"]) == (4.0, 1.0)


def test_metrics_of_an_extra_call():
    _, m = toolrl_reward(respond(PARIS, UTC), [PARIS])
    # name J 1/2; param score 3 of its maximum 1 + 2 = 3
    assert m == {"reward": pytest.approx(3.25), "format": 1.0, "correctness": pytest.approx(2.25), "exact": 0.0,
                 "name_jaccard": 0.5, "param_score": 1.0, "calls_predicted": 2.0, "calls_gold": 1.0,
                 "parse_error": 0.0, "no_call_expected": 0.0}


# ---- variants ---------------------------------------------------------------------------------------------

WRONG_UNIT = respond(call("get_weather", city="Paris", unit="f"))  # fine correctness 1.5 (test_wrong_value)


def test_coarse_is_plus_three_on_exact_match_else_minus_three():
    assert toolrl_reward(respond(PARIS), [PARIS], variant="coarse")[0] == 4.0  # 1 + 3
    assert toolrl_reward(WRONG_UNIT, [PARIS], variant="coarse")[0] == -2.0  # 1 - 3 instead of 1 + 1.5
    assert toolrl_reward("<think>t</think><response>no</response>", [], variant="coarse")[0] == 1.0  # 1 + 0


@pytest.mark.parametrize("progress, scale", [(0.0, 1 / 3), (1.0, 1.0)])
def test_dynamic_scales_correctness_by_one_plus_two_p_over_three(progress, scale):
    # p = 0: range [-1, 1]; p = 1: the full [-3, 3]
    _, m = toolrl_reward(WRONG_UNIT, [PARIS], variant="dynamic", progress=progress)
    assert m["correctness"] == pytest.approx(1.5 * scale)  # 0.5 at p = 0, 1.5 at p = 1
    _, m = toolrl_reward("<think>t</think>", [PARIS], variant="dynamic", progress=progress)
    assert m["correctness"] == pytest.approx(-3 * scale)  # -1 at p = 0, -3 at p = 1


def test_bad_variant_progress_or_gold_raise():
    with pytest.raises(ValueError, match="fine, coarse, dynamic"):
        toolrl_reward("", [PARIS], variant="dense")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        toolrl_reward("", [PARIS], variant="dynamic", progress=1.5)
    with pytest.raises(ValueError, match="gold calls"):
        toolrl_reward("", [{"get_weather": {"city": "Paris"}}])
