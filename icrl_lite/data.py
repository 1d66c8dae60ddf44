"""Load questions, retrieval corpora and worked demonstrations into plain lists of dicts.

Questions come from a local JSONL / JSON file, a dataset saved with `datasets.save_to_disk`, or a Hugging Face
hub name ("name" or "name:config", e.g. "RUC-NLPIR/FlashRAG_datasets:nq"). FlashRAG records (`golden_answers`)
and Search-R1 corpora (`contents` = '"Title"\\ntext') are normalised to one shape:
questions {"id", "question", "answers": list[str], ...}, documents {"id", "title", "text"}.
The bundled closed-world task lives in data/qa/ (made by scripts/make_qa_task.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# A source checkout (or editable install) reads the repo's data/; a wheel carries it as icrl_lite/bundled/.
_REPO_DATA = Path(__file__).resolve().parent.parent / "data"
DATA_DIR: Path = _REPO_DATA if (_REPO_DATA / "qa").is_dir() else Path(__file__).resolve().parent / "bundled"
BUNDLED_QA = ("corpus", "train", "dev", "test", "demos")


def bundled_qa_path(name: str) -> Path:
    """Path of a file of the bundled QA task: "corpus", "train", "dev", "test" or "demos"."""
    if name not in BUNDLED_QA:
        raise ValueError(f"unknown bundled QA file {name!r}; choose one of: {', '.join(BUNDLED_QA)}")
    return DATA_DIR / "qa" / f"{name}.jsonl"


def read_jsonl(path: str | Path) -> list[dict]:
    """One JSON object per line; blank lines are skipped."""
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
            records.append(record)
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


# ---------------------------------------------------------------------------------------------- helpers
def _existing_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; check the path (the bundled task is in {DATA_DIR / 'qa'})")
    return path


def _read_records(path: Path) -> list[dict]:
    """A .json file holding a list of objects, else JSON Lines."""
    if path.suffix != ".json":
        return read_jsonl(path)
    try:
        data = json.loads(_existing_file(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return read_jsonl(path)  # JSON Lines under a .json name; errors then name the line
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise ValueError(f"{path}: expected a JSON list of objects (or one object per line)")
    if not data:
        raise ValueError(f"{path} is an empty list; expected question records")
    return data


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
