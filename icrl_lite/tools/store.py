"""A corpus kept on disk: a JSONL corpus streamed once into SQLite, read back a few documents at a time.

Loading a corpus into Python dicts (`icrl_lite.data.load_corpus`) costs about three times its JSONL size in RAM:
fine for the bundled task, ~40 GB for the 21M-passage Wikipedia-2018 dump (13 GB of JSONL). `CorpusStore.build`
reads the file line by line (plain or .gz; records `{"id", "title", "text"}` or FlashRAG `{"id", "contents"}`,
parsed by `icrl_lite.data.document` like the in-memory path) into one SQLite table, `docs(row, id, title, text)`,
where `row` is the record's position in the file (0, 1, ...; blank lines do not count) and `id` its own id.
A search index refers to documents by row; `get` fetches the few rows a query returns.

Building is resumable: every `commit_every` records the rows and the position reached in the source (byte offset
of the decompressed stream, line number) are committed together, so a build killed at any point continues from
its last commit. It writes `<path>.partial` and renames it to `path` when complete; the finished store records a
fingerprint of its source (size, mtime, sha256 of the first and last MiB), and a source whose fingerprint changed
is stored again from scratch.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

from tqdm.auto import tqdm

from icrl_lite.data import document

COMMIT_EVERY = 50_000  # records per transaction: what a killed build redoes at most
_FORMAT = "corpus-store-v1"  # bump when the schema changes: older stores are then rebuilt
_MIB = 1 << 20
_BOM = b"\xef\xbb\xbf"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS docs (row INTEGER PRIMARY KEY, id TEXT NOT NULL, title TEXT NOT NULL, text TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def source_fingerprint(path: Path) -> str:
    """"size:mtime_ns:sha256 of the first and last MiB": changes whenever the file is rewritten, read in ~10 ms."""
    stat = path.stat()
    digest = hashlib.sha256()
    with path.open("rb") as f:
        digest.update(f.read(_MIB))
        if stat.st_size > _MIB:
            f.seek(max(_MIB, stat.st_size - _MIB))
            digest.update(f.read())
    return f"{_FORMAT}:{stat.st_size}:{stat.st_mtime_ns}:{digest.hexdigest()}"


class CorpusStore:
    """Documents {"id", "title", "text"} by row, in an SQLite file; safe to share between threads."""

    def __init__(self, db: sqlite3.Connection, path: Path, meta: dict[str, str]):
        self._db, self.path, self._lock = db, path, threading.Lock()
        self.fingerprint = meta["source"]  # of the corpus file the store was built from
        self._len = int(meta["rows"])

    @classmethod
    def open(cls, path: str | Path) -> CorpusStore:
        """A complete store, read-only."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such corpus store; build it with CorpusStore.build(corpus, path)")
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False)
        meta = dict(db.execute("SELECT key, value FROM meta"))
        if meta.get("complete") != "1":
            db.close()
            raise ValueError(f"{path} is not a complete corpus store; build it with CorpusStore.build(corpus, path)")
        return cls(db, path, meta)

    @classmethod
    def build(cls, source: str | Path, path: str | Path, progress: bool = True,
              commit_every: int = COMMIT_EVERY) -> CorpusStore:
        """Store the corpus file `source` in `path`, or open `path` if it already holds this version of it.

        A build interrupted earlier (its `<path>.partial` is left behind) continues where it stopped; a malformed
        line raises ValueError naming the file and line.
        """
        source, path = Path(source), Path(path)
        if not source.is_file():
            raise FileNotFoundError(f"{source}: no such corpus file; check the path")
        fingerprint = source_fingerprint(source)
        if path.exists():
            store = cls.open(path)
            if store.fingerprint == fingerprint:
                return store
            store.close()
            path.unlink()  # the source changed since: store it again
        partial = path.with_name(path.name + ".partial")
        db = _connect_partial(partial, fingerprint)
        try:
            rows = _fill(db, source, commit_every, progress)
            if rows == 0:
                raise ValueError(f"{source} is empty; expected one JSON object per line")
            with db:
                db.execute("INSERT OR REPLACE INTO meta VALUES ('complete', '1')")
            db.execute("PRAGMA journal_mode=DELETE")  # folds the write-ahead log in: one self-contained file
        finally:
            db.close()  # an exception leaves the last commit in place and drops the uncommitted batch
        os.replace(partial, path)
        return cls.open(path)

    def __len__(self) -> int:
        return self._len

    def get(self, rows: list[int]) -> list[dict]:
        """The documents at `rows`, in that order (repeats allowed), fetched with one SQL query."""
        rows = [int(row) for row in rows]  # numpy integers too
        with self._lock:
            found = {row: {"id": id_, "title": title, "text": text} for row, id_, title, text in self._db.execute(
                "SELECT row, id, title, text FROM docs WHERE row IN (SELECT value FROM json_each(?))",
                (json.dumps(rows),))}
        missing = [row for row in rows if row not in found]
        if missing:
            raise IndexError(f"rows {missing[:5]} are not in {self.path} (rows 0 to {len(self) - 1})")
        return [dict(found[row]) for row in rows]

    def iter_texts(self, batch: int = 10_000, start: int = 0) -> Iterator[list[str]]:
        """Every document from row `start` on as "title\\ntext" (the text BM25 indexes), in row order, `batch` at a
        time."""
        cursor = self._db.cursor()  # its own cursor: `get` may run meanwhile
        cursor.execute("SELECT title, text FROM docs WHERE row >= ? ORDER BY row", (start,))
        while chunk := cursor.fetchmany(batch):
            yield [f"{title}\n{text}" for title, text in chunk]

    def close(self) -> None:
        self._db.close()


