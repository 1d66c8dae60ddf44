"""Studies: train several methods (arms) on one budget and several seeds, evaluate them on held-out questions.

`icrl-lite study --config STUDY.yaml` resolves every arm's TrainConfig (the study's `base` config or the arm's
own, then the study's `shared` overrides, then the arm's), checks them all before any work, then for each arm x
seed trains with the Trainer into `<output_dir>/<arm>/seed<k>` (a prompt-only arm, `train: false`, trains
nothing and evaluates the untrained model) and evaluates greedily on the held-out split with the arm's own
task, tools and rollout budgets: with `eval_demos` demonstrations (0 = zero-shot), and again with
`eval.demos_extra` demos when set. It writes `results.json`, `results.md` and `curves.png` (the arms' training
curves overlaid) in the study directory.

Budget: `budget.rollouts` is the primary, exact budget: every training arm must plan that many training
rollouts (steps x prompts_per_step x num_generations), or the study refuses to start. `budget.max_minutes` is an
optional cap on the time of the training steps (rollouts and updates; not periodic dev evaluations or
checkpoint writes): training stops at the first step boundary past it, even mid-curriculum. The table shows
each run's rollouts and training minutes as measured (from its metrics.jsonl), so the fairness is visible.

Resumable arm by arm: a run whose training marker (`study-train.json`) and evaluation files
(`study-eval-<k>shot.json`) match the current config is skipped; a killed run resumes from its latest
checkpoint; a run directory trained under a different config is an error (delete it to retrain).

Statistics: the 95% interval is a percentile bootstrap over questions (`eval.resamples` resamples, seeded) of
the mean of each question's score averaged over the arm's seeds; `± std` is the sample standard deviation of
the per-seed means.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import gc
import hashlib
import json
import math
import os
import platform
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import yaml

from .config import CONFIG_DIR, apply, load_config, to_dict
from .curriculum import Curriculum
from .evaluate import HOP_KEY, EvalConfig, bootstrap_ci, evaluate
from .plots import read_metrics
from .policy import load_tokenizer
from .rollout import demo_budget_problems
from .tasks import get_task, setup_task
from .trainer import TrainConfig, Trainer, latest_checkpoint

STUDY_DIR = CONFIG_DIR / "studies"
METRICS = (("em", "EM"), ("f1", "F1"), ("format_valid", "format-valid"), ("tool_calls", "tool calls/q"),
           ("repeated_calls", "repeated calls/q"), ("answer_is_query", "answer = query"), ("closed_book", "right, not retrieved"),
           ("response_tokens", "length (tok)"))
DIGITS = {"tool_calls": 2, "repeated_calls": 2, "response_tokens": 1}  # decimals in the tables (3 for rates)
SET_BY_STUDY = ("output_dir", "seed")  # TrainConfig keys the study fills in per run
BOOKKEEPING = ("save_every", "keep_checkpoints", "final_eval", "final_eval_size")  # changing them leaves a trained run valid


@dataclass
class BudgetConfig:
    rollouts: int = 0
    """Training rollouts every training arm must sample per seed (steps x prompts_per_step x num_generations); an arm that plans another number is rejected before anything runs (0 = not checked)."""
    max_minutes: float = 0.0
    """Optional cap per arm and seed on the training steps' time (rollouts + updates): training stops at the first step boundary past it, even mid-curriculum, and keeps that checkpoint (0 = no cap)."""


@dataclass
class StudyEvalConfig:
    split: str = "dev"
    """Held-out split of the task's bundled data (train | dev | test), or the split of `dataset`. Studies choose
    methods and settings, so they evaluate on dev; test is for reporting the chosen method once."""
    dataset: str = ""
    """Question file or HF dataset name to evaluate on instead of the bundled split (empty = bundled)."""
    limit: int = 0
    """Evaluate only the first N questions (0 = all)."""
    demos_extra: int = 0
    """Also evaluate every arm with this many demonstrations in the prompt (0 = no extra evaluation)."""
    batch_size: int = 16
    """Questions decoded together."""
    resamples: int = 2000
    """Bootstrap resamples for the 95% intervals over questions."""


@dataclass
class ArmConfig:
    name: str = ""
    """The arm's name: its directory and its row in the tables (letters, digits, . _ -)."""
    config: str = ""
    """A train config (file or packaged name) to start from instead of the study's `base`; empty = `base`."""
    overrides: dict = field(default_factory=dict)
    """TrainConfig keys applied after the study's `shared` ones: nested mappings for sections or dotted keys, e.g. {stages: [{demos: 0, steps: 20}], rollout.temperature: 1.0}."""
    train: bool = True
    """false = a prompt-only arm: nothing is trained, the untrained model is evaluated."""
    eval_demos: int = 0
    """Demonstrations in the prompt at the main evaluation (0 = zero-shot; e.g. 3 for a prompt-only 3-demo arm)."""
    seeds: list[int] = field(default_factory=list)
    """Seeds of this arm; empty = the study's `seeds` (e.g. one seed for an arm that loses clearly)."""


