"""The study runner: bootstrap maths, config checks, a tiny study end to end (results, skip, resume, budgets)."""

from __future__ import annotations

import copy
import json
import math
import shutil
from pathlib import Path

import pytest
import yaml

from icrl_lite import study as study_module
from icrl_lite.cli import main
from icrl_lite.evaluate import bootstrap_ci
from icrl_lite.study import load_study, mean_std, paired_difference, plan, report_study, run_study
from icrl_lite.trainer import Trainer

SHORT_DEMOS = [  # one-turn demos keep the prompts small and fit the tiny rollout budgets
    {"question": "Where is Tavoustead?", "answers": ["Louktuk"], "solution": "<answer> Louktuk </answer>"},
    {"question": "When was Skorvilow founded?", "answers": ["1600"], "solution": "<answer> 1600 </answer>"},
]
ICRL = {"name": "icrl", "overrides": {"stages": [{"demos": 1, "steps": 1}, {"demos": 0, "steps": 1}]}}
PROMPT_2 = {"name": "prompt-2", "train": False, "eval_demos": 2}

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def write_study(tiny_model_dir, tmp_path_factory):
    """write_study(name, arms=..., **keys) -> the path of a study YAML on the tiny model (2 steps x 4 rollouts)."""
    root = tmp_path_factory.mktemp("studies")
    pool = root / "demos.jsonl"
    pool.write_text("".join(json.dumps(d) + "\n" for d in SHORT_DEMOS))

    def write(name: str, arms=(ICRL,), **keys) -> Path:
        study = {
            "output_dir": str(root / name),
            "shared": {"model": {"name": str(tiny_model_dir), "dtype": "fp32"}, "demo_pool": str(pool),
                       "prompts_per_step": 2, "num_generations": 2, "micro_batch_size": 2, "eval_every": 0,
                       "save_every": 1, "progress": False, "final_eval": "", "probe_demos": 0,
                       "instruction": "Search with <search> q </search>, answer with <answer> a </answer>. {question}",
                       "rollout.max_turns": 1, "rollout.max_turn_tokens": 12, "rollout.max_response_tokens": 24},
            "budget": {"rollouts": 8}, "seeds": [0], "arms": list(arms),
            "eval": {"limit": 2, "resamples": 200},
        }
        for key, value in keys.items():
            study[key] = {**study[key], **value} if isinstance(value, dict) else value
        path = root / f"{name}.yaml"
        path.write_text(yaml.safe_dump(study))
        return path

    return write


@pytest.fixture(scope="module")
def finished(write_study):
    """A finished study through the CLI: a trained arm and a prompt-only 2-demo one, plus a 2-demo extra evaluation."""
    path = write_study("finished", arms=[ICRL, PROMPT_2], eval={"limit": 2, "resamples": 200, "demos_extra": 2},
                       baseline="prompt-2")
    assert main(["study", "--config", str(path)]) == 0
    study = load_study(path)
    return study, json.loads((Path(study.output_dir) / "results.json").read_text())


def run_dir(study, arm: str, seed: int = 0) -> Path:
    return Path(study.output_dir) / arm / f"seed{seed}"


def forbid_work(monkeypatch):
    """Make training or evaluating anything fail: what the runner skips must not be run again."""
    def refuse(*args, **kwargs):
        raise AssertionError("a finished run was trained or evaluated again")

    monkeypatch.setattr(study_module, "BudgetedTrainer", refuse)
    monkeypatch.setattr(study_module, "evaluate", refuse)


# ---- statistics -------------------------------------------------------------------------------------------
def test_bootstrap_interval_of_one_success_in_four():
    # the resampled mean of [0, 0, 0, 1] is Binomial(4, 1/4) / 4: P(<= 0) = 0.316, P(<= 0.5) = 0.949, P(<= 0.75) = 0.996,
    # so its 2.5% quantile is 0 and its 97.5% quantile 0.75
    assert bootstrap_ci([0, 0, 0, 1], resamples=2000, seed=0) == (0.0, 0.75)


