"""BM25 search as the corpus grows: in memory (`store="memory"`) vs on disk (`store="disk"`: a CorpusStore and the
streamed, memory-mapped index), and the growth fitted and projected to Wikipedia-18's 21M passages.

    python -m benchmarks.corpus_scale --sizes 100000 1000000 [--memory-up-to 1000000] [--queries 200]
        [--batch 16] [--max-rss-gb 8] [--work DIR] [--output DIR] [--keep]

For each size a synthetic Wikipedia-like corpus is written in the FlashRAG / Search-R1 layout
(`{"id", "contents": '"Title"\\ntext'}`, ~100-word passages of sentences over common English words and made-up
proper names whose frequencies fall off like a power law, so that the vocabulary keeps growing with the corpus as a
real one does; ~590 bytes a passage against wiki18_100w's ~620). It is seeded and written one passage at a time: a
million passages never sit in memory.

Every measurement runs in a fresh process, so that their memory does not mix:
- disk: `store` (the JSONL streamed into SQLite), `index` (the BM25 index built from the store), `query`;
- memory: `build` (the corpus loaded into dicts, indexed, the index cached), `query` (the cache loaded).
A build stage reports its wall time, its CPU time (user + system: less sensitive than wall time to other jobs on a
shared machine, and the wall time of this single-threaded build on an idle one) and its peak RSS (VmHWM, reset
after the imports). `query` reports the load time, the RSS after loading, split into anonymous memory and pages of
mapped files (the disk path's postings and SQLite pages count as RSS once touched, and the kernel can drop them
under pressure, unlike the anonymous part), then one query alone (the first), `--queries` single searches and the
same queries in batches of `--batch` (`batch_search`): their latencies' p50 / p95 in wall and CPU time, the
postings each query reads, the RSS after them and the process's peak; then a second pass over the queries under
`tracemalloc` gives the most memory Python and numpy held at once while searching. The page cache is warm from
the build. VmHWM counts mapped file pages too (the disk build writes and reads its runs and arrays through memory
maps), so the parent also samples each stage's anonymous RSS every 0.1 s and reports its peak, the memory the
kernel cannot reclaim; it kills a stage whose RSS passes `--max-rss-gb`. Each stage records the load average when
it started and ended (the machine may be shared: compare the methods' ratios, measured side by side, rather than
absolute times). `--queries-only` reruns the query stages over what an earlier run kept (`--keep`).

Results: a Markdown table and the fits on stdout; with `--output`, corpus_scale.md and corpus_scale.json there.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

WIKI18_PASSAGES = 21_015_324  # wiki18_100w.jsonl, the corpus of Search-R1 and FlashRAG
METHODS = ("memory", "disk")
STAGES = {"memory": ("build", "query"), "disk": ("store", "index", "query")}
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


def memory_status() -> dict[str, float]:
    """This process's VmRSS, RssAnon, RssFile and VmHWM (peak RSS), in MiB."""
    wanted = {"VmRSS": "rss_mb", "RssAnon": "anon_mb", "RssFile": "file_mb", "VmHWM": "peak_mb"}
    with open("/proc/self/status") as f:
        fields = dict(line.split(":", 1) for line in f)
    return {key: int(fields[field].split()[0]) / 1024 for field, key in wanted.items()}


