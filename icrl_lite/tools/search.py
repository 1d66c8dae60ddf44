"""Local BM25 search over a JSONL corpus with `bm25s`, cached on disk next to the corpus.

ICRL and Search-R1 query a dense E5 retriever over the 21M-passage Wikipedia-18 dump; we use BM25 (the
sparse baseline of Search-R1) so that search runs on a laptop CPU without a second model. Results are shown
to the model in the same "Doc 1(Title: ...) text" format the papers use.

Corpus records are `{"id", "title", "text"}`; FlashRAG records `{"id", "contents"}` are accepted too, the
first line of `contents` being the title (its surrounding quotes stripped; Search-R1 shows them: `Doc 1(Title: "T") ...`).

Two ways to hold a corpus (`store=`): in memory (the documents as Python dicts, the index as numpy arrays) or on
disk (Wikipedia scale: the documents in a `CorpusStore`, SQLite, the index built by streaming, resumable after a
kill, and memory-mapped, the vocabulary in SQLite), with the same ranking, bit for bit. `store="auto"` picks disk
above `DISK_STORE_BYTES`.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import math
import os
import shutil
import sqlite3
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import bm25s
import numpy as np
from tqdm.auto import tqdm

from icrl_lite.data import document, load_corpus
from icrl_lite.tools.base import ResultCache, Tool
from icrl_lite.tools.store import CorpusStore

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: concurrent builds of one disk index are not serialised
    fcntl = None

try:  # stemming only when PyStemmer is installed; the cache key records which was used
    import Stemmer

    _STEMMER = Stemmer.Stemmer("english")
except ImportError:
    _STEMMER = None

# Part of the cache key: bump it when tokenisation or the index layout changes.
_INDEX_FORMAT = f"bm25s-v1-lower-stopwords_en-stem_{'english' if _STEMMER else 'none'}"
_DISK_FORMAT = "disk-v1"  # the streamed index's layout, also in its cache key

STORE_MODES = ("auto", "memory", "disk")
DISK_STORE_BYTES = 200 * 2**20
"""`store="auto"` searches corpus files larger than this from disk. In memory a corpus costs ~3x its JSONL size in
document dicts plus the token lists while indexing (5-10x in all: 1-2 GB of RAM at 200 MB, ~300k passages), while
the disk path's first build streams the corpus twice (minutes at this size) and its queries read from SQLite."""

_RUN_DOCS = 50_000  # documents tokenised at a time in the disk index's first pass (a killed build redoes one run)
_SLICE_POSTINGS = 1 << 23  # postings weighted at a time in its second pass (~40 bytes each: ~0.3 GB)


def uses_disk_store(corpus: str | Path, store: str) -> bool:
    """Whether BM25 over the corpus file keeps it on disk: `store=disk`, or `auto` and a file above DISK_STORE_BYTES."""
    path = Path(corpus)
    return store == "disk" or (store == "auto" and path.is_file() and path.stat().st_size > DISK_STORE_BYTES)


def store_path(corpus: str | Path, folder: str | Path | None = None) -> Path:
    """Where the disk store of a corpus file lives: <corpus>.store.sqlite beside it (or in `folder`)."""
    corpus = Path(corpus)
    return Path(folder or corpus.parent) / f"{corpus.name}.store.sqlite"


def format_documents(docs: list[dict]) -> str:
    """Render results as the ICRL / Search-R1 observation: "Doc 1(Title: T) text\\nDoc 2(Title: T2) text2"."""
    return "\n".join(f"Doc {i}(Title: {doc['title']}) {doc['text']}" for i, doc in enumerate(docs, start=1))


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _prune(cache_root: Path, key: str) -> None:
    """Delete the indexes in `cache_root` other than `key` (a default cache folder belongs to one corpus file,
    whose older indexes are of stale contents) with the pieces of their unfinished builds, but for those another
    process is building now: its `.tmp-` folder (in memory) or its locked `<key>.lock` (on disk)."""
    for entry in cache_root.iterdir():
        other = entry.name.split(".")[0]
        if entry.name.startswith(".tmp-") or other == key or _locked(cache_root / f"{other}.lock"):
            continue
        shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)


