"""Load questions, retrieval corpora and worked demonstrations into plain lists of dicts.

Questions come from a local JSONL / JSON file, a dataset saved with `datasets.save_to_disk`, or a Hugging Face
hub name ("name" or "name:config", e.g. "RUC-NLPIR/FlashRAG_datasets:nq"). FlashRAG records (`golden_answers`)
and Search-R1 corpora (`contents` = '"Title"\\ntext') are normalised to one shape:
questions {"id", "question", "answers": list[str], ...}, documents {"id", "title", "text"}.
Math problems (`load_math`) come in our format, GSM8K's (`answer` ending "#### 42") or MATH's (`problem`,
`solution` with a final \\boxed{...}, or `answer`) and are normalised to the same question shape.
Function-calling examples (`load_fc`) come in our format, xLAM's, ToolACE's or ToolRL's (its rlla_4k mix) and are normalised to
{"id", "question", "functions": [JSON schema], "ground_truth": [{"name", "arguments"}]}.
The bundled closed-world task lives in data/qa/ (made by scripts/make_qa_task.py), the bundled math task in
data/math/ (made by scripts/make_math_task.py), the bundled function-calling task in data/fc/ (made by
scripts/make_fc_task.py).
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

# A source checkout (or editable install) reads the repo's data/; a wheel carries it as icrl_lite/bundled/.
_REPO_DATA = Path(__file__).resolve().parent.parent / "data"
DATA_DIR: Path = _REPO_DATA if (_REPO_DATA / "qa").is_dir() else Path(__file__).resolve().parent / "bundled"
BUNDLED_QA = ("corpus", "train", "dev", "test", "demos")
BUNDLED_MATH = ("train", "dev", "test", "demos")
BUNDLED_FC = ("train", "dev", "test", "demos")
_BOM = b"\xef\xbb\xbf"  # the UTF-8 byte-order mark some editors put first


def bundled_qa_path(name: str) -> Path:
    """Path of a file of the bundled QA task: "corpus", "train", "dev", "test" or "demos"."""
    if name not in BUNDLED_QA:
        raise ValueError(f"unknown bundled QA file {name!r}; choose one of: {', '.join(BUNDLED_QA)}")
    return DATA_DIR / "qa" / f"{name}.jsonl"


def bundled_math_path(name: str) -> Path:
    """Path of a file of the bundled math task: "train", "dev", "test" or "demos"."""
    if name not in BUNDLED_MATH:
        raise ValueError(f"unknown bundled math file {name!r}; choose one of: {', '.join(BUNDLED_MATH)}")
    return DATA_DIR / "math" / f"{name}.jsonl"


def bundled_fc_path(name: str) -> Path:
    """Path of a file of the bundled function-calling task: "train", "dev", "test" or "demos"."""
    if name not in BUNDLED_FC:
        raise ValueError(f"unknown bundled function-calling file {name!r}; choose one of: {', '.join(BUNDLED_FC)}")
    return DATA_DIR / "fc" / f"{name}.jsonl"


def read_jsonl(path: str | Path) -> list[dict]:
    """One JSON object per line; blank lines are skipped."""
    return [record for _, record in _numbered_jsonl(path)]


def read_text(path: str | Path) -> str:
    """A UTF-8 text file; a leading byte-order mark is dropped, a byte that is not UTF-8 is an error naming the
    file, line and column."""
    data = Path(path).read_bytes().removeprefix(_BOM)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line_start = data.rfind(b"\n", 0, err.start) + 1
        raise _not_utf8(path, data.count(b"\n", 0, err.start) + 1, data[line_start:], err.start - line_start) from None


def _decode(line: bytes, path: str | Path, line_no: int) -> str:
    """One line of a UTF-8 text file (a byte-order mark opening line 1 is dropped)."""
    if line_no == 1:
        line = line.removeprefix(_BOM)
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as err:
        raise _not_utf8(path, line_no, line, err.start) from None


def _not_utf8(path: str | Path, line_no: int, line: bytes, at: int) -> ValueError:
    column = len(line[:at].decode("utf-8")) + 1  # the bytes before the first bad one decode
    return ValueError(f"{path}:{line_no}: byte 0x{line[at]:02x} at column {column} is not UTF-8; save the file as UTF-8")


def _numbered_jsonl(path: str | Path) -> list[tuple[int, dict]]:
    """(line number, record) for each non-blank line of a JSON Lines file."""
    path = _existing_file(path)
    records = []
    with path.open("rb") as f:
        for line_no, raw in enumerate(f, 1):
            line = _decode(raw, path, line_no)
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{line_no}: invalid JSON: {err.msg} (column {err.colno})") from None
            if not isinstance(record, dict):
                raise ValueError(f"{path}:{line_no}: expected a JSON object, got {type(record).__name__}")
            records.append((line_no, record))
    if not records:
        raise ValueError(f"{path} is empty; expected one JSON object per line")
    return records


def load_qa(source: str | Path, split: str = "train", limit: int | None = None) -> list[dict]:
    """Questions as {"id", "question", "answers": list[str], ...other fields kept}.

    `source` is a .jsonl / .json file, a directory written by `datasets.save_to_disk`, or a Hugging Face
    dataset name, optionally "name:config"; `split` is only used for the last two. Several sources joined by
    "+" are concatenated, each question's id prefixed with its source's config (or name), e.g. Search-R1's
    training mix `SEARCH_R1_TRAIN`; `limit` then caps the whole.
    """
    if is_mix(source):
        return mixed(source, load_qa, split, limit)
    path = Path(source)
    if path.is_dir():
        records = _saved_dataset(path, split, limit)
    elif path.exists() or path.suffix in (".json", ".jsonl"):
        records = _read_records(path)[:limit]
    else:
        records = _hub_dataset(str(source), split, limit)
    return [_question(record, i, str(source)) for i, record in enumerate(records)]


SEARCH_R1_TRAIN = "RUC-NLPIR/FlashRAG_datasets:nq+RUC-NLPIR/FlashRAG_datasets:hotpotqa"
"""Search-R1's training questions: NQ's and HotpotQA's train splits in FlashRAG's layout (dataset=... with split=train)."""


def load_corpus(path: str | Path) -> list[dict]:
    """Documents as {"id", "title", "text"}; FlashRAG / Search-R1 {"id", "contents"} records are split."""
    return [document(record, i, path) for i, record in enumerate(_read_records(Path(path)))]


def load_demos(path: str | Path, load: Callable[[str | Path], list[dict]] | None = None) -> list[dict]:
    """Worked demonstrations: records read by `load` (default `load_qa`: question, answers) plus a `solution`,
    the full trajectory the prompt shows."""
    demos = (load or load_qa)(path)
    for i, demo in enumerate(demos):
        if "solution" not in demo:
            raise ValueError(f"{path} record {i}: a demo needs 'question', 'answers' and 'solution' (the worked "
                             f"trajectory; function-calling demos have 'functions' and 'ground_truth' instead of "
                             f"'answers'); found fields {sorted(demo)}")
    return demos


def load_math(source: str | Path, split: str = "train", limit: int | None = None) -> list[dict]:
    """Math problems as {"id", "question", "answers": list[str], ...other fields kept}.

    Accepted record formats, detected per record:
      - ours (data/math/): `question` and `answers` (a list, canonical answer first);
      - GSM8K: `question` and `answer` ending in "#### 42" -> ["42"] (thousands commas removed);
      - MATH / competition_math / MATH-500: `problem` and `answer` when present, else the content of the last
        \\boxed{...} (or \\fbox{...}) in `solution`, nested braces included:
        "\\boxed{\\frac{1}{2}}" -> ["\\frac{1}{2}"].
    `source` is a .jsonl / .json file, a `save_to_disk` directory or a hub name ("name" or "name:config",
    e.g. "openai/gsm8k:main", "HuggingFaceH4/MATH-500" with split="test"); `split` is used for the last two.
    The consumed fields (`problem`, `answer`, `solution`) are dropped; others (`level`, `type`, ...) are kept.
    """
    if is_mix(source):
        return mixed(source, load_math, split, limit)
    return [_math_problem(record, i, where) for i, (where, record) in enumerate(_locate(source, split, limit))]


def load_fc(source: str | Path, split: str = "train", limit: int | None = None) -> list[dict]:
    """Function-calling examples as {"id", "question", "functions", "ground_truth", ...other fields kept}.

    `functions` is the list of JSON schemas offered; `ground_truth` the calls that serve the question,
    [{"name": ..., "arguments": {...}}] ([] when no function should be called). Record formats, detected per record:
      - ours (data/fc/): `question`, `functions`, `ground_truth` (calls may say `parameters` for `arguments`);
      - xLAM (Salesforce/xlam-function-calling-60k): `query`, `tools` and `answers`, each a list or a JSON string
        of one; xLAM's flat parameter specs ({"city": {"type": "str, optional", ...}}) become schemas
        {"type": "dict", "properties", "required"};
      - ToolACE: `conversations` [{"from": "user" | "assistant" | "tool", "value"}] (a list or a JSON string) with
        the tools as the JSON list inside the `system` text (or in a `tools` field). The first user turn is the
        question; the assistant turn after it is the calls, written `[get_weather(city="Paris"), ...]`; an
        assistant turn in plain text means no call;
      - ToolRL's training set (rlla_4k: 2k ToolACE, 1k Hammer, 1k xLAM examples, filtered by its authors; the raw
        JSON's `instruction` + `input` + `output`, or the processed parquet's `prompt` + `reward_model`): the tools
        are the "N. Name: ... Parameters: {...}" list of the system text, the question is the dialogue record, the
        gold calls are the <tool_call> lines of the output ([] for a <response> alone).
    `source` is a .jsonl / .json / .parquet file, a `save_to_disk` directory or a hub name ("name" or
    "name:config"); `split` is used for the last two; several joined by "+" are mixed. The consumed fields are
    dropped; others (`kind`, a demo's `solution`) are kept.
    """
    if is_mix(source):
        return mixed(source, load_fc, split, limit)
    return [_fc_example(record, i, where) for i, (where, record) in enumerate(_locate(source, split, limit))]


def is_mix(source: str | Path) -> bool:
    """Whether `source` names several sources joined by "+" (and is not itself a file with "+" in its name)."""
    return "+" in str(source) and not Path(source).exists()


def mixed(source: str | Path, load: Callable[..., list[dict]], split: str, limit: int | None) -> list[dict]:
    """The records of every "+"-joined part of `source`, in order, each id prefixed with its part's config (or
    name, or file stem) so that ids stay distinct; `limit` caps the whole."""
    records = []
    for part in (p.strip() for p in str(source).split("+")):
        prefix = Path(part).stem if Path(part).exists() else (part.rpartition(":")[2] or part)
        records += [dict(r, id=f"{prefix}/{r['id']}") for r in load(part, split, limit)]
    return records[:limit]


# ---------------------------------------------------------------------------------------------- helpers
def _locate(source: str | Path, split: str, limit: int | None) -> list[tuple[str, dict]]:
    """(where, record) pairs from a JSON/JSONL file, a `save_to_disk` directory or a hub dataset name."""
    path = Path(source)
    if path.is_dir():
        return [(f"{source} [{split}] row {i}", r) for i, r in enumerate(_saved_dataset(path, split, limit))]
    if path.exists() or path.suffix in (".json", ".jsonl"):
        return _located_records(path)[:limit]
    return [(f"{source} [{split}] row {i}", r) for i, r in enumerate(_hub_dataset(str(source), split, limit))]


def _existing_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; check the path (the bundled task is in {DATA_DIR / 'qa'})")
    return path


def _read_records(path: Path) -> list[dict]:
    """A .json file holding a list of objects, else JSON Lines."""
    return [record for _, record in _located_records(path)]


def _located_records(path: Path) -> list[tuple[str, dict]]:
    """(where, record) pairs; `where` is "file:line" for JSON Lines, "file record i" for a JSON list, "file row i"
    for Parquet."""
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as parquet
        except ImportError:
            raise ImportError(f"reading {path} needs pyarrow: pip install pyarrow (or pip install datasets)") from None
        rows = parquet.read_table(_existing_file(path)).to_pylist()
        return [(f"{path} row {i}", row) for i, row in enumerate(rows)]
    if path.suffix != ".json":
        return [(f"{path}:{line_no}", record) for line_no, record in _numbered_jsonl(path)]
    try:
        data = json.loads(read_text(_existing_file(path)))
    except json.JSONDecodeError:
        # JSON Lines under a .json name; errors then name the line
        return [(f"{path}:{line_no}", record) for line_no, record in _numbered_jsonl(path)]
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise ValueError(f"{path}: expected a JSON list of objects (or one object per line)")
    if not data:
        raise ValueError(f"{path} is an empty list; expected question records")
    return [(f"{path} record {i}", record) for i, record in enumerate(data)]


def _question(record: dict, index: int, origin: str) -> dict:
    answers = record.get("answers", record.get("golden_answers"))
    if "question" not in record or answers is None:
        raise ValueError(f"{origin} record {index} (id {record.get('id', index)!r}): needs 'question' and "
                         f"'answers' (or FlashRAG 'golden_answers'); found fields {sorted(record)}")
    answers = [str(a) for a in ([answers] if isinstance(answers, str) else answers)]
    if not answers:
        raise ValueError(f"{origin} record {index} (id {record.get('id', index)!r}): 'answers' is empty")
    rest = {k: v for k, v in record.items() if k not in ("id", "question", "answers", "golden_answers")}
    return {"id": _id(record, index), "question": str(record["question"]), "answers": answers, **rest}


def _math_problem(record: dict, index: int, where: str) -> dict:
    """One math record in any accepted format as {"id", "question", "answers", ...}; `where` names it in errors."""
    if "question" in record and "answers" in record:
        return _question(record, index, where)
    if "question" in record and "answer" in record:
        solution = str(record["answer"])
        final = solution.rpartition("####")[2].strip().replace(",", "")
        if "####" not in solution or not final:
            raise ValueError(f"{where}: a GSM8K 'answer' must end with '#### <final answer>'; "
                             f"got ...{solution[-60:]!r}")
        answers, consumed = [final], ("question", "answer")
    elif "problem" in record and record.get("answer") is not None:
        answers, consumed = [str(record["answer"]).strip()], ("problem", "answer", "solution")
    elif "problem" in record and isinstance(record.get("solution"), str):
        boxed = last_boxed(record["solution"])
        if boxed is None:
            raise ValueError(f"{where}: no \\boxed{{...}} answer in the MATH solution "
                             f"...{record['solution'][-60:]!r}; add an 'answer' field")
        answers, consumed = [boxed], ("problem", "answer", "solution")
    else:
        raise ValueError(f"{where}: not a math record; expected 'question' + 'answers' (bundled), 'question' + "
                         f"'answer' ending '#### 42' (GSM8K) or 'problem' + 'solution'/'answer' (MATH); "
                         f"found fields {sorted(record)}")
    question = record["question"] if "question" in consumed else record["problem"]
    rest = {k: v for k, v in record.items() if k not in (*consumed, "id", "unique_id")}
    record_id = record.get("id", record.get("unique_id"))
    return {"id": str(record_id) if record_id is not None else str(index), "question": str(question),
            "answers": answers, **rest}


def _fc_example(record: dict, index: int, where: str) -> dict:
    """One function-calling record in any accepted format, normalised; `where` names it in errors."""
    if {"question", "functions", "ground_truth"} <= set(record):
        question, consumed = record["question"], ("question", "functions", "ground_truth")
        functions = _json_list(record["functions"], "functions", where)
        calls = _json_list(record["ground_truth"], "ground_truth", where)
    elif {"query", "tools", "answers"} <= set(record):
        question, consumed = record["query"], ("query", "tools", "answers")
        functions = [_schema_from_xlam(tool, where) for tool in _json_list(record["tools"], "tools", where)]
        calls = _json_list(record["answers"], "answers", where)
    elif "conversations" in record and ("system" in record or "tools" in record):
        (question, functions, calls), consumed = _toolace(record, where), ("system", "tools", "conversations")
    elif {"instruction", "input", "output"} <= set(record):
        question, functions, calls = _toolrl(record["instruction"], record["input"], record["output"], where)
        consumed = ("instruction", "input", "output")
    elif {"prompt", "reward_model"} <= set(record):
        system, user = _toolrl_prompt(record["prompt"], where)
        ground_truth = record["reward_model"].get("ground_truth", "") if isinstance(record["reward_model"], dict) else ""
        question, functions, calls = _toolrl(system, user, ground_truth, where)
        consumed = ("prompt", "reward_model", "extra_info", "data_source", "ability")
    else:
        raise ValueError(f"{where}: not a function-calling record; expected 'question' + 'functions' + "
                         f"'ground_truth' (bundled), 'query' + 'tools' + 'answers' (xLAM), 'system' + "
                         f"'conversations' (ToolACE) or 'instruction' + 'input' + 'output' (ToolRL); "
                         f"found fields {sorted(record)}")
    for function in functions:
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise ValueError(f"{where}: every function must be a JSON schema with a 'name'; got {function!r:.80}")
    rest = {k: v for k, v in record.items() if k not in (*consumed, "id")}
    return {"id": _id(record, index), "question": str(question), "functions": functions,
            "ground_truth": [_call(call, where) for call in calls], **rest}


def _json_list(value: Any, field: str, where: str) -> list:
    """A list, given as is or as a JSON string."""
    if isinstance(value, str):
        value = _loads(value, f"{where}: '{field}' is not valid JSON")
    if not isinstance(value, list):
        raise ValueError(f"{where}: '{field}' must be a list (or a JSON string of one); got {type(value).__name__}")
    return value


def _loads(text: str, error: str) -> Any:
    """json.loads, failing with `error` and the parser's reason."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{error}: {err.msg} (column {err.colno})") from None