def reset_peak_rss() -> None:
    """Set VmHWM to the current RSS (Linux >= 4.0): the peak read later is the stage's, not the imports'."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.array(seconds) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)), "mean_ms": float(ms.mean())}


def postings_read(searcher, queries: list[str]) -> list[int]:
    """How many postings scoring each query reads: the document frequencies of its known terms, repeats counted."""
    from icrl_lite.tools.search import _tokenize

    indptr = np.asarray(searcher.retriever.scores["indptr"])
    tokens = _tokenize(queries)
    if searcher.store is None:
        known = searcher.retriever.vocab_dict
    else:
        words = sorted({token for query_tokens in tokens for token in query_tokens})
        known = dict(searcher._vocab_db.execute("SELECT token, id FROM vocab WHERE token IN (SELECT value FROM "
                                                "json_each(?))", (json.dumps(words),)))
    ids = [[known[t] for t in query_tokens if t in known] for query_tokens in tokens]
    return [int(sum(indptr[i + 1] - indptr[i] for i in query_ids)) for query_ids in ids]


def child(stage: str, method: str, corpus: Path, n_queries: int, batch: int) -> dict:
    from icrl_lite.tools.search import BM25Search, store_path
    from icrl_lite.tools.store import CorpusStore

    load_start = os.getloadavg()[0]
    base = memory_status()
    if stage != "query":
        reset_peak_rss()
        started, cpu = time.perf_counter(), cpu_seconds()
        if stage == "store":
            CorpusStore.build(corpus, store_path(corpus), progress=False).close()
        else:  # memory `build`, or disk `index` (the store is there: this times the index only)
            assert stage == "build" or store_path(corpus).is_file(), "the index stage needs the store stage first"
            BM25Search(corpus, store=method)
        seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu
        return {"seconds": seconds, "cpu_s": cpu, "base_rss_mb": base["rss_mb"],
                "peak_rss_mb": memory_status()["peak_mb"], "load_average": [load_start, os.getloadavg()[0]]}

    queries = make_queries(n_queries)
    started = time.perf_counter()
    searcher = BM25Search(corpus, store=method)
    load_s = time.perf_counter() - started
    assert searcher.loaded_from_cache, "the query stage should load what the build stage wrote"
    loaded = memory_status()
    started = time.perf_counter()
    searcher.search("who founded the first university")  # the first query pays for first-touch costs
    first_ms = 1000 * (time.perf_counter() - started)
    single, single_cpu, results = [], [], []
    for query in queries:
        started, cpu = time.perf_counter(), time.process_time()
        results.append(searcher.search(query))
        single.append(time.perf_counter() - started)
        single_cpu.append(time.process_time() - cpu)
    batched, batched_cpu = [], []
    for i in range(0, len(queries), batch):
        started, cpu = time.perf_counter(), time.process_time()
        found = searcher.batch_search(queries[i:i + batch])
        batched.append(time.perf_counter() - started)
        batched_cpu.append(time.process_time() - cpu)
        assert found == results[i:i + batch], "batch_search and search disagree"
    after = memory_status()
    tracemalloc.start()  # after the timings (it slows allocation): the most a query holds at once, numpy included
    for query in queries:
        searcher.search(query)
    query_alloc_mb = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    postings = postings_read(searcher, queries)
    answers = json.dumps([[(doc["id"], doc["score"]) for doc in docs] for docs in results])
    return {"load_s": load_s, "base_rss_mb": base["rss_mb"], "loaded": loaded, "after_queries": after,
            "first_query_ms": first_ms, "single": percentiles(single), "batched": percentiles(batched),
            "single_cpu": percentiles(single_cpu), "batched_cpu": percentiles(batched_cpu), "batch": batch,
            "single_s": [round(s, 6) for s in single], "single_cpu_s": [round(s, 6) for s in single_cpu],
            "postings": postings, "query_peak_alloc_mb": query_alloc_mb,
            "documents_found": sum(map(len, results)), "results_sha256": hashlib.sha256(answers.encode()).hexdigest(),
            "load_average": [load_start, os.getloadavg()[0]]}


# ---- the parent --------------------------------------------------------------------------------------------


def outputs(corpus: Path, method: str, stage: str | None = None) -> list[Path]:
    """What the method (or one of its stages) writes next to the corpus."""
    if method == "memory":
        return [corpus.with_name(corpus.name + ".bm25")]
    store, index = corpus.with_name(corpus.name + ".store.sqlite"), corpus.with_name(corpus.name + ".bm25-disk")
    return {"store": [store], "index": [index]}.get(stage, [store, index])


def size_mb(paths: list[Path]) -> float:
    files = [f for p in paths for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file()]
    return sum(f.stat().st_size for f in files) / 2**20


def run_child(stage: str, method: str, corpus: Path, args: argparse.Namespace) -> dict:
    """One stage in a fresh process, killed if its RSS passes `args.max_rss_gb`."""
    command = [sys.executable, "-m", "benchmarks.corpus_scale", "--child", stage, method, str(corpus),
               "--queries", str(args.queries), "--batch", str(args.batch)]
    limit_kb = args.max_rss_gb * 2**20
    log_file = tempfile.TemporaryFile("w+")  # not a pipe: the progress bars would fill it and block the child
    with log_file, subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log_file, text=True,
                                    cwd=Path(__file__).resolve().parents[1]) as process:
        killed, peak_anon_kb = False, 0
        while process.poll() is None:
            try:
                with open(f"/proc/{process.pid}/status") as f:
                    fields = dict(line.split(":", 1) for line in f)
                rss_kb, anon_kb = int(fields["VmRSS"].split()[0]), int(fields["RssAnon"].split()[0])
            except (FileNotFoundError, KeyError, ProcessLookupError, ValueError):
                rss_kb = anon_kb = 0
            peak_anon_kb = max(peak_anon_kb, anon_kb)
            if rss_kb > limit_kb:
                process.send_signal(signal.SIGKILL)
                killed = True
            time.sleep(0.1)
        stdout, _ = process.communicate()
        log_file.seek(0)
        stderr = log_file.read()
    if killed:
        return {"killed": f"RSS above {args.max_rss_gb} GiB"}
    if process.returncode != 0:
        raise RuntimeError(f"{stage} {method} on {corpus} failed:\n{stderr[-4000:]}")
    return json.loads(stdout.strip().splitlines()[-1]) | {"peak_anon_mb": peak_anon_kb / 1024}


def index_shape(corpus: Path) -> dict[str, int]:
    """The disk index's vocabulary size V and postings P."""
    [index] = [p for p in outputs(corpus, "disk", "index")[0].iterdir() if p.is_dir()]
    indptr = np.load(index / "indptr.csc.index.npy", mmap_mode="r")
    return {"terms": len(indptr) - 1, "postings": int(indptr[-1])}


