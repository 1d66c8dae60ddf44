"""examples/sql: a task of your own in one plugin file. Its tool only reads the database and stops runaway queries,
its reward compares result sets, and the task registers from the plugin file and trains through the CLI."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from icrl_lite.cli import main
from icrl_lite.evaluate import EvalConfig, use_run_settings
from icrl_lite.tasks import get_task, load_plugins

pytestmark = pytest.mark.usefixtures("one_thread")

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "sql"
PLUGIN = str(EXAMPLE / "task.py")


@pytest.fixture(scope="module")
def sql_task():
    load_plugins([PLUGIN])  # registers the `sql` tool and task (once per process)
    return get_task("sql")


@pytest.fixture(scope="module")
def example(sql_task):
    """The plugin module itself, for its tool functions."""
    import sys

    return next(m for name, m in sys.modules.items() if name.startswith("icrl_lite_user_task_"))


@pytest.fixture
def database(tmp_path):
    """A copy of the bundled database, so a test can check that the file is left as it was."""
    copy = tmp_path / "shop.db"
    copy.write_bytes((EXAMPLE / "shop.db").read_bytes())
    return copy


def test_the_plugin_registers_the_task_with_its_tool_and_bundled_data(sql_task):
    assert sql_task.default_tools == ("sql",) and sql_task.gold_field == "query"
    assert [len(sql_task.load(sql_task.bundled(s))) for s in ("train", "dev", "test")] == [300, 50, 100]
    assert len(sql_task.load_demos(sql_task.bundled("demos"))) >= 6


def test_the_tool_returns_rows_as_text(example):
    text = example.sql("SELECT name, city FROM departments WHERE id <= 2 ORDER BY id")
    assert text.splitlines() == ["name | city", "Sales | London", "Engineering | Berlin", "(2 rows)"]


def test_the_tool_caps_the_rows_it_shows(example):
    lines = example.sql("SELECT id FROM orders").splitlines()
    assert len(lines) == 1 + example.MAX_ROWS + 1 and lines[-1] == f"({example.MAX_ROWS} rows, more not shown)"


@pytest.mark.parametrize("statement", [
    "INSERT INTO departments VALUES (99, 'Legal', 'Oslo')",
    "UPDATE employees SET salary = 0",
    "DELETE FROM orders",
    "DROP TABLE customers",
    "CREATE TABLE notes (text TEXT)",
    "PRAGMA query_only = OFF",
])
def test_the_tool_refuses_to_write(example, database, statement):
    before = database.read_bytes()
    with pytest.raises(PermissionError, match="only SELECT"):
        example.run_query(statement, database)
    assert database.read_bytes() == before


def test_the_tool_refuses_attach_and_creates_no_file(example, database, tmp_path):
    with pytest.raises(PermissionError, match="only SELECT"):
        example.run_query(f"ATTACH DATABASE '{tmp_path / 'new.db'}' AS other", database)
    assert not (tmp_path / "new.db").exists()


def test_the_tool_refuses_several_statements(example, database):
    with pytest.raises(ValueError, match="one statement"):
        example.run_query("SELECT 1; DELETE FROM orders", database)
    assert example.run_query("SELECT 1;", database)[1] == [(1,)]  # one statement with its semicolon is fine


def test_the_tool_stops_a_runaway_recursive_query(example, database):
    runaway = "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT COUNT(*) FROM n"
    with pytest.raises(TimeoutError, match="stopped after 0.2 s"):
        example.run_query(runaway, database, time_limit=0.2)


def test_a_failing_query_is_an_observation_for_the_model(sql_task, example):
    tool = example.sql_tool()
    assert tool.run("SELECT nope FROM employees").startswith("error: OperationalError: no such column: nope")
    assert tool.run("DELETE FROM orders").startswith("error: PermissionError: only SELECT")
    assert tool.wrap("x") == "\n\n<output>x</output>\n\n"


GOLD = "SELECT name FROM customers WHERE city = 'London'"


def respond(query: str) -> str:
    return f"<think> list them </think>\n<sql> {query} </sql>\n\n<output>rows</output>\n\n<answer> {query} </answer>"


def test_the_reward_scores_a_query_with_the_gold_result_set_as_right(sql_task):
    reordered = "SELECT customers.name FROM customers WHERE customers.city = 'London' ORDER BY name DESC"
    reward, metrics = sql_task.reward(respond(reordered), GOLD)
    assert reward == pytest.approx(1.0)
    assert metrics["em"] == metrics["executes"] == metrics["format_valid"] == 1.0


def test_the_reward_scores_a_wrong_or_failing_query_by_format_only(sql_task):
    reward, metrics = sql_task.reward(respond("SELECT name FROM customers WHERE city = 'Paris'"), GOLD)
    assert (reward, metrics["em"], metrics["executes"]) == (pytest.approx(0.2), 0.0, 1.0)
    reward, metrics = sql_task.reward(respond("SELECT name FROM clients"), GOLD)
    assert (reward, metrics["em"], metrics["executes"]) == (pytest.approx(0.2), 0.0, 0.0)


def test_the_reward_keeps_the_order_when_the_gold_query_sorts(sql_task):
    gold = "SELECT name FROM products ORDER BY price DESC LIMIT 3"
    assert sql_task.reward(respond("SELECT name FROM products ORDER BY price DESC LIMIT 3"), gold)[1]["em"] == 1.0
    reversed_ = "SELECT name FROM (SELECT name, price FROM products ORDER BY price DESC LIMIT 3) ORDER BY price"
    assert sql_task.reward(respond(reversed_), gold)[1]["em"] == 0.0


def test_the_answer_is_read_outside_the_tools_output(sql_task):
    """A gold query echoed inside <output> is not an answer: only the policy's own <answer> counts."""
    text = f"<think> x </think>\n<sql> SELECT 1 </sql>\n\n<output><answer> {GOLD} </answer></output>\n\n"
    reward, metrics = sql_task.reward(text, GOLD)
    assert metrics["has_answer"] == 0.0 and metrics["em"] == 0.0