@contextlib.contextmanager
def _exclusive(lock: Path) -> Iterator[None]:
    """Hold an exclusive `flock` on the file `lock` (dropped by the kernel however the process ends); while another
    process holds it, say so and wait."""
    with lock.open("a") as f:
        if fcntl is not None:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                print(f"[icrl-lite] waiting for another process to build {lock.with_suffix('')}", file=sys.stderr)
                fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _locked(lock: Path) -> bool:
    """Whether another process holds the `flock` of the file `lock` now."""
    if fcntl is None or not lock.is_file():
        return False
    with lock.open("a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
    return False


def _tokenize(texts: list[str]) -> list[list[str]]:
    return bm25s.tokenize(texts, lower=True, stopwords="en", stemmer=_STEMMER, return_ids=False, show_progress=False)


def _tokenize_ids(texts: list[str]) -> tuple[list[list[int]], dict[str, int]]:
    """`_tokenize` as ids into a vocabulary of these texts only (the same tokens, without a string per token)."""
    tokenized = bm25s.tokenize(texts, lower=True, stopwords="en", stemmer=_STEMMER, return_ids=True,
                               show_progress=False)
    return tokenized.ids, tokenized.vocab


def _build_index(docs: list[dict]) -> bm25s.BM25:
    """Index title + text of every document."""
    retriever = bm25s.BM25()
    retriever.index(_tokenize([f"{d['title']}\n{d['text']}" for d in docs]), show_progress=False)
    return retriever


def _build_disk_index(store: CorpusStore, out: Path, progress: bool = True) -> None:
    """Write a bm25s index of every document of `store` into the folder `out`, streaming the texts; a build
    killed earlier continues from what it left in `out`.

    `bm25s.BM25.index` needs every document's token list at once (Python lists: ~50 GB for Wikipedia-18), so
    this builds bm25s's arrays itself, in two passes whose memory grows with the vocabulary, not the corpus:
      1. the texts are tokenised `_RUN_DOCS` at a time, exactly as the in-memory index tokenises them; each
         chunk's postings (token id, row, term frequency), sorted by token then row, go to a file of its own as a
         "run"; document lengths (int32 per document), document frequencies (int64 per term) and the vocabulary
         (a dict str -> id) stay in memory;
      2. the vocabulary is walked in slices of about `_SLICE_POSTINGS` postings: each slice is gathered from
         every run, weighted (Lucene BM25, bm25s's default: idf(t) * tf / (tf + k1 * (1 - b + b * len(d) / avg len)),
         written in bm25s's floating-point order, so the weights are bit-identical) and written in place into the
         CSC arrays: `data` (float32 weights) and `indices` (int32 rows) grouped by term, `indptr` (int64).
    The vocabulary goes to `vocab.sqlite`, looked up per query, instead of bm25s's `vocab.index.json`: a loaded
    index then holds no per-term Python objects (bm25s would hold a dict and a set of V entries).

    Resuming. Every piece goes through a temporary file renamed into place, so a kill leaves whole pieces or none:
    run i is `build/run-<i>.bin` (its arrays), then `build/run-<i>.json` (its sizes and the terms it added to the
    vocabulary), and counts as done once the .json exists; pass 1 rebuilds the vocabulary, lengths and frequencies
    from the finished runs and tokenises from the first document of the first unfinished one. Pass 2 writes a slice,
    flushes the arrays and then records the first term not yet weighted (`build/weighed.json`): a kill redoes at
    most the slice it cut short. `params.index.json`, written last, marks the index complete; `build/` goes then.
    Pieces from other settings (`_RUN_DOCS`, the number of documents) are deleted and the build starts over. The
    result is the same, byte for byte, however often the build was killed.

    Wikipedia-18 (N = 21M passages of 100 words, ~45 distinct indexed terms each: P ~ 1e9 postings; a
    vocabulary of V ~ 5-10M terms) takes ~120 bytes a term for the vocabulary dict (~1 GB), 4N = 84 MB of
    lengths, 12V ~ 0.1 GB of frequencies and idf, ~0.2 GB for one run and ~0.3 GB for one slice: ~2 GB in all,
    against ~50 GB of token lists for `bm25s.BM25.index` and ~40 GB of corpus dicts. On disk the runs take 8P
    bytes (~8 GB) while building, the index 8P + 8V (~8 GB).
    """
    model = bm25s.BM25()  # the in-memory index's parameters
    if (model.method, model.idf_method) != ("lucene", "lucene"):
        raise RuntimeError(f"bm25s's default scoring is now {model.method!r}, and the disk index computes 'lucene': "
                           "install the bm25s of constraints.txt, or use search.store=memory")
    params_path = out / "params.index.json"
    if not params_path.exists():
        build = _build_folder(out, {"format": _DISK_FORMAT, "docs": len(store), "run_docs": _RUN_DOCS})
        vocab, doc_len, df, runs = _write_runs(store, build, progress)
        _write_postings(out, build, runs, doc_len, df, model.k1, model.b, progress)
        del runs  # their memory maps, before `build/` is deleted
        _write_vocab(out / "vocab.sqlite", vocab)
        params = {"k1": model.k1, "b": model.b, "delta": model.delta, "method": model.method,
                  "idf_method": model.idf_method, "dtype": model.dtype, "int_dtype": model.int_dtype,
                  "num_docs": len(store), "version": bm25s.__version__, "backend": model.backend}
        _write_atomic(params_path, json.dumps(params, indent=4).encode())
    shutil.rmtree(out / "build", ignore_errors=True)


def _write_atomic(path: Path, *chunks: bytes | np.ndarray) -> None:
    """Write `chunks` (bytes, C-contiguous arrays) to `path` by way of `<path>.tmp`, synced, then renamed: a kill
    leaves the old file or the new one, never a part."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        for chunk in chunks:
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _build_folder(out: Path, settings: dict) -> Path:
    """`out/build`, holding the pieces of an earlier build with these `settings`, or emptied for a new one."""
    build, record = out / "build", out / "build" / "settings.json"
    if out.exists() and not (record.is_file() and json.loads(record.read_text()) == settings):
        shutil.rmtree(out)  # another corpus size or run size: its runs do not fit
    build.mkdir(parents=True, exist_ok=True)
    if not record.exists():
        _write_atomic(record, json.dumps(settings).encode())
    return build


_RUN_ARRAYS = (("ends", np.int64), ("rows", np.int32), ("tf", np.float32), ("tokens", np.int32), ("lengths", np.int32))
"""A run file's arrays in order (each starts aligned): per term of the run, where its postings end, its id; per
posting, row and term frequency; per document, its length in tokens."""


def _write_runs(store: CorpusStore, build: Path, progress: bool) -> tuple[dict[str, int], np.ndarray, np.ndarray,
                                                                         list[dict[str, np.ndarray]]]:
    """Pass 1: the postings of each `_RUN_DOCS` documents, sorted by term then row, each run in `build/run-<i>.bin`
    with its record `build/run-<i>.json`; the runs an earlier build finished are read back, not redone.

    Returns the vocabulary (term -> id, in order of first appearance), the documents' lengths in tokens (N,),
    the terms' document frequencies (V,) and each run's arrays (`_RUN_ARRAYS`, memory-mapped).
    """
    vocab: dict[str, int] = {}
    doc_len = np.zeros(len(store), dtype=np.int32)  # (N,)
    df = np.zeros(1 << 16, dtype=np.int64)  # (capacity,) grown with the vocabulary
    runs: list[dict[str, np.ndarray]] = []
    finished = 0
    while (build / f"run-{finished:05d}.json").exists():
        finished += 1
    start = 0

    def add(record: dict) -> None:
        nonlocal df, start
        run = _open_run(build / f"run-{len(runs):05d}.bin", record)
        n = len(run["lengths"])
        doc_len[start:start + n] = run["lengths"]
        if len(vocab) > len(df):
            df = np.concatenate([df, np.zeros(max(len(vocab), 2 * len(df)) - len(df), dtype=np.int64)])
        df[run["tokens"]] += np.diff(run["ends"], prepend=0)  # each term's postings in this run
        runs.append(run)
        start += n

    with tqdm(total=len(store), initial=min(finished * _RUN_DOCS, len(store)), unit="doc",
              desc="BM25 index 1/2: tokenise", disable=not progress) as bar:
        for i in range(finished):
            record = json.loads((build / f"run-{i:05d}.json").read_text(encoding="utf-8"))
            for token in record["new_tokens"]:
                vocab[token] = len(vocab)
            add(record)
        for texts in store.iter_texts(_RUN_DOCS, start):
            add(_write_run(texts, vocab, start, build / f"run-{len(runs):05d}"))
            bar.update(len(texts))
    if not any(len(run["rows"]) for run in runs):
        raise ValueError(f"no document of {store.path} has a word to index (all are empty or stopwords)")
    return vocab, doc_len, df[:len(vocab)], runs


def _write_run(texts: list[str], vocab: dict[str, int], start: int, stem: Path) -> dict:
    """Tokenise the documents `start`, `start + 1`, ... (`texts`), add their new terms to `vocab`, write the run to
    `<stem>.bin` and then its record to `<stem>.json`; returns the record."""
    ids, local_vocab = _tokenize_ids(texts)
    to_global = np.empty(len(local_vocab), dtype=np.int64)
    new_tokens = []
    for token, local in local_vocab.items():
        if token not in vocab:
            vocab[token] = len(vocab)
            new_tokens.append(token)
        to_global[local] = vocab[token]
    n = len(ids)
    lengths = np.fromiter(map(len, ids), dtype=np.int64, count=n)  # (n,)
    flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int64, count=int(lengths.sum()))
    key = to_global[flat] * n + np.repeat(np.arange(n), lengths)  # sorts by term, then row
    key, tf = np.unique(key, return_counts=True)  # (p,) one posting per distinct (term, document)
    terms, rows = np.divmod(key, n)
    run_terms, first = np.unique(terms, return_index=True)  # (t,)
    ends = np.cumsum(np.diff(np.append(first, len(terms))))  # (t,) where each term's postings end in this run
    arrays = {"ends": ends, "rows": rows + start, "tf": tf, "tokens": run_terms, "lengths": lengths}
    _write_atomic(stem.with_suffix(".bin"), *(arrays[name].astype(dtype) for name, dtype in _RUN_ARRAYS))
    record = {"docs": n, "postings": len(terms), "terms": len(run_terms), "new_tokens": new_tokens}
    _write_atomic(stem.with_suffix(".json"), json.dumps(record, ensure_ascii=False).encode())
    return record


def _open_run(path: Path, record: dict) -> dict[str, np.ndarray]:
    """The arrays of a run file, memory-mapped, by name."""
    sizes = {"ends": record["terms"], "rows": record["postings"], "tf": record["postings"],
             "tokens": record["terms"], "lengths": record["docs"]}
    buffer = np.memmap(path, dtype=np.uint8, mode="r")
    arrays, offset = {}, 0
    for name, dtype in _RUN_ARRAYS:
        nbytes = sizes[name] * np.dtype(dtype).itemsize
        arrays[name] = buffer[offset:offset + nbytes].view(dtype)
        offset += nbytes
    if offset != len(buffer):
        raise RuntimeError(f"{path} holds {len(buffer)} bytes, its record says {offset}: delete {path.parent.parent} "
                           "to build the index from scratch")
    return arrays


def _write_postings(out: Path, build: Path, runs: list[dict[str, np.ndarray]], doc_len: np.ndarray, df: np.ndarray,
                    k1: float, b: float, progress: bool) -> None:
    """Pass 2: bm25s's CSC arrays from the runs, `_SLICE_POSTINGS` postings at a time, from the first term that
    `build/weighed.json` says is not weighted yet."""
    n_docs, n_terms = len(doc_len), len(df)
    avg_len = np.float64(int(doc_len.sum(dtype=np.int64))) / n_docs  # == np.mean of the lengths, as bm25s has it
    idf = np.fromiter((math.log(1 + (n_docs - d + 0.5) / (d + 0.5)) for d in df.tolist()),  # math.log, as bm25s
                      dtype=np.float32, count=n_terms)
    indptr = np.zeros(n_terms + 1, dtype=np.int64)  # (V + 1,)
    np.cumsum(df, out=indptr[1:])
    postings = int(indptr[-1])  # a numpy integer would be written into the .npy header as "np.int64(...)"
    record = build / "weighed.json"
    if record.exists():  # the arrays exist, weighted up to this term
        c0 = json.loads(record.read_text())["next_term"]
        data = np.load(out / "data.csc.index.npy", mmap_mode="r+")
        indices = np.load(out / "indices.csc.index.npy", mmap_mode="r+")
    else:
        np.save(out / "indptr.csc.index.npy", indptr)
        data = np.lib.format.open_memmap(out / "data.csc.index.npy", mode="w+", dtype=np.float32, shape=(postings,))
        indices = np.lib.format.open_memmap(out / "indices.csc.index.npy", mode="w+", dtype=np.int32,
                                            shape=(postings,))
        c0 = 0
        _write_atomic(record, json.dumps({"next_term": c0}).encode())
    with tqdm(total=postings, initial=int(indptr[c0]), unit="posting", unit_scale=True,
              desc="BM25 index 2/2: weigh", disable=not progress) as bar:
        while c0 < n_terms:  # terms c0 .. c1 - 1, whose postings are data[indptr[c0]:indptr[c1]]
            c1 = int(np.searchsorted(indptr, indptr[c0] + _SLICE_POSTINGS, side="right")) - 1
            c1 = min(max(c1, c0 + 1), n_terms)
            terms, rows, tf = _gather(runs, c0, c1)
            weights = idf[terms] * (tf / (k1 * ((1 - b) + b * doc_len[rows] / avg_len) + tf))  # float64, as bm25s
            data[indptr[c0]:indptr[c1]] = weights  # rounded to float32, as bm25s
            indices[indptr[c0]:indptr[c1]] = rows
            data.flush()  # on disk before the record says so
            indices.flush()
            _write_atomic(record, json.dumps({"next_term": c1}).encode())
            bar.update(len(rows))
            c0 = c1
    del data, indices


def _gather(runs: list[dict[str, np.ndarray]], c0: int, c1: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The postings of terms c0 .. c1 - 1 from every run: (terms, rows, tf), each (p,), sorted by term then row."""
    parts = []
    for run in runs:
        a, z = np.searchsorted(run["tokens"], [c0, c1])
        if a == z:
            continue
        lo = 0 if a == 0 else int(run["ends"][a - 1])
        ends = run["ends"][a:z]
        parts.append((np.repeat(run["tokens"][a:z], np.diff(ends, prepend=lo)), run["rows"][lo:ends[-1]],
                      run["tf"][lo:ends[-1]]))
    terms, rows, tf = (np.concatenate(column) for column in zip(*parts))
    order = np.argsort(terms, kind="stable")  # runs are in row order: rows stay ascending per term
    return terms[order], rows[order], tf[order]


def _write_vocab(path: Path, vocab: dict[str, int]) -> None:
    """The vocabulary as an SQLite table (token -> id), written to `<path>.tmp` and renamed."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    db = sqlite3.connect(tmp)
    with db:
        db.execute("CREATE TABLE vocab (token TEXT PRIMARY KEY, id INTEGER NOT NULL) WITHOUT ROWID")
        db.executemany("INSERT INTO vocab VALUES (?, ?)", vocab.items())
    db.close()
    os.replace(tmp, path)


class BM25Search:
    """BM25 over a corpus (a JSONL path or a list of records), returning the `top_k` best documents.

    `store` says where the corpus and index live: "memory", "disk" (a corpus file only) or "auto" (disk for
    files above `DISK_STORE_BYTES`, memory otherwise).

    In memory, with a path, the index is cached in `<corpus file>.bm25/<key>/` (or `cache_dir/<key>/`), where
    the key is the sha256 of the corpus bytes and the tokenisation settings: an unchanged corpus loads from disk,
    a changed one is re-indexed (and, in the default cache directory, its stale indexes are deleted). A list
    corpus is cached only when `cache_dir` is given. If the cache cannot be written, the index stays in
    memory and a warning says why.

    On disk the corpus is never loaded: it is streamed into a `CorpusStore` `<corpus file>.store.sqlite`
    (resumable), the index is built from the store by streaming (`_build_disk_index`, resumable too: in
    `<key>.partial/`, renamed when complete) into `<corpus file>.bm25-disk/<key>/`, the key covering the store's
    source fingerprint, and loaded memory-mapped; a query reads its terms' postings and its top-k documents only.
    With `cache_dir`, both go there instead. Same results as in memory (ids, order and scores).
    """

    def __init__(self, corpus: str | Path | list[dict], top_k: int = 3, cache_dir: str | Path | None = None,
                 store: str = "auto"):
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        if store not in STORE_MODES:
            raise ValueError(f"store={store!r}: use one of {', '.join(STORE_MODES)}")
        self.top_k = top_k
        self._cache = ResultCache()  # a group's rollouts often search the same words: each is scored once a run
        self.store: CorpusStore | None = None  # the documents, when they are on disk
        if isinstance(corpus, (str, Path)) and uses_disk_store(corpus, store):
            self._open_disk(Path(corpus), cache_dir)
            return
        if store == "disk":
            raise ValueError("store='disk' needs a corpus file (JSONL); a list of records is searched in memory")
        own_cache_dir = cache_dir is None
        if isinstance(corpus, (str, Path)):
            path = Path(corpus)
            self.docs = load_corpus(path)
            key_source = _sha256_file(path)
            cache_root = path.with_name(path.name + ".bm25") if own_cache_dir else Path(cache_dir)
        else:
            self.docs = [document(record, i, "corpus") for i, record in enumerate(corpus)]
            key_source = hashlib.sha256(json.dumps(self.docs, sort_keys=True).encode()).hexdigest()
            cache_root = None if own_cache_dir else Path(cache_dir)
        if not self.docs:
            where = corpus if isinstance(corpus, (str, Path)) else "the given list"
            raise ValueError(f"the corpus is empty ({where}): it needs at least one document to search")

        key = hashlib.sha256(f"{_INDEX_FORMAT}\n{key_source}".encode()).hexdigest()[:32]
        self.index_path: Path | None = None  # where the index lives on disk; None when only in memory
        self.loaded_from_cache = False
        if cache_root is not None and (cache_root / key).is_dir():
            self.retriever = bm25s.BM25.load(cache_root / key, show_progress=False)
            self.index_path, self.loaded_from_cache = cache_root / key, True
        else:
            self.retriever = _build_index(self.docs)
            if cache_root is not None:
                self.index_path = self._save(cache_root, key, prune=own_cache_dir)
        self._vocab = {token for token in self.retriever.vocab_dict if token}  # "" is bm25s's empty token

    def _open_disk(self, path: Path, cache_dir: str | Path | None) -> None:
        """Store the corpus and build the streamed index unless they are up to date, then open both."""
        own_cache_dir = cache_dir is None
        folder = path.parent if own_cache_dir else Path(cache_dir)
        self.store = CorpusStore.build(path, store_path(path, folder))
        key = hashlib.sha256(f"{_INDEX_FORMAT}\n{_DISK_FORMAT}\n{self.store.fingerprint}".encode()).hexdigest()[:32]
        cache_root = path.with_name(path.name + ".bm25-disk") if own_cache_dir else Path(cache_dir)
        self.index_path = cache_root / key
        self.loaded_from_cache = self.index_path.is_dir()
        if not self.loaded_from_cache:
            cache_root.mkdir(parents=True, exist_ok=True)
            lock = cache_root / f"{key}.lock"
            with _exclusive(lock):  # a second process wanting this index waits for the first to build it
                if not self.index_path.is_dir():
                    partial = cache_root / f"{key}.partial"
                    _build_disk_index(self.store, partial)  # continues the build a kill left there
                    os.replace(partial, self.index_path)
                lock.unlink(missing_ok=True)  # whoever waits on it finds the index
            if own_cache_dir:
                _prune(cache_root, key)
        self.retriever = bm25s.BM25.load(self.index_path, mmap=True, load_vocab=False, show_progress=False)
        self._vocab_db = sqlite3.connect(f"{(self.index_path / 'vocab.sqlite').resolve().as_uri()}?mode=ro", uri=True,
                                         check_same_thread=False)
        self._vocab_lock = threading.Lock()

    def _save(self, cache_root: Path, key: str, prune: bool) -> Path | None:
        """Write the index to `cache_root/key` atomically (temp dir, then rename); None if it cannot be written."""
        try:
            cache_root.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=cache_root))
            try:
                self.retriever.save(tmp)
                tmp.chmod(0o755)  # mkdtemp makes it private to this user
                os.replace(tmp, cache_root / key)
            except OSError:
                shutil.rmtree(tmp, ignore_errors=True)
                if (cache_root / key).is_dir():  # another process wrote the same index first
                    return cache_root / key
                raise
        except OSError as e:
            warnings.warn(f"cannot cache the BM25 index in {cache_root} ({e}); keeping it in memory", stacklevel=3)
            return None
        if prune:  # the default cache dir belongs to this corpus file: older indexes are of stale contents
            _prune(cache_root, key)
        return cache_root / key

    def search(self, query: str, k: int | None = None) -> list[dict]:
        """The best documents for `query`, each with an added `score`; [] when no query word is in the corpus."""
        return self.batch_search([query], k)[0]

    def batch_search(self, queries: list[str], k: int | None = None) -> list[list[dict]]:
        """`search` for many queries in one batched bm25s call (results cached by query and k: each is scored once).

        At most `k` (default `top_k`) documents per query, best first; documents scoring 0 (sharing no word
        with the query) are left out, so a query of only stopwords or unknown words gets [].
        """
        k = self.top_k if k is None else k
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if self.store is not None:
            k = min(k, len(self.store))
            return self._cache.lookup(queries, k, lambda missing: self._batch_search_disk(missing, k))
        k = min(k, len(self.docs))
        return self._cache.lookup(queries, k, lambda missing: self._batch_search_memory(missing, k))

    def _batch_search_memory(self, queries: list[str], k: int) -> list[list[dict]]:
        """`batch_search` in memory: bm25s's own retrieve over the in-memory index."""
        tokens = [[t for t in query_tokens if t in self._vocab] for query_tokens in _tokenize(list(queries))]
        results: list[list[dict]] = [[] for _ in queries]
        asked = [i for i, query_tokens in enumerate(tokens) if query_tokens]
        if not asked:  # bm25s cannot score an empty query
            return results
        doc_ids, scores = self.retriever.retrieve([tokens[i] for i in asked], k=k, show_progress=False)  # (Q, k)
        for row, i in enumerate(asked):
            results[i] = [
                {**self.docs[doc_id], "score": float(score)}
                for doc_id, score in zip(doc_ids[row].tolist(), scores[row].tolist())
                if score > 0
            ]
        return results

    def _batch_search_disk(self, queries: list[str], k: int) -> list[list[dict]]:
        """`batch_search` on disk: term ids from the vocabulary table, scores from the memory-mapped postings (the
        calls bm25s's `retrieve` makes), then the hits of all queries from the store in one query."""
        if not queries:
            return []
        tokens = _tokenize(list(queries))
        words = sorted({token for query_tokens in tokens for token in query_tokens})
        with self._vocab_lock:
            known = dict(self._vocab_db.execute(
                "SELECT token, id FROM vocab WHERE token IN (SELECT value FROM json_each(?))",
                (json.dumps(words, ensure_ascii=False),)))
        hits: list[list[tuple[int, float]]] = []
        for query_tokens in tokens:
            ids = [known[token] for token in query_tokens if token in known]
            if not ids:  # bm25s cannot score an empty query
                hits.append([])
                continue
            scores = self.retriever.get_scores(ids)  # (N,)
            top_scores, top_rows = bm25s.selection.topk(scores, k=k, backend="auto", sorted=True)  # (k,) each
            hits.append([(row, score) for row, score in zip(top_rows.tolist(), top_scores.tolist()) if score > 0])
        docs = iter(self.store.get([row for query_hits in hits for row, _ in query_hits]))
        return [[{**next(docs), "score": float(score)} for _, score in query_hits] for query_hits in hits]

    def as_tool(self) -> Tool:
        """The `<search>query</search>` tool; its observation lists the documents found."""

        def run_search(query: str) -> str:
            return format_documents(self.search(query)) or "No results found."

        return Tool(name="search", open_tag="<search>", close_tag="</search>", fn=run_search)
