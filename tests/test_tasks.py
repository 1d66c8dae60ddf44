"""Tasks, tool selection, plugins and stateful tools: what a config's `task` / `tools` / `plugins` build."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from icrl_lite.policy import ModelConfig, load_policy
from icrl_lite.rollout import RolloutConfig, RolloutEngine
from icrl_lite.tasks import TASKS, build_tools, get_task, load_plugins, register_task, setup_task
from icrl_lite.tools import PythonConfig, SearchConfig, Tool, available_tools, register_tool
from icrl_lite.trainer import TrainConfig, Trainer


def test_unknown_task_names_the_choices():
    with pytest.raises(ValueError, match="qa, math"):
        get_task("chess")


def test_the_bundled_tasks_are_registered_in_order_and_a_taken_name_is_refused():
    assert list(TASKS)[:3] == ["qa", "math", "fc"]
    with pytest.raises(ValueError, match="'math' is already registered"):
        register_task(replace(get_task("qa"), name="math"))


def test_a_plugin_file_registers_a_task_selectable_by_name(tmp_path):
    plugin = tmp_path / "my_task.py"
    plugin.write_text(
        "from dataclasses import replace\n"
        "from icrl_lite.tasks import get_task, register_task\n"
        "register_task(replace(get_task('qa'), name='qa_again_test', instruction='Q: {question}\\n'))\n"
    )
    cfg = TrainConfig(task="qa_again_test", plugins=[str(plugin)])
    cfg.validate()  # the plugin is loaded before the task is looked up
    task, (search,), instruction = setup_task(cfg)
    assert (task.name, search.name, instruction) == ("qa_again_test", "search", "Q: {question}\n")


def test_builtin_tools_follow_their_config_sections(tmp_path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text(json.dumps({"id": "1", "title": "Velm", "text": "The Velm river."}) + "\n")
    search, python = build_tools(["search", "python"], SearchConfig(top_k=1), PythonConfig(timeout=2), corpus)
    assert (search.name, search.result_open) == ("search", "<information>")
    assert "Doc 1(Title: Velm)" in search.run("Velm")
    assert (python.open_tag, python.result_open) == ("<python>", "<output>")
    assert python.run("print(6 * 7)").strip() == "42"


def test_unknown_search_backend_is_rejected_with_the_choices():
    with pytest.raises(ValueError, match="bm25, dense, hybrid, web"):
        SearchConfig(backend="bing").validate()


def test_a_plugin_file_registers_a_tool_selectable_by_name(tmp_path):
    plugin = tmp_path / "my_tools.py"
    plugin.write_text(
        "from icrl_lite.tools import Tool, register_tool\n"
        "register_tool('shout_test', lambda: Tool('shout_test', '<shout>', '</shout>', lambda q: q.upper()))\n"
    )
    load_plugins([str(plugin)])
    assert "shout_test" in available_tools()
    (tool,) = build_tools(["shout_test"], SearchConfig(), PythonConfig(), None)
    assert tool.run("hi") == "HI"


def test_a_missing_plugin_file_is_named():
    with pytest.raises(FileNotFoundError, match="nope.py"):
        load_plugins(["nope.py"])


def test_unknown_tool_name_lists_the_registered_tools():
    with pytest.raises(ValueError, match="available tools: .*python.*search"):
        build_tools(["telepathy"], SearchConfig(), PythonConfig(), None)


def test_a_tool_that_raises_gives_an_error_observation():
    def broken(_):
        raise KeyError("no such key")

    assert Tool("t", "<t>", "</t>", broken).run("x") == "error: KeyError: 'no such key'"


class CountingSession:
    """A stateful tool's session that answers with its own call count; records every session made."""

    made: list = []

    def __init__(self):
        self.calls, self.closed = 0, False
        CountingSession.made.append(self)

    def run(self, text: str) -> str:
        self.calls += 1
        return f"call {self.calls}"

    def close(self) -> None:
        self.closed = True


