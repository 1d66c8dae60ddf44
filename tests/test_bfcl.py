"""Tests for icrl_lite.bfcl: the decoders, the AST checker on hand-made entries, the summary scores, and the
installed BFCL data (counts, and every gold answer passing the checker)."""

from __future__ import annotations

import importlib
import importlib.util
import os
import random
import sys
import types
from pathlib import Path

import pytest

from icrl_lite.bfcl import (
    CATEGORIES,
    LEADERBOARDS,
    MEMORY,
    MULTI_TURN,
    WEB_SEARCH,
    Entry,
    category_size,
    check,
    decode_python_calls,
    decode_toolrl_calls,
    format_summary,
    format_table,
    leaderboard_scores,
    load_category,
    not_run,
    standardize_string,
    summarize,
)

AREA = {
    "name": "geometry.area",
    "description": "Area of a triangle.",
    "parameters": {"type": "dict", "required": ["base", "height"], "properties": {
        "base": {"type": "integer", "description": "Base."},
        "height": {"type": "float", "description": "Height."},
        "unit": {"type": "string", "description": "Unit, default 'units'."},
        "exact": {"type": "boolean", "description": "Exact arithmetic."},
    }},
}
AREA_GOLD = {"geometry.area": {"base": [10], "height": [5.0], "unit": ["square meters", ""], "exact": [True, ""]}}
WEATHER = {
    "name": "get_weather",
    "description": "Weather in a city.",
    "parameters": {"type": "dict", "required": ["city"], "properties": {
        "city": {"type": "string", "description": "City."},
        "days": {"type": "array", "items": {"type": "integer"}, "description": "Days ahead."},
        "point": {"type": "tuple", "items": {"type": "float"}, "description": "Coordinates."},
        "options": {"type": "dict", "properties": {}, "description": "Options."},
    }},
}


def entry(category: str, functions: list[dict], gold: list[dict] | None) -> Entry:
    return Entry(id=f"{category}_0", category=category, question=[{"role": "user", "content": "?"}],
                 functions=functions, ground_truth=gold)


def call(name: str, **arguments) -> dict:
    return {"name": name, "arguments": arguments}


SIMPLE = entry("simple_python", [AREA], [AREA_GOLD])
GOOD = call("geometry.area", base=10, height=5.0, unit="square meters")


# ---- decode_python_calls ------------------------------------------------------------------------------------


def test_decode_nested_and_negative_values():
    text = "[f(a=-3, b=-2.5, c=[1, [2, -3]], d={'k': (1, 2), 'n': None}, e=True, s='x, y')]"
    assert decode_python_calls(text) == [call("f", a=-3, b=-2.5, c=[1, [2, -3]], d={"k": (1, 2), "n": None},
                                              e=True, s="x, y")]


def test_decode_dotted_names_and_several_calls():
    assert decode_python_calls('[math.factorial(number=5), a.b.c(x="y")]') == [
        call("math.factorial", number=5), call("a.b.c", x="y")]


FENCED = {  # outputs whose call list sits in a markdown code block
    "python": "```python\n[f(a=1)]\n```",
    "json": "```json\n[f(a=1)]\n```",
    "text around": "Here is the call:\n```python\n[f(a=1)]\n```\nIt computes the area.",
    "bare fence, text around": "Sure.\n```\n[f(a=1)]\n```",
    "unclosed": "```py\n[f(a=1)]",
    "surrounding whitespace": "\n  ```python\n[f(a=1)]\n```  \n",
}


@pytest.mark.parametrize("text", FENCED.values(), ids=FENCED.keys())
def test_official_decode_a_fenced_list_is_not_a_call_lenient_reads_it(text):
    assert decode_python_calls(text) is None  # the default is the leaderboard's decoder
    assert decode_python_calls(text, decode="lenient") == [call("f", a=1)]


def test_a_bare_fence_comes_off_in_the_official_decoder_too():
    # bfcl-eval strips backticks and newlines from both ends: a fence without a language tag disappears
    assert decode_python_calls("```\n[f(a=1)]\n```") == [call("f", a=1)]
    assert decode_python_calls("`f(a=1)`") == [call("f", a=1)]


def test_official_decode_prose_before_the_list_or_a_tab_or_crlf_is_not_a_call():
    assert decode_python_calls("The call is [f(a=1)]") is None
    assert decode_python_calls("[f(a=1)]\r\n") is None  # only spaces, newlines and backticks are stripped
    assert decode_python_calls("\t[f(a=1)]") is None
    assert decode_python_calls("  \n[f(a=1)]\n  ") == [call("f", a=1)]


def test_unknown_decode_is_rejected():
    with pytest.raises(ValueError, match="official"):
        decode_python_calls("[f(a=1)]", decode="strict")


def test_decode_bare_call_without_brackets():
    assert decode_python_calls("f(a=1)") == [call("f", a=1)]


def test_decode_reads_after_think():
    assert decode_python_calls("<think>maybe g(x=2)?</think>\n[f(a=1)]") == [call("f", a=1)]


def test_decode_prose_is_none():
    assert decode_python_calls("I cannot answer this with the given functions.") is None
    assert decode_python_calls("Hello") is None  # "[Hello]" parses, but is not a list of calls


def test_decode_empty_output_is_an_empty_call_list():
    assert decode_python_calls("") == []
    assert decode_python_calls("[]") == []


def test_decode_drops_positional_arguments_like_bfcl():
    assert decode_python_calls("[f(5, a=1)]") == [call("f", a=1)]


def test_decode_unquoted_words_and_argument_calls_become_text():
    assert decode_python_calls("[f(unit=meters, t=datetime.now())]") == [call("f", unit="meters", t="datetime.now()")]


