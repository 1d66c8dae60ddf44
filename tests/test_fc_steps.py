"""Multi-step function calling: implementations are loaded, calls run, results come back in <obs>, the episode
goes on to a <response>, and the reward scores every turn's calls."""

from __future__ import annotations

import json
import re
import threading

import pytest
from scripted_head import Scripted

from icrl_lite.function_calls import parse_response, steps_format_reward, toolrl_reward
from icrl_lite.policy import ModelConfig, load_policy
from icrl_lite.rollout import RolloutConfig, RolloutEngine
from icrl_lite.tasks import setup_task
from icrl_lite.tools.functions import execute_calls, load_implementations
from icrl_lite.trainer import TrainConfig

IMPLEMENTATIONS = '''
import math
from math import sqrt  # imported: not an implementation

def add(a, b):
    return a + b

def get_weather(city, unit="celsius"):
    return {"city": city, "temperature": 21 if unit == "celsius" else 70}

def divide(a, b):
    return a / b

def slow(seconds):
    import time
    time.sleep(seconds)
    return "done"

def _helper():
    return 1
'''


@pytest.fixture
def impl_file(tmp_path):
    path = tmp_path / "impl.py"
    path.write_text(IMPLEMENTATIONS)
    return path


def lines(observation: str) -> list[dict]:
    return [json.loads(line) for line in observation.splitlines()]


# ---- loading -------------------------------------------------------------------------------------------
def test_public_functions_of_the_file_are_the_implementations(impl_file):
    table = load_implementations(str(impl_file))
    assert set(table) == {"add", "get_weather", "divide", "slow"}  # not sqrt (imported), not _helper (private)
    assert table["add"](2, 3) == 5


def test_an_implementations_dict_takes_precedence(tmp_path):
    path = tmp_path / "table.py"
    path.write_text("def f(x):\n    return x\nIMPLEMENTATIONS = {'echo': f}\n")
    assert set(load_implementations(str(path))) == {"echo"}


@pytest.mark.parametrize("text, message", [
    ("X = 1\n", "defines no public function"),
    ("IMPLEMENTATIONS = {'f': 3}\n", "IMPLEMENTATIONS must be a dict"),
])
def test_unusable_implementation_files_are_explained(tmp_path, text, message):
    path = tmp_path / "bad.py"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_implementations(str(path))


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.py"):
        load_implementations(str(tmp_path / "nowhere.py"))


# ---- executing -----------------------------------------------------------------------------------------
def test_calls_run_in_order_with_their_results(impl_file):
    table = load_implementations(str(impl_file))
    block = '{"name": "add", "parameters": {"a": 2, "b": 3}}\n{"name": "get_weather", "parameters": {"city": "Oslo"}}'
    assert lines(execute_calls(block, table)) == [
        {"name": "add", "result": 5}, {"name": "get_weather", "result": {"city": "Oslo", "temperature": 21}}]


@pytest.mark.parametrize("block, error", [
    ('{"name": "fly", "parameters": {}}', "unknown function 'fly'"),
    ('{"name": "divide", "parameters": {"a": 1, "b": 0}}', "ZeroDivisionError"),
    ('{"name": "add", "parameters": {"a": 1, "c": 2}}', "TypeError"),
])
def test_a_failing_call_is_an_error_result_and_the_others_still_run(impl_file, block, error):
    table = load_implementations(str(impl_file))
    first, second = lines(execute_calls(block + '\n{"name": "add", "parameters": {"a": 1, "b": 1}}', table))
    assert "result" not in first and error in first["error"]
    assert second == {"name": "add", "result": 2}


def test_unparseable_and_empty_blocks_say_what_is_expected(impl_file):
    table = load_implementations(str(impl_file))
    assert execute_calls('{"name": "add", "parameters": {"a": 1,', table).startswith("error: the tool_call block must hold JSON")
    assert execute_calls("  ", table) == "error: the tool_call block is empty"


