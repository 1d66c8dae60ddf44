"""The seven-dataset QA table of Search-R1 and ICRL: `icrl-lite eval qa7`.

Evaluates a checkpoint (or the base model, with or without demos) on NQ, TriviaQA, PopQA, HotpotQA, 2WikiMultiHopQA,
MuSiQue and Bamboogle in the FlashRAG layout (`id`, `question`, `golden_answers`), each on the split the papers
report (test where FlashRAG has one with answers, dev for HotpotQA, 2Wiki and MuSiQue), the first `limit` questions
(ICRL evaluates up to 500 per dataset), with the same rollout engine, search tool and exact match as `icrl-lite eval`.
Prints one table in the papers' layout (EM per dataset, the average over the seven and over the five ICRL reports,
searches per question), writes it as qa7.md and qa7.json, and puts the published numbers beneath for reference.

Each finished dataset is written at once (its records and summary), so a killed evaluation resumes at the next
dataset; a summary made under other settings is refused rather than mixed into the table.

Where this departs from the papers: the retriever is whatever `search` is configured to be (BM25 over a corpus file
by default, E5 behind Search-R1's server with `search.backend=remote`); the papers use E5 over Wikipedia-2018, so
only a run with the same retriever and corpus is comparable with the published rows.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .checkpoints import resolve_checkpoint
from .data import load_qa
from .evaluate import EvalConfig, intervals, load_for_inference, run_eval, use_run_settings
from .policy import ModelConfig
from .rollout import RolloutConfig
from .study import write_json
from .tasks import setup_task
from .tools import PythonConfig, SearchConfig


@dataclass(frozen=True)
class Benchmark:
    name: str
    """FlashRAG's config (and folder) name."""
    title: str
    """The papers' column heading."""
    split: str
    """The split the papers report."""


QA7 = (Benchmark("nq", "NQ", "test"), Benchmark("triviaqa", "TriviaQA", "test"), Benchmark("popqa", "PopQA", "test"),
       Benchmark("hotpotqa", "HotpotQA", "dev"), Benchmark("2wikimultihopqa", "2Wiki", "dev"),
       Benchmark("musique", "MuSiQue", "dev"), Benchmark("bamboogle", "Bamboogle", "test"))
BENCHMARKS = {b.name: b for b in QA7}
ICRL_FIVE = ("triviaqa", "hotpotqa", "2wikimultihopqa", "musique", "bamboogle")
"""The datasets ICRL's table averages (it leaves out NQ, its training set, and PopQA)."""
FLASHRAG = "RUC-NLPIR/FlashRAG_datasets"

PUBLISHED = (  # (row, EM per dataset, source), copied from the papers' tables; averages are recomputed below
    ("Search-R1, Qwen2.5-3B-Instruct", {"nq": .341, "triviaqa": .545, "popqa": .378, "hotpotqa": .324,
                                        "2wikimultihopqa": .319, "musique": .103, "bamboogle": .264},
     "Search-R1 (Jin et al., arXiv 2503.09516), GRPO, E5 over Wikipedia-2018, top-3"),
    ("ICRL, Qwen2.5-3B-Instruct", {"triviaqa": .726, "hotpotqa": .354, "2wikimultihopqa": .392, "musique": .200,
                                   "bamboogle": .336},
     "ICRL (Ye et al., arXiv 2603.08068), main table: five datasets, average 40.16"),
    ("ICRL, Qwen2.5-7B-Instruct", {"triviaqa": .754, "hotpotqa": .426, "2wikimultihopqa": .536, "musique": .260,
                                   "bamboogle": .480},
     "ICRL (Ye et al., arXiv 2603.08068), main table: five datasets, average 49.12"),
)