def test_decode_computes_arithmetic_without_eval():
    assert decode_python_calls("[f(a=2*3, b=2**10, c='a'+'b', d=6|1, e=1<<4, g=(1+2)*-1)]") == [
        call("f", a=6, b=1024, c="ab", d=7, e=16, g=-3)]
    assert decode_python_calls("[f(a=__import__('os').getcwd() + 'x')]") is None
    assert decode_python_calls("[f(a=max(1, 2) + 1)]") is None  # bfcl-eval's eval gives 3: a documented departure


@pytest.mark.parametrize("expression", ["'a' * 10**6", "[0] * 200000", "9**9**9", "1 << 10**6", "2**14001",
                                        "'%999999d' % 1", "'%*d' % (10**9, 1)"])
def test_decode_refuses_arithmetic_too_large_to_build(expression):
    assert decode_python_calls(f"[f(a={expression})]") is None


def test_official_decode_negates_under_any_unary_operator_lenient_reads_python():
    text = "[f(a=+5, b=-2.5, c=not True, d=~3)]"
    assert decode_python_calls(text) == [call("f", a=-5, b=-2.5, c=-1, d=-3)]  # bfcl-eval's resolve_ast_by_type
    assert decode_python_calls("[f(a=+5, b=-2.5)]", decode="lenient") == [call("f", a=5, b=-2.5)]
    assert decode_python_calls(text, decode="lenient") is None  # `not` and `~` on an argument do not decode


def test_decode_keeps_what_bfcl_eval_keeps():
    # **kwargs becomes the parameter None, bytes / complex / tuple keys stay, subscripts as bfcl-eval writes them
    (decoded,) = decode_python_calls("[f(b=b'x', c=1j, d={(1, 2): 3}, e=x[1, 2], **rest)]")
    assert decoded == {"name": "f", "arguments": {"b": b"x", "c": 1j, "d": {(1, 2): 3}, "e": "x[(1, 2)]", None: "rest"}}


# ---- decode_toolrl_calls ------------------------------------------------------------------------------------


def test_toolrl_one_json_object_per_line_parameters_or_arguments():
    text = ('<think>two calls</think>\n<tool_call>\n{"name": "f", "parameters": {"a": 1}}\n'
            '{"name": "g", "arguments": {"b": [1, 2]}}\n</tool_call>')
    assert decode_toolrl_calls(text) == [call("f", a=1), call("g", b=[1, 2])]


def test_toolrl_reads_every_block_and_an_unclosed_last_one():
    text = '<tool_call>\n{"name": "f", "parameters": {}}\n</tool_call>\n<tool_call>\n{"name": "g", "parameters": {}}'
    assert decode_toolrl_calls(text) == [call("f"), call("g")]


def test_toolrl_absent_or_unparseable_is_none():
    assert decode_toolrl_calls("<response>No function fits.</response>") is None
    assert decode_toolrl_calls('<tool_call>\n{"name": "f", "parameters": {"a": 1}\n</tool_call>') is None
    assert decode_toolrl_calls('<tool_call>\n{"parameters": {"a": 1}}\n</tool_call>') is None


# ---- check: one call ----------------------------------------------------------------------------------------


def test_simple_correct():
    assert check([GOOD], SIMPLE) == (True, "")


def test_undecodable_output_is_wrong():
    valid, error = check(None, SIMPLE)
    assert not valid and "Failed to decode" in error


def test_simple_needs_exactly_one_call():
    valid, error = check([GOOD, GOOD], SIMPLE)
    assert not valid and "Wrong number of functions" in error


def test_wrong_function_name():
    valid, error = check([call("geometry_area", base=10, height=5.0)], SIMPLE)
    assert not valid and "Function name 'geometry.area' not found" in error


def test_underscore_to_dot_compares_names_with_underscores():
    assert check([call("geometry_area", base=10, height=5.0)], SIMPLE, underscore_to_dot=True) == (True, "")


def test_missing_required_parameter():
    valid, error = check([call("geometry.area", base=10)], SIMPLE)
    assert not valid and error == "Missing required parameter: 'height'."


def test_unexpected_parameter():
    valid, error = check([call("geometry.area", base=10, height=5.0, colour="red")], SIMPLE)
    assert not valid and error == "Unexpected parameter: 'colour'."


def test_wrong_type():
    valid, error = check([call("geometry.area", base="10", height=5.0)], SIMPLE)
    assert not valid and "Incorrect type for parameter 'base'. Expected type integer, got str" in error


def test_bool_is_not_an_integer():
    assert not check([call("geometry.area", base=True, height=5.0)], SIMPLE)[0]


def test_int_accepted_for_float():
    assert check([call("geometry.area", base=10, height=5)], SIMPLE) == (True, "")


def test_wrong_value():
    valid, error = check([call("geometry.area", base=11, height=5.0)], SIMPLE)
    assert not valid and "Invalid value for parameter 'base': 11" in error


def test_strings_compared_after_normalisation():
    assert standardize_string("Square-Meters, 'a'") == 'squaremeters"a"'
    assert check([call("geometry.area", base=10, height=5.0, unit="Square_Meters.")], SIMPLE) == (True, "")
    assert not check([call("geometry.area", base=10, height=5.0, unit="square feet")], SIMPLE)[0]


def test_optional_parameter_may_be_omitted_only_when_empty_string_is_acceptable():
    assert check([call("geometry.area", base=10, height=5.0)], SIMPLE) == (True, "")
    strict = entry("simple_python", [AREA], [{"geometry.area": {"base": [10], "height": [5.0], "unit": ["cm"]}}])
    valid, error = check([call("geometry.area", base=10, height=5.0)], strict)
    assert not valid and "Optional parameter 'unit' not provided" in error


