"""Text-to-SQL on a small shop database: a task of your own in one file, loaded with `plugins=`.

    icrl-lite train --config examples/sql/sql.yaml          # the YAML says plugins: [examples/sql/task.py], task: sql

The policy answers a question about the bundled SQLite database (shop.db, made by make_data.py) with a query. It may
run queries with `<sql> SELECT ... </sql>` (the rows come back between `<output>` and `</output>`) and gives its final
query inside `<answer>...</answer>`. Reward = 0.8 * (the answer's result set equals the gold query's) + 0.2 * format
(the ICRL penalties, with "no <sql> call at all" as the tool penalty).

The tool only reads: the database is opened read-only (`mode=ro` URI) with `PRAGMA query_only`, an authorizer
allows nothing but SELECT, reads, functions and recursive CTEs (no ATTACH, PRAGMA or writes), one statement per
call, a time limit (a progress handler) and limits on the rows and characters returned. Failures come back to the
model as observations ("error: TimeoutError: query stopped after 2 s").
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections import Counter
from functools import lru_cache
from pathlib import Path

from icrl_lite.data import read_jsonl
from icrl_lite.rewards import extract_answer, math_format
from icrl_lite.tasks import Task, register_task
from icrl_lite.tools import Tool, register_tool

HERE = Path(__file__).resolve().parent
DATABASE = HERE / "shop.db"
SPLITS = ("train", "dev", "test", "demos")

TIME_LIMIT_S = 2.0  # per query
MAX_ROWS = 20  # rows shown to the model
MAX_CHARS = 1500  # characters shown to the model
MAX_RESULT_ROWS = 10_000  # rows compared by the reward

# The schema as the prompt shows it (kept in step with make_data.py).
SCHEMA = (
    "departments(id, name, city)\n"
    "employees(id, name, department_id -> departments.id, title, salary, hire_year)\n"
    "customers(id, name, city, country)\n"
    "products(id, name, category, price)\n"
    "orders(id, customer_id -> customers.id, product_id -> products.id, quantity, order_date 'YYYY-MM-DD')"
)

INSTRUCTION = (
    "Answer the question with one SQLite query on this shop database (tables and columns):\n" + SCHEMA + "\n"
    "First reason inside <think> and </think>. To look at the data, run a query with <sql> query </sql>; its rows "
    "come back between <output> and </output>. Once your query answers the question, give that query inside "
    "<answer> and </answer> with no explanation, for example <answer> SELECT COUNT(*) FROM customers </answer>.\n"
    "Question: {question}\n"
)

INVALID_MESSAGE = (
    "\nMy previous action is invalid. If I want to run a query, I should put it between <sql> and </sql>. If I want "
    "to give the final answer, I should put the query between <answer> and </answer>. Let me try again.\n"
)

# ---- the tool: one read-only query ---------------------------------------------------------------------------------
_ALLOWED = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}
_NOT_ALLOWED_FUNCTIONS = {"load_extension"}


def _authorize(action, arg1, arg2, database, trigger):
    if action == sqlite3.SQLITE_FUNCTION and str(arg2).lower() in _NOT_ALLOWED_FUNCTIONS:
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK if action in _ALLOWED else sqlite3.SQLITE_DENY


def run_query(query: str, database: str | Path = DATABASE, max_rows: int = MAX_ROWS,
              time_limit: float = TIME_LIMIT_S) -> tuple[list[str], list[tuple], bool]:
    """(column names, up to `max_rows` rows, whether more rows were left) of one read-only SELECT.

    Raises ValueError for an empty query or several statements, PermissionError for anything but reading,
    TimeoutError past `time_limit` seconds, sqlite3.Error for a bad query.
    """
    query = query.strip().removeprefix("```sql").removeprefix("```").removesuffix("```").strip()
    if not query:
        raise ValueError("empty query")
    if not sqlite3.complete_statement(query.rstrip(";") + ";"):
        raise ValueError("incomplete statement (an open quote or parenthesis?)")
    connection = sqlite3.connect(f"file:{Path(database).resolve()}?mode=ro", uri=True)
    try:
        connection.execute("PRAGMA query_only = ON")
        connection.set_authorizer(_authorize)
        connection.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 1_000_000)  # no huge strings or blobs
        deadline = time.monotonic() + time_limit
        connection.set_progress_handler(lambda: int(time.monotonic() > deadline), 1000)
        try:
            cursor = connection.execute(query)
            rows = cursor.fetchmany(max_rows + 1)
        except sqlite3.Error as e:
            if "one statement at a time" in str(e):
                raise ValueError("one statement per query: remove everything after the first ';'") from None
            if "interrupted" in str(e):
                raise TimeoutError(f"query stopped after {time_limit:g} s") from None
            if "not authorized" in str(e) or "readonly" in str(e):
                raise PermissionError(f"only SELECT queries can run here ({e})") from None
            raise
        columns = [d[0] for d in cursor.description or ()]
        return columns, rows[:max_rows], len(rows) > max_rows
    finally:
        connection.close()


def _cell(value) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:.2f}".rstrip("0").rstrip(".")
    return str(value)


def sql(query: str) -> str:
    """The tool: the rows of `query` as text, a header line of column names, then one line per row."""
    columns, rows, more = run_query(query)
    lines = [" | ".join(columns)] + [" | ".join(_cell(v) for v in row) for row in rows]
    count = f"({len(rows)} row{'s' if len(rows) != 1 else ''}{', more not shown' if more else ''})"
    text = "\n".join(lines)
    if len(text) > MAX_CHARS:
        text = text[:MAX_CHARS] + " ..."
    return f"{text}\n{count}"


def sql_tool() -> Tool:
    return Tool("sql", "<sql>", "</sql>", sql, result_open="<output>", result_close="</output>")


# ---- the reward: compare result sets -------------------------------------------------------------------------------
_ORDER_BY = re.compile(r"\border\s+by\b", re.IGNORECASE)


def _normalise(row: tuple) -> tuple:
    return tuple(round(v, 4) if isinstance(v, float) else v for v in row)


@lru_cache(maxsize=4096)
def result_set(query: str) -> tuple[tuple, ...]:
    """All rows of `query` (up to MAX_RESULT_ROWS), floats rounded to 4 decimals; cached by query text."""
    _, rows, more = run_query(query, max_rows=MAX_RESULT_ROWS)
    if more:
        raise ValueError(f"more than {MAX_RESULT_ROWS} rows")
    return tuple(_normalise(row) for row in rows)


def same_result(predicted: str, gold: str) -> bool | None:
    """Whether `predicted` returns the rows `gold` returns: in the same order when the gold query has an ORDER BY,
    as multisets otherwise (column names do not matter, column order does). None when `predicted` fails to run."""
    expected = result_set(gold)
    try:
        rows = result_set(predicted)
    except (ValueError, PermissionError, TimeoutError, sqlite3.Error):
        return None
    return rows == expected if _ORDER_BY.search(gold) else Counter(rows) == Counter(expected)


def reward(response: str, query: str, alpha: float = 0.8, **_) -> tuple[float, dict[str, float]]:
    """alpha * (the last <answer> query returns the gold `query`'s rows) + (1 - alpha) * format.

    Metrics: reward, em (= correct), format, format_valid, has_answer, executes (the answer ran) and the format flags.
    """
    answer = extract_answer(response)  # the last <answer>, <output> blocks removed
    fmt, flags = math_format(response, tool_tag="sql")
    matched = same_result(answer, query) if answer else None
    correct = float(bool(matched))
    metrics = {"reward": alpha * correct + (1 - alpha) * fmt, "em": correct, "format": fmt,
               "format_valid": float(fmt == 1.0), "has_answer": float(answer is not None),
               "executes": float(matched is not None)}
    metrics.update({k: v for k, v in flags.items() if k != "format"})
    return metrics["reward"], metrics


# ---- data ----------------------------------------------------------------------------------------------------------
def load(source: str | Path, split: str = "train", limit: int | None = None) -> list[dict]:
    """Records {"id", "question", "query", ...} from a JSONL file (demos also have a `solution`)."""
    records = read_jsonl(source)[:limit]
    for i, record in enumerate(records):
        if "question" not in record or "query" not in record:
            raise ValueError(f"{source} record {i}: needs 'question' and 'query' (the gold SQL); found {sorted(record)}")
        record.setdefault("id", str(i))
    return records


def bundled(name: str) -> Path:
    if name not in SPLITS:
        raise ValueError(f"the sql task bundles {', '.join(SPLITS)} (no {name!r})")
    return HERE / "data" / f"{name}.jsonl"


register_tool("sql", sql_tool)
register_task(Task(name="sql", instruction=INSTRUCTION, invalid_message=INVALID_MESSAGE, default_tools=("sql",),
                   reward=reward, load=load, bundled=bundled, gold_field="query", metrics=("executes",)))