@dataclass
class StudyConfig:
    name: str = ""
    """The study's name (default: the config file's name)."""
    output_dir: str = ""
    """Study directory: one run directory per arm and seed, results.json, results.md, curves.png; empty = runs/studies/<name>."""
    base: str = ""
    """Train config (file or packaged name, e.g. smoke) every arm starts from; empty = the TrainConfig defaults."""
    shared: dict = field(default_factory=dict)
    """TrainConfig keys applied to every arm (nested mappings or dotted keys), e.g. {model.dtype: fp32}; `shared.<key>=value` on the command line adds to them."""
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    """The budget every training arm gets."""
    seeds: list[int] = field(default_factory=lambda: [0])
    """Seeds each arm runs with (TrainConfig.seed)."""
    arms: list[dict] = field(default_factory=list)
    """The arms: a list of mappings with the keys of ArmConfig (name, config, overrides, train, eval_demos, seeds)."""
    eval: StudyEvalConfig = field(default_factory=StudyEvalConfig)
    """The held-out evaluation."""
    baseline: str = ""
    """An arm every other arm is compared with question by question (e.g. prompt-3: the untrained model with 3 demos): the difference in EM (accuracy) with a bootstrap interval over questions and seeds, and the ratio; empty = none."""

    def validate(self) -> None:
        if not self.arms:
            raise ValueError("study: `arms` is empty; list at least one arm, e.g. arms: [{name: icrl}, {name: prompt-3, train: false, eval_demos: 3}]")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"study: seeds={self.seeds!r} must be a non-empty list of distinct integers, e.g. [0, 1, 2]")
        if self.budget.rollouts < 0 or self.budget.max_minutes < 0:
            raise ValueError("study: budget.rollouts and budget.max_minutes must be >= 0 (0 = not used)")
        e = self.eval
        if e.limit < 0 or e.demos_extra < 0 or e.batch_size < 1 or e.resamples < 100:
            raise ValueError("study: eval.limit and eval.demos_extra must be >= 0, eval.batch_size >= 1, eval.resamples >= 100")
        names = [arm.name for arm in self.arm_list()]
        if self.baseline and self.baseline not in names:
            raise ValueError(f"study: baseline={self.baseline!r} is not one of the arms ({', '.join(names)}); name an arm or leave it empty")

    def arm_list(self) -> list[ArmConfig]:
        """The arms as ArmConfig, checked: known keys, unique file-safe names, seeds, keys the study sets."""
        known = [f.name for f in dataclasses.fields(ArmConfig)]
        train_keys = {f.name for f in dataclasses.fields(TrainConfig)}
        arms, names = [], set()
        for i, data in enumerate(self.arms):
            where = f"study: arm {data.get('name', i + 1)!r}" if isinstance(data, dict) else f"study: arm {i + 1}"
            if not isinstance(data, dict):
                raise ValueError(f"{where}: expected a mapping like {{name: icrl, overrides: {{...}}}}, got {data!r}")
            for key in data:
                if key not in known:
                    hint = (f" TrainConfig keys go under overrides, e.g. overrides: {{{key}: ...}}." if str(key).split(".")[0] in train_keys
                            else "")
                    raise ValueError(f"{where}: unknown arm key {key!r}; arm keys are {', '.join(known)}.{hint}")
            arm = ArmConfig()
            apply(arm, data, where=where)
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", arm.name):
                raise ValueError(f"{where}: name={arm.name!r} names the arm's directory: use letters, digits, '.', '_' or '-'")
            if arm.name in names:
                raise ValueError(f"{where}: two arms are named {arm.name!r}; give each arm its own name")
            names.add(arm.name)
            for key in nest(arm.overrides):
                if key in SET_BY_STUDY:
                    raise ValueError(f"{where}: overrides may not set {key}: the study sets output_dir (<output_dir>/<arm>/seed<k>) "
                                     "and seed (from seeds); use the arm's `seeds` to choose its seeds")
            if arm.eval_demos < 0:
                raise ValueError(f"{where}: eval_demos={arm.eval_demos} must be >= 0")
            if len(set(arm.seeds)) != len(arm.seeds):
                raise ValueError(f"{where}: seeds={arm.seeds!r} repeats a seed")
            arm.seeds = arm.seeds or list(self.seeds)
            arms.append(arm)
        return arms