def test_array_items_are_type_checked():
    weather = entry("simple_python", [WEATHER], [{"get_weather": {"city": ["Paris"], "days": [[1, 2]]}}])
    assert check([call("get_weather", city="paris", days=[1, 2])], weather) == (True, "")
    valid, error = check([call("get_weather", city="Paris", days=["1", "2"])], weather)
    assert not valid and "Nested type checking failed for parameter 'days'" in error


def test_tuple_parameter_accepts_a_python_tuple():
    weather = entry("simple_python", [WEATHER], [{"get_weather": {"city": ["Paris"], "point": [[48.8, 2.3]]}}])
    assert check([call("get_weather", city="Paris", point=(48.8, 2.3))], weather) == (True, "")


def test_dict_values_checked_key_by_key():
    gold = [{"get_weather": {"city": ["Paris"], "options": [{"units": ["metric", ""], "lang": ["fr"]}]}}]
    weather = entry("simple_python", [WEATHER], gold)
    assert check([call("get_weather", city="Paris", options={"lang": "FR"})], weather) == (True, "")
    valid, error = check([call("get_weather", city="Paris", options={"lang": "fr", "x": 1})], weather)
    assert not valid and error == "Unexpected dict key parameter: 'x'."


# ---- check: several functions, several calls ----------------------------------------------------------------


def test_multiple_checks_the_gold_function_among_several():
    multiple = entry("multiple", [WEATHER, AREA], [AREA_GOLD])
    assert check([GOOD], multiple) == (True, "")
    assert not check([call("get_weather", city="Paris")], multiple)[0]


PARALLEL = entry("parallel", [WEATHER], [{"get_weather": {"city": ["Paris"]}}, {"get_weather": {"city": ["Rome"]}}])


def test_parallel_matches_calls_in_any_order():
    assert check([call("get_weather", city="Rome"), call("get_weather", city="Paris")], PARALLEL) == (True, "")


def test_parallel_count_must_match():
    valid, error = check([call("get_weather", city="Paris")], PARALLEL)
    assert not valid and "Wrong number of functions" in error


def test_parallel_each_gold_call_needs_its_own_match():
    valid, error = check([call("get_weather", city="Paris"), call("get_weather", city="Paris")], PARALLEL)
    assert not valid and "Could not find a matching function" in error and "index 1 of possible answers" in error


def test_parallel_multiple_mixes_functions():
    gold = [AREA_GOLD, {"get_weather": {"city": ["Paris"]}}]
    mixed = entry("parallel_multiple", [WEATHER, AREA], gold)
    assert check([call("get_weather", city="Paris"), GOOD], mixed) == (True, "")


# ---- check: relevance -----------------------------------------------------------------------------------------


IRRELEVANT = entry("irrelevance", [AREA], None)


def test_irrelevance_prose_is_correct():
    assert check(decode_python_calls("None of the functions can compute a square root."), IRRELEVANT) == (True, "")
    assert check([], IRRELEVANT) == (True, "")


def test_irrelevance_a_call_is_wrong():
    valid, error = check([GOOD], IRRELEVANT)
    assert not valid and "Successfully decode AST when it should not" in error


FENCED_GOOD = "```python\n[geometry.area(base=10, height=5.0)]\n```"


def test_irrelevance_a_fenced_call_is_no_call_officially_and_a_call_when_lenient():
    assert check(decode_python_calls(FENCED_GOOD), IRRELEVANT) == (True, "")
    assert not check(decode_python_calls(FENCED_GOOD, decode="lenient"), IRRELEVANT)[0]


def test_a_fenced_right_answer_is_wrong_officially_and_right_when_lenient():
    valid, error = check(decode_python_calls(FENCED_GOOD), SIMPLE)
    assert not valid and "Failed to decode" in error
    assert check(decode_python_calls(FENCED_GOOD, decode="lenient"), SIMPLE) == (True, "")


def test_live_relevance_needs_a_call():
    relevant = entry("live_relevance", [AREA], None)
    assert check([call("geometry.area")], relevant) == (True, "")  # any call, arguments unchecked
    assert not check(None, relevant)[0]
    assert not check([], relevant)[0]


# ---- scores -------------------------------------------------------------------------------------------------


# Hand-made accuracies of the Python categories and sizes, for the formulas worked out by hand below.
PYTHON_RESULTS = {"simple_python": 0.8, "multiple": 0.6, "parallel": 0.4, "parallel_multiple": 0.2, "irrelevance": 1.0,
                  "live_simple": 1.0, "live_multiple": 0.5, "live_parallel": 0.0, "live_parallel_multiple": 0.0,
                  "live_irrelevance": 0.5, "live_relevance": 0.25}
SIZES = {"live_simple": 100, "live_multiple": 200, "live_parallel": 50, "live_parallel_multiple": 50,
         "live_irrelevance": 100, "live_relevance": 100}
OTHER_RESULTS = {"simple_java": 0.3, "simple_javascript": 0.1, "multi_turn_base": 0.2, "multi_turn_miss_func": 0.3,
                 "multi_turn_miss_param": 0.4, "multi_turn_long_context": 0.5, "web_search_base": 0.6,
                 "web_search_no_snippet": 0.7, "memory_kv": 0.1, "memory_vector": 0.2, "memory_rec_sum": 0.3}


def value(scores: dict, column: str, reading: str = "over_run"):
    return scores["overall"][reading] if column == "Overall Acc" else scores["columns"][column][reading]


