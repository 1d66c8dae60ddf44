"""Local BM25 search over a JSONL corpus with `bm25s`, cached on disk next to the corpus.

ICRL and Search-R1 query a dense E5 retriever over the 21M-passage Wikipedia-18 dump; we use BM25 (the
sparse baseline of Search-R1) so that search runs on a laptop CPU without a second model. Results are shown
to the model in the same "Doc 1(Title: ...) text" format the papers use.

Corpus records are `{"id", "title", "text"}`; FlashRAG records `{"id", "contents"}` are accepted too, the
first line of `contents` being the title (its surrounding quotes stripped; Search-R1 shows them: `Doc 1(Title: "T") ...`).

Two ways to hold a corpus (`store=`): in memory (the documents as Python dicts, the index as numpy arrays) or on
disk (Wikipedia scale: the documents in a `CorpusStore`, SQLite, the index built by streaming and memory-mapped,
the vocabulary in SQLite), with the same ranking, bit for bit. `store="auto"` picks disk above `DISK_STORE_BYTES`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import shutil
import sqlite3
import tempfile
import threading
import warnings
from pathlib import Path

import bm25s
import numpy as np
from tqdm.auto import tqdm

from icrl_lite.data import document, load_corpus
from icrl_lite.tools.base import Tool
from icrl_lite.tools.store import CorpusStore

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

_RUN_DOCS = 50_000  # documents tokenised at a time in the disk index's first pass
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
    whose older indexes are of stale contents); unfinished `.tmp-` folders may be another process's build."""
    for entry in cache_root.iterdir():
        if entry.name != key and not entry.name.startswith(".tmp-"):
            shutil.rmtree(entry, ignore_errors=True)


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
    """Write a bm25s index of every document of `store` into the empty folder `out`, streaming the texts.

    `bm25s.BM25.index` needs every document's token list at once (Python lists: ~50 GB for Wikipedia-18), so
    this builds bm25s's arrays itself, in two passes whose memory grows with the vocabulary, not the corpus:
      1. the texts are tokenised `_RUN_DOCS` at a time, exactly as the in-memory index tokenises them; each
         chunk's postings (token id, row, term frequency), sorted by token then row, go to temporary files as a
         "run"; document lengths (int32 per document), document frequencies (int64 per term) and the vocabulary
         (a dict str -> id) stay in memory;
      2. the vocabulary is walked in slices of about `_SLICE_POSTINGS` postings: each slice is gathered from
         every run, weighted (Lucene BM25, bm25s's default: idf(t) * tf / (tf + k1 * (1 - b + b * len(d) / avg len)),
         written in bm25s's floating-point order, so the weights are bit-identical) and written in place into the
         CSC arrays: `data` (float32 weights) and `indices` (int32 rows) grouped by term, `indptr` (int64).
    The vocabulary goes to `vocab.sqlite`, looked up per query, instead of bm25s's `vocab.index.json`: a loaded
    index then holds no per-term Python objects (bm25s would hold a dict and a set of V entries).

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
    vocab, doc_len, df, runs = _write_runs(store, out, progress)
    _write_postings(out, runs, doc_len, df, model.k1, model.b, progress)
    params = {"k1": model.k1, "b": model.b, "delta": model.delta, "method": model.method,
              "idf_method": model.idf_method, "dtype": model.dtype, "int_dtype": model.int_dtype,
              "num_docs": len(store), "version": bm25s.__version__, "backend": model.backend}
    (out / "params.index.json").write_text(json.dumps(params, indent=4), encoding="utf-8")
    db = sqlite3.connect(out / "vocab.sqlite")
    with db:
        db.execute("CREATE TABLE vocab (token TEXT PRIMARY KEY, id INTEGER NOT NULL) WITHOUT ROWID")
        db.executemany("INSERT INTO vocab VALUES (?, ?)", vocab.items())
    db.close()


_RUN_FILES = {"rows": np.int32, "tf": np.float32, "tokens": np.int32, "ends": np.int64}


def _write_runs(store: CorpusStore, out: Path, progress: bool) -> tuple[dict[str, int], np.ndarray, np.ndarray, list]:
    """Pass 1: the postings of each `_RUN_DOCS` documents, sorted by term then row, appended to `out/run_*.bin`
    (`rows`, `tf`: one entry a posting; `tokens`, `ends`: each run's terms and where their postings end).

    Returns the vocabulary (term -> id, in order of first appearance), the documents' lengths in tokens (N,),
    the terms' document frequencies (V,) and, per run, (first posting, first and end entry in `tokens`).
    """
    vocab: dict[str, int] = {}
    doc_len = np.zeros(len(store), dtype=np.int32)  # (N,)
    df = np.zeros(1 << 16, dtype=np.int64)  # (capacity,) grown with the vocabulary
    runs = []
    files = {name: (out / f"run_{name}.bin").open("wb") for name in _RUN_FILES}
    postings = terms_written = start = 0
    with tqdm(total=len(store), unit="doc", desc="BM25 index 1/2: tokenise", disable=not progress) as bar:
        for texts in store.iter_texts(_RUN_DOCS):
            ids, local_vocab = _tokenize_ids(texts)
            to_global = np.empty(len(local_vocab), dtype=np.int64)
            for token, local in local_vocab.items():
                to_global[local] = vocab.setdefault(token, len(vocab))
            n = len(ids)
            lengths = np.fromiter(map(len, ids), dtype=np.int64, count=n)  # (n,)
            flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int64, count=int(lengths.sum()))
            doc_len[start:start + n] = lengths
            key = to_global[flat] * n + np.repeat(np.arange(n), lengths)  # sorts by term, then row
            key, tf = np.unique(key, return_counts=True)  # (p,) one posting per distinct (term, document)
            terms, rows = np.divmod(key, n)
            run_terms, first = np.unique(terms, return_index=True)  # (t,)
            counts = np.diff(np.append(first, len(terms)))  # (t,) postings of each term in this run
            if len(vocab) > len(df):
                df = np.concatenate([df, np.zeros(max(len(vocab), 2 * len(df)) - len(df), dtype=np.int64)])
            df[run_terms] += counts
            for name, values in (("rows", rows + start), ("tf", tf), ("tokens", run_terms),
                                 ("ends", postings + np.cumsum(counts))):
                files[name].write(values.astype(_RUN_FILES[name]).tobytes())
            runs.append((postings, terms_written, terms_written + len(run_terms)))
            postings += len(terms)
            terms_written += len(run_terms)
            start += n
            bar.update(n)
    for f in files.values():
        f.close()
    if postings == 0:
        raise ValueError(f"no document of {store.path} has a word to index (all are empty or stopwords)")
    return vocab, doc_len, df[:len(vocab)], runs


def _write_postings(out: Path, runs: list, doc_len: np.ndarray, df: np.ndarray, k1: float, b: float,
                    progress: bool) -> None:
    """Pass 2: bm25s's CSC arrays from the runs, `_SLICE_POSTINGS` postings at a time; deletes the runs."""
    n_docs, n_terms = len(doc_len), len(df)
    avg_len = np.float64(int(doc_len.sum(dtype=np.int64))) / n_docs  # == np.mean of the lengths, as bm25s has it
    idf = np.fromiter((math.log(1 + (n_docs - d + 0.5) / (d + 0.5)) for d in df.tolist()),  # math.log, as bm25s
                      dtype=np.float32, count=n_terms)
    indptr = np.zeros(n_terms + 1, dtype=np.int64)  # (V + 1,)
    np.cumsum(df, out=indptr[1:])
    np.save(out / "indptr.csc.index.npy", indptr)
    postings = int(indptr[-1])  # a numpy integer would be written into the .npy header as "np.int64(...)"
    data = np.lib.format.open_memmap(out / "data.csc.index.npy", mode="w+", dtype=np.float32, shape=(postings,))
    indices = np.lib.format.open_memmap(out / "indices.csc.index.npy", mode="w+", dtype=np.int32, shape=(postings,))
    run = {name: np.memmap(out / f"run_{name}.bin", mode="r", dtype=dtype) for name, dtype in _RUN_FILES.items()}
    with tqdm(total=postings, unit="posting", unit_scale=True, desc="BM25 index 2/2: weigh",
              disable=not progress) as bar:
        c0 = 0
        while c0 < n_terms:  # terms c0 .. c1 - 1, whose postings are data[indptr[c0]:indptr[c1]]
            c1 = int(np.searchsorted(indptr, indptr[c0] + _SLICE_POSTINGS, side="right")) - 1
            c1 = min(max(c1, c0 + 1), n_terms)
            parts = []
            for first_posting, t0, t1 in runs:
                run_terms = run["tokens"][t0:t1]
                a, z = np.searchsorted(run_terms, [c0, c1])
                if a == z:
                    continue
                lo = first_posting if a == 0 else int(run["ends"][t0 + a - 1])
                ends = run["ends"][t0 + a:t0 + z]
                parts.append((np.repeat(run_terms[a:z], np.diff(ends, prepend=lo)), run["rows"][lo:ends[-1]],
                              run["tf"][lo:ends[-1]]))
            terms, rows, tf = (np.concatenate(column) for column in zip(*parts))
            order = np.argsort(terms, kind="stable")  # runs are in row order: rows stay ascending per term
            terms, rows, tf = terms[order], rows[order], tf[order]
            weights = idf[terms] * (tf / (k1 * ((1 - b) + b * doc_len[rows] / avg_len) + tf))  # float64, as bm25s
            data[indptr[c0]:indptr[c1]] = weights  # rounded to float32, as bm25s
            indices[indptr[c0]:indptr[c1]] = rows
            bar.update(len(rows))
            c0 = c1
    data.flush()
    indices.flush()
    del data, indices, run
    for name in _RUN_FILES:
        (out / f"run_{name}.bin").unlink()


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
    (resumable), the index is built from the store by streaming (`_build_disk_index`) into
    `<corpus file>.bm25-disk/<key>/`, the key covering the store's source fingerprint, and loaded memory-mapped;
    a query reads its terms' postings and its top-k documents only. With `cache_dir`, both go there instead.
    Same results as in memory (ids, order and scores).
    """

    def __init__(self, corpus: str | Path | list[dict], top_k: int = 3, cache_dir: str | Path | None = None,
                 store: str = "auto"):
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        if store not in STORE_MODES:
            raise ValueError(f"store={store!r}: use one of {', '.join(STORE_MODES)}")
        self.top_k = top_k
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
            tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=cache_root))
            try:
                _build_disk_index(self.store, tmp)
                tmp.chmod(0o755)  # mkdtemp makes it private to this user
                os.replace(tmp, self.index_path)
            except OSError:
                if not self.index_path.is_dir():  # else another process wrote the same index first
                    raise
            finally:
                shutil.rmtree(tmp, ignore_errors=True)  # the runs of an interrupted build; gone once renamed
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
        """`search` for many queries in one batched bm25s call.

        At most `k` (default `top_k`) documents per query, best first; documents scoring 0 (sharing no word
        with the query) are left out, so a query of only stopwords or unknown words gets [].
        """
        k = self.top_k if k is None else k
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if self.store is not None:
            return self._batch_search_disk(queries, min(k, len(self.store)))
        k = min(k, len(self.docs))
        if not queries:
            return []
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