@dataclass
class Qa7Config:
    checkpoint: str = "base"
    """A checkpoint or run directory written by `icrl-lite train`, or `base` for the untrained model."""
    datasets: list[str] = field(default_factory=lambda: [b.name for b in QA7])
    """Which of the seven to run: nq, triviaqa, popqa, hotpotqa, 2wikimultihopqa, musique, bamboogle."""
    source: str = FLASHRAG
    """Where the questions are: a hub dataset with one config per dataset in FlashRAG's layout (default: FlashRAG's own), or a local directory holding <dataset>/<split>.jsonl (e.g. a download of that repository)."""
    corpus: str = ""
    """Retrieval corpus JSONL ({id, title, text} or FlashRAG's {id, contents}; the papers use Wikipedia-2018, wiki18_100w); required unless search.backend is remote or web."""
    limit: int = 500
    """First N questions of each dataset (0 = all; ICRL evaluates up to 500)."""
    demos: int = 0
    """In-context demonstrations in each prompt (0 = zero-shot)."""
    demo_pool: str = ""
    """Demonstration pool JSONL; empty = the bundled pool."""
    instruction: str = ""
    """Prompt template with {question}; empty = the QA task's (ICRL's) instruction."""
    temperature: float = 0.0
    """Decoding temperature (0 = greedy; ICRL evaluates at 0.1)."""
    seed: int = 0
    """Seed for sampling and demo choice."""
    batch_size: int = 16
    """Questions decoded together."""
    output_dir: str = ""
    """Where the records, summaries and table go; empty = <checkpoint>/qa7-<demos>shot, or ./qa7-base-<demos>shot."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """The base model (ignored for checkpoints, which record their own)."""
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    """Rollout budgets; when none is set, a checkpoint is evaluated with the budgets it was trained with."""
    search: SearchConfig = field(default_factory=SearchConfig)
    """The search tool (the papers: E5 over Wikipedia-2018, top-3; search.backend=remote reaches Search-R1's retrieval server)."""
    python: PythonConfig = field(default_factory=PythonConfig)
    """The Python tool's limits (used only if tools include it)."""

    def validate(self) -> None:
        unknown = [name for name in self.datasets if name not in BENCHMARKS]
        if unknown or not self.datasets:
            raise ValueError(f"qa7: unknown dataset(s) {', '.join(unknown) or '(none given)'}; choose from "
                             f"{', '.join(BENCHMARKS)}")
        if not self.corpus and self.search.backend not in ("remote", "web"):
            raise ValueError("qa7 searches a corpus: give --corpus FILE.jsonl (the papers use Wikipedia-2018, "
                             "wiki18_100w.jsonl from FlashRAG or Search-R1), or search.backend=remote to use "
                             "Search-R1's retrieval server")
        self.eval_config().validate()

    def eval_config(self) -> EvalConfig:
        """The `icrl-lite eval` settings each dataset is run with."""
        return EvalConfig(checkpoint=self.checkpoint, task="qa", corpus=self.corpus, instruction=self.instruction,
                          demos=self.demos, demo_pool=self.demo_pool, limit=self.limit, batch_size=self.batch_size,
                          temperature=self.temperature, seed=self.seed, model=self.model, rollout=self.rollout,
                          search=self.search, python=self.python)


def run_qa7(cfg: Qa7Config, progress: bool = True) -> dict:
    """Evaluate every dataset of `cfg` not already done in its output directory; returns the report (also written
    as qa7.json and qa7.md there)."""
    cfg.validate()
    ev = cfg.eval_config()
    use_run_settings(ev)  # a checkpoint's own budgets, plugins
    if ev.task != "qa":
        raise ValueError(f"qa7 evaluates question answering with search; {cfg.checkpoint} was trained on task {ev.task}")
    out = output_dir(cfg)
    settings = fingerprint(cfg, ev)
    done = {name: previous(out, name, settings) for name in cfg.datasets}
    todo = [name for name in cfg.datasets if done[name] is None]
    if todo:
        questions = {name: load_benchmark(cfg.source, BENCHMARKS[name], cfg.limit) for name in todo}  # before the model
        task, tools, instruction = setup_task(ev)
        pool = task.load_demos(ev.demo_pool or task.bundled("demos")) if ev.demos else []
        model, tokenizer, _ = load_for_inference(ev.checkpoint, ev.model)
        out.mkdir(parents=True, exist_ok=True)
        for name in todo:
            if progress:
                print(f"[qa7] {name} ({BENCHMARKS[name].split}, {len(questions[name])} questions)")
            summary, records = run_eval(model, tokenizer, questions[name], task, tools, instruction, ev, pool, progress)
            summary["intervals"] = intervals(summary, records)
            summary["settings"] = settings
            write_records(out / f"{name}.jsonl", records)
            write_json(out / f"{name}.json", summary)  # last: its presence marks the dataset done
            done[name] = summary
    report = {"settings": settings, "results": done, "published": published_rows()}
    write_json(out / "qa7.json", report)
    (out / "qa7.md").write_text(format_table(report) + "\n")
    report["output_dir"] = str(out)
    return report


def output_dir(cfg: Qa7Config) -> Path:
    if cfg.output_dir:
        return Path(cfg.output_dir)
    if cfg.checkpoint == "base":
        return Path(f"qa7-base-{cfg.demos}shot")
    return resolve_checkpoint(cfg.checkpoint) / f"qa7-{cfg.demos}shot"


def fingerprint(cfg: Qa7Config, ev: EvalConfig) -> dict:
    """What a dataset's numbers depend on; a saved summary is reused only under the same settings."""
    checkpoint = "base" if cfg.checkpoint == "base" else str(resolve_checkpoint(cfg.checkpoint).resolve())
    return {"checkpoint": checkpoint, "model": ev.model.name if checkpoint == "base" else "(the checkpoint's)",
            "source": cfg.source, "corpus": cfg.corpus, "limit": cfg.limit, "demos": cfg.demos,
            "demo_pool": cfg.demo_pool, "instruction": cfg.instruction, "temperature": cfg.temperature,
            "seed": cfg.seed, "rollout": asdict(ev.rollout), "search": asdict(cfg.search)}


def previous(out: Path, name: str, settings: dict) -> dict | None:
    """The saved summary of dataset `name`, if it was made under `settings`; None if there is none."""
    path = out / f"{name}.json"
    if not path.is_file():
        return None
    summary = json.loads(path.read_text())
    saved = summary.get("settings", {})
    changed = sorted(k for k in settings.keys() | saved.keys() if settings.get(k) != saved.get(k))
    if changed:
        raise ValueError(f"{out} holds {name} results made with other settings ({', '.join(changed)} differ); "
                         f"give another --output-dir, or delete {path} to rerun it")
    return summary


def load_benchmark(source: str, benchmark: Benchmark, limit: int) -> list[dict]:
    """The questions of `benchmark`'s split from a local FlashRAG-layout directory or the hub dataset `source`."""
    local = Path(source)
    if local.is_dir():
        path = local / benchmark.name / f"{benchmark.split}.jsonl"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file; qa7 reads <source>/<dataset>/<split>.jsonl in FlashRAG's "
                                    f"layout (download {FLASHRAG}'s {benchmark.name}/{benchmark.split}.jsonl there, "
                                    f"or leave out {benchmark.name} with --datasets)")
        return load_qa(path, limit=limit or None)
    return load_qa(f"{source}:{benchmark.name}", split=benchmark.split, limit=limit or None)