def _call(call: Any, where: str) -> dict:
    """{"name", "arguments"} from a call with `arguments` (or ToolRL's `parameters`), a dict or a JSON string."""
    if not isinstance(call, dict) or not isinstance(call.get("name"), str):
        raise ValueError(f"{where}: a call needs a 'name' and 'arguments'; got {call!r:.80}")
    arguments = call.get("arguments", call.get("parameters", {}))
    if isinstance(arguments, str):
        arguments = _loads(arguments, f"{where}: the arguments of {call['name']!r} are not valid JSON")
    if not isinstance(arguments, dict):
        raise ValueError(f"{where}: the arguments of {call['name']!r} must be an object; got {arguments!r:.80}")
    return {"name": call["name"], "arguments": arguments}


_XLAM_TYPES = {"str": "string", "int": "integer", "float": "float", "bool": "boolean", "list": "array",
               "tuple": "array", "dict": "dict"}


def _schema_from_xlam(tool: Any, where: str) -> Any:
    """xLAM's {"parameters": {"city": {"type": "str, optional", ...}}} as a schema with properties and required;
    a tool whose parameters already are a schema (a string `type`) is returned as it is."""
    if not isinstance(tool, dict) or not isinstance(tool.get("parameters"), dict):
        return tool
    params = tool["parameters"]
    if isinstance(params.get("type"), str) or not params:
        return tool
    properties, required = {}, []
    for name, spec in params.items():
        if not isinstance(spec, dict):
            raise ValueError(f"{where}: parameter {name!r} of {tool.get('name')!r} must be an object; got {spec!r:.80}")
        declared = str(spec.get("type", "")).strip()
        base = declared.removesuffix("optional").strip().rstrip(",").strip()
        word = re.match(r"\w*", base).group().lower()
        properties[name] = {**spec, "type": _XLAM_TYPES.get(word, base)} if declared else dict(spec)
        if not declared.endswith("optional"):
            required.append(name)
    return {**tool, "parameters": {"type": "dict", "properties": properties, "required": required}}