# ---- statistics (pure; the interval over questions is evaluate.bootstrap_ci) -------------------------------
def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value) of per-seed results."""
    x = np.asarray(values, dtype=float)
    return float(x.mean()), float(x.std(ddof=1)) if x.size > 1 else 0.0


def paired_difference(arm: Sequence[Sequence[float]], base: Sequence[Sequence[float]], resamples: int = 2000,
                      seed: int = 0) -> tuple[float, float, float]:
    """Mean of `arm` minus mean of `base` (per seed, per-question scores on the same questions: (seeds, n) each) and
    its 95% percentile bootstrap interval: each resample draws n questions (the same ones for both arms, so the
    comparison is paired) and each arm's seeds with replacement, so the interval carries the seed spread too."""
    a, b = np.asarray(arm, dtype=float), np.asarray(base, dtype=float)  # (Sa, n), (Sb, n)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or a.shape[1] == 0:
        raise ValueError(f"paired_difference needs (seeds, questions) scores on the same questions, got {a.shape} and {b.shape}")
    rng = np.random.default_rng(seed)
    questions = rng.integers(0, a.shape[1], size=(resamples, 1, a.shape[1]))  # (R, 1, n)
    picked_a = rng.integers(0, a.shape[0], size=(resamples, a.shape[0], 1))  # (R, Sa, 1)
    picked_b = rng.integers(0, b.shape[0], size=(resamples, b.shape[0], 1))  # (R, Sb, 1)
    diffs = a[picked_a, questions].mean(axis=(1, 2)) - b[picked_b, questions].mean(axis=(1, 2))  # (R,)
    low, high = np.quantile(diffs, [0.025, 0.975])
    return float(a.mean() - b.mean()), float(low), float(high)


# ---- configs ----------------------------------------------------------------------------------------------
def load_study(path: str | Path, overrides: Sequence[str] = ()) -> StudyConfig:
    """A study from a YAML file or a packaged study name (icrl_lite/configs/studies/<name>.yaml), plus key=value overrides."""
    source = Path(path)
    if not source.exists():
        source = STUDY_DIR / f"{path}.yaml"
        if not source.exists():
            names = ", ".join(sorted(p.stem for p in STUDY_DIR.glob("*.yaml")))
            raise FileNotFoundError(f"study config {str(path)!r} is neither a file nor a packaged study; packaged studies: {names}")
    shared = [o for o in overrides if o.startswith("shared.")]  # merged into the mapping, not replacing it
    study = load_config(StudyConfig, source, [o for o in overrides if o not in shared])
    for item in shared:
        key, sep, raw = item.partition("=")
        if not sep or key == "shared.":
            raise ValueError(f"override {item!r} is not shared.<train key>=value (e.g. shared.learning_rate=1e-4)")
        study.shared[key[len("shared."):]] = yaml.safe_load(raw) if raw else ""
    study.name = study.name or source.stem
    study.output_dir = study.output_dir or f"runs/studies/{study.name}"
    return study


def nest(mapping: dict) -> dict:
    """{"a.b": 1, "c": {"d": 2}} -> {"a": {"b": 1}, "c": {"d": 2}}: dotted keys become nested sections."""
    out: dict = {}
    for key, value in mapping.items():
        *parents, leaf = str(key).split(".")
        cursor = out
        for part in parents:
            cursor = cursor.setdefault(part, {})
        if isinstance(value, dict) and isinstance(cursor.get(leaf), dict):
            cursor[leaf].update(nest(value))
        else:
            cursor[leaf] = nest(value) if isinstance(value, dict) else value
    return out


def train_config(study: StudyConfig, arm: ArmConfig, seed: int) -> TrainConfig:
    """base (or the arm's config) -> shared -> the arm's overrides; output_dir and seed from the study."""
    cfg = load_config(TrainConfig, arm.config or study.base or None)
    apply(cfg, nest(study.shared), where=f"study {study.name}: shared")
    apply(cfg, nest(arm.overrides), where=f"study {study.name}: arm {arm.name!r} overrides")
    cfg.output_dir = str(Path(study.output_dir) / arm.name / f"seed{seed}")
    cfg.seed = seed
    cfg.validate()
    return cfg


def planned_rollouts(cfg: TrainConfig) -> int:
    return Curriculum(cfg.stages).total_steps * cfg.prompts_per_step * cfg.num_generations


def eval_demos(arm: ArmConfig, study: StudyConfig) -> dict[str, int]:
    """{"main": the arm's eval demos, "extra": eval.demos_extra (when set and different)}."""
    settings = {"main": arm.eval_demos}
    if study.eval.demos_extra and study.eval.demos_extra != arm.eval_demos:
        settings["extra"] = study.eval.demos_extra
    return settings