def test_bootstrap_interval_of_a_constant_is_that_constant():
    assert bootstrap_ci([0.5] * 7) == (0.5, 0.5)
    assert bootstrap_ci([3.0]) == (3.0, 3.0)


def test_bootstrap_interval_matches_the_normal_approximation_on_many_values():
    # 100 zeros and 100 ones: mean 0.5, standard error 0.5 / sqrt(200) = 0.0354, 95% interval 0.5 -/+ 1.96 x 0.0354
    low, high = bootstrap_ci([0.0] * 100 + [1.0] * 100, resamples=4000, seed=1)
    assert low == pytest.approx(0.5 - 0.0693, abs=0.012) and high == pytest.approx(0.5 + 0.0693, abs=0.012)


def test_bootstrap_is_reproducible_from_its_seed():
    values = [i / 37 for i in (3, 29, 11, 0, 36, 17, 8, 21, 30, 5)]
    assert bootstrap_ci(values, resamples=200, seed=3) == bootstrap_ci(values, resamples=200, seed=3)
    assert bootstrap_ci(values, resamples=200, seed=3) != bootstrap_ci(values, resamples=200, seed=4)


def test_bootstrap_of_nothing_is_an_error():
    with pytest.raises(ValueError, match="at least one"):
        bootstrap_ci([])


def test_mean_std_over_seeds():
    mean, std = mean_std([0.1, 0.3])
    assert mean == pytest.approx(0.2) and std == pytest.approx(math.sqrt(0.02))  # ((0.1^2 + 0.1^2) / (2 - 1)) ** 0.5
    assert mean_std([0.4]) == (0.4, 0.0)


# ---- config checks ----------------------------------------------------------------------------------------
def test_paired_difference_of_an_arm_with_itself_is_exactly_zero():
    scores = [[1, 0, 0, 1, 1, 0, 0, 0]]
    assert paired_difference(scores, scores, resamples=500) == (0.0, 0.0, 0.0)  # the same questions in every resample


def test_paired_difference_is_clear_of_zero_for_a_consistent_gain():
    base = [[1, 0, 0, 0] * 30, [0, 1, 0, 0] * 30]  # (2 seeds, 120 questions): 0.25
    arm = [[1, 1, 0, 0] * 30, [1, 1, 0, 0] * 30]  # 0.5, right wherever the baseline is in either seed
    diff, low, high = paired_difference(arm, base, resamples=1000)
    assert diff == pytest.approx(0.25) and 0 < low < diff < high


def test_paired_difference_carries_the_seed_spread():
    arm = [[1] * 50, [0] * 50]  # one seed gets everything, the other nothing: mean 0.5
    base = [[0, 1] * 25]  # 0.5
    diff, low, high = paired_difference(arm, base, resamples=1000)
    assert diff == pytest.approx(0.0) and low < -0.3 and high > 0.3  # resampling the arm's seeds gives 0, 0.5 or 1


def test_paired_difference_needs_the_same_questions():
    with pytest.raises(ValueError, match="same questions"):
        paired_difference([[1, 0, 1]], [[1, 0]])


def test_a_baseline_that_is_not_an_arm_is_rejected(write_study):
    path = write_study("bad-baseline", arms=[ICRL, PROMPT_2], baseline="prompt-3")
    with pytest.raises(ValueError, match=r"baseline='prompt-3' is not one of the arms \(icrl, prompt-2\)"):
        load_study(path).validate()


def test_arms_are_compared_with_the_baseline_question_by_question(finished):
    study, results = finished
    arms = {a["name"]: a for a in results["arms"]}
    versus = arms["icrl"]["vs_baseline"]
    assert "vs_baseline" not in arms["prompt-2"]
    icrl, prompt = arms["icrl"]["main"]["metrics"]["em"]["mean"], arms["prompt-2"]["main"]["metrics"]["em"]["mean"]
    assert versus["baseline"] == "prompt-2" and versus["diff"] == pytest.approx(icrl - prompt)
    assert versus["ci"][0] <= versus["diff"] <= versus["ci"][1]
    text = (Path(study.output_dir) / "results.md").read_text()
    assert "## Against prompt-2, question by question" in text and "| icrl | 1 | " in text