def write_records(path: Path, records: list[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    tmp.replace(path)


def average(scores: dict[str, float], names) -> float | None:
    """The mean over `names`, or None unless every one of them has a score."""
    values = [scores.get(name) for name in names]
    return None if any(v is None for v in values) else sum(values) / len(values)


def published_rows() -> list[dict]:
    return [{"row": row, "em": em, "source": source} for row, em, source in PUBLISHED]


def format_table(report: dict) -> str:
    """The papers' layout as Markdown: this run's EM per dataset and averages, its searches per question and
    question counts, then the published rows."""
    results = {name: summary for name, summary in report["results"].items() if summary is not None}
    settings = report["settings"]
    head = ["Method", *(b.title for b in QA7), "Avg (7)", "Avg (ICRL's 5)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def row(label: str, values: dict[str, float], digits: int = 3, averages: bool = True) -> str:
        cells = [f"{values[b.name]:.{digits}f}" if b.name in values else "-" for b in QA7]
        if averages:
            cells += [f"{a:.{digits}f}" if a is not None else "-"
                      for a in (average(values, BENCHMARKS), average(values, ICRL_FIVE))]
        else:
            cells += ["", ""]
        return f"| {label} | " + " | ".join(cells) + " |"

    shots = f"{settings['demos']} demos" if settings["demos"] else "zero-shot"
    lines.append(row(f"**this run** ({Path(settings['checkpoint']).name}, {shots})",
                     {name: s["em"] for name, s in results.items()}))
    lines.append(row("searches / question", {name: s["searches"] for name, s in results.items() if "searches" in s}, 2))
    lines.append(row("questions", {name: s["questions"] for name, s in results.items()}, 0, averages=False))
    for published in report["published"]:
        lines.append(row(published["row"], published["em"]))
    retriever = f"search.backend={settings['search']['backend']}, top_k={settings['search']['top_k']}" + (
        f", corpus {settings['corpus']}" if settings["corpus"] else "")
    notes = [f"Exact match; {retriever}; temperature {settings['temperature']}; first {settings['limit'] or 'all'} "
             f"questions of each split ({', '.join(f'{b.title} {b.split}' for b in QA7)}) from {settings['source']}.",
             "Published rows: " + "; ".join(f"{p['row']}: {p['source']}" for p in report["published"]) + ". Their "
             "averages are recomputed from the per-dataset numbers; comparable only under the same retriever and corpus."]
    return "\n".join(lines) + "\n\n" + "\n\n".join(notes)