def _toolace(record: dict, where: str) -> tuple[str, list, list]:
    """(question, functions, calls) of a ToolACE conversation: its first user turn and the assistant reply."""
    if record.get("tools"):
        functions = _json_list(record["tools"], "tools", where)
    else:
        functions = _tool_list_in(str(record["system"]), where)
    turns = _json_list(record["conversations"], "conversations", where)
    roles = [str(t.get("from", t.get("role", ""))) if isinstance(t, dict) else "" for t in turns]
    users = [i for i, role in enumerate(roles) if role in ("user", "human")]
    if not users:
        raise ValueError(f"{where}: no user turn in 'conversations' (roles {roles})")
    first = users[0]
    replies = [i for i in range(first + 1, len(turns)) if roles[i] in ("assistant", "gpt")]
    if not replies:
        raise ValueError(f"{where}: no assistant turn after the first user turn")
    question = turns[first].get("value", turns[first].get("content", ""))
    reply = str(turns[replies[0]].get("value", turns[replies[0]].get("content", ""))).strip()
    calls = _python_calls(reply, [f.get("name", "") for f in functions if isinstance(f, dict)])
    if calls is None:
        if reply.startswith("[") and "(" in reply:
            raise ValueError(f"{where}: cannot parse the assistant's call list {reply[:80]!r}; expected "
                             '[func(param=value, ...), ...] with literal values')
        calls = []  # a plain-text answer: no call
    return question, functions, calls


