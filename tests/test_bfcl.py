"""Tests for icrl_lite.bfcl: the decoders, the AST checker on hand-made entries, the summary scores, and the
installed BFCL data (counts, and every gold answer passing the checker)."""

from __future__ import annotations

import importlib
import importlib.util
import random
import sys
import types

import pytest

from icrl_lite.bfcl import (
    CATEGORIES,
    Entry,
    aggregate,
    check,
    decode_python_calls,
    decode_toolrl_calls,
    format_table,
    load_category,
    standardize_string,
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


def test_aggregate_non_live_unweighted_live_count_weighted():
    results = {"simple_python": 0.8, "multiple": 0.6, "parallel": 0.4, "parallel_multiple": 0.2,
               "live_simple": 1.0, "live_multiple": 0.5, "live_parallel": 0.0, "live_parallel_multiple": 0.0}
    counts = {"simple_python": 400, "multiple": 200, "parallel": 200, "parallel_multiple": 200,
              "live_simple": 100, "live_multiple": 200, "live_parallel": 50, "live_parallel_multiple": 50}
    summary = aggregate(results, counts)
    assert summary["non_live_ast_python_simple"] == pytest.approx(0.5)  # (0.8 + 0.6 + 0.4 + 0.2) / 4
    assert summary["live_ast"] == pytest.approx(0.5)  # (100 * 1.0 + 200 * 0.5) / 400
    assert summary["categories_mean"] == pytest.approx(3.5 / 8)


def test_aggregate_leaves_out_incomplete_groups():
    assert aggregate({"multiple": 0.5}, {"multiple": 10}) == {"categories_mean": 0.5}


def test_format_table_lists_categories_and_summary():
    table = format_table({"multiple": 0.5, "irrelevance": 0.25}, {"multiple": 10, "irrelevance": 4})
    lines = table.splitlines()
    assert lines[1].split() == ["multiple", "10", "50.00"]
    assert lines[2].split() == ["irrelevance", "4", "25.00"]
    assert lines[-1].split() == ["categories_mean", "14", "37.50"]


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
