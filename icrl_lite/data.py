"""Load questions, retrieval corpora and worked demonstrations into plain lists of dicts.

Questions come from a local JSONL / JSON file, a dataset saved with `datasets.save_to_disk`, or a Hugging Face
hub name ("name" or "name:config", e.g. "RUC-NLPIR/FlashRAG_datasets:nq"). FlashRAG records (`golden_answers`)
and Search-R1 corpora (`contents` = '"Title"\\ntext') are normalised to one shape:
questions {"id", "question", "answers": list[str], ...}, documents {"id", "title", "text"}.
Math problems (`load_math`) come in our format, GSM8K's (`answer` ending "#### 42") or MATH's (`problem`,
`solution` with a final \\boxed{...}, or `answer`) and are normalised to the same question shape.
The bundled closed-world task lives in data/qa/ (made by scripts/make_qa_task.py), the bundled math task in
data/math/ (made by scripts/make_math_task.py).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

# A source checkout (or editable install) reads the repo's data/; a wheel carries it as icrl_lite/bundled/.
_REPO_DATA = Path(__file__).resolve().parent.parent / "data"
DATA_DIR: Path = _REPO_DATA if (_REPO_DATA / "qa").is_dir() else Path(__file__).resolve().parent / "bundled"
BUNDLED_QA = ("corpus", "train", "dev", "test", "demos")
BUNDLED_MATH = ("train", "dev", "test", "demos")


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


def read_jsonl(path: str | Path) -> list[dict]:
    """One JSON object per line; blank lines are skipped."""
    return [record for _, record in _numbered_jsonl(path)]


def _numbered_jsonl(path: str | Path) -> list[tuple[int, dict]]:
    """(line number, record) for each non-blank line of a JSON Lines file."""
    path = _existing_file(path)
    records = []
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
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
    dataset name, optionally "name:config"; `split` is only used for the last two.
    """
    path = Path(source)
    if path.is_dir():
        records = _saved_dataset(path, split, limit)
    elif path.exists() or path.suffix in (".json", ".jsonl"):
        records = _read_records(path)[:limit]
    else:
        records = _hub_dataset(str(source), split, limit)
    return [_question(record, i, str(source)) for i, record in enumerate(records)]


def load_corpus(path: str | Path) -> list[dict]:
    """Documents as {"id", "title", "text"}; FlashRAG / Search-R1 {"id", "contents"} records are split."""
    return [document(record, i, path) for i, record in enumerate(_read_records(Path(path)))]


def load_demos(path: str | Path) -> list[dict]:
    """Worked demonstrations {"id", "question", "answers": list[str], "solution", ...}."""
    demos = []
    for i, record in enumerate(_read_records(Path(path))):
        if "solution" not in record:
            raise ValueError(f"{path} record {i}: a demo needs 'question', 'answers' and 'solution'; "
                             f"found fields {sorted(record)}")
        demos.append(_question(record, i, str(path)))
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
    path = Path(source)
    if path.is_dir():
        located = [(f"{source} [{split}] row {i}", r) for i, r in enumerate(_saved_dataset(path, split, limit))]
    elif path.exists() or path.suffix in (".json", ".jsonl"):
        located = _located_records(path)[:limit]
    else:
        located = [(f"{source} [{split}] row {i}", r) for i, r in enumerate(_hub_dataset(str(source), split, limit))]
    return [_math_problem(record, i, where) for i, (where, record) in enumerate(located)]


# ---------------------------------------------------------------------------------------------- helpers
def _existing_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; check the path (the bundled task is in {DATA_DIR / 'qa'})")
    return path


def _read_records(path: Path) -> list[dict]:
    """A .json file holding a list of objects, else JSON Lines."""
    return [record for _, record in _located_records(path)]


def _located_records(path: Path) -> list[tuple[str, dict]]:
    """(where, record) pairs; `where` is "file:line" for JSON Lines and "file record i" for a JSON list."""
    if path.suffix != ".json":
        return [(f"{path}:{line_no}", record) for line_no, record in _numbered_jsonl(path)]
    try:
        data = json.loads(_existing_file(path).read_text(encoding="utf-8"))
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
    dataset = _import_datasets().load_dataset(name, config or None, split=split)
    return _rows(dataset, limit)


def _rows(dataset: Any, limit: int | None) -> list[dict]:
    if limit is not None:
        dataset = dataset.select(range(min(limit, len(dataset))))
    return dataset.to_list()