def test_a_slow_call_times_out_and_parallel_calls_run_concurrently():
    # no wall clock (a loaded machine stretches it): the timeout is answered while the call still waits for
    # the test, and four calls that each wait until all four are running finish only if they run at once
    released, meeting = threading.Event(), threading.Barrier(4)

    def hang():
        released.wait(timeout=60)
        return "finished"

    def meet():
        meeting.wait(timeout=60)  # BrokenBarrierError unless the four calls run concurrently
        return "met"

    try:
        (result,) = lines(execute_calls('{"name": "hang", "parameters": {}}', {"hang": hang}, timeout=0.3))
    finally:
        released.set()
    assert result == {"name": "hang", "error": "timed out after 0.3 s"}
    block = "\n".join(['{"name": "meet", "parameters": {}}'] * 4)
    assert lines(execute_calls(block, {"meet": meet}, timeout=120)) == [{"name": "meet", "result": "met"}] * 4


def test_unserialisable_results_are_given_as_text(tmp_path):
    path = tmp_path / "objs.py"
    path.write_text("class Point:\n    def __repr__(self):\n        return 'Point(1, 2)'\n\ndef point():\n    return Point()\n")
    assert lines(execute_calls('{"name": "point", "parameters": {}}', load_implementations(str(path)))) == [
        {"name": "point", "result": "Point(1, 2)"}]


# ---- reward --------------------------------------------------------------------------------------------
CALL = '<tool_call>\n{"name": "add", "parameters": {"a": 2, "b": 3}}\n</tool_call>'
WEATHER = '<tool_call>\n{"name": "get_weather", "parameters": {"city": "Oslo"}}\n</tool_call>'
GOLD = [{"name": "add", "arguments": {"a": 2, "b": 3}}, {"name": "get_weather", "arguments": {"city": "Oslo"}}]


@pytest.mark.parametrize("text, gold, expected", [
    (f"<think>a</think>{CALL}<think>b</think>{WEATHER}<think>c</think><response>21</response>", GOLD, 1.0),
    (f"<think>a</think>{CALL}<think>c</think><response>5</response>", GOLD[:1], 1.0),
    (f"<think>a</think>{CALL}", GOLD[:1], 0.0),  # never answered
    (f"<think>a</think>{CALL}{WEATHER}<think>c</think><response>x</response>", GOLD, 0.0),  # a turn without think
    ("<think>a</think><response>no function fits</response>", [], 1.0),
    ("<think>a</think><response>x</response>", GOLD, 0.0),  # calls were expected
    (f"<think>a</think>{CALL}<think>c</think><response>5</response>", [], 0.0),  # no call was expected
    (f"<think>a</think>{CALL}<think>c</think><response>5</response> bye", GOLD[:1], 0.0),  # text outside
])
def test_steps_format(text, gold, expected):
    assert steps_format_reward(parse_response(text), gold) == expected


def test_multi_step_correctness_counts_every_turns_calls():
    both = f"<think>a</think>{CALL}<think>b</think>{WEATHER}<think>c</think><response>21</response>"
    reward, metrics = toolrl_reward(both, GOLD, multi_step=True)
    assert (reward, metrics["format"], metrics["exact"]) == (4.0, 1.0, 1.0)
    first_only = f"<think>a</think>{CALL}<think>c</think><response>5</response>"
    reward, metrics = toolrl_reward(first_only, GOLD, multi_step=True)
    # names J = 1/2; add matched: J 1 + 2 equal values; S_max = 1 + 3 + 2 = 6 -> 6 * 3.5 / 6 - 3
    assert metrics["correctness"] == pytest.approx(0.5) and reward == pytest.approx(1.5)
    # the single-turn format would have rejected the multi-step episode
    assert toolrl_reward(both, GOLD)[1]["format"] == 0.0