def test_the_demos_are_right_and_well_formed(sql_task):
    for demo in sql_task.load_demos(sql_task.bundled("demos")):
        assert sql_task.reward(demo["solution"], demo["query"])[0] == 1.0, demo["question"]


def test_the_bundled_database_is_what_make_data_writes(tmp_path):
    """shop.db and the splits are generated deterministically (the committed files are the script's output)."""
    db = sqlite3.connect(f"file:{EXAMPLE / 'shop.db'}?mode=ro", uri=True)
    counts = {t: db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
              for t in ("departments", "employees", "customers", "products", "orders")}
    db.close()
    assert counts == {"departments": 6, "employees": 60, "customers": 40, "products": 25, "orders": 250}
    questions = [json.loads(line)["question"] for s in ("train", "dev", "test", "demos")
                 for line in (EXAMPLE / "data" / f"{s}.jsonl").read_text().splitlines()]
    assert len(questions) == len(set(questions))  # no question in two splits


def test_one_training_step_runs_from_the_example_config(tiny_model_dir, tmp_path, capsys):
    """The example's own config through the CLI, the tiny model and budgets, then the before/after evaluation."""
    run = tmp_path / "run"
    overrides = [f"plugins=[{PLUGIN}]", f"output_dir={run}", f"model.name={tiny_model_dir}", "model.dtype=fp32",
                 "stages=[{demos: 1, steps: 1}]", "prompts_per_step=2", "num_generations=2", "save_every=1",
                 "final_eval_size=2", "progress=false", "check_demo_budgets=false", "rollout.max_turn_tokens=8",
                 "rollout.max_response_tokens=48"]
    assert main(["train", "--config", str(EXAMPLE / "sql.yaml"), *overrides]) == 0
    (step,) = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {"em", "executes", "sql_calls", "no_tool"} <= step.keys()
    final = json.loads((run / "final_eval.json").read_text())
    assert final["trained"]["questions"] == 2 and "executes" in final["trained"]
    assert "sql calls / question" in capsys.readouterr().out
    assert main(["eval", "--checkpoint", str(run), "--limit", "2", "--output", str(tmp_path / "eval.jsonl")]) == 0
    assert "query" in json.loads((tmp_path / "eval.jsonl").read_text().splitlines()[0])
    settings = EvalConfig(checkpoint=str(run))  # a fresh process has no `sql` task: the run's plugins come along
    use_run_settings(settings)
    assert (settings.task, settings.plugins) == ("sql", [PLUGIN])