def test_v4_columns_and_overall_worked_by_hand():
    v4 = leaderboard_scores(LEADERBOARDS["v4"], PYTHON_RESULTS, SIZES)
    assert value(v4, "Non-Live AST Acc") == pytest.approx(0.5)  # (0.8 + 0.6 + 0.4 + 0.2) / 4, simple = python only
    assert value(v4, "Non-Live Overall Acc") == pytest.approx(0.5)  # v4: AST only, no irrelevance
    assert value(v4, "Live Acc") == pytest.approx(0.5)  # (100 * 1.0 + 200 * 0.5 + 50 * 0 + 50 * 0) / 400
    assert value(v4, "Irrelevance Detection") == pytest.approx(0.75)  # (1.0 + 0.5) / 2, unweighted
    assert value(v4, "Relevance Detection") == pytest.approx(0.25)
    for column in ("Multi Turn Acc", "Web Search Acc", "Memory Acc", "Agentic Overall Acc"):
        assert value(v4, column) == "not run"
    # Overall = (10 Non-Live + 10 Live + 10 Irrelevance + 30 Multi Turn + 40 Agentic) / 100, over the first three
    assert value(v4, "Overall Acc") == pytest.approx((0.5 + 0.5 + 0.75) / 3)
    assert v4["overall"]["over_columns"] == ["Non-Live Overall Acc", "Live Acc", "Irrelevance Detection"]
    assert v4["overall"]["weight_share"] == pytest.approx(0.3)
    # as the leaderboard's code: Java and JavaScript are 0 in simple, multi-turn and agentic 0 in the overall
    assert value(v4, "Non-Live AST Acc", "not_run_as_0") == pytest.approx((0.8 / 3 + 0.6 + 0.4 + 0.2) / 4)  # 11/30
    assert value(v4, "Overall Acc", "not_run_as_0") == pytest.approx((10 * 11 / 30 + 10 * 0.5 + 10 * 0.75) / 100)


def test_v3_columns_and_overall_worked_by_hand():
    v3 = leaderboard_scores(LEADERBOARDS["v3"], PYTHON_RESULTS, SIZES)
    assert value(v3, "Non-Live AST Acc") == pytest.approx(0.5)
    assert value(v3, "Non-Live Overall Acc") == pytest.approx(0.6)  # v3 adds irrelevance: (0.8 + ... + 1.0) / 5
    # v3's Live Acc weighs the two (ir)relevance categories in too: (100 + 100 + 0 + 0 + 50 + 25) / 600
    assert value(v3, "Live Acc") == pytest.approx(275 / 600)
    assert value(v3, "Multi Turn Acc") == "not run"
    assert "Web Search Acc" not in v3["columns"]
    # Overall = the unweighted mean of Non-Live Overall, Live and Multi Turn, over the first two
    assert value(v3, "Overall Acc") == pytest.approx((0.6 + 275 / 600) / 2)
    assert v3["overall"]["weight_share"] == pytest.approx(2 / 3)
    assert value(v3, "Overall Acc", "not_run_as_0") == pytest.approx(((0.8 / 3 + 2.2) / 5 + 275 / 600 + 0) / 3)


def test_given_every_category_both_readings_agree():
    for board in LEADERBOARDS.values():
        scores = leaderboard_scores(board, {**PYTHON_RESULTS, **OTHER_RESULTS}, SIZES)
        for column, reading in scores["columns"].items():
            assert reading["over_run"] == pytest.approx(reading["not_run_as_0"]), column
        assert scores["overall"]["over_run"] == pytest.approx(scores["overall"]["not_run_as_0"])
        assert scores["overall"]["weight_share"] == 1
    v4 = leaderboard_scores(LEADERBOARDS["v4"], {**PYTHON_RESULTS, **OTHER_RESULTS}, SIZES)
    assert value(v4, "Multi Turn Acc") == pytest.approx(0.35)
    assert value(v4, "Agentic Overall Acc") == pytest.approx((0.65 + 0.2) / 2)  # mean of web search and memory means


def test_a_column_missing_a_selected_category_is_incomplete_and_leaves_the_overall():
    non_live = {c: PYTHON_RESULTS[c] for c in ("simple_python", "multiple", "parallel", "parallel_multiple")}
    v4 = leaderboard_scores(LEADERBOARDS["v4"], non_live, SIZES)
    assert value(v4, "Live Acc") is None and value(v4, "Irrelevance Detection") is None
    assert value(v4, "Overall Acc") == pytest.approx(0.5) and v4["overall"]["weight_share"] == pytest.approx(0.1)
    nothing = leaderboard_scores(LEADERBOARDS["v4"], {"multiple": 0.5}, SIZES)
    assert value(nothing, "Overall Acc") is None and nothing["overall"]["over_columns"] == []


def test_not_run_gives_each_missing_category_with_why():
    missing = not_run(PYTHON_RESULTS)
    assert set(missing) == {"simple_java", "simple_javascript", *MULTI_TURN, *WEB_SEARCH, *MEMORY}
    assert "stateful" in missing["multi_turn_base"] and "Java" in missing["simple_java"]
    assert not_run({**PYTHON_RESULTS, **OTHER_RESULTS}) == {}
    assert not_run({"multiple": 0.5})["live_simple"].startswith("not selected")


def test_format_table_lists_categories():
    lines = format_table({"multiple": 0.5, "irrelevance": 0.25}, {"multiple": 10, "irrelevance": 4}).splitlines()
    assert lines[1].split() == ["multiple", "10", "50.00"]
    assert lines[2].split() == ["irrelevance", "4", "25.00"]
    assert len(lines) == 3