def plan(study: StudyConfig) -> list[tuple[ArmConfig, int, TrainConfig]]:
    """Every (arm, seed, TrainConfig), checked before any work: configs, budget, demo pool sizes."""
    study.validate()
    if not study.name or not study.output_dir:
        raise ValueError("study: give the study a name (name: my-study) and an output_dir")
    runs = [(arm, seed, train_config(study, arm, seed)) for arm in study.arm_list() for seed in arm.seeds]
    checked = set()
    for arm, seed, cfg in runs:
        if arm.train and study.budget.rollouts and planned_rollouts(cfg) != study.budget.rollouts:
            raise ValueError(
                f"study: arm {arm.name!r} plans {planned_rollouts(cfg)} training rollouts ({Curriculum(cfg.stages).total_steps} steps x "
                f"{cfg.prompts_per_step} prompts x {cfg.num_generations} generations) but budget.rollouts={study.budget.rollouts}: "
                "change its stages' steps, prompts_per_step or num_generations to match, or set budget.rollouts=0 to allow unequal budgets")
        task = get_task(cfg.task)
        pool = len(task.load_demos(cfg.demo_pool or task.bundled("demos")))
        if max(eval_demos(arm, study).values()) > pool:
            raise ValueError(f"study: arm {arm.name!r} is evaluated with {max(eval_demos(arm, study).values())} demos but its demo pool "
                             f"has {pool}; lower eval_demos / eval.demos_extra or give a larger demo_pool")
        if arm.train and cfg.check_demo_budgets and arm.name not in checked:  # the Trainer's own check, for every arm up front
            checked.add(arm.name)
            demos = task.load_demos(cfg.demo_pool or task.bundled("demos"))
            misfits = demo_budget_problems(demos, load_tokenizer(cfg.model.name), setup_task(cfg)[1], cfg.rollout)
            if misfits:
                raise ValueError(f"study: arm {arm.name!r}: {len(misfits)} of {len(demos)} demos do not fit its rollout budgets (its "
                                 "Trainer would refuse to start, after the arms before it had trained): raise the named budgets, "
                                 "shorten the demos or set check_demo_budgets=false:\n  " + "\n  ".join(misfits))
    return runs


def plain(config) -> dict:
    """A config as JSON-normal data, without the fields that do not change results (where it is written, progress bars)."""
    data = json.loads(json.dumps(to_dict(config), default=str))
    return {k: v for k, v in data.items() if k not in ("output_dir", "progress", "output")}


def fingerprint(data) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def changed_keys(old: dict, new: dict, default: dict, prefix: str = "") -> list[str]:
    """`key: old -> new` for every key whose value differs; a key `old` lacks (an option added since) counts only when
    it is not at its default, so a study survives code updates that add options."""
    changes = []
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(old.get(key), dict):
            changes += changed_keys(old[key], value, default.get(key) if isinstance(default.get(key), dict) else {}, f"{prefix}{key}.")
        elif key in old and old[key] != value:
            changes.append(f"{prefix}{key}: {old[key]!r} -> {value!r}")
        elif key not in old and value != default.get(key):
            changes.append(f"{prefix}{key}: (not set) -> {value!r}")
    return changes


def eval_config(cfg: TrainConfig, checkpoint: str, demos: int, spec: StudyEvalConfig, output: Path) -> EvalConfig:
    """Greedy evaluation with the run's own task, tools, model and rollout budgets (every field both configs share)."""
    shared = {f.name for f in dataclasses.fields(EvalConfig)} & {f.name for f in dataclasses.fields(TrainConfig)}
    ecfg = EvalConfig(**{name: copy.deepcopy(getattr(cfg, name)) for name in shared})
    ecfg.checkpoint, ecfg.demos, ecfg.temperature, ecfg.output = checkpoint, demos, 0.0, str(output)
    ecfg.split, ecfg.dataset, ecfg.limit, ecfg.batch_size = spec.split, spec.dataset, spec.limit, spec.batch_size
    return ecfg


# ---- running ----------------------------------------------------------------------------------------------
class OutOfTime(Exception):
    """Raised between steps once the training steps have used budget.max_minutes."""


class BudgetedTrainer(Trainer):
    """The Trainer, stopped at the first step boundary after `max_seconds` of training-step time (over all sittings)."""

    def __init__(self, cfg: TrainConfig, resume: bool, max_seconds: float):
        super().__init__(cfg, resume=resume)
        self.max_seconds = max_seconds
        self.stopped = ""  # why training ended before the curriculum did
        log = self.out / "metrics.jsonl"  # the Trainer has dropped lines of steps it will train again
        self.spent = sum(r["step_seconds"] for r in read_metrics(self.out)) if log.exists() else 0.0

    def step(self) -> dict:
        if self.spent >= self.max_seconds:
            raise OutOfTime
        metrics = super().step()
        self.spent += metrics["step_seconds"]
        return metrics

    def train(self) -> list[dict]:
        """Train to the end of the curriculum or of the time budget; a stop keeps the last step as a checkpoint."""
        try:
            return super().train()
        except OutOfTime:
            self.lock.acquire()  # train() let go of the run dir's lock when the exception left it
            try:
                if latest_checkpoint(self.out) != self.out / f"checkpoint-{self.step_index}":
                    self.save()
            finally:
                self.lock.release()
            self.stopped = f"max_minutes={self.max_seconds / 60:g} after step {self.step_index}"
            return []


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def data_digest(cfg, names: Sequence[str]) -> dict[str, str]:
    """sha256 (first 16 hex digits) of the content of each file a run reads, by role: the config's own file or the
    task's bundled one (`corpus`: the bundled corpus only for tasks that ship one); a hub dataset name as given.
    A regenerated data file then changes what a finished run or evaluation was made from."""
    task = get_task(cfg.task)
    digests = {}
    for name in names:
        given = getattr(cfg, {"train": "train_data", "demos": "demo_pool"}.get(name, name), "")
        path = Path(given) if given else task.bundled(name)
        if path.is_file():
            digests[name] = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        elif given:
            digests[name] = str(given)
    return digests