_TOOLRL_TOOL = re.compile(r"^\d+\. Name: (.+)\nDescription: (.*)\nParameters: (.*)$", re.MULTILINE)


def _toolrl(system: str, dialogue: str, output: str, where: str) -> tuple[str, list, list]:
    """(question, functions, calls) of a ToolRL record: the system text's numbered tool list (xLAM-style
    parameter specs), the dialogue record without its heading, and the output's <tool_call> JSON lines."""
    from .function_calls import parse_response  # pure parsing, no model

    functions = []
    for name, description, parameters in _TOOLRL_TOOL.findall(str(system)):
        spec = _loads(parameters, f"{where}: the parameters of tool {name.strip()!r} are not valid JSON")
        functions.append(_schema_from_xlam({"name": name.strip(), "description": description.strip(),
                                            "parameters": spec}, where))
    if not functions:
        raise ValueError(f"{where}: no tools found in the ToolRL instruction (expected lines '1. Name: ...', "
                         "'Description: ...', 'Parameters: {...}')")
    parsed = parse_response(str(output))
    if "tool_call" in parsed.blocks and parsed.calls is None:
        raise ValueError(f"{where}: the <tool_call> block of the output is not JSON call lines: {str(output)[:120]!r}")
    question = str(dialogue).replace("**Dialogue Records History**", "", 1).strip()
    return question, functions, parsed.calls or []


