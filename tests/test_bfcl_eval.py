"""`icrl-lite eval bfcl`: the prompts it renders and a tiny end-to-end run."""

from __future__ import annotations

import json

import pytest

from icrl_lite.bfcl import CATEGORIES, Entry, category_size, summarize
from icrl_lite.bfcl_eval import (BFCL_SYSTEM_PROMPT, BfclConfig, bfcl_messages, format_report, jsonable, length_batches,
                                pick, run_bfcl)
from icrl_lite.policy import ModelConfig

FUNCTIONS = [{"name": "get_weather", "description": "Weather of a city.",
              "parameters": {"type": "dict", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]


def entry(*messages):
    return Entry(id="t_0", category="simple_python", question=list(messages), functions=FUNCTIONS,
                 ground_truth=[{"get_weather": {"city": ["Paris"]}}])


def test_bfcl_prompt_is_the_leaderboards_default_prompting_system_prompt():
    defaults = pytest.importorskip("bfcl_eval.constants.default_prompts")
    style = defaults.PROMPT_STYLE_TEMPLATES["classic"]
    official = defaults.PROMPT_TEMPLATE_MAPPING["plaintext"].format(
        persona=style["persona"], task=style["task"],
        tool_call_format=style["tool_call_no_tag"].format(output_format=defaults.OUTPUT_FORMAT_MAPPING["python"],
                                                          param_types=defaults.PARAM_TYPE_MAPPING["python"]),
        multiturn_behavior=style["multiturn_behavior"],
        available_tools=style["available_tools"].format(format="json", functions="FUNCTIONS"),
    )
    assert BFCL_SYSTEM_PROMPT.format(functions="FUNCTIONS") == official


def test_bfcl_prompt_goes_first_and_keeps_an_entrys_own_system_message():
    plain = bfcl_messages(entry({"role": "user", "content": "Weather in Paris?"}), "bfcl")
    assert [m["role"] for m in plain] == ["system", "user"]
    assert json.dumps(FUNCTIONS, indent=4) in plain[0]["content"]
    with_system = bfcl_messages(entry({"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}), "bfcl")
    assert [m["role"] for m in with_system] == ["system", "user"]
    assert with_system[0]["content"].endswith("\n\nBe brief.")


def test_toolrl_prompt_is_one_user_message_with_the_functions_and_question():
    (message,) = bfcl_messages(entry({"role": "user", "content": "Weather in Paris?"}), "toolrl")
    assert message["role"] == "user"
    assert '"name": "get_weather"' in message["content"] and "Question: Weather in Paris?" in message["content"]
    assert "<tool_call>" in message["content"]


def test_unknown_category_is_rejected_with_the_choices():
    with pytest.raises(ValueError, match="simple_python"):
        BfclConfig(categories=["simple_klingon"]).validate()


def test_a_tiny_run_scores_every_entry_and_writes_its_records(tiny_model_dir, tmp_path):
    output = tmp_path / "bfcl.jsonl"
    cfg = BfclConfig(categories=["simple_python", "irrelevance"], limit=3, batch_size=2, max_new_tokens=8,
                     output=str(output), model=ModelConfig(name=str(tiny_model_dir), dtype="fp32"))
    report = run_bfcl(cfg, progress=False)
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(records) == 6 and report["counts"] == {"simple_python": 3, "irrelevance": 3}
    for category in ("simple_python", "irrelevance"):
        mine = [r for r in records if r["category"] == category]
        assert report["accuracy"][category] == sum(r["valid"] for r in mine) / 3
    # a random tiny model writes no call list: irrelevance is all correct, simple_python all wrong
    assert report["accuracy"] == {"simple_python": 0.0, "irrelevance": 1.0}
    assert report["decode"] == "official"  # the leaderboard's decoder unless asked otherwise


def test_length_batches_sort_by_length_and_respect_both_caps():
    lengths = [500, 10, 4000, 20, 30, 450, 6000]
    batches = length_batches(lengths, batch_size=2, max_tokens=1000)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))  # every entry once
    flat = [lengths[i] for b in batches for i in b]
    assert flat == sorted(lengths)
    for b in batches:
        assert len(b) <= 2
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 1000
    assert [6] in batches and [2] in batches  # prompts longer than the cap go alone


def test_sample_is_seeded_spread_and_in_file_order():
    entries = list(range(100))
    first, again, other = pick(entries, 10, 0), pick(entries, 10, 0), pick(entries, 10, 1)
    assert first == again and first != other
    assert first == sorted(first) and len(set(first)) == 10
    assert max(first) > 50  # not the first ten: the sample spreads over the file
    assert pick(entries, 0, 0) == entries and pick(entries[:5], 10, 0) == entries[:5]


def test_limit_and_sample_together_are_refused():
    with pytest.raises(ValueError, match="not both"):
        BfclConfig(limit=5, sample=5).validate()


def report(prompt: str, decode: str) -> dict:
    return {"accuracy": {"multiple": 0.5}, "counts": {"multiple": 2},
            "summary": summarize({"multiple": 0.5}, dict.fromkeys(CATEGORIES, 1)), "records": "r.jsonl",
            "seconds": 1.0, "prompt": prompt, "decode": decode}


def test_report_header_names_the_decoding_and_says_when_it_is_not_the_leaderboards():
    official = format_report(report("bfcl", "official")).splitlines()[0]
    assert "prompt bfcl" in official and "decode official" in official and "NOT" not in official
    lenient = format_report(report("bfcl", "lenient")).splitlines()[0]
    assert "decode lenient" in lenient and "NOT the leaderboard's" in lenient
    assert "not the leaderboard's" in format_report(report("toolrl", "official")).splitlines()[0]


def test_decode_is_official_or_lenient_and_lenient_only_with_the_bfcl_prompt():
    assert BfclConfig().decode == "official"
    BfclConfig(decode="lenient").validate()
    with pytest.raises(ValueError, match="official"):
        BfclConfig(decode="loose").validate()
    with pytest.raises(ValueError, match="prompt=bfcl"):
        BfclConfig(prompt="toolrl", decode="lenient").validate()


def test_records_hold_decoded_values_json_lacks():
    calls = [{"name": "f", "arguments": {"b": b"x", "c": 1j, "s": {1}, "d": {(1, 2): 3}, None: "rest", "t": (1, 2)}}]
    assert json.loads(json.dumps(jsonable(calls))) == [{"name": "f", "arguments": {
        "b": "b'x'", "c": "1j", "s": "{1}", "d": {"(1, 2)": 3}, "None": "rest", "t": [1, 2]}}]
    assert jsonable(None) is None


def test_a_run_reports_the_leaderboard_summary_with_full_category_sizes(tiny_model_dir, tmp_path):
    cfg = BfclConfig(categories=["live_irrelevance"], limit=2, batch_size=2, max_new_tokens=4,
                     output=str(tmp_path / "bfcl.jsonl"), model=ModelConfig(name=str(tiny_model_dir), dtype="fp32"))
    result = run_bfcl(cfg, progress=False)
    assert result["summary"] == summarize(result["accuracy"], {c: category_size(c) for c in CATEGORIES})
    assert result["summary"]["not_run"]["multi_turn_base"] == result["summary"]["not_run"]["multi_turn_long_context"]
    json.dumps(result["summary"])  # the summary is plain data, ready for a JSON report


def test_format_report_prints_the_leaderboard_columns_and_what_did_not_run():
    accuracy = {c: 0.5 for c in CATEGORIES}
    text = format_report({**report("bfcl", "official"), "accuracy": accuracy, "counts": {c: 4 for c in CATEGORIES},
                          "summary": summarize(accuracy, {c: category_size(c) for c in CATEGORIES})})
    table, summary = text.split("leaderboard columns")
    assert "live_relevance" in table and "Overall Acc" not in table
    overall = next(line for line in summary.splitlines() if line.startswith("Overall Acc"))
    assert overall.split()[-2:] == ["50.00", "50.00"]  # every column 0.5 over what ran, in v4 and in v3
    assert "* v4: over Non-Live Overall Acc, Live Acc, Irrelevance Detection, 30% of its weight" in summary
    assert "* v3: over Non-Live Overall Acc, Live Acc, 67% of its weight" in summary
    assert "not run:" in summary and "multi_turn_base" in summary and "simple_java" in summary
    assert "not selected" not in summary  # every Python category ran
