"""`icrl-lite eval qa7`: the seven QA datasets in FlashRAG's layout (fixture files), the papers' table, resuming per
dataset, and the errors for a missing corpus, dataset or hub; Search-R1's NQ + HotpotQA training mix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from icrl_lite import qa7
from icrl_lite.cli import main
from icrl_lite.data import SEARCH_R1_TRAIN, load_qa
from icrl_lite.policy import ModelConfig
from icrl_lite.qa7 import BENCHMARKS, FLASHRAG, QA7, Qa7Config, format_table, load_benchmark, run_qa7
from icrl_lite.rollout import RolloutConfig

FIXTURES = Path(__file__).parent / "fixtures" / "flashrag"
CORPUS = FIXTURES / "wiki-mini.jsonl"
TINY_ROLLOUT = RolloutConfig(max_turns=1, max_turn_tokens=8, max_response_tokens=24)


def config(tiny_model_dir, tmp_path, **overrides) -> Qa7Config:
    settings = dict(source=str(FIXTURES), corpus=str(CORPUS), limit=2, output_dir=str(tmp_path / "qa7"),
                    model=ModelConfig(name=str(tiny_model_dir), dtype="fp32"), rollout=TINY_ROLLOUT)
    return Qa7Config(**{**settings, **overrides})


@pytest.fixture
def counted_runs(monkeypatch):
    """The datasets `run_eval` was called for, in order."""
    calls: list[str] = []
    original = qa7.run_eval

    def run_eval(model, tokenizer, examples, *args, **kwargs):
        calls.append(examples[0]["id"] if examples else "")
        return original(model, tokenizer, examples, *args, **kwargs)

    monkeypatch.setattr(qa7, "run_eval", run_eval)
    return calls


def test_every_dataset_is_evaluated_on_its_papers_split_and_tabled(tiny_model_dir, tmp_path):
    report = run_qa7(config(tiny_model_dir, tmp_path), progress=False)
    out = tmp_path / "qa7"
    for benchmark in QA7:
        summary = report["results"][benchmark.name]
        assert summary["questions"] == 2 and 0 <= summary["em"] <= 1 and "searches" in summary
        records = [json.loads(line) for line in (out / f"{benchmark.name}.jsonl").read_text().splitlines()]
        assert [r["id"] for r in records] == [f"{benchmark.split}_0", f"{benchmark.split}_1"]
    assert {b.name: b.split for b in QA7} == {"nq": "test", "triviaqa": "test", "popqa": "test", "hotpotqa": "dev",
                                             "2wikimultihopqa": "dev", "musique": "dev", "bamboogle": "test"}
    table = (out / "qa7.md").read_text()
    assert table.startswith("| Method | NQ | TriviaQA | PopQA | HotpotQA | 2Wiki | MuSiQue | Bamboogle | Avg (7) |")
    assert "**this run**" in table and "Search-R1, Qwen2.5-3B-Instruct" in table and "ICRL, Qwen2.5-7B-Instruct" in table
    assert json.loads((out / "qa7.json").read_text())["results"].keys() == BENCHMARKS.keys()


def test_a_rerun_resumes_at_the_first_unfinished_dataset(tiny_model_dir, tmp_path, counted_runs):
    cfg = config(tiny_model_dir, tmp_path, datasets=["nq", "popqa", "bamboogle"])
    first = run_qa7(cfg, progress=False)
    assert len(counted_runs) == 3
    (tmp_path / "qa7" / "popqa.json").unlink()  # as if killed while evaluating popqa
    second = run_qa7(config(tiny_model_dir, tmp_path, datasets=["nq", "popqa", "bamboogle"]), progress=False)
    assert len(counted_runs) == 4  # popqa alone ran again
    assert second["results"]["nq"] == first["results"]["nq"]
    assert second["results"]["popqa"]["em"] == first["results"]["popqa"]["em"]  # greedy: the same answers


def test_a_finished_evaluation_does_not_load_the_model_again(tiny_model_dir, tmp_path, monkeypatch):
    run_qa7(config(tiny_model_dir, tmp_path, datasets=["nq"]), progress=False)

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded although every dataset was done")

    monkeypatch.setattr(qa7, "load_for_inference", no_model)
    report = run_qa7(config(tiny_model_dir, tmp_path, datasets=["nq"]), progress=False)
    assert report["results"]["nq"]["questions"] == 2


def test_results_made_with_other_settings_are_refused_not_mixed(tiny_model_dir, tmp_path):
    run_qa7(config(tiny_model_dir, tmp_path, datasets=["nq"]), progress=False)
    with pytest.raises(ValueError, match="limit differ"):
        run_qa7(config(tiny_model_dir, tmp_path, datasets=["nq"], limit=1), progress=False)


def test_the_table_averages_over_the_seven_and_over_icrls_five():
    em = {"nq": .1, "triviaqa": .2, "popqa": .3, "hotpotqa": .4, "2wikimultihopqa": .5, "musique": .6, "bamboogle": .7}
    settings = dict(checkpoint="base", demos=0, search={"backend": "bm25", "top_k": 3}, corpus="c.jsonl",
                    temperature=0.0, limit=500, source=FLASHRAG)
    results = {name: {"em": value, "searches": 1.0, "questions": 500.0} for name, value in em.items()}
    row = format_table({"settings": settings, "results": results, "published": []}).splitlines()[2]
    assert row.endswith("| 0.400 | 0.480 |")  # mean of all seven; of TriviaQA, HotpotQA, 2Wiki, MuSiQue, Bamboogle
    del results["popqa"]
    row = format_table({"settings": settings, "results": results, "published": []}).splitlines()[2]
    assert "| - | 0.400 | 0.500 | 0.600 | 0.700 | - | 0.480 |" in row  # no seven-average without PopQA


def test_the_published_rows_average_as_the_papers_say():
    table = format_table({"settings": dict(checkpoint="base", demos=3, search={"backend": "bm25", "top_k": 3},
                                           corpus="", temperature=0.1, limit=500, source=FLASHRAG),
                          "results": {}, "published": qa7.published_rows()})
    rows = {line.split(" | ")[0][2:]: line for line in table.splitlines() if line.startswith("| ")}
    assert rows["Search-R1, Qwen2.5-3B-Instruct"].endswith("| 0.325 | 0.311 |")  # avg .325 in its paper
    assert rows["ICRL, Qwen2.5-3B-Instruct"].endswith("| - | 0.402 |")  # 40.16 in its paper, over five
    assert rows["ICRL, Qwen2.5-7B-Instruct"].endswith("| - | 0.491 |")  # 49.12


def test_without_a_corpus_it_says_what_to_give(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match="--corpus"):
        run_qa7(config(tiny_model_dir, tmp_path, corpus=""), progress=False)


def test_a_missing_dataset_file_names_the_path_and_the_fix(tiny_model_dir, tmp_path):
    source = tmp_path / "flashrag"
    (source / "nq").mkdir(parents=True)
    (source / "nq" / "test.jsonl").write_text((FIXTURES / "nq" / "test.jsonl").read_text())
    with pytest.raises(FileNotFoundError, match=r"triviaqa/test\.jsonl.*--datasets"):
        run_qa7(config(tiny_model_dir, tmp_path, source=str(source), datasets=["nq", "triviaqa"]), progress=False)
    assert not (tmp_path / "qa7").exists()  # found before any evaluation


def test_unknown_datasets_are_named():
    with pytest.raises(ValueError, match="unknown dataset.*nqq"):
        Qa7Config(datasets=["nqq"], corpus="c.jsonl").validate()


def fixture_hub(monkeypatch):
    """`datasets.load_dataset` serving FlashRAG's hub layout from the fixture files."""
    datasets = pytest.importorskip("datasets")

    def load_dataset(name, config, split):
        assert name == FLASHRAG
        path = FIXTURES / config / f"{split}.jsonl"
        if not path.is_file():
            raise FileNotFoundError(f"no {config} {split} on the hub fixture")
        return datasets.Dataset.from_list([json.loads(line) for line in path.read_text().splitlines()])

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)


