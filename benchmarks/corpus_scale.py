"""BM25 search as the corpus grows: in memory (`store="memory"`) vs on disk (`store="disk"`: a CorpusStore and the
streamed, memory-mapped index).

    python -m benchmarks.corpus_scale --sizes 100000 1000000 [--queries 100] [--output DIR] [--keep]

For each size a synthetic Wikipedia-like corpus is written in the FlashRAG / Search-R1 layout
(`{"id", "contents": '"Title"\\ntext'}`, ~100-word passages of sentences over common English words and made-up
proper names whose frequencies fall off like a power law, so that the vocabulary keeps growing with the corpus as a
real one does). It is seeded and written one passage at a time: a million passages never sit in memory.

Each method then runs in two fresh processes: `build` (from no cache: build time, peak RSS = VmHWM, size on disk
of everything it wrote) and `query` (its cache loaded: RSS after loading, then `--queries` searches, their median
latency and the RSS after them). RSS counts the pages of memory-mapped files the process has touched (the disk
path's postings and SQLite pages), which the kernel can drop under pressure; the page cache is warm from the
build. Prints a markdown table; `--output` also writes it with the raw numbers as JSON.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

METHODS = ("memory", "disk")
COMMON = ("city town river village school church station bridge island lake mountain valley forest road railway "
          "army battle war king queen prince empire province county district state party election government "
          "album song band film series season episode novel book author poet painter composer singer actor team "
          "club league player coach game championship cup university college student professor museum hospital "
          "company bank factory market trade ship port airport company family father mother son daughter brother "
          "sister wife husband century year decade population area border coast north south east west first last "
          "new old large small major minor early late former national local public royal ancient modern").split()
VERBS = "founded built won lost married wrote recorded released joined led defeated served became moved died".split()
SYLLABLES = ("ka lo mi ne ra to vu si de ba ru fe go hi ja ke li mo nu pa qui re sa ti un ve wa xo ya ze an el in "
             "or ur ber dor fen gal har kin lor mar nor").split()
TITLES = ("{a}", "{a} {b}", "{a} River", "Battle of {a}", "{a} (album)", "{a} (film)", "{a} {b} (footballer)",
          "List of {n}s in {a}", "{a} County", "{a} University")
SENTENCES = ("{A} is a {adj} {n} in {B}.", "In {y}, {A} {v} the {n} of {B}.", "The {n} was {v} by {A} {B} in {y}.",
             "{A} {v} {B} after the {n} of {y}.", "It is the {adj} {n} of the {n2} of {A}.",
             "According to the {y} census, the {n} had a {n2} of {num}.", "{A} and {B} {v} a {adj} {n} together.")
ADJECTIVES = "first largest oldest second main only northern southern eastern western former".split()


def name(rng: random.Random) -> str:
    """A proper name of 2+ syllables from an unbounded set, its rank drawn from a power law (P(rank > r) ~ r^-0.9):
    a few names are common, and new ones keep coming as the corpus grows."""
    rank = len(SYLLABLES) + int(50 * rng.paretovariate(0.9))
    syllables = []
    while rank:
        rank, digit = divmod(rank, len(SYLLABLES))
        syllables.append(SYLLABLES[digit])
    return "".join(syllables).capitalize()


def passage(rng: random.Random) -> tuple[str, str]:
    """(title, ~100-word text)."""
    title = rng.choice(TITLES).format(a=name(rng), b=name(rng), n=rng.choice(COMMON))
    words, sentences = 0, []
    while words < 100:
        sentence = rng.choice(SENTENCES).format(
            A=name(rng), B=name(rng), adj=rng.choice(ADJECTIVES), n=rng.choice(COMMON), n2=rng.choice(COMMON),
            v=rng.choice(VERBS), y=rng.randint(1500, 2018), num=rng.randint(100, 900_000))
        sentences.append(sentence)
        words += sentence.count(" ") + 1
    return title, " ".join(sentences)


def write_corpus(path: Path, n: int, seed: int = 0) -> None:
    """`n` passages, FlashRAG layout, streamed to `path` (replaced atomically)."""
    rng = random.Random(seed)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for i in range(n):
            title, text = passage(rng)
            f.write(json.dumps({"id": str(i), "contents": f'"{title}"\n{text}'}) + "\n")
    tmp.replace(path)


def make_queries(n: int, seed: int = 1) -> list[str]:
    """Questions about the corpus's kind of names and words (drawn like the corpus: the frequent names hit)."""
    rng = random.Random(seed)
    forms = ("who founded {a}", "{a} {n}", "when did {a} {v} the {n}", "battle of {a} {y}", "{a} {b} {n2}",
             "what is the population of {a}")
    return [rng.choice(forms).format(a=name(rng), b=name(rng), n=rng.choice(COMMON), n2=rng.choice(COMMON),
                                     v=rng.choice(VERBS), y=rng.randint(1500, 2018)) for _ in range(n)]