def test_format_summary_shows_both_versions_the_overalls_cover_and_what_did_not_run():
    text = format_summary(summarize(PYTHON_RESULTS, SIZES))
    rows = {line[:24].strip(): line[24:].split() for line in text.splitlines()[2:12]}
    assert rows["Overall Acc *"] == [f"{100 * (0.5 + 0.5 + 0.75) / 3:.2f}", f"{100 * (0.6 + 275 / 600) / 2:.2f}"]
    assert rows["Non-Live Overall Acc"] == ["50.00", "60.00"]
    assert rows["Multi Turn Acc"] == ["not", "run", "not", "run"]
    assert rows["Web Search Acc"] == ["not", "run", "-"]
    assert "* v4: over Non-Live Overall Acc, Live Acc, Irrelevance Detection, 30% of its weight" in text
    v4_as_its_code = 10 * 11 / 30 + 10 * 0.5 + 10 * 0.75  # % (not run = 0)
    assert f"prints {v4_as_its_code:.2f}" in " ".join(text.split())
    assert "multi_turn_base, multi_turn_miss_func, multi_turn_miss_param, multi_turn_long_context:" in text
    assert "incomplete" in format_summary(summarize({"multiple": 0.5}, SIZES))


@pytest.fixture(scope="module")
def official_scores(tmp_path_factory):
    """bfcl-eval's own aggregation, `generate_leaderboard_csv`: returns the first row of each table it would write,
    by file and column, with the values it computes (before they become percentages). Its module imports every model
    handler through `constants.model_config`; that module is stubbed with one model's config while importing, its
    score and result folders go to a temporary root, and sys.modules is restored afterwards."""
    if importlib.util.find_spec("bfcl_eval") is None:
        pytest.skip("pip install --no-deps bfcl-eval")
    config = types.SimpleNamespace(display_name="icrl-lite", url="", org="", license="", input_price=None,
                                   output_price=None)
    stub = types.ModuleType("bfcl_eval.constants.model_config")
    stub.MODEL_CONFIG_MAPPING = {"icrl/lite": config}
    before, root = dict(sys.modules), os.environ.get("BFCL_PROJECT_ROOT")
    os.environ["BFCL_PROJECT_ROOT"] = str(tmp_path_factory.mktemp("bfcl_root"))
    try:
        sys.modules[stub.__name__] = stub
        helper = importlib.import_module("bfcl_eval.eval_checker.eval_runner_helper")
    finally:
        for name in set(sys.modules) - set(before):
            del sys.modules[name]
        sys.modules.update(before)
        if root is None:
            del os.environ["BFCL_PROJECT_ROOT"]
        else:
            os.environ["BFCL_PROJECT_ROOT"] = root

    def scores(results: dict[str, float], sizes: dict[str, int]) -> dict[str, dict]:
        tables = {}

        def capture(data, file_path, header, *args, **kwargs):
            tables[Path(file_path).name] = dict(zip(header, data[0]))

        table = {"icrl_lite": {c: {"accuracy": a, "total_count": sizes.get(c, 100)} for c, a in results.items()}}
        helper.write_score_csv_file, write = capture, helper.write_score_csv_file
        try:
            helper.generate_leaderboard_csv(table, Path("unused"))
        finally:
            helper.write_score_csv_file = write
        return tables

    return scores


OFFICIAL_TABLE = {"Non-Live Overall Acc": "data_non_live.csv", "Agentic Overall Acc": "data_agentic.csv"}


@pytest.mark.parametrize("run", ["every category", "python", "python but live_parallel and simple_python"])
def test_v4_is_bfcl_evals_own_aggregation(official_scores, run):
    """Our v4 numbers (categories not run as 0) equal those bfcl-eval computes from the same per-category scores;
    a category not run is weighed by bfcl-eval's own count of its entries, so the sizes are `category_size`'s."""
    results = {**PYTHON_RESULTS, **OTHER_RESULTS} if run == "every category" else dict(PYTHON_RESULTS)
    if run.startswith("python but"):
        del results["live_parallel"], results["simple_python"]
    sizes = {c: category_size(c) for c in CATEGORIES}
    tables = official_scores(results, sizes)
    ours = leaderboard_scores(LEADERBOARDS["v4"], results, sizes)
    assert tables["data_overall.csv"]["Overall Acc"] == pytest.approx(ours["overall"]["not_run_as_0"])
    compared = set()
    for column, reading in ours["columns"].items():
        theirs = tables[OFFICIAL_TABLE.get(column, "data_overall.csv")][column]
        if theirs != "N/A":  # bfcl-eval shows N/A for a column with a category not run (and adds it in as 0)
            assert theirs == pytest.approx(reading["not_run_as_0"]), column
            compared.add(column)
    # the columns the overall averages are always numbers there; given every category, all are
    assert compared >= {"Non-Live Overall Acc", "Live Acc", "Multi Turn Acc", "Agentic Overall Acc"}
    assert run != "every category" or compared == set(ours["columns"])


# ---- the installed data ----------------------------------------------------------------------------------------

needs_data = pytest.mark.skipif(importlib.util.find_spec("bfcl_eval") is None,
                                reason="pip install --no-deps bfcl-eval")

# REFERENCE.md section 3 (v4); live_irrelevance is 884 in bfcl-eval 2026.3.23 too.
COUNTS = {"simple_python": 400, "multiple": 200, "parallel": 200, "parallel_multiple": 200, "irrelevance": 240,
          "live_simple": 258, "live_multiple": 1053, "live_parallel": 16, "live_parallel_multiple": 24,
          "live_irrelevance": 884, "live_relevance": 16}
AST_CATEGORIES = [c for c in CATEGORIES if "relevance" not in c]

# Gold answers that no output can pass, under bfcl-eval's checker as under ours (checked against it):
UNSOLVABLE = {
    "live_simple_106-63-0": "required array parameters whose acceptable-value list is empty ([] instead of [[]])",
    "live_simple_112-68-0": "required array parameters whose acceptable-value list is empty ([] instead of [[]])",
    "live_multiple_862-181-3": "gold needs journey_start_time, which Trains_1_FindTrains does not have",
    "live_multiple_964-207-0": "gold names the parameter 'question'; the schema's only parameter is 'statement'",
}


