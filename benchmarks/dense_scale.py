"""Dense retrieval as the corpus grows: the exact flat index (`DenseSearch`) vs the compressed IVF-PQ index
(`IVFPQSearch`: documents in a CorpusStore, `pq_m`-byte codes in memory, float16 vectors on disk to re-rank).

    python -m benchmarks.dense_scale --real 2000 --proxy 20000 100000 [--queries 100] [--output DIR] [--keep]

Corpora are benchmarks.corpus_scale's synthetic Wikipedia-like passages (~100 words, FlashRAG layout), queries its
`make_queries`. Two encoders:
- real: the bundled all-MiniLM-L6-v2 (384 dims), the default dense model. It gives the encoding throughput and
  the recall on real embeddings, at the sizes this CPU can encode in the time available.
- proxy: the same model's input token embeddings, averaged over the passage's tokens (384 dims, no transformer
  layers, thousands of passages a second). A stand-in to measure the indexes at larger sizes: its neighbours are
  not MiniLM's, so its recall is indicative only.

Per corpus, each in a fresh process: `flat build` (the embeddings encoded and cached: the encoding time and
throughput), `ivfpq build` (the store, training, compression; the passages are not encoded again: the encoder is
replaced by a lookup of flat's cached embeddings, so the two indexes hold the same vectors and the recall measures
the index alone), then `query` for each (RSS after loading, median latency per query of `--queries` searches one at
a time at k=3, RSS after; ivfpq at each (nprobe, rerank) of `SETTINGS`, rerank 1 being the top 3 of the PQ codes
alone). Recall@3 is |ivfpq top 3 & flat top 3| / 3, averaged over the queries, top-1 the share of queries whose
first result is flat's. Prints a markdown table; `--output` also writes it with the raw numbers and the machine as
JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.corpus_scale import make_queries, write_corpus

SETTINGS = ((8, 10), (32, 10), (64, 10), (128, 10), (32, 1))  # (nprobe, rerank) of the ivfpq queries; rerank 1: codes alone
K = 3


def status_mb(field: str) -> float:
    """A memory figure of this process from /proc/self/status (VmRSS: resident now, VmHWM: its peak), in MiB."""
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith(field + ":")).split()[1]) / 1024


def reset_peak_rss() -> None:
    """Set VmHWM to the current RSS (Linux >= 4.0): the peak read later is the build's, not the imports'."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def size_mb(paths: list[Path]) -> float:
    files = [f for p in paths for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file()]
    return sum(f.stat().st_size for f in files) / 2**20


class StaticMiniLM:
    """The proxy encoder: the mean of all-MiniLM-L6-v2's input token embeddings over a text's tokens (384 dims)."""

    def __init__(self):
        from icrl_lite.tools import dense

        model = dense._load_model(dense.DEFAULT_MODEL, "cpu")
        self.tokenizer = model.tokenizer
        self.table = model[0].auto_model.embeddings.word_embeddings.weight.detach().float().numpy()  # (V, 384)

    def get_sentence_embedding_dimension(self) -> int:
        return self.table.shape[1]

    def encode(self, texts: list[str], **kwargs) -> np.ndarray:
        return np.concatenate([self._encode(texts[i:i + 256]) for i in range(0, len(texts), 256)])  # (n, 384)

    def _encode(self, texts: list[str]) -> np.ndarray:
        ids = self.tokenizer(list(texts), add_special_tokens=False, truncation=True, max_length=256)["input_ids"]
        lengths = np.array([max(len(row), 1) for row in ids])
        flat = np.concatenate([row or [self.tokenizer.unk_token_id] for row in ids])
        sums = np.add.reduceat(self.table[flat], np.concatenate([[0], np.cumsum(lengths)[:-1]]))  # (n, 384)
        return sums / lengths[:, None]


class FlatLookup:
    """An encoder that returns flat's cached embedding of each passage it was built with (queries are not asked)."""

    def __init__(self, flat, prefix: str):
        from icrl_lite.tools.dense import _passage_text

        self.embeddings = flat.embeddings  # (N, D)
        self.row = {_passage_text(doc, prefix): i for i, doc in enumerate(flat.docs)}

    def get_sentence_embedding_dimension(self) -> int:
        return self.embeddings.shape[1]

    def encode(self, texts: list[str], **kwargs) -> np.ndarray:
        return self.embeddings[[self.row[text] for text in texts]]