def test_the_hub_datasets_load_by_name(monkeypatch):
    fixture_hub(monkeypatch)
    questions = load_benchmark(FLASHRAG, BENCHMARKS["hotpotqa"], limit=2)
    assert [q["id"] for q in questions] == ["dev_0", "dev_1"] and questions[0]["answers"] == ["Steventon"]


def test_search_r1s_training_mix_is_nq_and_hotpotqa_with_distinct_ids(monkeypatch):
    fixture_hub(monkeypatch)
    mix = load_qa(SEARCH_R1_TRAIN, split="train")
    assert [q["id"] for q in mix] == [f"{name}/train_{i}" for name in ("nq", "hotpotqa") for i in range(3)]
    assert mix[3]["answers"] == ["Mars"] and load_qa(SEARCH_R1_TRAIN, split="train", limit=4)[-1] == mix[3]


def test_a_hub_dataset_that_cannot_be_reached_is_one_line_naming_the_fix(monkeypatch):
    datasets = pytest.importorskip("datasets")

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'RUC-NLPIR/FlashRAG_datasets' on the Hub (LocalEntryNotFoundError)\nmore")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(ValueError, match=r"Couldn't reach .*download its files") as error:
        load_benchmark(FLASHRAG, BENCHMARKS["nq"], limit=5)
    assert "\n" not in str(error.value)


def test_the_command_prints_the_table_and_fails_in_one_line(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["eval", "qa7", "--source", str(FIXTURES), "--corpus", str(CORPUS), "--datasets", "nq,bamboogle",
               "--limit", "1", "--output-dir", str(out), f"model.name={tiny_model_dir}", "model.dtype=fp32",
               "rollout.max_turns=1", "rollout.max_turn_tokens=8", "rollout.max_response_tokens=24"])
    printed = capsys.readouterr().out
    assert rc == 0 and "| Method | NQ |" in printed and str(out / "qa7.md") in printed
    assert json.loads((out / "nq.json").read_text())["questions"] == 1
    assert main(["eval", "qa7", "--source", str(FIXTURES)]) == 2
    assert "--corpus" in capsys.readouterr().err
