"""Chat with a trained agent: questions answered one at a time by the rollout loop of training, tools included.

`Agent` loads a checkpoint (or the base model) with what evaluation would use: the run's task, tools, prompt and
rollout budgets, zero-shot or with `demos`, greedy unless a temperature is given. `Agent.ask(question)` returns a
`Reply`: the answer, the tool calls and the whole trajectory. While it runs it reports each piece to `on_event`
as it happens: the policy's text as it is sampled, each tool call when it is made, each observation when it
comes back, and ICRL's corrective message after a turn without a valid action. With `memory` > 0 the last
exchanges go into the prompt as earlier chat turns (the agents are trained on single questions, so it is off by
default). `chat` is the terminal loop (`icrl-lite chat`), drawn with rich.

The live events come from two internal hooks of the rollout engine (`_accept` sees each sampled token, `_force`
each forced chunk). Should those hooks change, `ask` still reports every event, all at once when the rollout ends:
the events are also read back from the finished rollout (`events_of`), and a test checks that both agree.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import torch

from .config import load_config
from .curriculum import choose_demos
from .evaluate import EvalConfig, use_run_settings
from .prompts import build_messages, render_prompt
from .rewards import extract_answer
from .rollout import Rollout, RolloutEngine
from .tasks import setup_task
from .tools import Tool

# what a run's config gives a chat that leaves it open (the run's own tools and prompt)
INHERITED = ("instruction", "tools", "plugins", "corpus", "demo_pool", "demo_layout", "search", "python")


@dataclass(frozen=True)
class Event:
    """One piece of a trajectory: `text` (sampled by the policy), `call` (a tool call: its query), `observation`
    (the tool's result) or `message` (the corrective message forced after a turn without a valid action)."""

    kind: str
    text: str
    tool: str = ""


@dataclass
class Reply:
    question: str
    answer: str | None  # the final answer (qa, math: <answer>; fc: <response>, or the calls); None: none given
    tool_calls: list[dict]  # {"tool", "query", "observation"}, in order
    events: list[Event]  # the trajectory piece by piece
    rollout: Rollout = field(repr=False)
    seconds: float = 0.0

    @property
    def text(self) -> str:
        """The whole trajectory as the model saw it (tool results included)."""
        return self.rollout.text


class Agent:
    """A checkpoint (or `base`) that answers questions with its tools; e.g. `Agent("runs/icrl-qa").ask("...")`.

    `overrides`: more evaluation keys as key=value (`icrl-lite config eval`), e.g. "corpus=my.jsonl",
    "rollout.max_turns=4", "search.backend=web". For task=fc, `schemas` is a JSON (or JSONL) file of the function
    schemas the agent may call; by default, those of the implemented functions (`functions=`) in the bundled
    catalog. `policy`: a (model, tokenizer) already in memory, e.g. `(trainer.model, trainer.tokenizer)` in a
    notebook, used instead of loading the checkpoint's adapter into a second copy of the model (on a 16 GB GPU there
    is no room for two).
    """

    def __init__(self, checkpoint: str = "base", task: str = "", demos: int = 0, temperature: float = 0.0,
                 memory: int = 0, schemas: str = "", overrides: Sequence[str] = (), policy: tuple | None = None):
        from .evaluate import load_for_inference

        cfg = load_config(EvalConfig, None, list(overrides))
        cfg.checkpoint, cfg.task, cfg.demos, cfg.temperature = str(checkpoint), task, demos, temperature
        if memory < 0:
            raise ValueError(f"memory={memory}: the number of earlier exchanges kept in the prompt, >= 0")
        cfg.validate()
        trained = use_run_settings(cfg)
        if trained is not None and cfg.task == trained.task:  # the run's own tools and prompt, unless given
            for name in INHERITED:
                if getattr(cfg, name) == getattr(EvalConfig(), name):
                    setattr(cfg, name, getattr(trained, name))
        self.cfg, self.memory = cfg, memory
        self.task, self.tools, self.instruction = setup_task(cfg)
        self.schemas = function_schemas(schemas, cfg.functions) if self.task.name == "fc" else []
        pool = self.task.load_demos(cfg.demo_pool or self.task.bundled("demos")) if demos else []
        self.demos = [pool[j] for j in choose_demos(len(pool), demos, cfg.seed, -1, 0)]  # one set for the session
        if policy is None:
            self.model, self.tokenizer, self.source = load_for_inference(cfg.checkpoint, cfg.model)
        else:
            (self.model, self.tokenizer), self.source = policy, None if trained is None else Path(trained.checkpoint)
        self.engine = LiveEngine(self.model, self.tokenizer, self.tools, replace(cfg.rollout, temperature=temperature),
                                 final_stops=self.task.final_stops, invalid_message=self.task.invalid_message)
        self.history: list[dict] = []  # earlier exchanges, as demos: question (+ functions) and solution
        self.asked = 0

    def prompt(self, question: str) -> list[int]:
        """Token ids of the prompt for `question`: instruction, demos, remembered exchanges, the question."""
        record = {"question": question, "functions": self.schemas}
        earlier = self.history[-self.memory:] if self.memory else []
        return render_prompt(self.tokenizer, build_messages(record, self.demos + earlier, self.cfg.demo_layout,
                                                            self.instruction))

    def ask(self, question: str, on_event: Callable[[Event], None] | None = None) -> Reply:
        """Answer `question` with the tool loop; `on_event` gets each piece of the trajectory as it happens."""
        started = time.time()
        live = LiveTranscript(self.tokenizer, on_event)
        generator = torch.Generator(device=self.model.device).manual_seed(self.cfg.seed + self.asked)
        self.engine.listener = live
        try:
            (rollout,) = self.engine.generate([self.prompt(question)], 1, generator)
        finally:
            self.engine.listener = None
        self.asked += 1
        events = events_of(rollout, self.tokenizer, self.tools, self.engine.cfg.after_observation)
        if on_event is not None and not live.reported:  # the engine's hooks said nothing: report it all now
            for event in events:
                on_event(event)
        if self.memory:
            self.history.append({"question": question, "functions": self.schemas, "solution": rollout.text})
        return Reply(question, final_answer(rollout.policy_text, self.task.name), rollout.tool_calls, events, rollout,
                     time.time() - started)

    def reset(self) -> None:
        """Forget the earlier exchanges."""
        self.history.clear()

    def describe(self) -> str:
        """One line: what is loaded and how it decodes."""
        where = str(self.source) if self.source is not None else f"base model {self.cfg.model.name}"
        tools = ", ".join(t.name for t in self.tools) or "none (answers in one turn)"
        decoding = "greedy" if self.cfg.temperature == 0 else f"temperature {self.cfg.temperature:g}"
        memory = f", remembers {self.memory} exchanges" if self.memory else ""
        turns = self.cfg.rollout.max_turns
        return (f"{where}: task {self.task.name}, tools: {tools}, {len(self.demos)} demos, {decoding}, at most "
                f"{turns} tool call{'' if turns == 1 else 's'}{memory}")


# ---- events -------------------------------------------------------------------------------------------
class LiveEngine(RolloutEngine):
    """The rollout engine, telling `listener` each token it samples and each chunk it forces (one row at a time)."""

    listener: LiveTranscript | None = None

    def _accept(self, row, token, *args, **kwargs):
        call = super()._accept(row, token, *args, **kwargs)
        if self.listener is not None:
            self.listener.sampled(token, call)
        return call

    def _force(self, row, ids, *args, **kwargs):
        before = len(row.rollout.response_ids)
        super()._force(row, ids, *args, **kwargs)
        if self.listener is not None and len(row.rollout.response_ids) > before:  # not cut by the budget
            self.listener.forced(ids, row.rollout.tool_calls)


class LiveTranscript:
    """Turns the engine's tokens into events as they come: text deltas (decoded so that a character split over
    tokens is sent whole), a call when a turn ends in one, then its observation or the corrective message."""

    def __init__(self, tokenizer, on_event: Callable[[Event], None] | None):
        self.tokenizer, self.on_event = tokenizer, on_event
        self.run: list[int] = []  # the sampled tokens since the last forced chunk
        self.sent = 0  # characters of the run's text already reported
        self.calls = 0  # tool calls already reported with their observation
        self.reported = False

    def emit(self, event: Event) -> None:
        self.reported = True
        if self.on_event is not None:
            self.on_event(event)

    def sampled(self, token: int, call) -> None:
        self.run.append(token)
        text = self.tokenizer.decode(self.run, skip_special_tokens=True)
        if len(text) > self.sent and not text.endswith("\ufffd"):  # a multi-byte character not yet complete
            self.emit(Event("text", text[self.sent:]))
            self.sent = len(text)
        if isinstance(call, tuple) and len(call) == 3:  # (row, tool, query): the turn ended in a tool call
            self.emit(Event("call", call[2], call[1].name))

    def forced(self, ids: list[int], tool_calls: list[dict]) -> None:
        self.run, self.sent = [], 0
        if len(tool_calls) > self.calls:
            self.calls = len(tool_calls)
            self.emit(Event("observation", tool_calls[-1]["observation"], tool_calls[-1]["tool"]))
        else:
            self.emit(Event("message", self.tokenizer.decode(ids, skip_special_tokens=True)))


def events_of(rollout: Rollout, tokenizer, tools: Sequence[Tool], after_observation: str = "") -> list[Event]:
    """The events of a finished rollout, read from its tokens: each sampled run is text; a forced run is the
    observation of the next tool call when it holds exactly that call's wrapped result (and the engine's
    `after_observation` text, shown as text), else a corrective message."""
    by_name = {t.name: t for t in tools}
    events: list[Event] = []
    pending = list(rollout.tool_calls)
    start = 0
    bits = rollout.loss_mask
    while start < len(bits):
        end = start
        while end < len(bits) and bits[end] == bits[start]:
            end += 1
        ids = rollout.response_ids[start:end]
        text = tokenizer.decode(ids, skip_special_tokens=True)
        if bits[start]:
            if text:
                events.append(Event("text", text))
        elif pending and ids == tokenizer(by_name[pending[0]["tool"]].wrap(pending[0]["observation"]) + after_observation,
                                          add_special_tokens=False)["input_ids"]:
            call = pending.pop(0)
            events += [Event("call", call["query"], call["tool"]), Event("observation", call["observation"], call["tool"])]
            events += [Event("text", after_observation)] if after_observation else []
        else:
            events.append(Event("message", text))
        start = end
    events += [Event("call", c["query"], c["tool"]) for c in pending]  # made, but its result did not fit the budget
    return events


def merged(events: Sequence[Event]) -> list[Event]:
    """Adjacent text events joined (live text comes token by token, a finished rollout's in runs)."""
    out: list[Event] = []
    for event in events:
        if out and event.kind == "text" and out[-1].kind == "text":
            out[-1] = Event("text", out[-1].text + event.text)
        else:
            out.append(event)
    return out


def final_answer(policy_text: str, task: str) -> str | None:
    """The answer a reply ends with: <answer> (qa, math), or for fc the <response>, else the calls as JSON lines."""
    if task != "fc":
        return extract_answer(policy_text)
    from .function_calls import parse_response

    parsed = parse_response(policy_text)
    if parsed.response is not None:
        return parsed.response
    return "\n".join(json.dumps(c, ensure_ascii=False) for c in parsed.calls) if parsed.calls else None


def function_schemas(source: str, functions: str) -> list[dict]:
    """The JSON schemas an fc agent is offered: from `source` (a JSON list or JSONL file), else the bundled
    catalog's schemas of the functions implemented in `functions`."""
    if source:
        from .data import read_text

        text = read_text(source).strip()
        try:
            schemas = json.loads(text) if text.startswith("[") else [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as e:
            raise ValueError(f"schemas={source}: not a JSON list or JSONL of function schemas ({e})") from None
        if not schemas or not all(isinstance(s, dict) and isinstance(s.get("name"), str) for s in schemas):
            raise ValueError(f"schemas={source}: expected function schemas, objects with a name, description and parameters")
        return schemas
    if not functions:
        raise ValueError("task=fc: give the functions the agent may call: --schemas FILE (JSON schemas, as in "
                         "data/fc), or functions=impl.py (implementations of bundled functions, whose schemas are used)")
    from .data import bundled_fc_path, load_fc
    from .tools.functions import load_implementations

    catalog = {f["name"]: f for split in ("train", "dev", "test") for record in load_fc(bundled_fc_path(split))
               for f in record["functions"]}
    names = list(load_implementations(functions))
    missing = [n for n in names if n not in catalog]
    if missing:
        raise ValueError(f"functions={functions}: no schema for {', '.join(missing)} in the bundled catalog; give "
                         f"them with --schemas FILE")
    return [catalog[n] for n in names]


# ---- the terminal -------------------------------------------------------------------------------------
HELP = "commands: /reset forgets earlier exchanges, /trace prints the last trajectory as the model saw it, /quit (or Ctrl-D, Ctrl-C) leaves"


class ChatView:
    """Draws events and replies on a rich console (plain text when the output is not a terminal)."""

    def __init__(self, console=None, observation_lines: int = 6, observation_chars: int = 600):
        from rich.console import Console

        self.console = console or Console(highlight=False)
        self.observation_lines, self.observation_chars = observation_lines, observation_chars
        self.at_line_start = True

    def write(self, text: str, style: str = "") -> None:
        self.console.print(text, style=style, end="", soft_wrap=True, markup=False, highlight=False)
        if text:
            self.at_line_start = text.endswith("\n")

    def line(self, text: str, style: str = "") -> None:
        if not self.at_line_start:
            self.write("\n")
        self.write(text + "\n", style)

    def on_event(self, event: Event) -> None:
        if event.kind == "text":
            self.write(event.text, "dim")
        elif event.kind == "call":
            self.line(f"[{event.tool}] {event.text}", "bold cyan")
        elif event.kind == "observation":
            self.line(self.clip(event.text), "green")
        else:
            self.line("(no valid action: " + " ".join(event.text.split()) + ")", "yellow")

    def clip(self, observation: str) -> str:
        """The observation indented under its call, cut to a few lines."""
        text = observation.strip()
        lines = text[: self.observation_chars].splitlines() or [""]
        more = len(text.splitlines()) - min(len(lines), self.observation_lines)
        lines = lines[: self.observation_lines]
        if more > 0 or len(text) > self.observation_chars:
            lines.append(f"... ({len(text)} characters in all)")
        return "\n".join("  | " + line for line in lines)

    def reply(self, reply: Reply) -> None:
        counts = {name: sum(c["tool"] == name for c in reply.tool_calls) for name in (c["tool"] for c in reply.tool_calls)}
        calls = ", ".join(f"{n} {name} call{'s' if n > 1 else ''}" for name, n in counts.items()) or "no tool calls"
        if reply.answer is not None:
            self.line(f"answer: {reply.answer}", "bold green")
        else:
            why = "the response budget ran out" if reply.rollout.truncated else "the model gave none"
            self.line(f"no answer ({why})", "bold red")
        self.line(f"({calls}, {reply.rollout.sampled_tokens} tokens, {reply.seconds:.1f} s)", "dim")


def quiet_libraries() -> None:
    """Keep the libraries' load-time chatter (progress bars, deprecation warnings) out of a terminal session."""
    import logging
    import warnings

    from transformers.utils import logging as transformers_logging

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)


def run_chat(agent: Agent, view: ChatView | None = None, read: Callable[[str], str] = input) -> int:
    """The terminal loop: read a question, answer it with its tool calls drawn as they happen; returns 0 on
    /quit, end of input (Ctrl-D) or Ctrl-C at the prompt. Ctrl-C while an answer is generated stops that answer.
    Questions piped in (stdin not a terminal) are echoed after the prompt, so the output reads as a transcript."""
    echo = not sys.stdin.isatty()
    try:
        import readline  # noqa: F401 - line editing and history for input()
    except ImportError:  # pragma: no cover - Windows
        pass
    view = view or ChatView()
    view.line(agent.describe(), "dim")
    view.line("Ask a question. " + HELP, "dim")
    last: Reply | None = None
    while True:
        try:
            question = read("you> ").strip()
        except (EOFError, KeyboardInterrupt):
            view.write("\n")
            return 0
        view.at_line_start = True  # the terminal's echo (or ours) ended the prompt's line
        if echo:
            view.write(question + "\n")
        if question in ("/quit", "/exit", "/q"):
            return 0
        if question == "/reset":
            agent.reset()
            view.line("(earlier exchanges forgotten)", "dim")
            continue
        if question == "/trace":
            view.line(last.text if last else "(nothing asked yet)", "")
            continue
        if question.startswith("/"):
            view.line(HELP, "dim")
            continue
        if not question:
            continue
        try:
            last = agent.ask(question, view.on_event)
        except KeyboardInterrupt:
            view.line("(stopped)", "yellow")
            continue
        view.reply(last)