# ---- measured in a child process ---------------------------------------------------------------------------


def child(stage: str, method: str, encoder: str, corpus: Path, n_queries: int) -> dict:
    from icrl_lite.tools import dense

    if encoder == "proxy":
        proxy = StaticMiniLM()
        dense._load_model = lambda model, device: proxy
    queries = make_queries(n_queries)
    base = status_mb("VmRSS")
    if stage == "build" and method == "flat":
        reset_peak_rss()
        started = time.perf_counter()
        flat = dense.DenseSearch(corpus)
        seconds = time.perf_counter() - started
        assert not flat.loaded_from_cache, "the build stage should start from no cache"
        return {"build_s": seconds, "passages_per_s": len(flat.docs) / seconds, "base_rss_mb": base,
                "peak_rss_mb": status_mb("VmHWM")}
    if stage == "build":
        from icrl_lite.tools.search import store_path
        from icrl_lite.tools.store import CorpusStore

        lookup = FlatLookup(dense.DenseSearch(corpus), prefix="")
        dense._load_model = lambda model, device: lookup
        reset_peak_rss()
        started = time.perf_counter()
        CorpusStore.build(corpus, store_path(corpus), progress=False).close()
        store_s = time.perf_counter() - started
        searcher = dense.IVFPQSearch(corpus, progress=False)
        return {"build_s": time.perf_counter() - started, "store_s": store_s, "base_rss_mb": base,
                "peak_rss_mb": status_mb("VmHWM"), "nlist": searcher.nlist, "pq_m": searcher.pq_m,
                "n_train": searcher.n_train, "index_mb": searcher.index_path.stat().st_size / 2**20}
    started = time.perf_counter()
    searcher = dense.DenseSearch(corpus) if method == "flat" else dense.IVFPQSearch(corpus, progress=False)
    loaded = {"load_s": time.perf_counter() - started, "base_rss_mb": base, "loaded_rss_mb": status_mb("VmRSS")}
    assert searcher.loaded_from_cache, "the query stage should load what the build stage wrote"
    searcher.search("warm up the encoder")
    runs = {}
    for setting in [None] if method == "flat" else SETTINGS:
        if setting is not None:
            searcher.index.nprobe, searcher.rerank = setting
            searcher._cache.clear()
        latencies, ids = [], []
        for query in queries:
            started = time.perf_counter()
            ids.append([doc["id"] for doc in searcher.search(query, K)])
            latencies.append(time.perf_counter() - started)
        runs["exact" if setting is None else "%d,%d" % setting] = {
            "median_query_ms": 1000 * statistics.median(latencies), "ids": ids}
    return {**loaded, "after_queries_rss_mb": status_mb("VmRSS"), "runs": runs}


# ---- the parent --------------------------------------------------------------------------------------------


def outputs(corpus: Path, method: str) -> list[Path]:
    """Everything the method writes next to the corpus."""
    if method == "flat":
        return [corpus.with_name(corpus.name + ".dense")]
    return [corpus.with_name(corpus.name + ".store.sqlite"), corpus.with_name(corpus.name + ".dense-ivfpq")]


def run_child(stage: str, method: str, encoder: str, corpus: Path, n_queries: int) -> dict:
    command = [sys.executable, "-m", "benchmarks.dense_scale", "--child", stage, method, encoder, str(corpus),
               "--queries", str(n_queries)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1],
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if done.returncode != 0:
        raise RuntimeError(f"{stage} {method} ({encoder}) on {corpus} failed:\n{done.stderr[-4000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"[dense_scale] {stage} {method} {encoder} {corpus.name}: "
          f"{ {k: v for k, v in result.items() if k != 'runs'} }", file=sys.stderr, flush=True)
    return result


def overlap(found: list[list[str]], exact: list[list[str]]) -> tuple[float, float]:
    """(recall@K against the exact results, share of queries whose first result is the exact first)."""
    recall = statistics.mean(len(set(a) & set(b)) / len(b) for a, b in zip(found, exact) if b)
    top1 = statistics.mean(bool(a) and a[0] == b[0] for a, b in zip(found, exact) if b)
    return recall, top1


