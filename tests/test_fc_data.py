"""Tests for the function-calling loader in icrl_lite.data: our format, xLAM's, ToolACE's and ToolRL's, and mixes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from icrl_lite.data import bundled_fc_path, load_fc

WEATHER = {"name": "get_weather", "description": "Current weather.",
           "parameters": {"type": "dict", "properties": {"city": {"type": "string", "description": "City."}},
                          "required": ["city"]}}


def _write(path, text: str):
    path.write_text(text, encoding="utf-8")
    return path


def _jsonl(path, records: list[dict]):
    return _write(path, "".join(json.dumps(r) + "\n" for r in records))


def test_bundled_fc_path_names_the_files():
    assert bundled_fc_path("test").name == "test.jsonl" and bundled_fc_path("test").parent.name == "fc"
    with pytest.raises(ValueError, match="unknown bundled function-calling file 'corpus'; choose one of: train, dev"):
        bundled_fc_path("corpus")


def test_bundled_demos_keep_their_solution_and_kind():
    demos = load_fc(bundled_fc_path("demos"))
    assert len(demos) == 12
    assert set(demos[0]) == {"id", "question", "functions", "ground_truth", "kind", "solution"}


# ---------------------------------------------------------------------------------------------- our format
def test_load_fc_reads_our_format_and_keeps_extra_fields(tmp_path):
    path = _jsonl(tmp_path / "fc.jsonl", [
        {"id": "a", "question": "Weather in Paris?", "functions": [WEATHER],
         "ground_truth": [{"name": "get_weather", "arguments": {"city": "Paris"}}], "kind": "single"},
        {"question": "Hi", "functions": [WEATHER], "ground_truth": []},
    ])
    assert load_fc(path) == [
        {"id": "a", "question": "Weather in Paris?", "functions": [WEATHER],
         "ground_truth": [{"name": "get_weather", "arguments": {"city": "Paris"}}], "kind": "single"},
        {"id": "1", "question": "Hi", "functions": [WEATHER], "ground_truth": []},
    ]
    assert len(load_fc(path, limit=1)) == 1


def test_load_fc_accepts_toolrl_parameters_and_json_string_arguments(tmp_path):
    path = _jsonl(tmp_path / "fc.jsonl", [
        {"question": "Q", "functions": json.dumps([WEATHER]),
         "ground_truth": [{"name": "get_weather", "parameters": {"city": "Rome"}},
                          {"name": "get_weather", "arguments": '{"city": "Oslo"}'}]}])
    assert load_fc(path)[0]["ground_truth"] == [{"name": "get_weather", "arguments": {"city": "Rome"}},
                                                {"name": "get_weather", "arguments": {"city": "Oslo"}}]


# ---------------------------------------------------------------------------------------------- xLAM
XLAM_TOOL = {"name": "live_giveaways_by_type", "description": "Giveaways by type.",
             "parameters": {"type": {"description": "Type of giveaway.", "type": "str", "default": "game"},
                            "limit": {"description": "Most results.", "type": "int, optional", "default": 5},
                            "tags": {"description": "Tags.", "type": "List[str], optional"}}}


def test_load_fc_reads_xlam_json_strings_from_a_json_list(tmp_path):
    record = {"id": 7, "query": "Where can I find beta and game giveaways?", "tools": json.dumps([XLAM_TOOL]),
              "answers": json.dumps([{"name": "live_giveaways_by_type", "arguments": {"type": "beta"}},
                                     {"name": "live_giveaways_by_type", "arguments": {"type": "game"}}])}
    path = _write(tmp_path / "xlam.json", json.dumps([record]))
    (example,) = load_fc(path)
    assert example["id"] == "7" and example["question"] == record["query"]
    assert example["ground_truth"] == [{"name": "live_giveaways_by_type", "arguments": {"type": "beta"}},
                                       {"name": "live_giveaways_by_type", "arguments": {"type": "game"}}]
    # xLAM's flat parameter specs become a schema; "optional" in the type marks what is not required
    assert example["functions"] == [{
        "name": "live_giveaways_by_type", "description": "Giveaways by type.",
        "parameters": {"type": "dict", "required": ["type"], "properties": {
            "type": {"description": "Type of giveaway.", "type": "string", "default": "game"},
            "limit": {"description": "Most results.", "type": "integer", "default": 5},
            "tags": {"description": "Tags.", "type": "array"}}}}]


def test_load_fc_reads_xlam_lists_and_keeps_schemas_that_already_are_schemas(tmp_path):
    path = _jsonl(tmp_path / "xlam.jsonl", [{"query": "Weather in Lima?", "tools": [WEATHER],
                                             "answers": [{"name": "get_weather", "arguments": {"city": "Lima"}}]}])
    assert load_fc(path) == [{"id": "0", "question": "Weather in Lima?", "functions": [WEATHER],
                              "ground_truth": [{"name": "get_weather", "arguments": {"city": "Lima"}}]}]


# ---------------------------------------------------------------------------------------------- ToolACE
MARKET = {"name": "Market Trends API", "description": "Trends.",
          "parameters": {"type": "dict", "properties": {"trend_type": {"type": "string"}, "country": {"type": "string"},
                                                        "live": {"type": "boolean"}}, "required": ["trend_type"]}}
SYSTEM = ("You are an expert in composing functions. Here is a list of functions in JSON format that you can "
          f"invoke:\n{json.dumps([WEATHER, MARKET])}.\nShould you decide to return the function call(s), put them "
          "in the format of [func1(params_name=params_value, params_name2=params_value2...), func2(params)]")


def _toolace(user: str, assistant: str, **extra) -> dict:
    return {"system": SYSTEM, **extra, "conversations": [
        {"from": "user", "value": user}, {"from": "assistant", "value": assistant},
        {"from": "tool", "value": '[{"name": "get_weather", "results": {"temp": 21}}]'},
        {"from": "assistant", "value": "It is 21 degrees."}]}


def test_load_fc_reads_toolace_call_lists(tmp_path):
    path = _jsonl(tmp_path / "toolace.jsonl", [_toolace(
        "Weather in Paris and Tokyo, and the most active US stocks?",
        '[get_weather(city="Paris"), get_weather(city=\'Tokyo\'), '
        'Market Trends API(trend_type="MOST_ACTIVE", country="us", live=true)]')])
    (example,) = load_fc(path)
    assert example["question"] == "Weather in Paris and Tokyo, and the most active US stocks?"
    assert example["functions"] == [WEATHER, MARKET]
    assert example["ground_truth"] == [
        {"name": "get_weather", "arguments": {"city": "Paris"}},
        {"name": "get_weather", "arguments": {"city": "Tokyo"}},
        {"name": "Market Trends API", "arguments": {"trend_type": "MOST_ACTIVE", "country": "us", "live": True}}]


def test_load_fc_toolace_literals_and_dotted_names(tmp_path):
    tools = [{"name": "math.hypot", "parameters": {"type": "dict", "properties": {}}}]
    record = {"tools": json.dumps(tools), "conversations": json.dumps([
        {"from": "user", "value": "Q"},
        {"from": "assistant", "value": '[math.hypot(point=(3, 4), opts={"round": None}, tags=["a", "b"], x=-1.5)]'}])}
    path = _jsonl(tmp_path / "toolace.jsonl", [record])
    assert load_fc(path)[0]["ground_truth"] == [
        {"name": "math.hypot", "arguments": {"point": [3, 4], "opts": {"round": None}, "tags": ["a", "b"], "x": -1.5}}]


def test_load_fc_toolace_text_reply_means_no_call(tmp_path):
    path = _jsonl(tmp_path / "toolace.jsonl", [_toolace("Tell me a joke.", "Why did the chicken cross the road?")])
    assert load_fc(path)[0]["ground_truth"] == []


def test_load_fc_toolace_unparseable_call_list_names_the_line(tmp_path):
    path = _jsonl(tmp_path / "toolace.jsonl", [_toolace("Q", '[get_weather(city="Paris")]'),
                                               _toolace("Q", "[get_weather(city=Paris + 1)]")])
    with pytest.raises(ValueError, match=r"toolace\.jsonl:2: cannot parse the assistant's call list"):
        load_fc(path)


def test_load_fc_toolace_without_a_tool_list_says_so(tmp_path):
    record = {"system": "You are helpful.", "conversations": [{"from": "user", "value": "Q"},
                                                             {"from": "assistant", "value": "A"}]}
    with pytest.raises(ValueError, match=r"toolace\.jsonl:1: no JSON list of tools found in 'system'"):
        load_fc(_jsonl(tmp_path / "toolace.jsonl", [record]))


# ---------------------------------------------------------------------------------------------- errors, sources
def test_load_fc_unknown_format_names_file_line_and_fields(tmp_path):
    path = _write(tmp_path / "mixed.jsonl", json.dumps({"query": "Q", "tools": [], "answers": []}) + "\n\n"
                  + json.dumps({"question": "Q", "answers": ["A"]}) + "\n")
    with pytest.raises(ValueError, match=r"mixed\.jsonl:3: not a function-calling record; .* "
                                         r"found fields \['answers', 'question'\]"):
        load_fc(path)


def test_load_fc_rejects_malformed_calls_and_json(tmp_path):
    bad_call = _jsonl(tmp_path / "a.jsonl", [{"question": "Q", "functions": [WEATHER],
                                              "ground_truth": [{"city": "X"}]}])
    with pytest.raises(ValueError, match=r"a\.jsonl:1: a call needs a 'name' and 'arguments'"):
        load_fc(bad_call)
    bad_json = _jsonl(tmp_path / "b.jsonl", [{"query": "Q", "tools": "[{not json", "answers": "[]"}])
    with pytest.raises(ValueError, match=r"b\.jsonl:1: 'tools' is not valid JSON"):
        load_fc(bad_json)


def test_load_fc_reads_a_dataset_saved_to_disk(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = [{"query": f"Weather in {city}?", "tools": json.dumps([WEATHER]),
             "answers": json.dumps([{"name": "get_weather", "arguments": {"city": city}}])}
            for city in ("Lima", "Oslo", "Pune")]
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "saved"))
    examples = load_fc(tmp_path / "saved", limit=2)
    assert [e["ground_truth"][0]["arguments"]["city"] for e in examples] == ["Lima", "Oslo"]
    with pytest.raises(ValueError, match="no split 'test'; available: train"):
        load_fc(tmp_path / "saved", split="test")


def test_load_fc_hub_name_with_config(monkeypatch):
    datasets = pytest.importorskip("datasets")
    calls = []

    def fake_load_dataset(path, name=None, split=None):
        calls.append((path, name, split))
        return datasets.Dataset.from_list([{"query": "Q", "tools": "[]", "answers": "[]"}])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    assert load_fc("Salesforce/xlam-function-calling-60k", split="train") == [
        {"id": "0", "question": "Q", "functions": [], "ground_truth": []}]
    load_fc("someone/tool_data:clean", split="test")
    assert calls == [("Salesforce/xlam-function-calling-60k", None, "train"), ("someone/tool_data", "clean", "test")]


TOOLRL = Path(__file__).parent / "fixtures" / "toolrl" / "rlla.json"


def test_load_fc_reads_toolrls_training_records():
    weather, parallel, chat = load_fc(TOOLRL)
    assert weather["question"] == "<user> What's the weather in Lyon for the next 3 days? </user>"
    assert [f["name"] for f in weather["functions"]] == ["Weather Forecast", "currency_convert"]
    assert weather["functions"][0]["parameters"]["properties"]["days"]["type"] == "integer"  # xLAM-style specs
    assert weather["functions"][1]["parameters"]["required"] == ["amount"]  # "str, optional" is not required
    assert weather["ground_truth"] == [{"name": "Weather Forecast", "arguments": {"city": "Lyon", "days": 3}}]
    assert [c["arguments"]["amount"] for c in parallel["ground_truth"]] == [20.0, 35.0]
    assert chat["ground_truth"] == []  # a <response> alone: no call
    assert set(weather) == {"id", "question", "functions", "ground_truth"}


def test_load_fc_reads_toolrls_processed_parquet(tmp_path):
    parquet = pytest.importorskip("pyarrow.parquet")
    pyarrow = pytest.importorskip("pyarrow")
    raw = json.loads(TOOLRL.read_text())
    rows = [{"data_source": "rlla", "prompt": [{"role": "system", "content": r["instruction"]},
                                               {"role": "user", "content": r["input"]}],
             "ability": "math", "reward_model": {"style": "rule", "ground_truth": r["output"]},
             "extra_info": {"split": "train", "index": i}} for i, r in enumerate(raw)]
    parquet.write_table(pyarrow.Table.from_pylist(rows), tmp_path / "train.parquet")
    assert [{k: e[k] for k in ("question", "functions", "ground_truth")} for e in load_fc(tmp_path / "train.parquet")] == \
        [{k: e[k] for k in ("question", "functions", "ground_truth")} for e in load_fc(TOOLRL)]


def test_a_toolrl_record_with_a_broken_call_names_it(tmp_path):
    record = dict(json.loads(TOOLRL.read_text())[0], output='<think> x </think>\n<tool_call>\n{"name": "Weather\n</tool_call>')
    (tmp_path / "bad.json").write_text(json.dumps([record]))
    with pytest.raises(ValueError, match=r"bad\.json record 0: the <tool_call> block of the output is not JSON"):
        load_fc(tmp_path / "bad.json")


def test_sources_joined_by_plus_are_mixed_with_distinct_ids(tmp_path):
    xlam = _jsonl(tmp_path / "xlam.jsonl", [{"query": "Weather in Lima?", "tools": json.dumps([WEATHER]),
                                            "answers": json.dumps([{"name": "get_weather", "arguments": {"city": "Lima"}}])}])
    mix = load_fc(f"{TOOLRL}+{xlam}")
    assert [e["id"] for e in mix] == ["rlla/0", "rlla/1", "rlla/2", "xlam/0"]
    assert mix[3]["ground_truth"][0]["arguments"] == {"city": "Lima"} and len(load_fc(f"{TOOLRL}+{xlam}", limit=2)) == 2