@needs_data
@pytest.mark.parametrize("category", CATEGORIES)
def test_category_counts_match_reference(category):
    entries = load_category(category)
    assert len(entries) == COUNTS[category]
    assert all(e.category == category and e.question for e in entries)
    # 4 live_irrelevance entries (live_irrelevance_120-9-0 to 123-9-3) offer no function at all
    assert sum(not e.functions for e in entries) == (4 if category == "live_irrelevance" else 0)
    assert all((e.ground_truth is None) == ("relevance" in category) for e in entries)


@needs_data
def test_load_category_limit_and_first_turn():
    entries = load_category("simple_python", limit=3)
    assert [e.id for e in entries] == ["simple_python_0", "simple_python_1", "simple_python_2"]
    assert entries[0].question[0]["role"] == "user"  # a message, not a list of turns
    assert entries[1].ground_truth == [{"math.factorial": {"number": [5]}}]


def gold_as_calls(e: Entry) -> list[dict] | None:
    """The first acceptable value of each parameter, optional ones ("" acceptable) left out unless required;
    dicts (and lists of dicts) take the first acceptable value of each key. None if no value is acceptable."""

    def first(values):
        return next(v for v in values if v != "")

    def concrete(d):
        return {k: first(vs) for k, vs in d.items() if "" not in vs}

    calls = []
    for gold in e.ground_truth:
        (name, params), = gold.items()
        schema = next(f for f in e.functions if f["name"] == name)["parameters"]
        arguments = {}
        for param, values in params.items():
            required = param in schema.get("required", [])
            if "" in values and not required:
                continue
            if param not in schema["properties"] or not values:
                return None
            value = first(values) if values != [""] else ""
            spec = schema["properties"][param]
            if spec["type"] == "dict":
                value = concrete(value)
            elif spec["type"] == "array" and spec.get("items", {}).get("type") == "dict":
                value = [concrete(d) for d in value]
            arguments[param] = value
        calls.append({"name": name, "arguments": arguments})
    return calls


@needs_data
@pytest.mark.parametrize("category", AST_CATEGORIES)
def test_every_gold_answer_passes_the_checker(category):
    failures = {}
    for e in load_category(category):
        calls = gold_as_calls(e)
        valid, error = check(calls, e) if calls is not None else (False, "no acceptable value to write")
        if not valid:
            failures[e.id] = error
    assert set(failures) == {i for i in UNSOLVABLE if i.startswith(category + "_")}, failures


# ---- the official decoder, side by side ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def official():
    """bfcl-eval's own decoding path: `default_decode_ast_prompting`, the Qwen handler's `</think>` split and the
    runner's `is_empty_output`. Its imports need tree-sitter (Java / JavaScript parsers), tenacity, openai and
    overrides; those not installed are stubbed while importing, and sys.modules is restored afterwards."""
    if importlib.util.find_spec("bfcl_eval") is None:
        pytest.skip("pip install --no-deps bfcl-eval")
    noop = lambda *args, **kwargs: None  # noqa: E731
    identity = lambda f=None, *args, **kwargs: f  # noqa: E731
    stubs = {  # the Java / JavaScript parsers build tree-sitter grammars at import: never needed for Python
        "bfcl_eval.model_handler.parser.java_parser": {"parse_java_function_call": noop},
        "bfcl_eval.model_handler.parser.js_parser": {"parse_javascript_function_call": noop},
        "tenacity": {"retry": noop, "retry_if_exception_message": noop, "retry_if_exception_type": noop,
                     "wait_random_exponential": noop},
        "openai": {"OpenAI": object},
        "overrides": {"EnforceOverrides": type("EnforceOverrides", (), {}), "final": identity, "override": identity},
    }
    before = dict(sys.modules)
    try:
        for name, attributes in stubs.items():
            if name.startswith("bfcl_eval") or importlib.util.find_spec(name) is None:
                sys.modules[name] = types.ModuleType(name)
                vars(sys.modules[name]).update(attributes)
        utils = importlib.import_module("bfcl_eval.model_handler.utils")
        qwen = importlib.import_module("bfcl_eval.model_handler.local_inference.qwen").QwenHandler
    finally:
        for name in set(sys.modules) - set(before):
            del sys.modules[name]
        sys.modules.update(before)

    def decode(text: str) -> list[dict] | None:
        """The runner's reading: the Qwen handler's response text, then the decoder; None where it raises."""
        response = types.SimpleNamespace(choices=[types.SimpleNamespace(text=text)],
                                         usage=types.SimpleNamespace(prompt_tokens=0, completion_tokens=0))
        try:
            return utils.default_decode_ast_prompting(qwen._parse_query_response_prompting(None, response)["model_responses"])
        except Exception:  # the runner catches every exception as a failed decode
            return None

    return types.SimpleNamespace(decode=decode, is_empty_output=utils.is_empty_output)


def as_official(calls: list[dict] | None) -> list[dict] | None:
    return None if calls is None else [{c["name"]: c["arguments"]} for c in calls]


def assert_same_decoding(official, texts):
    """Our default decoding equals bfcl-eval's on every text (repr: 1 != 1.0 != True), and so does the
    irrelevance verdict (the runner: no call when decoding fails or gives an empty output)."""
    differ = {}
    for text in texts:
        ours, theirs = decode_python_calls(text), official.decode(text)
        no_call = theirs is None or official.is_empty_output(theirs)
        if repr(as_official(ours)) != repr(theirs) or check(ours, IRRELEVANT)[0] != no_call:
            differ[text] = (as_official(ours), theirs)
    assert not differ, differ