def test_unknown_arm_key_lists_the_arm_keys_and_says_where_train_keys_go(write_study):
    with pytest.raises(ValueError, match="unknown arm key 'stages'.*overrides: {stages"):
        plan(load_study(write_study("bad", arms=[{"name": "a", "stages": [{"demos": 0, "steps": 1}]}])))
    with pytest.raises(ValueError, match="unknown arm key 'trian'; arm keys are name, config, overrides, train"):
        plan(load_study(write_study("bad", arms=[{"name": "a", "trian": False}])))


def test_duplicate_arm_names_are_rejected(write_study):
    with pytest.raises(ValueError, match="two arms are named 'icrl'; give each arm its own name"):
        load_study(write_study("bad", arms=[ICRL, ICRL]))


def test_empty_arms_are_rejected(write_study):
    with pytest.raises(ValueError, match="`arms` is empty; list at least one arm"):
        load_study(write_study("bad", arms=[]))


def test_unknown_override_key_suggests_the_right_one(write_study):
    with pytest.raises(ValueError, match="arm 'a' overrides: unknown config key 'learning_rte'. Did you mean 'learning_rate'"):
        plan(load_study(write_study("bad", arms=[{"name": "a", "overrides": {"learning_rte": 1e-4}}])))


def test_arm_overrides_may_not_set_what_the_study_sets(write_study):
    with pytest.raises(ValueError, match="may not set seed.*use the arm's `seeds`"):
        load_study(write_study("bad", arms=[{"name": "a", "overrides": {"seed": 3}}]))


def test_an_arm_off_the_rollout_budget_is_rejected_before_any_work(write_study):
    arms = [ICRL, {"name": "long", "overrides": {"stages": [{"demos": 0, "steps": 3}]}}]
    with pytest.raises(ValueError, match=r"arm 'long' plans 12 training rollouts \(3 steps x 2 prompts x 2 generations\) "
                                         r"but budget.rollouts=8"):
        plan(load_study(write_study("bad", arms=arms)))


def test_eval_demos_beyond_the_pool_are_rejected(write_study):
    with pytest.raises(ValueError, match="evaluated with 3 demos but its demo pool has 2"):
        plan(load_study(write_study("bad", arms=[{"name": "p", "train": False, "eval_demos": 3}])))


def test_demos_that_do_not_fit_an_arms_budgets_are_rejected_before_any_arm_trains(write_study):
    arms = [ICRL, {"name": "short", "overrides": {"stages": [{"demos": 0, "steps": 2}], "rollout.max_turn_tokens": 4}}]
    with pytest.raises(ValueError, match=r"(?s)arm .short.: 2 of 2 demos do not fit its rollout budgets.*max_turn_tokens=4"):
        plan(load_study(write_study("bad", arms=arms)))
    assert not Path(load_study(write_study("bad", arms=arms)).output_dir).exists()


def test_packaged_example_study_plans():
    study = load_study("qa-smoke")
    runs = plan(study)
    assert study.output_dir == "runs/studies/qa-smoke"
    assert [(arm.name, arm.train) for arm, _, _ in runs] == [("icrl-2-0", True), ("prompt-2", False)]
    assert runs[0][2].output_dir == "runs/studies/qa-smoke/icrl-2-0/seed0"