def train_run(cfg: TrainConfig, budget: BudgetConfig) -> dict:
    """Train one arm/seed (resuming its checkpoint, skipped when finished); returns its training marker. A run
    trained under another config or on other data files (train questions, demos, corpus) is refused."""
    out = Path(cfg.output_dir)
    marker_path = out / "study-train.json"
    config = {k: v for k, v in plain(cfg).items() if k not in BOOKKEEPING}
    config["data"] = data_digest(cfg, ("train", "demos", "corpus"))
    marker = json.loads(marker_path.read_text()) if marker_path.exists() else {"config": config, "finished": False, "wall_seconds": 0.0}
    changes = changed_keys(marker["config"], config, {**plain(TrainConfig()), "data": {}})
    if changes:
        raise ValueError(f"{out} was trained with another config than the study now gives ({'; '.join(changes)}): "
                         f"restore the study config, or delete {out} to train this arm and seed again")
    if marker["finished"]:
        print(f"[study] {out}: trained already, skipped")
        return marker
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = latest_checkpoint(out)
    if checkpoint is None and (out / "metrics.jsonl").exists():
        (out / "metrics.jsonl").unlink()  # killed before its first checkpoint: it starts over, so do its metrics
    write_json(marker_path, marker)
    started = datetime.datetime.now().timestamp()
    try:
        trainer = BudgetedTrainer(cfg, resume=checkpoint is not None, max_seconds=budget.max_minutes * 60 or math.inf)
        trainer.train()
        stopped = trainer.stopped
        del trainer
        gc.collect()
    finally:
        marker["wall_seconds"] += datetime.datetime.now().timestamp() - started
        write_json(marker_path, marker)
    rows = read_metrics(out)
    marker.update(finished=True, finished_at=datetime.datetime.now().isoformat(), stopped=stopped, steps=len(rows),
                  train_seconds=sum(r["step_seconds"] for r in rows),
                  rollouts=sum(int(r.get("rollouts", r["groups"] * cfg.num_generations)) for r in rows))
    write_json(marker_path, marker)
    return marker


def eval_run(cfg: TrainConfig, checkpoint: str, demos: int, spec: StudyEvalConfig, trained: str, tag: str = "") -> dict:
    """Evaluate one arm/seed with `demos` demos (skipped when its result file matches: the same evaluation config,
    training and data files); returns summary + records path. `tag` names a separate result file (the report's)."""
    out = Path(cfg.output_dir)
    split = Path(spec.dataset).stem if spec.dataset else spec.split
    ecfg = eval_config(cfg, checkpoint, demos, spec, out / f"eval-{split}-{demos}shot.jsonl")
    current = {"eval": plain(ecfg), "trained": trained}
    data = data_digest(ecfg, (spec.split if not spec.dataset else "dataset", "demos", "corpus"))
    path = out / f"study-eval-{demos}shot{tag}.json"
    if path.exists():
        done = json.loads(path.read_text())
        if same_evaluation(done, current) and done.get("data") == data and Path(done["records"]).exists():
            print(f"[study] {path}: evaluated already, skipped")
            return done
    out.mkdir(parents=True, exist_ok=True)
    summary = evaluate(ecfg)
    result = {"fingerprint": fingerprint(current), "config": current, "data": data, "demos": demos,
              "records": summary.pop("records"), "summary": summary}
    write_json(path, result)
    return result


# EvalConfig keys added after the first studies, whose result files hold only a fingerprint: at their defaults
# they do not change what an evaluation measures.
ADDED_EVAL_KEYS = (("demo_choice",), ("rollout", "shared_prefix_min"))


def same_evaluation(done: dict, current: dict) -> bool:
    """Whether a saved evaluation result was made with the `current` {"eval": config, "trained": marker}: its saved
    config differs in no key (an option added since counts only when set away from its default)."""
    if "config" in done:
        return done["config"]["trained"] == current["trained"] and not changed_keys(
            done["config"]["eval"], current["eval"], plain(EvalConfig()))
    legacy = copy.deepcopy(current)  # a fingerprint-only result, from before ADDED_EVAL_KEYS existed
    defaults = plain(EvalConfig())
    for path in ADDED_EVAL_KEYS:
        parent, default = legacy["eval"], defaults
        for key in path[:-1]:
            parent, default = parent[key], default[key]
        if parent.get(path[-1]) == default.get(path[-1]):
            parent.pop(path[-1], None)
    return done["fingerprint"] == fingerprint(legacy)


