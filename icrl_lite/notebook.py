"""What the Colab notebook's cells call (notebooks/icrl_lite_colab.ipynb), so that no logic lives in a cell.

`train_config` layers the run's settings (the hardware's choice from `hardware.recommend`, a packaged config, the
smoke budgets, the parameters cell's model and overrides); `build_index` builds the search index before training
and shows a search; `train_live` trains while a plot of metrics.jsonl redraws below the cell; `ask` shows an
agent's answer with its tool calls as they happen; `push_to_hub` uploads an exported adapter. Training, evaluation,
chat and export themselves are the library's (Trainer, Trainer.final_evaluation, chat.Agent, export.export), as
in the CLI.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path

from .config import flatten, load_config, read_config_file, resolve_config_path
from .hardware import Choice
from .trainer import TrainConfig

# A CPU smoke run of the whole notebook, about a minute of training on 2 cores (CI executes the notebook with it):
# two steps of 2 questions x 2 rollouts with budgets too small for the bundled demos, evaluated on 2 questions.
SMOKE = ("stages=[{demos: 1, steps: 1}, {demos: 0, steps: 1}]", "prompts_per_step=2", "num_generations=2",
         "eval_every=0", "probe_demos=0", "final_eval_size=2", "check_demo_budgets=false", "rollout.max_turns=1",
         "rollout.max_turn_tokens=48", "rollout.max_response_tokens=160")


def train_config(choice: Choice | None = None, run_dir: str = "runs/colab", config: str = "", smoke: bool = False,
                 model: str = "", overrides: Sequence[str] = ()) -> TrainConfig:
    """The notebook's TrainConfig, each layer over the one before: the hardware `choice` (only the keys that
    `config` leaves unset: a config such as gpu-16gb keeps its own model), `config` (a YAML file or packaged name;
    empty = the defaults, or `smoke` when `smoke`), the `SMOKE` budgets, `model` (model.name, when given),
    `overrides` (key=value), and `run_dir` as output_dir."""
    source = config or ("smoke" if smoke else None)
    chosen = set(flatten(read_config_file(resolve_config_path(source)))) if source else set()
    hardware = [arg for key, arg in zip(choice.overrides, choice.args()) if key not in chosen] if choice else []
    layers = [*(SMOKE if smoke else ()), *([f"model.name={model}"] if model else ()), *overrides, f"output_dir={run_dir}"]
    return load_config(TrainConfig, source, hardware + layers)


def describe(cfg: TrainConfig) -> str:
    """A few lines: the model, the curriculum, the batch and the final evaluation of a run."""
    stages = " -> ".join(f"{s['demos']} demos x {s['steps']} step{'s' if s['steps'] != 1 else ''}" for s in cfg.stages)
    m, turns = cfg.model, cfg.rollout.max_turns
    final = (f"{cfg.final_eval_size or 'all'} questions of {cfg.final_eval}" if cfg.final_eval else "none")
    return "\n".join([
        f"run dir    {cfg.output_dir}",
        f"model      {m.name}, dtype {m.dtype}{', 4-bit base' if m.load_in_4bit else ''}, LoRA rank {m.lora_rank}",
        f"task       {cfg.task}, curriculum {stages}",
        f"each step  {cfg.prompts_per_step} questions x {cfg.num_generations} rollouts, at most "
        f"{turns} tool call{'s' if turns != 1 else ''} and {cfg.rollout.max_response_tokens} response tokens each",
        f"final eval {final} (untrained vs trained, zero-shot, greedy)",
    ])


def build_index(cfg: TrainConfig) -> str:
    """Build the run's tools (the search index is built once and cached next to the corpus, so training loads it
    in a moment) and say what they hold, with one search for the first training question."""
    from .data import load_corpus
    from .tasks import bundled_corpus, setup_task
    from .tools.search import CorpusStore, store_path, uses_disk_store

    started = time.time()
    task, tools, _ = setup_task(cfg)
    seconds = time.time() - started
    search = next((t for t in tools if t.name == "search"), None)
    if search is None:
        return f"task {task.name}: tools {', '.join(t.name for t in tools) or 'none'}; no search index to build"
    if cfg.search.backend == "web":
        return "search.backend=web: DuckDuckGo, no local index"
    if cfg.search.backend == "remote":
        return f"search.backend=remote: the retrieval server at {cfg.search.remote_url}, no local index"
    corpus = cfg.corpus or bundled_corpus(task)
    question = task.load(cfg.train_data, split=cfg.train_split)[0] if cfg.train_data else task.load(task.bundled("train"))[0]
    first = search.fn(question["question"]).splitlines()[0]
    on_disk = cfg.search.backend == "bm25" and uses_disk_store(corpus, cfg.search.store)
    count = len(CorpusStore.open(store_path(corpus))) if on_disk else len(load_corpus(corpus))
    return (f"{cfg.search.backend} index of {count} documents ({corpus}{', on disk' if on_disk else ''}), "
            f"ready in {seconds:.1f} s\n"
            f"{search.open_tag}{question['question']}{search.close_tag} -> {first[:160]}")


def train_live(trainer, every: float = 3.0) -> list[dict]:
    """`trainer.train()`, with the run's curves (`plots.plot_run` of its metrics.jsonl) drawn below the cell and
    redrawn whenever a step is logged (polled every `every` seconds by a thread; the training itself runs in the
    caller's thread, so interrupting the kernel stops it as Ctrl-C does: the finished step is saved)."""
    from IPython.display import Image, Markdown, display

    from .plots import plot_run

    handle = display(Markdown("*the curves appear after the first step*"), display_id=True)
    metrics = Path(trainer.out) / "metrics.jsonl"
    stop = threading.Event()
    drawn = [-1]  # lines of metrics.jsonl last drawn

    def redraw() -> None:
        lines = metrics.read_text().count("\n") if metrics.exists() else 0
        if lines == drawn[0] or lines == 0:
            return
        try:
            path = plot_run(trainer.out)
        except ValueError:  # a line being written: next time
            return
        handle.update(Image(filename=str(path)))
        drawn[0] = lines

    def poll() -> None:
        while not stop.wait(every):
            redraw()

    thread = threading.Thread(target=poll, name="icrl-lite-live-plot", daemon=True)
    thread.start()
    try:
        return trainer.train()
    finally:
        stop.set()
        thread.join()
        redraw()


def ask(agent, question: str, width: int = 110):
    """`agent.ask(question)`, drawn as it happens, as `icrl-lite chat` draws it: the text the policy samples,
    each tool call and its result, then the answer. Returns the `chat.Reply`."""
    from rich.console import Console

    from .chat import ChatView

    view = ChatView(Console(force_jupyter=False, force_terminal=True, highlight=False, width=width))
    view.line(f"you> {question}", "bold")
    reply = agent.ask(question, view.on_event)
    view.reply(reply)
    return reply


def push_to_hub(folder: str | Path, repo_id: str, private: bool = True) -> str:
    """Upload an exported adapter (or merged model) folder to the Hugging Face Hub as `repo_id`; returns its URL.
    Needs a write token (`huggingface_hub.login()`, or HF_TOKEN, e.g. from Colab's secrets)."""
    from huggingface_hub import HfApi

    if not repo_id or "/" not in repo_id:
        raise ValueError(f"repo_id={repo_id!r}: give the Hub repository as owner/name, e.g. your-name/smollm2-icrl")
    if not Path(folder, "README.md").is_file():
        raise FileNotFoundError(f"{folder} holds no export: run the export cell (icrl_lite.export.export) first")
    api = HfApi()
    api.create_repo(repo_id, private=private, exist_ok=True)
    api.upload_folder(folder_path=str(folder), repo_id=repo_id, commit_message="icrl-lite export")
    return f"https://huggingface.co/{repo_id}"