# ---- a tiny study end to end ------------------------------------------------------------------------------
def test_results_json_has_every_arm_with_its_budget_and_evaluations(finished):
    study, results = finished
    arms = {a["name"]: a for a in results["arms"]}
    assert list(arms) == ["icrl", "prompt-2"]
    icrl, prompt = arms["icrl"], arms["prompt-2"]
    assert icrl["rollouts"] == 8 and icrl["train_seconds"] > 0 and icrl["runs"][0]["steps"] == 2
    assert "rollouts" not in prompt and not list(run_dir(study, "prompt-2").glob("checkpoint-*"))
    assert (icrl["main"]["demos"], icrl["extra"]["demos"], prompt["main"]["demos"]) == (0, 2, 2)
    assert "extra" not in prompt  # its main evaluation already has 2 demos
    for arm, key in ((icrl, "main"), (icrl, "extra"), (prompt, "main")):
        metrics = arm[key]["metrics"]
        assert arm[key]["questions"] == 2
        assert set(metrics) == {"em", "f1", "format_valid", "tool_calls", "repeated_calls", "answer_is_query", "closed_book",
                                "response_tokens"}
        for m in metrics.values():
            assert m["ci"][0] <= m["mean"] <= m["ci"][1] and m["per_seed"] == [m["mean"]]
        records = [json.loads(line) for line in Path(arm["runs"][0][key]["records"]).read_text().splitlines()]
        assert len(records) == 2
        assert metrics["response_tokens"]["mean"] == pytest.approx(sum(r["response_tokens"] for r in records) / 2)


def test_results_md_has_a_row_per_arm_and_the_budget(finished):
    study, results = finished
    text = (Path(study.output_dir) / "results.md").read_text()
    assert "## Main evaluation" in text and "## With 2 demonstrations" in text and "8 training rollouts per arm and seed" in text
    tables = text[text.index("## Main evaluation"):text.index("## Against")]  # the comparison follows them
    rows = [line for line in tables.splitlines() if line.startswith("| icrl |") or line.startswith("| prompt-2 |")]
    assert len(rows) == 3  # icrl in both tables, prompt-2 in the main one
    icrl_main = rows[0].split(" | ")
    assert icrl_main[1:5] == ["yes", "0", "1", "2"] and icrl_main[-2] == "8"  # trained, demos, seeds, questions; rollouts
    assert rows[1].split(" | ")[1:3] == ["no", "2"] and rows[1].endswith("| – | – |")
    assert "## Training curves" in text and ("curves.png" in text or "matplotlib" in text)


def test_a_finished_study_is_skipped_and_its_results_rewritten(finished, monkeypatch):
    study, results = finished
    forbid_work(monkeypatch)
    again = run_study(load_study(Path(study.output_dir).with_suffix(".yaml")))
    assert json.loads(json.dumps([a["main"] for a in again["arms"]])) == [a["main"] for a in results["arms"]]


def test_a_trained_run_under_a_changed_config_is_an_error_naming_the_change(finished, write_study):
    study, _ = finished
    changed = {"name": "icrl", "overrides": {"stages": [{"demos": 0, "steps": 1}, {"demos": 0, "steps": 1}]}}
    path = write_study("finished", arms=[changed, PROMPT_2], eval={"limit": 2, "resamples": 200, "demos_extra": 2})
    try:
        with pytest.raises(ValueError, match=r"stages: .*'demos': 1.* -> .*restore the study config, or delete"):
            run_study(load_study(path))
    finally:
        write_study("finished", arms=[ICRL, PROMPT_2], eval={"limit": 2, "resamples": 200, "demos_extra": 2})


def test_changing_checkpoint_bookkeeping_keeps_a_trained_run(finished, write_study, monkeypatch):
    study, _ = finished
    path = write_study("finished", arms=[ICRL, PROMPT_2], shared={"save_every": 3, "keep_checkpoints": 5},
                       eval={"limit": 2, "resamples": 200, "demos_extra": 2})
    forbid_work(monkeypatch)
    try:
        run_study(load_study(path))
    finally:
        write_study("finished", arms=[ICRL, PROMPT_2], eval={"limit": 2, "resamples": 200, "demos_extra": 2})


