"""Evaluation on a tiny random model: summary and records of run_eval, scoring, and checkpoint evaluation."""

from __future__ import annotations

import json

import pytest

from icrl_lite.evaluate import EvalConfig, evaluate, run_eval, score
from icrl_lite.policy import ModelConfig, load_policy
from icrl_lite.prompts import SEARCH_INSTRUCTION
from icrl_lite.rollout import Rollout, RolloutConfig
from icrl_lite.tasks import get_task
from icrl_lite.tools import BM25Search, Tool
from icrl_lite.trainer import TrainConfig, Trainer

TINY_ROLLOUT = RolloutConfig(max_turns=1, max_turn_tokens=8, max_response_tokens=24)
SUMMARY_KEYS = {"em", "f1", "format_valid", "searches", "response_tokens", "questions"}


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    """A three-document corpus and three questions about it, as files."""
    root = tmp_path_factory.mktemp("task")
    docs = [{"id": "d1", "title": "Tavoustead", "text": "Tavoustead lies on the Vorbam River."},
            {"id": "d2", "title": "Skorvilow", "text": "Skorvilow was founded in 1600."},
            {"id": "d3", "title": "Louktuk", "text": "Louktuk is a province."}]
    questions = [{"id": "q1", "question": "On which river is Tavoustead?", "answers": ["Vorbam River"]},
                 {"id": "q2", "question": "When was Skorvilow founded?", "answers": ["1600"]},
                 {"id": "q3", "question": "What is Louktuk?", "answers": ["a province"]}]
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (root / "qa.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    return root


@pytest.fixture(scope="module")
def policy(tiny_model_dir):
    return load_policy(ModelConfig(name=str(tiny_model_dir), dtype="fp32"))


def eval_records(policy, task, **cfg):
    from icrl_lite.data import load_qa

    model, tok = policy
    tools = [BM25Search(task / "corpus.jsonl", top_k=2).as_tool()]
    return run_eval(model, tok, load_qa(task / "qa.jsonl"), get_task("qa"), tools, SEARCH_INSTRUCTION,
                    EvalConfig(rollout=TINY_ROLLOUT, **cfg), progress=False)


def test_run_eval_summarises_every_question(policy, task):
    summary, records = eval_records(policy, task, batch_size=2)  # two batches: 2 + 1
    assert SUMMARY_KEYS <= summary.keys()
    assert summary["questions"] == 3
    assert [r["id"] for r in records] == ["q1", "q2", "q3"]
    assert summary["em"] == sum(r["em"] for r in records) / 3


def test_run_eval_records_carry_the_trajectory_and_tool_calls(policy, task):
    _, records = eval_records(policy, task)
    for record in records:
        assert {"question", "answers", "prediction", "trajectory", "tool_calls", "em", "f1"} <= record.keys()
        assert isinstance(record["trajectory"], str) and record["trajectory"]
        assert isinstance(record["tool_calls"], list)


def test_evaluation_decodes_greedily_by_default(policy, task):
    # EvalConfig.temperature defaults to 0: the seed must then not matter
    _, first = eval_records(policy, task, seed=0)
    _, second = eval_records(policy, task, seed=1)
    assert [r["trajectory"] for r in first] == [r["trajectory"] for r in second]


SEARCH_TOOLS = [Tool("search", "<search>", "</search>", str)]


def test_score_counts_searches_from_tool_calls():
    rollout = Rollout(
        prompt_ids=[1], response_ids=[2, 3, 4], loss_mask=[1, 1, 0],
        policy_text="<think> x </think><search> a </search><search> b </search><answer> 1600 </answer>",
        tool_calls=[{"tool": "search", "query": "a", "observation": "..."},
                    {"tool": "search", "query": "b", "observation": "..."},
                    {"tool": "calculator", "query": "1+1", "observation": "2"}],
    )
    metrics = score(rollout, ["1600"], get_task("qa"), SEARCH_TOOLS)
    assert metrics["searches"] == 2.0
    assert metrics["em"] == 1.0 and metrics["format_valid"] == 1.0
    assert metrics["response_tokens"] == 2.0  # sampled tokens only


def test_score_reads_the_policy_text_not_the_observations():
    rollout = Rollout(prompt_ids=[1], text="<information><answer> 1600 </answer></information>", policy_text="")
    assert score(rollout, ["1600"], get_task("qa"), SEARCH_TOOLS)["em"] == 0.0


@pytest.fixture(scope="module")
def run_dir(tiny_model_dir, tmp_path_factory):
    """A one-step training run of the tiny model (no update needed: only the checkpoint layout matters)."""
    out = tmp_path_factory.mktemp("run")
    cfg = TrainConfig(
        output_dir=str(out), stages=[{"demos": 0, "steps": 1}], prompts_per_step=2, num_generations=2,
        micro_batch_size=2, eval_every=0, progress=False, model=ModelConfig(name=str(tiny_model_dir), dtype="fp32"),
        rollout=RolloutConfig(max_turns=1, max_turn_tokens=8, max_response_tokens=24, temperature=1.0),
    )
    Trainer(cfg).train()
    return out


def test_evaluate_a_run_dir_writes_one_record_per_question(run_dir, task, tmp_path):
    output = tmp_path / "records.jsonl"
    summary = evaluate(EvalConfig(checkpoint=str(run_dir), dataset=str(task / "qa.jsonl"),
                                  corpus=str(task / "corpus.jsonl"), limit=2, output=str(output), rollout=TINY_ROLLOUT))
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert [r["id"] for r in records] == ["q1", "q2"]
    assert summary["questions"] == 2 and summary["records"] == str(output)


def test_evaluate_writes_next_to_the_checkpoint_by_default(run_dir, task):
    evaluate(EvalConfig(checkpoint=str(run_dir), dataset=str(task / "qa.jsonl"), corpus=str(task / "corpus.jsonl"),
                        limit=1, rollout=TINY_ROLLOUT))
    assert (run_dir / "checkpoint-1" / "eval-test-0shot.jsonl").exists()


def test_checkpoint_dir_without_checkpoints_points_to_base(tmp_path, task):
    with pytest.raises(FileNotFoundError, match="--checkpoint base"):
        evaluate(EvalConfig(checkpoint=str(tmp_path), dataset=str(task / "qa.jsonl"), corpus=str(task / "corpus.jsonl")))


def test_a_checkpoint_is_evaluated_with_its_task_and_training_budgets(run_dir, task, monkeypatch):
    # no rollout key given: the run's budgets (max_turn_tokens=8 in the fixture run) and task are used
    from icrl_lite import evaluate as evaluate_module

    seen = {}

    def spy(model, tok, examples, task_, tools, instruction, cfg, pool=(), progress=True):
        seen.update(task=task_.name, max_turn_tokens=cfg.rollout.max_turn_tokens)
        return {"questions": 0.0}, []

    monkeypatch.setattr(evaluate_module, "run_eval", spy)
    evaluate(EvalConfig(checkpoint=str(run_dir), dataset=str(task / "qa.jsonl"), corpus=str(task / "corpus.jsonl"),
                        output=str(task / "out.jsonl")))
    assert seen == {"task": "qa", "max_turn_tokens": 8}


def test_score_reports_repeated_calls_and_whether_the_answer_was_read_or_guessed():
    def rollout(calls, answer):
        return Rollout(prompt_ids=[1], policy_text=f"<think> x </think><search> q </search><answer> {answer} </answer>",
                       tool_calls=[{"tool": "search", "query": q, "observation": obs} for q, obs in calls])

    read = score(rollout([("Tavoustead", "Tavoustead is in Louktuk."), ("tavoustead ", "same")], "Louktuk"),
                 ["Louktuk"], get_task("qa"), SEARCH_TOOLS)
    assert (read["repeated_calls"], read["answer_retrieved"], read["closed_book"]) == (1.0, 1.0, 0.0)
    guessed = score(rollout([("Tavoustead", "nothing useful")], "Louktuk"), ["Louktuk"], get_task("qa"), SEARCH_TOOLS)
    assert (guessed["repeated_calls"], guessed["answer_retrieved"], guessed["closed_book"]) == (0.0, 0.0, 1.0)
    wrong = score(rollout([("Tavoustead", "nothing useful")], "Paris"), ["Louktuk"], get_task("qa"), SEARCH_TOOLS)
    assert wrong["closed_book"] == 0.0  # a wrong answer is no closed-book win
    assert read["answer_is_query"] == wrong["answer_is_query"] == 0.0
    copied = score(rollout([("the Tavoustead", "Tavoustead is in Louktuk.")], "Tavoustead"), ["Louktuk"], get_task("qa"),
                   SEARCH_TOOLS)
    assert copied["answer_is_query"] == 1.0 and copied["em"] == 0.0  # the entity searched for, copied as the answer


def test_score_passes_the_answer_credit_to_the_reward():
    rollout = Rollout(prompt_ids=[1], policy_text="<think> x </think><search> q </search><answer> Louktuk city </answer>")
    em = score(rollout, ["Louktuk"], get_task("qa"), SEARCH_TOOLS)
    f1 = score(rollout, ["Louktuk"], get_task("qa"), SEARCH_TOOLS, credit="f1")
    assert em["reward"] == pytest.approx(0.2) and f1["reward"] == pytest.approx(0.8 * 2 / 3 + 0.2)