def measure(n: int, folder: Path, args: argparse.Namespace) -> list[dict]:
    corpus = folder / f"corpus-{n}.jsonl"
    if args.queries_only and not corpus.exists():
        raise SystemExit(f"--queries-only: no {corpus}; build it first with --keep")
    if not corpus.exists():
        started = time.perf_counter()
        write_corpus(corpus, n)
        log(f"wrote {n:,} passages ({corpus.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - started:.0f} s")
    rows = []
    methods = [m for m in args.methods if m != "memory" or n <= args.memory_up_to]
    for method in methods:
        stages = ("query",) if args.queries_only else STAGES[method]
        for path in outputs(corpus, method):
            if args.queries_only and not path.exists():
                raise SystemExit(f"--queries-only: no {path}; build it first with --keep")
            if not args.queries_only:  # build from scratch
                shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        row = {"passages": n, "corpus_mb": corpus.stat().st_size / 2**20, "method": method}
        for stage in stages:
            started = time.perf_counter()
            row[stage] = run_child(stage, method, corpus, args)
            log(f"{n:,} {method} {stage}: {time.perf_counter() - started:.0f} s wall"
                + (f" ({row[stage]['killed']})" if "killed" in row[stage] else ""))
            if "killed" in row[stage]:
                break
            if stage != "query":
                row[stage]["disk_mb"] = size_mb(outputs(corpus, method, stage))
        if method == "disk" and "query" in row:
            row.update(index_shape(corpus))
        rows.append(row)
    if not args.keep and not args.queries_only:
        for path in [corpus] + [p for m in methods for p in outputs(corpus, m)]:
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    return rows