def test_a_killed_run_resumes_from_its_checkpoint(write_study, monkeypatch, capsys):
    study = load_study(write_study("killed"))
    real_step = Trainer.step

    def die_at_step_two(self):
        if self.step_index == 1:
            raise KeyboardInterrupt  # killed after checkpoint-1 was written
        return real_step(self)

    monkeypatch.setattr(Trainer, "step", die_at_step_two)
    with pytest.raises(KeyboardInterrupt):
        run_study(study)
    out = run_dir(study, "icrl")
    assert not json.loads((out / "study-train.json").read_text())["finished"]
    monkeypatch.setattr(Trainer, "step", real_step)
    results = run_study(study)
    assert "resumed from" in capsys.readouterr().out and (out / "checkpoint-2").exists()
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert results["arms"][0]["rollouts"] == 8


def test_changing_only_the_evaluation_re_evaluates_without_training(finished, write_study, monkeypatch):
    trained, _ = finished
    study = load_study(write_study("re-eval", eval={"limit": 3, "resamples": 200}))
    shutil.rmtree(study.output_dir, ignore_errors=True)
    shutil.copytree(run_dir(trained, "icrl"), run_dir(study, "icrl"))  # the finished run, evaluated on 2 questions
    monkeypatch.setattr(study_module, "BudgetedTrainer", lambda *a, **k: pytest.fail("trained again"))
    results = run_study(study)
    assert results["arms"][0]["main"]["questions"] == 3


def test_max_minutes_stops_training_at_a_step_boundary_and_keeps_the_checkpoint(write_study):
    study = load_study(write_study("capped", budget={"max_minutes": 1e-6}, shared={"save_every": 5}))  # no save at step 1
    shutil.rmtree(study.output_dir, ignore_errors=True)
    results = run_study(study)
    run = results["arms"][0]["runs"][0]
    assert run["steps"] == 1 and run["rollouts"] == 4 and run["stopped"].startswith("max_minutes")
    assert (run_dir(study, "icrl") / "checkpoint-1").exists()
    assert "max_minutes" in (Path(study.output_dir) / "results.md").read_text()


def test_saved_evaluations_survive_options_added_at_their_defaults_and_not_changed_ones():
    from icrl_lite.evaluate import EvalConfig
    from icrl_lite.study import ADDED_EVAL_KEYS, fingerprint, plain, same_evaluation

    current = {"eval": plain(EvalConfig(limit=100)), "trained": "2026-11-29T05:00"}
    old_code = copy.deepcopy(current)  # what code without the added options wrote: a fingerprint only
    for path in ADDED_EVAL_KEYS:
        parent = old_code["eval"]
        for key in path[:-1]:
            parent = parent[key]
        del parent[path[-1]]
    assert same_evaluation({"fingerprint": fingerprint(old_code)}, current)
    assert not same_evaluation({"fingerprint": fingerprint(old_code)}, {**current, "trained": "later"})
    changed = copy.deepcopy(current)
    changed["eval"]["demo_choice"] = "per_step"
    assert not same_evaluation({"fingerprint": fingerprint(old_code)}, changed)
    saved = {"fingerprint": fingerprint(old_code), "config": old_code}  # new code stores the config itself
    assert same_evaluation(saved, current)
    assert not same_evaluation(saved, changed)
    other = copy.deepcopy(current)
    other["eval"]["limit"] = 50
    assert not same_evaluation(saved, other)


@pytest.mark.parametrize("name", sorted(p.stem for p in (Path(__file__).parent.parent / "icrl_lite/configs/studies").glob("*.yaml")))
def test_every_packaged_study_plans_valid_runs(name):
    study = load_study(name)
    runs = plan(study)
    assert runs and len({cfg.output_dir for _, _, cfg in runs}) == len(runs)  # one directory per arm x seed
    for _, _, cfg in runs:
        cfg.validate()


def test_hop_metrics_are_seed_means_and_stds_of_the_per_hop_summaries():
    summaries = [{"em": 0.5, "em@1hop": 0.6, "em@2hop": 0.2, "questions@2hop": 5.0},
                 {"em": 0.3, "em@1hop": 0.4, "em@2hop": 0.0, "questions@2hop": 5.0}]
    hops = study_module.hop_metrics(summaries)
    assert set(hops) == {"em@1hop", "em@2hop", "questions@2hop"}  # overall metrics are not per hop
    assert hops["em@1hop"]["mean"] == pytest.approx(0.5) and hops["em@2hop"]["std"] == pytest.approx(0.1414, abs=1e-4)