# Hand-written outputs: fences, whitespace, prose, thinking, and every kind of value the decoder reads.
OUTPUTS = [
    "[f(a=1)]", "f(a=1)", "f(a=1), g(b=2)", "[f(a=1), g.h(b='x')]", "", "  ", "[]", "[f()]", "[f()(a=1)]",
    "```python\n[f(a=1)]\n```", "```py\n[f(a=1)]\n```", "```json\n[f(a=1)]\n```", "```\n[f(a=1)]\n```",
    "```\nf(a=1)\n```", "```[f(a=1)]```", "`f(a=1)`", "\n  ```python\n[f(a=1)]\n```  \n",
    "Here is the call:\n```python\n[f(a=1)]\n```", "```python\n[f(a=1)]\n```\nThis computes the area.",
    "Sure.\n```\n[f(a=1)]\n```", "```python\n[f(a=1)]", "```json\n[{\"name\": \"f\", \"arguments\": {\"a\": 1}}]\n```",
    "[f(a=1)]\n", "\n\n[f(a=1)]", " [f(a=1)] ", "\t[f(a=1)]", "[f(a=1)]\t", "[f(a=1)]\r\n", "[f(a=1)]\n\n",
    "[f(a=1),\n g(b=2)]", "[\n    f(\n        a=1\n    )\n]", "'[f(a=1)]'", "'f(a=1)'", "\"[f(a=1)]\"",
    "The answer is [f(a=1)]", "I will call f.\n[f(a=1)]", "[f(a=1)]\nThat is the call.", "f(a=1) is the call",
    "I cannot help with that.", "None of the functions fit.", "Hello", "[Hello]", "[1, 2]", "[f(a=1), 2]",
    "[f(a=1)][0]", "[f(a=1)] + [g(b=2)]", "[f(a=1)], [g(b=2)]", "[f(a=i) for i in range(3)]", "[x][0](a=1)]",
    "<think>g(x=2)?</think>\n\n[f(a=1)]", "<think>a</think>b</think>\n[f(a=1)]", "<think>\n</think>\n\n```python\n[f(a=1)]\n```",
    "<think>never closed [f(a=1)]", "</think>[f(a=1)]",
    "[f(a=-3, b=-2.5, c=+5, d=not True, e=~3, g=-True, h=-1j, i=-x, j=-'s', k=-None, l=-(1+2), m=-[1])]",
    "[f(a=+5)]", "[f(a=not 1)]", "[f(a=-(-5))]",
    "[f(a=[1, [2, -3]], b={'k': (1, 2), 'n': None}, c=True, d='x, y', e=..., g=b'x', h=1j, i=3e5, j=0x1F)]",
    "[f(a={(1, 2): 3}, b={[1]: 2}, c={**d}, d={f(x=1): 2}, e={x: 1}, g={1: 2, 1: 3})]",
    "[f(a=meters, t=datetime.now(), u=datetime.now(tz=utc), v=np.array([1, 2]), w=x[1, 2], y=x[1:2], z=x[0])]",
    "[f(a=g(b=h(c=1)), d=g(1, e=2), i=g(**k))]", "[f(5, a=1)]", "[f(**kwargs)]", "[f(*args, a=1)]",
    "[f(a=lambda: 1)]", "[f(a=lambda x: x)]", "[f(a=f'x{1}')]", "[f(a=[*b])]", "[f(a={1, 2})]", "[f(a=x.y)]",
    "[f(a=(1 if x else 2))]", "[f(a=1 < 2)]", "[f(a=x and y)]", "[f(a=(b := 1))]", "[f(a=[i for i in y])]",
    "[f(a=2*3, b=2**10, c='a'+'b', d=7/2, e=7//2, g=7%3, h=2**-1, i=(-8)**0.5, j=1.5*2)]",
    "[f(a=1|2, b=3^1, c=6&3, d=1<<3, e=16>>2, g={1}|{2}, h={'a': 1}|{'b': 2}, i={1, 2}-{1}, j=True+True)]",
    "[f(a=[0]*3 + [1], b='ab'*2, c=True*'ab', d=(1,)*2, e=2*[1], g=b'a'*2, h='%05d' % 3, i='%s-%s' % ('a', 'b'))]",
    "[f(a=(1+2)*-1, b=1+(not 0), c=-(1)+2, d=~1+1, e=[1]+[-2], g=1+(2,)[0])]",
    "[f(a=1/0, b=1)]", "[f(a=1 @ 2)]", "[f(a='a'+1)]", "[f(a=None-1)]", "[f(a=[1]*[2])]", "[f(a=1<<-1)]",
    "[f(a=2.0**5000)]", "[f(a=10**400*1.0)]", "[f(a=1e308*10)]", "[f(a=...+1)]", "[f(a={[1]}|{2})]",
    "[f(a=1+2, a=3)]", "[f(a=1\n)]", "[f(a='''x''')]", "[f(a=r'\\d')]", "[f(a='\\x00')]", "[f(a=\"x\\\"y\")]",
    "[f(a=1)", "[f(a=1))]", "f(a=1", "[f(a=1)]]", "[[f(a=1)]]", "[(f(a=1))]", "(f(a=1))", "{f(a=1)}",
    "[f(a=1);]", "[f(a=1)] # the call", "[f(a=1)]  # the call", "import os; [f(a=1)]",
    "[\u00e9t\u00e9(a='\u00e9')]", "[f(a='\u4e2d\u6587')]", "[f(a=1\u00a0)]",
]


@pytest.mark.filterwarnings("ignore::SyntaxWarning")
def test_default_decoding_is_bfcl_evals_on_hand_written_outputs(official):
    assert_same_decoding(official, OUTPUTS)


# The departures the module docstring lists, on outputs bfcl-eval can still decode: names, calls, f-strings and
# `is` inside arithmetic (its `eval` runs them), and results over the size limits (it builds them).
DEPARTURES = ["[f(a=max(1, 2) + 1)]", "[f(a=len('ab') * 2)]", "[f(a=f'{1}' + 'x')]", "[f(a=(1 is 1) + 0)]",
              "[f(a='a' * 10**6)]", "[f(a=[0] * 200000)]", "[f(a=2**14001)]", "[f(a=1 << 20000)]"]