def run_study(study: StudyConfig, command: str = "") -> dict:
    """Train and evaluate every arm x seed (resuming what is done), then write results.json, results.md, curves.png."""
    runs = plan(study)
    out = Path(study.output_dir)
    done = []
    for arm, seed, cfg in runs:
        print(f"[study] {study.name}: arm {arm.name} seed {seed}")
        trained = train_run(cfg, study.budget) if arm.train else {"finished_at": "base"}
        checkpoint = cfg.output_dir if arm.train else "base"
        evals = {key: eval_run(cfg, checkpoint, demos, study.eval, trained["finished_at"])
                 for key, demos in eval_demos(arm, study).items()}
        done.append((arm, seed, trained, evals))
    out.mkdir(parents=True, exist_ok=True)
    (out / "study.yaml").write_text(yaml.safe_dump(to_dict(study), sort_keys=False))  # the config these results are of
    results = summarize(study, done, command)
    results["plot"] = draw_curves(study, runs)
    (out / "results.md").write_text(markdown(results))
    write_json(out / "results.json", results)
    return results


def report_study(study: StudyConfig, arms: Sequence[str], split: str = "test", command: str = "") -> dict:
    """Evaluate the chosen `arms` (every seed, the study's eval_demos, all questions) once on `split`, after the
    study chose them on its own split: report-<split>.md / .json in the study directory. Training arms must have
    finished every seed (the study trains them; the report never does)."""
    if split == study.eval.split and not study.eval.dataset:
        raise ValueError(f"the study itself evaluates on {split}: report on another split (e.g. test)")
    known = {arm.name for arm in study.arm_list()}
    unknown = [a for a in arms if a not in known]
    if not arms or unknown:
        raise ValueError(f"report arms {unknown or arms!r}: name arms of the study ({', '.join(sorted(known))})")
    spec = dataclasses.replace(study.eval, split=split, dataset="", limit=0)
    done = []
    for arm, seed, cfg in plan(study):
        if arm.name not in arms:
            continue
        trained = {"finished_at": "base"}
        if arm.train:
            marker = Path(cfg.output_dir) / "study-train.json"
            trained = json.loads(marker.read_text()) if marker.exists() else {}
            if not trained.get("finished"):
                raise ValueError(f"{cfg.output_dir} has not finished training: run `icrl-lite study --config "
                                 f"{study.name}` first (the report evaluates what the study trained)")
        print(f"[study] {study.name} report on {split}: arm {arm.name} seed {seed}")
        checkpoint = cfg.output_dir if arm.train else "base"
        done.append((arm, seed, trained, {"main": eval_run(cfg, checkpoint, arm.eval_demos, spec, trained["finished_at"],
                                                           tag=f"-report-{split}")}))
    reported = dataclasses.replace(study, eval=spec, arms=[a for a in study.arms if a["name"] in arms])
    results = summarize(reported, done, command)
    out = Path(study.output_dir)
    (out / f"report-{split}.md").write_text(markdown(results))
    write_json(out / f"report-{split}.json", results)
    return results


# ---- results ----------------------------------------------------------------------------------------------
def question_scores(records_path: str | Path) -> dict[str, list[float]]:
    """Per-question values of each reported metric, from an evaluation's records JSONL."""
    records = [json.loads(line) for line in Path(records_path).read_text().splitlines() if line.strip()]
    scores = {"id": [r["id"] for r in records]}
    for key, _ in METRICS:
        if key == "tool_calls":
            scores[key] = [float(len(r["tool_calls"])) for r in records]
        elif records and key in records[0]:
            scores[key] = [float(r[key]) for r in records]
    return scores