def test_each_rollout_gets_its_own_session_and_all_are_closed(tiny_model_dir):
    model, tok = load_policy(ModelConfig(name=str(tiny_model_dir), dtype="fp32"))
    cfg = RolloutConfig(temperature=1.0, max_turns=4, max_turn_tokens=6, max_response_tokens=90)
    CountingSession.made = []
    tool = Tool("count", "", "e", lambda _: "stateless", session=CountingSession)  # every sampled "e" is a call
    rollouts = RolloutEngine(model, tok, [tool], cfg).generate([tok("Question: a river?")["input_ids"]], num_samples=4)
    calls = [len(r.tool_calls) for r in rollouts]
    assert sum(calls) > 0
    assert len(CountingSession.made) == sum(c > 0 for c in calls)  # one session per rollout that called the tool
    assert all(s.closed for s in CountingSession.made)
    for r in rollouts:  # the counter restarts per rollout: sessions are never shared
        assert [c["observation"] for c in r.tool_calls] == [f"call {i}" for i in range(1, len(r.tool_calls) + 1)]


HOSTILE = [
    "while True: pass",
    "().__class__.__base__.__subclasses__()[0]; import os",
    "[c for c in ().__class__.__base__.__subclasses__() if c.__name__ == '_wrap_close'][0]"
    ".__init__.__globals__['system']('touch {canary}')",
    "open('{canary}', 'w').write('pwned')",
    "x = bytearray(10 ** 10)",
    "def f(): return f()\nf()",
    "print('y' * 10 ** 6)",
]


def test_training_keeps_running_while_the_policy_writes_hostile_code(make_tiny_config, tmp_path):
    """A policy whose every tool call runs hostile code in the real sandbox still trains; the host is untouched."""
    canary = tmp_path / "canary"
    from icrl_lite.tools.python import PythonSandbox, SandboxLimits

    sandbox = PythonSandbox(SandboxLimits(timeout=1.0, memory_mb=128))
    snippets = iter(HOSTILE * 100)

    class HostileSession:
        def __init__(self):
            self.session = sandbox.session()

        def run(self, _text):
            return self.session.run(next(snippets).format(canary=canary))

        def close(self):
            self.session.close()

    if "hostile_test" not in available_tools():
        register_tool("hostile_test", lambda: Tool("hostile_test", "", "e", lambda _: "", session=HostileSession))
    cfg = make_tiny_config(tools=["hostile_test"])
    history = Trainer(cfg).train()
    assert len(history) == 2
    assert sum(h["hostile_test_calls"] for h in history) > 0
    assert not canary.exists()
    sandbox.close()


@pytest.fixture
def make_tiny_config(tiny_model_dir, tmp_path):
    demos = tmp_path / "demos.jsonl"
    demos.write_text(json.dumps({"question": "Where?", "answers": ["Velm"], "solution": "<answer> Velm </answer>"}) + "\n")

    def make(**overrides) -> TrainConfig:
        cfg = TrainConfig(output_dir=str(tmp_path / "run"), demo_pool=str(demos), stages=[{"demos": 0, "steps": 2}],
                          prompts_per_step=2, num_generations=2, micro_batch_size=4, eval_every=0, save_every=0,
                          progress=False, model=ModelConfig(name=str(tiny_model_dir), dtype="fp32"), check_demo_budgets=False,
                          rollout=RolloutConfig(max_turns=3, max_turn_tokens=6, max_response_tokens=60, temperature=1.0))
        for key, value in overrides.items():
            setattr(cfg, key, value)
        return cfg

    return make


def test_function_calling_task_trains_on_the_bundled_set_with_toolrl_rewards(make_tiny_config):
    cfg = make_tiny_config(task="fc", demo_pool="", stages=[{"demos": 1, "steps": 1}])
    history = Trainer(cfg).train()
    (metrics,) = history
    assert {"format", "correctness", "exact", "em", "format_valid"} <= metrics.keys()
    assert -3.0 <= metrics["reward"] <= 4.0


def test_math_task_runs_python_in_the_sandbox_and_scores_with_math_verify(make_tiny_config):
    cfg = make_tiny_config(task="math", demo_pool="", stages=[{"demos": 1, "steps": 1}])
    (metrics,) = Trainer(cfg).train()
    assert {"correct", "python_calls", "no_tool"} <= metrics.keys()