def _connect_partial(partial: Path, fingerprint: str) -> sqlite3.Connection:
    """The partial store for `fingerprint`: the one left by an interrupted build of the same source, else new."""
    if partial.exists():
        db = sqlite3.connect(partial)
        try:
            meta = dict(db.execute("SELECT key, value FROM meta"))
        except sqlite3.DatabaseError:  # not even a schema yet, or not ours
            meta = {}
        if meta.get("source") == fingerprint:
            db.execute("PRAGMA synchronous=NORMAL")
            return db
        db.close()
    for leftover in (partial, partial.with_name(partial.name + "-wal"), partial.with_name(partial.name + "-shm")):
        leftover.unlink(missing_ok=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(partial)
    db.execute("PRAGMA journal_mode=WAL")  # with synchronous=NORMAL: fast commits, and a kill never corrupts
    db.execute("PRAGMA synchronous=NORMAL")
    with db:
        db.executescript(_SCHEMA)
        db.executemany("INSERT INTO meta VALUES (?, ?)",
                       [("source", fingerprint), ("offset", "0"), ("line", "0"), ("rows", "0")])
    return db


def _fill(db: sqlite3.Connection, source: Path, commit_every: int, progress: bool) -> int:
    """Append the records after the position saved in `db` and return the number of rows."""
    meta = dict(db.execute("SELECT key, value FROM meta"))
    offset, line_no, rows = int(meta["offset"]), int(meta["line"]), int(meta["rows"])
    with source.open("rb") as raw:
        stream = gzip.GzipFile(fileobj=raw) if source.name.endswith(".gz") else raw
        stream.seek(offset)  # in a .gz: decompresses up to there again, without keeping it
        bar = tqdm(total=source.stat().st_size, initial=raw.tell(), unit="B", unit_scale=True,
                   desc=f"storing {source.name}", disable=not progress)
        batch: list[tuple[int, str, str, str]] = []
        for line in stream:
            line_no += 1
            offset += len(line)
            if line.strip():
                record = _parse(line, source, line_no)
                doc = document(record, rows, f"{source}:{line_no}")
                batch.append((rows, doc["id"], doc["title"], doc["text"]))
                rows += 1
            if len(batch) >= commit_every:
                _commit(db, batch, offset, line_no, rows)
                batch = []
                bar.update(raw.tell() - bar.n)
        _commit(db, batch, offset, line_no, rows)
        bar.update(raw.tell() - bar.n)
        bar.close()
    return rows


def _parse(line: bytes, source: Path, line_no: int) -> dict:
    if line_no == 1:
        line = line.removeprefix(_BOM)
    try:
        return json.loads(line)
    except UnicodeDecodeError as err:
        raise ValueError(f"{source}:{line_no}: byte {err.start} is not UTF-8; save the file as UTF-8") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{source}:{line_no}: invalid JSON: {err.msg} (column {err.colno})") from None


def _commit(db: sqlite3.Connection, batch: list[tuple], offset: int, line_no: int, rows: int) -> None:
    """The batch and the position after it, in one transaction."""
    with db:
        db.executemany("INSERT INTO docs VALUES (?, ?, ?, ?)", batch)
        db.executemany("UPDATE meta SET value = ? WHERE key = ?",
                       [(str(offset), "offset"), (str(line_no), "line"), (str(rows), "rows")])