def test_studies_select_on_dev_by_default():
    assert study_module.StudyEvalConfig().split == "dev"


def test_a_run_made_from_other_data_files_is_refused_or_re_evaluated(finished, write_study, tmp_path, monkeypatch):
    # a regenerated train file (or demo pool, or corpus) must not let a finished run count as trained on it
    study, _ = finished
    out = run_dir(study, "icrl")
    marker = json.loads((out / "study-train.json").read_text())
    assert set(marker["config"]["data"]) == {"train", "demos", "corpus"}
    edited = copy.deepcopy(marker)
    edited["config"]["data"]["train"] = "0" * 16
    (out / "study-train.json").write_text(json.dumps(edited))
    try:
        with pytest.raises(ValueError, match=r"data\.train: .* -> .*delete"):
            run_study(load_study(Path(study.output_dir).with_suffix(".yaml")))
    finally:
        (out / "study-train.json").write_text(json.dumps(marker))
    saved = json.loads((out / "study-eval-0shot.json").read_text())
    assert set(saved["data"]) == {"dev", "demos", "corpus"}
    cfg = [c for arm, seed, c in plan(study) if arm.name == "icrl"][0]
    evaluated = []
    monkeypatch.setattr(study_module, "evaluate", lambda ecfg: evaluated.append(1) or {"records": saved["records"], "em": 0.0})
    study_module.eval_run(cfg, str(out), 0, study.eval, marker["finished_at"])
    assert evaluated == []  # same data: reused
    (out / "study-eval-0shot.json").write_text(json.dumps({**saved, "data": {**saved["data"], "dev": "0" * 16}}))
    try:
        study_module.eval_run(cfg, str(out), 0, study.eval, marker["finished_at"])
        assert evaluated == [1]  # other data: evaluated again
    finally:
        (out / "study-eval-0shot.json").write_text(json.dumps(saved))


def test_report_evaluates_the_chosen_arms_once_on_test_and_leaves_the_dev_results(finished, monkeypatch, capsys):
    study, _ = finished
    path = Path(study.output_dir).with_suffix(".yaml")
    dev_result = (run_dir(study, "icrl") / "study-eval-0shot.json").read_text()
    assert main(["study", "--config", str(path), "--report", "icrl", "prompt-2"]) == 0
    assert f"{study.output_dir}/report-test.md" in capsys.readouterr().out
    report = json.loads((Path(study.output_dir) / "report-test.json").read_text())
    arms = {a["name"]: a for a in report["arms"]}
    assert set(arms) == {"icrl", "prompt-2"} and report["config"]["eval"]["split"] == "test"
    assert arms["icrl"]["main"]["questions"] == arms["prompt-2"]["main"]["questions"] == 200  # all of test, not limit 2
    assert arms["prompt-2"]["main"]["demos"] == 2 and arms["icrl"]["main"]["demos"] == 0
    assert (run_dir(study, "icrl") / "study-eval-0shot.json").read_text() == dev_result  # the study's own result stays
    assert (run_dir(study, "icrl") / "eval-test-0shot.jsonl").exists()
    forbid_work(monkeypatch)  # a second report reuses the evaluations
    assert main(["study", "--config", str(path), "--report", "icrl"]) == 0


def test_report_refuses_the_studys_own_split_unknown_arms_and_untrained_runs(write_study):
    study = load_study(write_study("unreported"))
    with pytest.raises(ValueError, match="evaluates on dev"):
        report_study(study, ["icrl"], split="dev")
    with pytest.raises(ValueError, match="name arms of the study"):
        report_study(study, ["nope"])
    with pytest.raises(ValueError, match="has not finished training"):
        report_study(study, ["icrl"])