def summarize(study: StudyConfig, done: list, command: str) -> dict:
    """results.json: per arm the seed means ± std with intervals, and per run its budget use and evaluations."""
    arms: dict[str, dict] = {}
    for arm, seed, trained, evals in done:
        entry = arms.setdefault(arm.name, {"name": arm.name, "train": arm.train, "seeds": arm.seeds, "runs": []})
        run = {"seed": seed, "dir": str(Path(study.output_dir) / arm.name / f"seed{seed}"),
               **{k: trained.get(k) for k in ("rollouts", "steps", "train_seconds", "wall_seconds", "stopped") if arm.train}}
        for key, result in evals.items():
            scores = question_scores(result["records"])
            run[key] = {"demos": result["demos"], "records": result["records"], "summary": result["summary"],
                        "mean": {m: float(np.mean(v)) for m, v in scores.items() if m != "id"},
                        "ci": {m: list(bootstrap_ci(v, study.eval.resamples, seed=0)) for m, v in scores.items() if m != "id"}}
            entry.setdefault("_scores", {}).setdefault(key, []).append(scores)
        entry["runs"].append(run)
    for entry in arms.values():
        for key, per_seed in entry.pop("_scores").items():
            ids = per_seed[0]["id"]
            if any(s["id"] != ids for s in per_seed):
                raise ValueError(f"arm {entry['name']}: seeds were evaluated on different questions; rerun with one eval config")
            metrics = {}
            for m in (m for m, _ in METRICS if all(m in s for s in per_seed)):  # (evaluations of older versions lack some)
                means = [float(np.mean(s[m])) for s in per_seed]
                mean, std = mean_std(means)
                pooled = np.mean([s[m] for s in per_seed], axis=0)  # (questions,) averaged over seeds
                metrics[m] = {"mean": mean, "std": std, "ci": list(bootstrap_ci(pooled, study.eval.resamples, seed=0)), "per_seed": means}
            entry[key] = {"demos": entry["runs"][0][key]["demos"], "questions": len(ids), "metrics": metrics,
                          "by_hops": hop_metrics([run[key]["summary"] for run in entry["runs"]])}
            if key == "main" and all("em" in s for s in per_seed):  # EM, or a math task's accuracy
                entry["_main"] = (ids, [s["em"] for s in per_seed])
        if entry["train"]:
            for k in ("rollouts", "train_seconds"):
                entry[k] = float(np.mean([r[k] for r in entry["runs"]]))
    compare_with_baseline(study, arms)
    return {
        "study": study.name, "command": command, "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": machine(), "config": to_dict(study), "arms": list(arms.values()),
    }


def compare_with_baseline(study: StudyConfig, arms: dict[str, dict]) -> None:
    """Each arm's `vs_baseline`: its main EM (accuracy) minus the baseline arm's on the same questions, with the
    interval of `paired_difference`, and the ratio of the two means (where the baseline's is above 0)."""
    main = {name: entry.pop("_main") for name, entry in arms.items() if "_main" in entry}
    base = main.get(study.baseline)
    if base is None or not base[1]:
        return
    for name, (ids, scores) in main.items():
        if name == study.baseline or not scores:
            continue
        if ids != base[0]:
            raise ValueError(f"arm {name}: evaluated on other questions than the baseline {study.baseline}; rerun with one eval config")
        diff, low, high = paired_difference(scores, base[1], study.eval.resamples)
        base_mean = float(np.mean(base[1]))
        arms[name]["vs_baseline"] = {"baseline": study.baseline, "diff": diff, "ci": [low, high],
                                     "ratio": float(np.mean(scores)) / base_mean if base_mean > 0 else None}


def hop_metrics(summaries: list[dict]) -> dict[str, dict]:
    """`metric@Nhop` of an arm's runs (evaluate's per-hop means): mean and std over seeds."""
    keys = [k for k in summaries[0] if HOP_KEY.fullmatch(k) and all(k in s for s in summaries)]
    return {k: dict(zip(("mean", "std"), mean_std([float(s[k]) for s in summaries]))) for k in keys}


def machine() -> str:
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU, {torch.get_num_threads()} threads"
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {device}, torch {torch.__version__}"


def draw_curves(study: StudyConfig, runs: list) -> str:
    """curves.png of the training arms, or a note why there is none."""
    from .plots import plot_overlay

    curves: dict[str, list[str]] = {}
    for arm, _, cfg in runs:
        if arm.train:
            curves.setdefault(arm.name, []).append(cfg.output_dir)
    if not curves:
        return "no training arm, no curves"
    try:
        return str(plot_overlay(curves, Path(study.output_dir) / "curves.png"))
    except ImportError as e:
        return f"no plot: {e}; then rerun the study (finished runs are skipped) to draw it"


def cell(metric: dict, key: str) -> str:
    digits = DIGITS.get(key, 3)
    low, high = metric["ci"]
    spread = f" ± {metric['std']:.{digits}f}" if len(metric["per_seed"]) > 1 else ""
    return f"{metric['mean']:.{digits}f}{spread} [{low:.{digits}f}, {high:.{digits}f}]"


