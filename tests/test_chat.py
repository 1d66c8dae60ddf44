"""`icrl-lite chat` and `Agent`: a scripted tiny model calls the search tool, so the tool loop, the live events and
the terminal rendering can be checked; the terminal tests run the real command under a pseudo-terminal."""

from __future__ import annotations

import json
import os
import signal
import re
import subprocess
import sys
from pathlib import Path

import pytest
from scripted_head import Scripted

from icrl_lite.chat import Agent, ChatView, Event, events_of, merged, run_chat

pytestmark = pytest.mark.usefixtures("one_thread")

TURNS = ["<think> I should search. </think>\n<search> Tavoustead river </search>",
         "<think> It lies on the Vorbam River. </think>\n<answer> Vorbam River </answer>"]
DOCS = [{"id": "d1", "title": "Tavoustead", "text": "Tavoustead lies on the Vorbam River."},
        {"id": "d2", "title": "Skorvilow", "text": "Skorvilow was founded in 1600."}]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def script(agent: Agent, turns=TURNS) -> None:
    """Make the agent's model write `turns` (each new question starts the script again)."""
    ids = [i for text in turns for i in agent.tokenizer(text, add_special_tokens=False)["input_ids"]]
    head = Scripted(ids, len(agent.tokenizer), agent.tokenizer.eos_token_id)
    agent.model.get_output_embeddings = lambda: head
    real_ask = agent.ask

    def ask(*args, **kwargs):
        head.calls = 0
        return real_ask(*args, **kwargs)

    agent.ask = ask


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    return path


def base_keys(tiny_model_dir, corpus) -> list[str]:
    return [f"model.name={tiny_model_dir}", "model.dtype=fp32", f"corpus={corpus}"]


@pytest.fixture(scope="module")
def agent(tiny_model_dir, corpus) -> Agent:
    agent = Agent("base", overrides=base_keys(tiny_model_dir, corpus))
    script(agent)
    return agent


def test_ask_runs_the_tool_loop_and_returns_the_answer_with_its_tool_calls(agent):
    reply = agent.ask("On which river is Tavoustead?")
    assert reply.answer == "Vorbam River"
    assert [(c["tool"], c["query"]) for c in reply.tool_calls] == [("search", "Tavoustead river")]
    assert "Tavoustead lies on the Vorbam River." in reply.tool_calls[0]["observation"]
    assert reply.rollout.policy_text == "".join(TURNS)  # the observation is the tool's, not the policy's


def test_events_as_they_happen_are_the_finished_trajectorys_events(agent):
    live: list[Event] = []
    reply = agent.ask("On which river is Tavoustead?", live.append)
    assert len([e for e in live if e.kind == "text"]) > 2  # streamed token by token, not at the end
    assert merged(live) == reply.events
    assert [e.kind for e in reply.events] == ["text", "call", "observation", "text"]
    assert reply.events[1] == Event("call", "Tavoustead river", "search")
    assert reply.events[2].text == reply.tool_calls[0]["observation"]


def test_without_the_engines_hooks_every_event_is_still_reported_once_the_rollout_ends(agent, monkeypatch):
    from icrl_lite import chat

    monkeypatch.setattr(chat.LiveEngine, "_accept", chat.RolloutEngine._accept)
    monkeypatch.setattr(chat.LiveEngine, "_force", chat.RolloutEngine._force)
    seen: list[Event] = []
    reply = agent.ask("On which river is Tavoustead?", seen.append)
    assert seen == reply.events and [e.kind for e in seen] == ["text", "call", "observation", "text"]


def test_a_turn_without_an_action_shows_the_corrective_message(tiny_model_dir, corpus):
    agent = Agent("base", overrides=base_keys(tiny_model_dir, corpus))
    script(agent, ["<think> hmm </think>" + agent.tokenizer.eos_token, TURNS[1]])  # EOS without an action
    live: list[Event] = []
    reply = agent.ask("On which river is Tavoustead?", live.append)
    assert [e.kind for e in reply.events] == ["text", "message", "text"]
    assert "My previous action is invalid" in reply.events[1].text
    assert merged(live) == reply.events and reply.answer == "Vorbam River"


def test_events_of_a_rollout_whose_last_call_did_not_fit_report_the_call(agent, tokenizer):
    from icrl_lite.rollout import Rollout

    ids = tokenizer(TURNS[0], add_special_tokens=False)["input_ids"]
    rollout = Rollout(prompt_ids=[1], response_ids=ids, loss_mask=[1] * len(ids), truncated=True,
                      tool_calls=[{"tool": "search", "query": "Tavoustead river", "observation": "Doc 1"}])
    assert events_of(rollout, tokenizer, agent.tools) == [Event("text", TURNS[0]), Event("call", "Tavoustead river", "search")]