def _toolrl_prompt(prompt: Any, where: str) -> tuple[str, str]:
    """(system, user) text of a processed ToolRL record's chat `prompt`."""
    turns = list(prompt) if not isinstance(prompt, str) else _json_list(prompt, "prompt", where)
    text = {str(t.get("role")): str(t.get("content", "")) for t in turns if isinstance(t, dict)}
    if "system" not in text or "user" not in text:
        raise ValueError(f"{where}: a ToolRL 'prompt' needs a system and a user message; got roles {sorted(text)}")
    return text["system"], text["user"]


def _tool_list_in(text: str, where: str) -> list:
    """The first JSON list of objects with a "name" inside `text` (ToolACE's system prompt)."""
    decoder = json.JSONDecoder()
    for match in re.finditer(r"\[", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except json.JSONDecodeError:
            continue
        if isinstance(value, list) and value and all(isinstance(v, dict) and "name" in v for v in value):
            return value
    raise ValueError(f"{where}: no JSON list of tools found in 'system' (and no 'tools' field)")


_JSON_WORDS = {"true": True, "false": False, "null": None}


def _python_calls(text: str, names: list[str]) -> list[dict] | None:
    """`[f(a=1), g(b="x")]` as [{"name": "f", "arguments": {"a": 1}}, ...]; None if `text` is no such list.

    Function names that are not Python identifiers (ToolACE has "Market Trends API") are taken from `names`.
    """
    aliases = {}
    for i, name in enumerate(sorted(names, key=len, reverse=True)):
        if name and not name.isidentifier() and f"{name}(" in text:
            aliases[f"_function_{i}"] = name
            text = text.replace(f"{name}(", f"_function_{i}(")
    try:
        tree = ast.parse(text, mode="eval").body
    except SyntaxError:
        return None
    nodes = [tree] if isinstance(tree, ast.Call) else getattr(tree, "elts", None)
    if not isinstance(tree, (ast.Call, ast.List, ast.Tuple)) or not all(isinstance(n, ast.Call) for n in nodes):
        return None
    calls = []
    for node in nodes:
        name = _dotted_name(node.func)
        if name is None or node.args or any(k.arg is None for k in node.keywords):
            return None
        try:
            arguments = {k.arg: _literal(k.value) for k in node.keywords}
        except ValueError:
            return None
        calls.append({"name": aliases.get(name, name), "arguments": arguments})
    return calls


def _dotted_name(node: ast.expr) -> str | None:
    """`f` or `math.factorial`."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        owner = _dotted_name(node.value)
        return f"{owner}.{node.attr}" if owner else None
    return None


def _literal(node: ast.expr) -> Any:
    """A Python literal, also accepting JSON's true / false / null; tuples become lists."""
    if isinstance(node, ast.Name) and node.id in _JSON_WORDS:
        return _JSON_WORDS[node.id]
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_literal(e) for e in node.elts]
    if isinstance(node, ast.Dict) and None not in node.keys:
        return {_literal(k): _literal(v) for k, v in zip(node.keys, node.values)}
    return ast.literal_eval(node)