def markdown(results: dict) -> str:
    """results.md: one table per evaluation setting (a row per arm), then every run, then the curves."""
    cfg = results["config"]
    budget = cfg["budget"]
    said = [f"{budget['rollouts']} training rollouts per arm and seed" if budget["rollouts"] else "rollouts not fixed (see the table)"]
    if budget["max_minutes"]:
        said.append(f"training steps capped at {budget['max_minutes']:g} min")
    lines = [
        f"# Study {results['study']}", "",
        f"- command: `{results['command'] or 'icrl-lite study --config ' + results['study']}`",
        f"- date: {results['date']}; machine: {results['machine']}",
        f"- budget: {'; '.join(said)}",
        f"- evaluation: {cfg['eval']['dataset'] or cfg['eval']['split'] + ' split'}"
        f"{', first ' + str(cfg['eval']['limit']) if cfg['eval']['limit'] else ''}, greedy, each run with its own task, tools and rollout budgets",
        f"- cells: mean over seeds ± std over seeds [95% bootstrap interval over questions, {cfg['eval']['resamples']} resamples "
        "of the seed-averaged per-question scores]; train min: time of the training steps (rollouts + updates)",
    ]
    arms = results["arms"]
    for key, title in (("main", "Main evaluation (each arm with its eval_demos)"),
                       ("extra", f"With {cfg['eval']['demos_extra']} demonstrations")):
        present = [a for a in arms if key in a]
        if not present:
            continue
        shown = [(m, label) for m, label in METRICS if any(m in a[key]["metrics"] for a in present)]
        if "f1" not in dict(shown):
            shown = [(m, "accuracy" if m == "em" else label) for m, label in shown]
        lines += ["", f"## {title}", "", "| arm | trained | demos | seeds | questions | " + " | ".join(l for _, l in shown)
                  + " | train rollouts | train min |", "|" + "---|" * (7 + len(shown))]
        for a in present:
            e = a[key]
            budget_cells = f"{a['rollouts']:.0f} | {a['train_seconds'] / 60:.1f}" if a["train"] else "– | –"
            lines.append(f"| {a['name']} | {'yes' if a['train'] else 'no'} | {e['demos']} | {len(a['seeds'])} | {e['questions']} | "
                         + " | ".join(cell(e["metrics"][m], m) if m in e["metrics"] else "–" for m, _ in shown) + f" | {budget_cells} |")
    compared = [a for a in arms if "vs_baseline" in a]
    if compared:
        base = compared[0]["vs_baseline"]["baseline"]
        lines += ["", f"## Against {base}, question by question (main evaluation)", "",
                  f"EM (accuracy) minus {base}'s on the same questions [95% bootstrap interval, questions and each arm's seeds "
                  "resampled]; ratio of the means; clear: the interval excludes 0.", "",
                  "| arm | seeds | difference | ratio | clear |", "|---|---|---|---|---|"]
        for a in compared:
            v = a["vs_baseline"]
            ratio = f"{v['ratio']:.2f}x" if v["ratio"] is not None else "–"
            verdict = "above" if v["ci"][0] > 0 else "below" if v["ci"][1] < 0 else "no"
            lines.append(f"| {a['name']} | {len(a['seeds'])} | {v['diff']:+.3f} [{v['ci'][0]:+.3f}, {v['ci'][1]:+.3f}] | {ratio} | {verdict} |")
    lines += ["", "## Runs", "", "| arm | seed | eval | demos | EM / accuracy | format-valid | tool calls/q | length (tok) | rollouts | "
              "train s | wall s | stopped | records |", "|" + "---|" * 13]
    for a in arms:
        for run in a["runs"]:
            for key in ("main", "extra"):
                if key not in run:
                    continue
                mean, ci = run[key]["mean"], run[key]["ci"]
                vals = " | ".join(f"{mean[m]:.{DIGITS.get(m, 3)}f} [{ci[m][0]:.{DIGITS.get(m, 3)}f}, {ci[m][1]:.{DIGITS.get(m, 3)}f}]"
                                  for m in ("em", "format_valid", "tool_calls", "response_tokens"))
                spent = (f"{run['rollouts']} | {run['train_seconds']:.0f} | {run['wall_seconds']:.0f} | {run['stopped'] or '–'}"
                         if a["train"] else "– | – | – | –")
                lines.append(f"| {a['name']} | {run['seed']} | {key} | {run[key]['demos']} | {vals} | {spent} | {run[key]['records']} |")
    hop_keys = sorted({k for a in arms for key in ("main", "extra") if key in a for k in a[key].get("by_hops", {})
                       if not k.startswith("questions@")}, key=lambda k: (int(HOP_KEY.fullmatch(k).group(2)), k))
    if hop_keys:
        lines += ["", "## By hop count (mean over seeds ± std over seeds)", "",
                  "| arm | eval | demos | " + " | ".join(hop_keys) + " |", "|" + "---|" * (3 + len(hop_keys))]
        for a in arms:
            for key in ("main", "extra"):
                hops = a.get(key, {}).get("by_hops")
                if hops:
                    lines.append(f"| {a['name']} | {key} | {a[key]['demos']} | " + " | ".join(
                        f"{hops[k]['mean']:.3f}" + (f" ± {hops[k]['std']:.3f}" if len(a["seeds"]) > 1 else "")
                        if k in hops else "–" for k in hop_keys) + " |")
    plot = results.get("plot", "")
    lines += ["", "## Training curves", "",
              f"![training curves]({Path(plot).name})" if plot.endswith(".png") else plot, ""]
    return "\n".join(lines)