def test_memory_puts_earlier_exchanges_in_the_prompt_until_reset(tiny_model_dir, corpus):
    agent = Agent("base", memory=1, overrides=base_keys(tiny_model_dir, corpus))
    script(agent)
    agent.ask("On which river is Tavoustead?")
    prompt = agent.tokenizer.decode(agent.prompt("And when was Skorvilow founded?"))
    assert "On which river is Tavoustead?" in prompt and "Tavoustead lies on the Vorbam River." in prompt
    agent.reset()
    assert "Tavoustead" not in agent.tokenizer.decode(agent.prompt("And when was Skorvilow founded?"))


def test_without_memory_each_question_stands_alone(agent):
    agent.ask("On which river is Tavoustead?")
    assert "Tavoustead" not in agent.tokenizer.decode(agent.prompt("When was Skorvilow founded?"))


def test_a_checkpoint_chats_with_its_runs_task_budgets_and_corpus(tiny_model_dir, corpus, tmp_path, monkeypatch):
    from icrl_lite.policy import ModelConfig
    from icrl_lite.rollout import RolloutConfig
    from icrl_lite.trainer import TrainConfig, Trainer

    cfg = TrainConfig(output_dir=str(tmp_path / "run"), stages=[{"demos": 0, "steps": 1}], prompts_per_step=2,
                      num_generations=2, micro_batch_size=2, eval_every=0, progress=False, probe_demos=0,
                      corpus=str(corpus), model=ModelConfig(name=str(tiny_model_dir), dtype="fp32"),
                      rollout=RolloutConfig(max_turns=3, max_turn_tokens=40, max_response_tokens=200))
    trainer = Trainer(cfg)
    trainer.train()
    agent = Agent(str(tmp_path / "run"))
    assert agent.task.name == "qa" and agent.cfg.corpus == str(corpus)
    assert (agent.cfg.rollout.max_turns, agent.cfg.rollout.max_turn_tokens) == (3, 40)
    assert agent.engine.cfg.temperature == 0.0  # greedy, whatever the run sampled at
    assert "checkpoint-1" in agent.describe()
    # in a notebook: the trainer's own model, not a second copy loaded beside it
    import icrl_lite.evaluate

    monkeypatch.setattr(icrl_lite.evaluate, "load_for_inference", lambda *a: pytest.fail("loaded a second copy"))
    same = Agent(str(tmp_path / "run"), policy=(trainer.model, trainer.tokenizer))
    assert same.model is trainer.model and "checkpoint-1" in same.describe()
    assert same.ask("On which river is Tavoustead?").rollout.response_ids == agent.ask("On which river is Tavoustead?").rollout.response_ids


def test_fc_offers_the_schemas_of_the_implemented_functions(tiny_model_dir):
    here = Path(__file__).resolve().parents[1] / "examples" / "fc_steps" / "functions.py"
    agent = Agent("base", task="fc", overrides=[f"model.name={tiny_model_dir}", "model.dtype=fp32", f"functions={here}"])
    prompt = agent.tokenizer.decode(agent.prompt("Convert 3 miles to kilometers"))
    assert '"name": "convert_units"' in prompt and "<obs>" in prompt


def test_fc_without_schemas_or_functions_says_what_to_give(tiny_model_dir):
    with pytest.raises(ValueError, match="--schemas FILE"):
        Agent("base", task="fc", overrides=[f"model.name={tiny_model_dir}", "model.dtype=fp32"])


def test_the_view_draws_calls_and_clips_long_observations():
    from rich.console import Console

    console = Console(record=True, width=100, force_terminal=False)
    view = ChatView(console, observation_lines=2)
    for event in [Event("text", "<search> q </search>"), Event("call", "q", "search"),
                  Event("observation", "line 1\nline 2\nline 3\nline 4", "search")]:
        view.on_event(event)
    out = console.export_text()
    assert out == "<search> q </search>\n[search] q\n  | line 1\n  | line 2\n  | ... (27 characters in all)\n"


def test_the_loop_answers_each_line_and_leaves_on_quit(agent, capsys):
    from rich.console import Console

    lines = iter(["On which river is Tavoustead?", "", "/reset", "/quit", "never read"])
    assert run_chat(agent, ChatView(Console(force_terminal=False)), read=lambda prompt: next(lines)) == 0
    out = capsys.readouterr().out
    assert out.count("answer: Vorbam River") == 1 and "[search] Tavoustead river" in out
    assert next(lines) == "never read"


