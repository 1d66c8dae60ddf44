"""Local BM25 search over a JSONL corpus with `bm25s`, cached on disk next to the corpus.

ICRL and Search-R1 query a dense E5 retriever over the 21M-passage Wikipedia-18 dump; we use BM25 (the
sparse baseline of Search-R1) so that search runs on a laptop CPU without a second model. Results are shown
to the model in the same "Doc 1(Title: ...) text" format the papers use.

Corpus records are `{"id", "title", "text"}`; FlashRAG records `{"id", "contents"}` are accepted too, the
first line of `contents` being the title (kept verbatim, quotes included, as Search-R1 shows it).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import bm25s

from icrl_lite.data import document, load_corpus
from icrl_lite.tools.base import Tool

try:  # stemming only when PyStemmer is installed; the cache key records which was used
    import Stemmer

    _STEMMER = Stemmer.Stemmer("english")
except ImportError:
    _STEMMER = None

# Part of the cache key: bump it when tokenisation or the index layout changes.
_INDEX_FORMAT = f"bm25s-v1-lower-stopwords_en-stem_{'english' if _STEMMER else 'none'}"


def format_documents(docs: list[dict]) -> str:
    """Render results as the ICRL / Search-R1 observation: "Doc 1(Title: T) text\\nDoc 2(Title: T2) text2"."""
    return "\n".join(f"Doc {i}(Title: {doc['title']}) {doc['text']}" for i, doc in enumerate(docs, start=1))


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _tokenize(texts: list[str]) -> list[list[str]]:
    return bm25s.tokenize(texts, lower=True, stopwords="en", stemmer=_STEMMER, return_ids=False, show_progress=False)


def _build_index(docs: list[dict]) -> bm25s.BM25:
    """Index title + text of every document."""
    retriever = bm25s.BM25()
    retriever.index(_tokenize([f"{d['title']}\n{d['text']}" for d in docs]), show_progress=False)
    return retriever


class BM25Search:
    """BM25 over a corpus (a JSONL path or a list of records), returning the `top_k` best documents.

    With a path, the index is cached in `<corpus file>.bm25/<key>/` (or `cache_dir/<key>/`), where the key
    is the sha256 of the corpus bytes and the tokenisation settings: an unchanged corpus loads from disk, a
    changed one is re-indexed (and, in the default cache directory, its stale indexes are deleted). A list
    corpus is cached only when `cache_dir` is given. If the cache cannot be written, the index stays in
    memory and a warning says why.
    """

    def __init__(self, corpus: str | Path | list[dict], top_k: int = 3, cache_dir: str | Path | None = None):
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        self.top_k = top_k
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
            for entry in cache_root.iterdir():
                if entry.name != key and not entry.name.startswith(".tmp-"):
                    shutil.rmtree(entry, ignore_errors=True)
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

    def as_tool(self) -> Tool:
        """The `<search>query</search>` tool; its observation lists the documents found."""

        def run_search(query: str) -> str:
            return format_documents(self.search(query)) or "No results found."

        return Tool(name="search", open_tag="<search>", close_tag="</search>", fn=run_search)