_BOXED_START = re.compile(r"\\(?:boxed|fbox)\s*\{")


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} or \\fbox{...} in `text`, nested braces included; None if none is closed."""
    starts = [m.end() for m in _BOXED_START.finditer(text)]
    for start in reversed(starts):
        depth = 1
        for i in range(start, len(text)):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            if depth == 0:
                return text[start:i].strip()
    return None


def document(record: dict, index: int, origin: str | Path) -> dict:
    """One corpus record as {"id", "title", "text"}; `origin` names it in errors."""
    if not isinstance(record, dict):
        raise ValueError(f"{origin} record {index}: expected a JSON object with 'title' and 'text', got {type(record).__name__}")
    if "text" in record:
        title, text = record.get("title") or "", record["text"]
    elif "contents" in record:
        title, text = _split_contents(record["contents"])
    else:
        raise ValueError(f"{origin} record {index} (id {record.get('id', index)!r}): a document needs 'text' "
                         f"(with optional 'title') or 'contents'; found fields {sorted(record)}")
    return {"id": _id(record, index), "title": str(title), "text": str(text)}


def _split_contents(contents: str) -> tuple[str, str]:
    """'"Title"\\ntext' -> ("Title", "text"); a single line is all text."""
    first, newline, rest = contents.partition("\n")
    if not newline:
        return "", contents.strip()
    return first.strip().strip('"'), rest.strip()


def _id(record: dict, index: int) -> str:
    return str(record["id"]) if record.get("id") is not None else str(index)


def _import_datasets() -> Any:
    try:
        import datasets
    except ImportError:
        raise ImportError("loading a Hugging Face dataset needs the `datasets` package: "
                          "pip install datasets  (or pip install 'icrl-lite[datasets]')") from None
    return datasets


def _saved_dataset(path: Path, split: str, limit: int | None) -> list[dict]:
    """A dataset written by `save_to_disk`: a Dataset, or a DatasetDict from which `split` is taken."""
    datasets = _import_datasets()
    dataset = datasets.load_from_disk(str(path))
    if isinstance(dataset, datasets.DatasetDict):
        if split not in dataset:
            raise ValueError(f"{path} has no split {split!r}; available: {', '.join(dataset)}")
        dataset = dataset[split]
    return _rows(dataset, limit)


def _hub_dataset(source: str, split: str, limit: int | None) -> list[dict]:
    """`datasets.load_dataset(name, config, split=split)` for a source "name" or "name:config"."""
    name, _, config = source.partition(":")
    datasets = _import_datasets()
    try:
        dataset = datasets.load_dataset(name, config or None, split=split)
    except (OSError, ValueError) as e:  # not found, offline, no such config or split: datasets' own errors
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise ValueError(f"could not load the hub dataset {source!r} (split {split!r}): {reason}. Check the name, "
                         "config and split; without internet, download its files and give their path instead") from None
    return _rows(dataset, limit)


def _rows(dataset: Any, limit: int | None) -> list[dict]:
    if limit is not None:
        dataset = dataset.select(range(min(limit, len(dataset))))
    return dataset.to_list()