# ---- measured in a child process ---------------------------------------------------------------------------


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith("VmRSS:")).split()[1]) / 1024


def peak_rss_mb() -> float:
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith("VmHWM:")).split()[1]) / 1024


def reset_peak_rss() -> None:
    """Set VmHWM to the current RSS (Linux >= 4.0): the peak read later is the build's, not the imports'."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def child(stage: str, method: str, corpus: Path, n_queries: int) -> dict:
    from icrl_lite.tools.search import BM25Search

    queries = make_queries(n_queries)
    base = rss_mb()
    if stage == "build":
        reset_peak_rss()
        started = time.perf_counter()
        BM25Search(corpus, store=method)
        return {"build_s": time.perf_counter() - started, "base_rss_mb": base, "peak_rss_mb": peak_rss_mb()}
    started = time.perf_counter()
    searcher = BM25Search(corpus, store=method)
    loaded = {"load_s": time.perf_counter() - started, "base_rss_mb": base, "loaded_rss_mb": rss_mb()}
    assert searcher.loaded_from_cache, "the query stage should load what the build stage wrote"
    latencies, found = [], 0
    for query in queries:
        started = time.perf_counter()
        found += len(searcher.search(query))
        latencies.append(time.perf_counter() - started)
    return {**loaded, "after_queries_rss_mb": rss_mb(), "median_query_ms": 1000 * statistics.median(latencies),
            "documents_found": found}


# ---- the parent --------------------------------------------------------------------------------------------


def outputs(corpus: Path, method: str) -> list[Path]:
    """Everything the method writes next to the corpus."""
    if method == "memory":
        return [corpus.with_name(corpus.name + ".bm25")]
    return [corpus.with_name(corpus.name + ".store.sqlite"), corpus.with_name(corpus.name + ".bm25-disk")]


def size_mb(paths: list[Path]) -> float:
    files = [f for p in paths for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file()]
    return sum(f.stat().st_size for f in files) / 2**20


def run_child(stage: str, method: str, corpus: Path, n_queries: int) -> dict:
    command = [sys.executable, "-m", "benchmarks.corpus_scale", "--child", stage, method, str(corpus),
               "--queries", str(n_queries)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    if done.returncode != 0:
        raise RuntimeError(f"{stage} {method} on {corpus} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(n: int, folder: Path, n_queries: int) -> list[dict]:
    corpus = folder / f"corpus-{n}.jsonl"
    if not corpus.exists():
        started = time.perf_counter()
        write_corpus(corpus, n)
        print(f"[corpus_scale] wrote {n} passages ({corpus.stat().st_size / 2**20:.0f} MB) in "
              f"{time.perf_counter() - started:.0f} s", file=sys.stderr)
    rows = []
    for method in METHODS:
        for path in outputs(corpus, method):  # build from scratch
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        built = run_child("build", method, corpus, n_queries)
        queried = run_child("query", method, corpus, n_queries)
        rows.append({"passages": n, "corpus_mb": corpus.stat().st_size / 2**20, "method": method,
                     "disk_mb": size_mb(outputs(corpus, method)), **built, **queried})
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| passages | corpus MB | method | build s | on disk MB | RSS after imports MB | peak RSS build MB "
             "| RSS loaded MB | RSS after queries MB | median query ms |",
             "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['passages']:,} | {r['corpus_mb']:.0f} | {r['method']} | {r['build_s']:.1f} | "
                     f"{r['disk_mb']:.0f} | {r['base_rss_mb']:.0f} | {r['peak_rss_mb']:.0f} | {r['loaded_rss_mb']:.0f} "
                     f"| {r['after_queries_rss_mb']:.0f} | {r['median_query_ms']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.corpus_scale", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000], help="passages per corpus")
    parser.add_argument("--queries", type=int, default=100, help="searches timed per method")
    parser.add_argument("--output", default="", help="folder for the corpora, caches and results (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the corpora and indexes (default: delete them)")
    parser.add_argument("--child", nargs=3, metavar=("STAGE", "METHOD", "CORPUS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        stage, method, corpus = args.child
        print(json.dumps(child(stage, method, Path(corpus), args.queries)))
        return
    import tempfile

    folder = Path(args.output) if args.output else Path(tempfile.mkdtemp(prefix="corpus_scale-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        rows = [row for n in args.sizes for row in measure(n, folder, args.queries)]
    finally:
        if not args.keep:
            for path in folder.glob("corpus-*"):
                shutil.rmtree(path) if path.is_dir() else path.unlink()
            if not args.output:
                folder.rmdir()
    print(table(rows))
    if args.output:
        (folder / "corpus_scale.md").write_text(table(rows) + "\n", encoding="utf-8")
        (folder / "corpus_scale.json").write_text(json.dumps(rows, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