# ---- the rollout ---------------------------------------------------------------------------------------
def test_a_rollout_runs_the_calls_returns_obs_and_continues_to_the_response(tiny_model_dir, impl_file, tmp_path):
    cfg = TrainConfig(task="fc", functions=str(impl_file))
    task, tools, instruction = setup_task(cfg)
    assert [t.name for t in tools] == ["functions"] and task.final_stops == ("</response>",)
    assert "<obs>" in instruction

    model, tok = load_policy(ModelConfig(name=str(tiny_model_dir), dtype="fp32"))
    turns = [f"<think> add them </think>\n{CALL}", "<think> the sum is 5 </think>\n<response>5</response>"]
    script = [i for text in turns for i in tok(text, add_special_tokens=False)["input_ids"]]
    head = Scripted(script, len(tok), tok.eos_token_id)
    model.get_output_embeddings = lambda: head
    budget = RolloutConfig(temperature=0.0, max_turns=3, max_turn_tokens=60, max_response_tokens=300)
    engine = RolloutEngine(model, tok, tools, budget, final_stops=task.final_stops, invalid_message=task.invalid_message)
    (rollout,) = engine.generate([tok("Question: 2 + 3?")["input_ids"]])

    assert rollout.tool_calls == [{"tool": "functions", "query": '{"name": "add", "parameters": {"a": 2, "b": 3}}',
                                   "observation": '{"name": "add", "result": 5}'}]
    assert rollout.finished and not rollout.truncated
    assert rollout.policy_text == "".join(turns)  # the observation is not the policy's
    assert '<obs>\n{"name": "add", "result": 5}\n</obs>' in rollout.text
    forced = tok.decode([t for t, bit in zip(rollout.response_ids, rollout.loss_mask) if bit == 0])
    assert forced.strip() == '<obs>\n{"name": "add", "result": 5}\n</obs>'
    reward, metrics = task.reward(rollout.policy_text, [{"name": "add", "arguments": {"a": 2, "b": 3}}])
    assert (reward, metrics["format"], metrics["exact"]) == (4.0, 1.0, 1.0)


def test_functions_need_the_fc_task(impl_file):
    with pytest.raises(ValueError, match="needs task=fc"):
        setup_task(TrainConfig(task="math", functions=str(impl_file)))


def test_training_and_evaluation_run_multi_step_and_count_the_call_turns(tiny_model_dir, impl_file, tmp_path):
    from icrl_lite.evaluate import EvalConfig, evaluate
    from icrl_lite.trainer import Trainer

    cfg = TrainConfig(task="fc", functions=str(impl_file), output_dir=str(tmp_path / "run"),
                      stages=[{"demos": 1, "steps": 1}], prompts_per_step=2, num_generations=2, eval_every=0,
                      progress=False, model=ModelConfig(name=str(tiny_model_dir), dtype="fp32"), check_demo_budgets=False,
                      rollout=RolloutConfig(max_turns=2, max_turn_tokens=6, max_response_tokens=60))
    (metrics,) = Trainer(cfg).train()
    assert "function_turns" in metrics and -3.0 <= metrics["reward"] <= 4.0
    # evaluating the checkpoint without functions= inherits the run's implementations (multi-step again)
    summary = evaluate(EvalConfig(checkpoint=str(tmp_path / "run"), split="dev", limit=2, batch_size=2,
                                  output=str(tmp_path / "eval.jsonl")))
    assert "function_turns" in summary


def test_the_example_demos_hold_what_the_example_functions_return():
    from pathlib import Path

    from icrl_lite.data import load_demos, load_fc

    here = Path(__file__).resolve().parents[1] / "examples" / "fc_steps"
    table = load_implementations(str(here / "functions.py"))
    demos = load_demos(here / "demos.jsonl", load_fc)
    stepped = [d for d in demos if d["ground_truth"]]
    assert len(stepped) >= 3
    for demo in demos:
        text = demo["solution"]
        policy = re.sub(r"\n\n<obs>.*?</obs>\n\n", "", text, flags=re.DOTALL)  # what the policy itself writes
        assert steps_format_reward(parse_response(policy), demo["ground_truth"]) == 1.0
        assert toolrl_reward(policy, demo["ground_truth"], multi_step=True)[1]["exact"] == 1.0
        if demo["ground_truth"]:
            block = text[text.index("<tool_call>") + 11:text.index("</tool_call>")]
            assert f"<obs>\n{execute_calls(block, table)}\n</obs>" in text


def test_awkward_results_and_exits_stay_one_valid_json_line_each(tmp_path):
    path = tmp_path / "awkward.py"
    path.write_text("import sys\n\ndef big():\n    return 'x' * 50_000\n\ndef tuple_keys():\n    return {(1, 2): 3}\n\n"
                    "def leave():\n    sys.exit(3)\n")
    table = load_implementations(str(path))
    block = "\n".join(f'{{"name": "{n}", "parameters": {{}}}}' for n in ("big", "tuple_keys", "leave"))
    big, keys, leave = lines(execute_calls(block, table))
    assert big["result"].endswith("...(cut)") and len(json.dumps(big)) <= 2000
    assert keys == {"name": "tuple_keys", "result": "{(1, 2): 3}"}
    assert leave == {"name": "leave", "error": "SystemExit: 3"}