@pytest.mark.filterwarnings("ignore::SyntaxWarning")  # `1 is 1`
@pytest.mark.parametrize("text", DEPARTURES)
def test_documented_departures_decode_officially_and_not_here(official, text):
    assert official.decode(text) is not None
    assert decode_python_calls(text) is None


def python_call_text(calls: list[dict]) -> str:
    return "[" + ", ".join(f"{c['name']}(" + ", ".join(f"{k}={v!r}" for k, v in c["arguments"].items()) + ")"
                           for c in calls) + "]"


# How models wrap a call list (each applied to real BFCL gold answers).
WRAPPERS = [
    lambda s: s, lambda s: s[1:-1], lambda s: f"```python\n{s}\n```", lambda s: f"```json\n{s}\n```",
    lambda s: f"```\n{s}\n```", lambda s: f"Here you go:\n```python\n{s}\n```", lambda s: f"```python\n{s}\n```\nDone.",
    lambda s: f"  \n{s}\n\n", lambda s: f"\t{s}", lambda s: f"{s}\r\n", lambda s: f"'{s}'", lambda s: f"`{s}`",
    lambda s: f"The calls are {s}", lambda s: f"{s}\nThese calls answer the question.",
    lambda s: f"<think>\nI should call {s[1:-1]}.\n</think>\n\n{s}", lambda s: s.replace(", ", ",\n    "),
    lambda s: s.replace("=", " = "), lambda s: s.replace("'", '"'),
]


@needs_data
@pytest.mark.parametrize("category", ["simple_python", "multiple", "parallel", "parallel_multiple", "live_simple",
                                      "live_multiple", "live_parallel", "live_parallel_multiple"])
def test_default_decoding_is_bfcl_evals_on_wrapped_gold_answers(official, category):
    entries = load_category(category)
    texts = [wrap(python_call_text(calls)) for e in entries[:: max(1, len(entries) // 40)]
             if (calls := gold_as_calls(e)) is not None for wrap in WRAPPERS]
    assert len(texts) >= 16 * len(WRAPPERS)
    assert_same_decoding(official, texts)


# Pieces that random outputs are made of. No `**` or `<<` (bfcl-eval would eval 9**9**9 for ever) and one-digit
# numbers, so that every random output is one the official decoder finishes on.
PIECES = ["f", "g.h", "(", ")", "[", "]", "{", "}", ",", "=", "a", "b", "1", "2", "-", "+", "*", "/", "%", "|",
          "not ", "~", "'x'", '"y"', "None", "True", "...", ":", " ", "\n", "\t", "`", "```", "```python\n",
          "</think>", "Sure:", "x.y", "lambda", "#", "'", "1.5", "b'z'", "2j"]
# No f-strings or `is` inside arithmetic, two departures (test_documented_departures).
LEAVES = ["0", "1", "7", "-2", "2.5", "1e3", "2j", "True", "None", "...", "'ab'", '"c d"', "b'z'", "x", "x.y",
          "[]", "()", "{}", "g()", "g(1)"]
OPERATORS = ["+", "-", "*", "/", "//", "%", "|", "&", "^", ">>", "<", "==", " in ", " not in ", " and ", " or ", "@"]


def random_value(rng: random.Random, depth: int = 0) -> str:
    """A random argument expression: every kind of node the decoders meet, nested up to depth 3."""
    kind = rng.randrange(12) if depth < 3 else 0
    inner = lambda: random_value(rng, depth + 1)  # noqa: E731
    if kind == 0:
        return rng.choice(LEAVES)
    if kind == 1:
        return rng.choice(["-", "+", "not ", "~"]) + inner()
    if kind in (2, 3):
        return f"({inner()}{rng.choice(OPERATORS)}{inner()})"
    if kind == 4:
        return "[" + ", ".join(inner() for _ in range(rng.randrange(3))) + "]"
    if kind == 5:
        return "(" + "".join(inner() + ", " for _ in range(rng.randrange(3))) + ")"
    if kind == 6:
        return "{" + ", ".join(f"{inner()}: {inner()}" for _ in range(rng.randrange(3))) + "}"
    if kind == 7:
        return "{" + ", ".join(inner() for _ in range(1 + rng.randrange(2))) + "}"
    if kind == 8:
        return f"g(k={inner()})"
    if kind == 9:
        return f"{inner()}[{rng.choice(['0', '1:', '-1', ':2', '::2', '0, 1'])}]"
    if kind == 10:
        return f"({inner()} if {inner()} else {inner()})"
    return rng.choice(["'ab' * 2", "[0] * 3", "3 * (1,)", "'%d' % 5", "(1 < 2 < 3)", "lambda: 1", "[*x]", "{**x}"])


@pytest.mark.filterwarnings("ignore::SyntaxWarning")  # "invalid decimal literal" from random text
def test_default_decoding_is_bfcl_evals_on_random_outputs(official):
    rng = random.Random(0)
    texts = ["".join(rng.choice(PIECES) for _ in range(rng.randint(1, 14))) for _ in range(2000)]
    for _ in range(3000):
        calls = [f"{rng.choice(['f', 'g.h'])}(" + ", ".join(f"{p}={random_value(rng)}" for p in "ab"[:rng.randint(0, 2)])
                 + ")" for _ in range(rng.randint(1, 2))]
        texts.append(rng.choice(WRAPPERS)("[" + ", ".join(calls) + "]"))
    assert sum(bool(decode_python_calls(t)) for t in texts) > 500  # many are calls
    assert_same_decoding(official, texts)