def measure(n: int, encoder: str, folder: Path, n_queries: int) -> list[dict]:
    corpus = folder / f"corpus-{n}.jsonl"
    if not corpus.exists():
        write_corpus(corpus, n)
    for method in ("flat", "ivfpq"):
        for path in outputs(corpus, method):  # build from scratch
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    common = {"passages": n, "encoder": encoder, "corpus_mb": corpus.stat().st_size / 2**20}
    flat_build = run_child("build", "flat", encoder, corpus, n_queries)
    ivfpq_build = run_child("build", "ivfpq", encoder, corpus, n_queries)
    flat_query = run_child("query", "flat", encoder, corpus, n_queries)
    ivfpq_query = run_child("query", "ivfpq", encoder, corpus, n_queries)
    exact = flat_query["runs"]["exact"]["ids"]
    rows = [{**common, "method": "flat", "nprobe": None, "rerank": None, "disk_mb": size_mb(outputs(corpus, "flat")),
             **flat_build, **{k: v for k, v in flat_query.items() if k != "runs"},
             "median_query_ms": flat_query["runs"]["exact"]["median_query_ms"], "recall": 1.0, "top1": 1.0}]
    for setting, run in ivfpq_query["runs"].items():
        nprobe, rerank = map(int, setting.split(","))
        recall, top1 = overlap(run["ids"], exact)
        rows.append({**common, "method": "ivfpq", "nprobe": nprobe, "rerank": rerank,
                     "disk_mb": size_mb(outputs(corpus, "ivfpq")), **ivfpq_build,
                     **{k: v for k, v in ivfpq_query.items() if k != "runs"},
                     "median_query_ms": run["median_query_ms"], "recall": recall, "top1": top1})
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| encoder | passages | method | nprobe | rerank | build s | passages/s | index in RAM MB | on disk MB "
             "| RSS loaded MB | RSS after queries MB | median query ms | recall@3 vs flat | top-1 = flat's |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        index_mb = r.get("index_mb", r["disk_mb"])
        speed = f"{r['passages_per_s']:.1f}" if "passages_per_s" in r else ""
        lines.append(f"| {r['encoder']} | {r['passages']:,} | {r['method']} | {r['nprobe'] or ''} | {r['rerank'] or ''} "
                     f"| {r['build_s']:.1f} "
                     f"| {speed} | {index_mb:.1f} | {r['disk_mb']:.1f} | {r['loaded_rss_mb']:.0f} "
                     f"| {r['after_queries_rss_mb']:.0f} | {r['median_query_ms']:.1f} | {r['recall']:.3f} "
                     f"| {r['top1']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.dense_scale", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", type=int, nargs="*", default=[2_000], help="corpus sizes encoded with MiniLM")
    parser.add_argument("--proxy", type=int, nargs="*", default=[20_000, 100_000],
                        help="corpus sizes encoded with the proxy encoder")
    parser.add_argument("--queries", type=int, default=100, help="searches timed per method")
    parser.add_argument("--output", default="", help="folder for the corpora, caches and results (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the corpora and indexes (default: delete them)")
    parser.add_argument("--child", nargs=4, metavar=("STAGE", "METHOD", "ENCODER", "CORPUS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        stage, method, encoder, corpus = args.child
        print(json.dumps(child(stage, method, encoder, Path(corpus), args.queries)))
        return
    import tempfile

    import torch

    from benchmarks.machine import describe_machine

    machine = describe_machine(torch.device("cpu"))
    folder = Path(args.output) if args.output else Path(tempfile.mkdtemp(prefix="dense_scale-"))
    folder.mkdir(parents=True, exist_ok=True)
    started = time.time()
    try:
        rows = [row for encoder, sizes in (("real", args.real), ("proxy", args.proxy)) for n in sizes
                for row in measure(n, encoder, folder, args.queries)]
    finally:
        if not args.keep:
            for path in folder.glob("corpus-*"):
                shutil.rmtree(path) if path.is_dir() else path.unlink()
            if not args.output:
                folder.rmdir()
    machine["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    machine["wall_s"] = round(time.time() - started)
    print(table(rows))
    if args.output:
        (folder / "dense_scale.md").write_text(table(rows) + "\n", encoding="utf-8")
        (folder / "dense_scale.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=2),
                                                 encoding="utf-8")


if __name__ == "__main__":
    main()