# ---- the command in a terminal ------------------------------------------------------------------------
DRIVER = """
import sys
sys.path.insert(0, {tests!r})
import torch
torch.set_num_threads(1)
from icrl_lite import chat
from icrl_lite.cli import main
from test_chat import script

real_init = chat.Agent.__init__

def init(self, *args, **kwargs):  # the real `icrl-lite chat`, with the tiny model made to call the search tool
    real_init(self, *args, **kwargs)
    script(self)

chat.Agent.__init__ = init
sys.exit(main(["chat", *sys.argv[1:]]))
"""


@pytest.fixture
def driver(tmp_path, tiny_model_dir, corpus):
    path = tmp_path / "driver.py"
    path.write_text(DRIVER.format(tests=str(Path(__file__).parent)))
    return [str(path), "--checkpoint", "base", *base_keys(tiny_model_dir, corpus)]


def spawn(driver):
    pexpect = pytest.importorskip("pexpect")
    # started with SIGINT ignored, as a background job of a non-interactive shell (CI under nohup) is: chat must
    # still take Ctrl-C
    child = pexpect.spawn(sys.executable, driver, encoding="utf-8", timeout=300, dimensions=(40, 120),
                          env={**os.environ, "OMP_NUM_THREADS": "1", "TERM": "xterm-256color"},
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    child.expect("you> ")
    return pexpect, child


def test_in_a_terminal_a_question_gets_its_tool_call_result_and_answer_and_quit_exits_0(driver):
    pexpect, child = spawn(driver)
    child.sendline("On which river is Tavoustead?")
    child.expect("you> ")
    out = ANSI.sub("", child.before)
    call, result, answer = (out.find(s) for s in ("[search] Tavoustead river", "| Doc 1(Title: Tavoustead)",
                                                  "answer: Vorbam River"))
    assert -1 < call < result < answer, out
    child.sendline("/quit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


@pytest.mark.parametrize("leave", ["eof", "ctrl-c"])
def test_in_a_terminal_ctrl_d_and_ctrl_c_exit_cleanly(driver, leave):
    pexpect, child = spawn(driver)
    if leave == "eof":
        child.sendeof()
        child.expect(pexpect.EOF)
    else:
        # A SIGINT that lands between the prompt's write and readline's select() is only seen at the next signal or
        # key (CPython's readline loop checks signals on EINTR): press Ctrl-C again until the process ends, as a
        # user would. The same session must still end with status 0 and no traceback.
        for _ in range(5):
            child.sendintr()
            if child.expect([pexpect.EOF, pexpect.TIMEOUT], timeout=30) == 0:
                break
        else:
            raise AssertionError("Ctrl-C at the prompt did not end the session: " + child.before[-500:])
    child.close()
    assert child.exitstatus == 0 and "Traceback" not in child.before


def test_piped_questions_get_a_plain_transcript(driver):
    done = subprocess.run([sys.executable, *driver], input="On which river is Tavoustead?\n", capture_output=True,
                          text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert not ANSI.search(done.stdout)
    assert "you> On which river is Tavoustead?\n" in done.stdout and "[search] Tavoustead river\n" in done.stdout
    assert "answer: Vorbam River" in done.stdout


def test_a_missing_checkpoint_is_an_error_not_a_session(tmp_path, capsys):
    from icrl_lite.cli import main

    assert main(["chat", "--checkpoint", str(tmp_path / "nope")]) == 2
    assert "nope" in capsys.readouterr().err


def test_events_of_show_the_forced_after_observation_text_after_the_result(agent, tokenizer):
    from icrl_lite.rollout import Rollout

    call = {"tool": "search", "query": "Tavoustead river", "observation": "Doc 1"}
    first = tokenizer(TURNS[0], add_special_tokens=False)["input_ids"]
    forced = tokenizer(agent.tools[0].wrap("Doc 1") + "<think>", add_special_tokens=False)["input_ids"]
    last = tokenizer(" found it </think><answer> x </answer>", add_special_tokens=False)["input_ids"]
    rollout = Rollout(prompt_ids=[1], response_ids=first + forced + last,
                      loss_mask=[1] * len(first) + [0] * len(forced) + [1] * len(last), tool_calls=[call])
    assert [e.kind for e in events_of(rollout, tokenizer, agent.tools, "<think>")] == [
        "text", "call", "observation", "text", "text"]
    assert events_of(rollout, tokenizer, agent.tools, "<think>")[3] == Event("text", "<think>")
    assert [e.kind for e in events_of(rollout, tokenizer, agent.tools)][1] == "message"  # without it: not a result