def log(message: str) -> None:
    print(f"[corpus_scale {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---- the report --------------------------------------------------------------------------------------------


def build_seconds(row: dict) -> float:
    return sum(row[stage]["seconds"] for stage in STAGES[row["method"]] if stage != "query")


def built(row: dict) -> list[str]:
    """The build stages the row has (none in a `--queries-only` run)."""
    return [s for s in STAGES[row["method"]] if s != "query" and s in row]


def table(rows: list[dict]) -> str:
    lines = ["| passages | method | build s (store + index) | build CPU s | peak RSS build MiB (anon) | on disk MiB "
             "| load s | RSS loaded MiB (anon + file) | RSS after queries MiB (anon + file) "
             "| peak RSS query MiB (anon; traced) | single query p50 / p95 ms (CPU) | batch p50 / p95 ms (CPU) "
             "| postings / query (mean) |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        killed = next((f"{s} killed: {r[s]['killed']}" for s in STAGES[r["method"]] if "killed" in r.get(s, {})), None)
        if killed:
            lines.append(f"| {r['passages']:,} | {r['method']} | {killed} |")
            continue
        q, stages = r["query"], built(r)
        if stages:
            build = f"{build_seconds(r):.1f}" + (f" ({r['store']['seconds']:.1f} + {r['index']['seconds']:.1f})"
                                                if r["method"] == "disk" else "")
            cpu = f"{sum(r[s]['cpu_s'] for s in stages):.1f}"
            peak = " / ".join(f"{r[s]['peak_rss_mb']:.0f} ({r[s]['peak_anon_mb']:.0f})" for s in stages)
            disk = f"{sum(r[s]['disk_mb'] for s in stages):.0f}"
        else:
            build = cpu = peak = disk = "-"

        def rss(m):
            return f"{m['rss_mb']:.0f} ({m['anon_mb']:.0f} + {m['file_mb']:.0f})"

        traced = f"{q['query_peak_alloc_mb']:.0f}" if "query_peak_alloc_mb" in q else "-"

        def latency(kind):
            wall, cpu_time = q[kind], q.get(f"{kind}_cpu")
            text = f"{wall['p50_ms']:.1f} / {wall['p95_ms']:.1f}"
            return text + (f" ({cpu_time['p50_ms']:.1f} / {cpu_time['p95_ms']:.1f})" if cpu_time else "")

        lines.append(f"| {r['passages']:,} | {r['method']} | {build} | {cpu} | {peak} | {disk} "
                     f"| {q['load_s']:.1f} | {rss(q['loaded'])} | {rss(q['after_queries'])} "
                     f"| {q['after_queries']['peak_mb']:.0f} ({q['peak_anon_mb']:.0f}; {traced}) "
                     f"| {latency('single')} | {latency('batched')} | {np.mean(q['postings']):,.0f} |")
    return "\n".join(lines)


def fit_line(x: list[float], y: list[float]) -> tuple[float, float]:
    """Least-squares y = a + b x (exact through two points)."""
    b, a = np.polyfit(np.asarray(x, dtype=float), np.asarray(y, dtype=float), 1)
    return float(a), float(b)


def projections(rows: list[dict], target: int = WIKI18_PASSAGES) -> list[str]:
    """Linear fits in the number of passages N, evaluated at `target`; per size, a query's latency against the
    postings it reads."""
    lines = []
    for method in METHODS:
        done = [r for r in rows if r["method"] == method and "query" in r and "killed" not in r["query"]]
        if len(done) < 2:
            continue
        n = [r["passages"] for r in done]
        metrics = {}
        if all(built(r) for r in done):
            stages = built(done[0])
            metrics |= {"build s": [build_seconds(r) for r in done],
                        "build CPU s": [sum(r[s]["cpu_s"] for s in stages) for r in done],
                        "on disk MiB": [sum(r[s]["disk_mb"] for s in stages) for r in done],
                        "peak RSS build MiB": [max(r[s]["peak_rss_mb"] for s in stages) for r in done],
                        "peak anonymous RSS build MiB": [max(r[s]["peak_anon_mb"] for s in stages) for r in done]}
            if method == "disk":
                metrics |= {"store s": [r["store"]["seconds"] for r in done],
                            "index s": [r["index"]["seconds"] for r in done],
                            "index CPU s": [r["index"]["cpu_s"] for r in done]}
        metrics |= {"RSS after queries MiB": [r["query"]["after_queries"]["rss_mb"] for r in done],
                    "peak anonymous RSS query MiB": [r["query"]["peak_anon_mb"] for r in done],
                    "anonymous RSS after queries MiB": [r["query"]["after_queries"]["anon_mb"] for r in done]}
        if all("query_peak_alloc_mb" in r["query"] for r in done):
            metrics["traced peak while searching MiB"] = [r["query"]["query_peak_alloc_mb"] for r in done]
        for kind in ("single", "single_cpu", "batched", "batched_cpu"):
            if all(kind in r["query"] for r in done):
                for stat in ("p50_ms", "p95_ms", "mean_ms"):
                    metrics[f"{kind} {stat}"] = [r["query"][kind][stat] for r in done]
        if method == "disk" and all("postings" in r for r in done):
            metrics["postings P"] = [r["postings"] for r in done]
        lines.append(f"{method}, fitted on N = {', '.join(f'{x:,}' for x in n)}:")
        for label, y in metrics.items():
            a, b = fit_line(n, y)
            lines.append(f"- {label}: {a:,.1f} + {b:.6g} N -> {a + b * target:,.0f} at N = {target:,}")
        if method == "disk" and all("terms" in r for r in done):
            beta, log_k = np.polyfit(np.log(n), np.log([r["terms"] for r in done]), 1)
            lines.append(f"- terms V (a power law, Heaps): {np.exp(log_k):.3g} N^{beta:.3f} -> "
                         f"{np.exp(log_k) * target ** beta:,.0f} at N = {target:,}")
        for r in done:
            seconds = r["query"].get("single_cpu_s", r["query"]["single_s"])
            a, b = fit_line(r["query"]["postings"], [1000 * s for s in seconds])
            lines.append(f"- at N = {r['passages']:,}, a single query's {'CPU' if 'single_cpu_s' in r['query'] else ''}"
                         f" ms = {a:.2f} + {1e6 * b:.3f} per million postings read (least squares over "
                         f"{len(seconds)} queries; mean {np.mean(r['query']['postings']) / r['passages']:.3f} N "
                         f"postings a query)")
    return lines


def ratios(rows: list[dict]) -> list[str]:
    """disk / memory at each size both were measured at: the comparison a shared machine's load does not skew."""
    lines = ["| passages | build wall | build CPU | peak RSS build | peak anonymous RSS build | RSS after queries "
             "| anonymous RSS after queries | single query p50 | batch p50 | same top-k (ids and scores) |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for n in sorted({r["passages"] for r in rows}):
        by = {r["method"]: r for r in rows if r["passages"] == n and "query" in r and "killed" not in r["query"]}
        if len(by) < 2:
            continue
        d, m = by["disk"], by["memory"]
        values = []
        if built(d) and built(m):
            values += [build_seconds(d) / build_seconds(m),
                       (d["store"]["cpu_s"] + d["index"]["cpu_s"]) / m["build"]["cpu_s"],
                       max(d["store"]["peak_rss_mb"], d["index"]["peak_rss_mb"]) / m["build"]["peak_rss_mb"],
                       max(d["store"]["peak_anon_mb"], d["index"]["peak_anon_mb"]) / m["build"]["peak_anon_mb"]]
        else:
            values += [None] * 4
        values += [d["query"]["after_queries"]["rss_mb"] / m["query"]["after_queries"]["rss_mb"],
                   d["query"]["after_queries"]["anon_mb"] / m["query"]["after_queries"]["anon_mb"],
                   d["query"]["single"]["p50_ms"] / m["query"]["single"]["p50_ms"],
                   d["query"]["batched"]["p50_ms"] / m["query"]["batched"]["p50_ms"]]
        same = "yes" if d["query"]["results_sha256"] == m["query"]["results_sha256"] else "**no**"
        lines.append(f"| {n:,} | " + " | ".join("-" if v is None else f"{v:.2f}x" for v in values) + f" | {same} |")
    return lines if len(lines) > 2 else []


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem_kb = int(next(line for line in Path("/proc/meminfo").read_text().splitlines()
                      if line.startswith("MemTotal")).split()[1])
    root = Path(__file__).resolve().parents[1]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=root).stdout
    import bm25s

    try:
        import Stemmer  # noqa: F401
        stemmer = True
    except ImportError:
        stemmer = False
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(mem_kb / 2**20, 1), "commit": commit.strip(),
            "python": platform.python_version(), "numpy": np.__version__, "bm25s": bm25s.__version__,
            "stemmer": stemmer, "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
            "load_average_start": [round(x, 2) for x in os.getloadavg()]}


def report(rows: list[dict], about: dict) -> str:
    return "\n".join([
        "# BM25 at growing corpus sizes: in memory vs on disk", "",
        f"`{about['command']}`", "",
        f"{about['date_utc']} UTC to {about['end_utc']} UTC, commit {about['commit']}; {about['cpu']}, "
        f"{about['cores']} cores, {about['memory_gib']} GiB; Python {about['python']}, numpy {about['numpy']}, "
        f"bm25s {about['bm25s']}, PyStemmer {'yes' if about['stemmer'] else 'no'}; load average "
        f"{about['load_average_start'][0]} at the start, {about['load_average_end'][0]} at the end.", "",
        table(rows), "",
        "Disk / memory, measured side by side in this run:", "", *ratios(rows), "",
        "Fits (linear in the number of passages N; per size, latency against the postings a query reads):", "",
        *projections(rows), ""])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.corpus_scale", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000], help="passages per corpus")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS), help="stores to measure")
    parser.add_argument("--memory-up-to", type=int, default=1_000_000,
                        help="measure store=memory only at sizes up to this (it holds the corpus in RAM)")
    parser.add_argument("--queries", type=int, default=200, help="searches timed per method, single and batched")
    parser.add_argument("--batch", type=int, default=16, help="queries per batch_search call")
    parser.add_argument("--max-rss-gb", type=float, default=8.0, help="kill a stage whose RSS passes this")
    parser.add_argument("--work", default="", help="folder for the corpora and indexes (default: a temp dir)")
    parser.add_argument("--output", default="", help="folder for corpus_scale.md and corpus_scale.json")
    parser.add_argument("--keep", action="store_true", help="keep the corpora and indexes (default: delete them)")
    parser.add_argument("--queries-only", action="store_true",
                        help="only the query stage, over the corpora and indexes an earlier run kept in --work")
    parser.add_argument("--child", nargs=3, metavar=("STAGE", "METHOD", "CORPUS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        stage, method, corpus = args.child
        print(json.dumps(child(stage, method, Path(corpus), args.queries, args.batch)))
        return
    about = machine() | {"command": "python -m benchmarks.corpus_scale " + " ".join(sys.argv[1:] if argv is None
                                                                                    else argv)}
    folder = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="corpus_scale-"))
    folder.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    try:
        for n in args.sizes:
            rows += measure(n, folder, args)
            write(rows, about, args)  # after each size: a later size that fails or is stopped keeps these
    finally:
        if not args.work and not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    print(report(rows, about | end()))


def end() -> dict:
    return {"end_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
            "load_average_end": [round(x, 2) for x in os.getloadavg()]}


def write(rows: list[dict], about: dict, args: argparse.Namespace) -> None:
    if not args.output:
        return
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    about = about | end()
    (out / "corpus_scale.md").write_text(report(rows, about), encoding="utf-8")
    (out / "corpus_scale.json").write_text(json.dumps({"about": about, "rows": rows}, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
