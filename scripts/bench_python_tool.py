"""Throughput of the restricted Python tool: calls per second for trivial code.

    python scripts/bench_python_tool.py [--seconds 5] [--threads 8]

Compares (1) calls within one warm session (the interpreter is already running), (2) a fresh session per call
(forked from the warm zygote and jailed: what every new rollout pays once), (3) many sessions from `--threads`
threads at once (how rollouts call it during training), against (4) a fresh `python -c` per call and
(5) a fresh `python -c` per call that imports numpy and sympy, the modules the warm workers have preloaded.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from icrl_lite.tools.python import PythonSandbox

CODE = "x = 6 * 7\nprint(x)"


def rate(fn, seconds: float) -> float:
    calls, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        fn()
        calls += 1
    return calls / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    sandbox = PythonSandbox()
    assert sandbox.run(CODE) == "42"  # starts the zygote outside the timings

    with sandbox.session() as session:
        warm = rate(lambda: session.run(CODE), args.seconds)
    fresh_session = rate(lambda: sandbox.run(CODE), args.seconds)

    def one_rollout(_):
        with sandbox.session() as s:
            return [s.run(CODE) for _ in range(3)]

    started = time.perf_counter()
    rollouts = 0
    with ThreadPoolExecutor(args.threads) as pool:
        while time.perf_counter() - started < args.seconds:
            list(pool.map(one_rollout, range(args.threads)))
            rollouts += args.threads
    concurrent = 3 * rollouts / (time.perf_counter() - started)

    fresh_python = rate(lambda: subprocess.run([sys.executable, "-I", "-c", CODE], capture_output=True, check=True), args.seconds)
    preload = "import numpy, sympy\n" + CODE
    fresh_preload = rate(lambda: subprocess.run([sys.executable, "-I", "-c", preload], capture_output=True, check=True),
                         max(args.seconds, 10))
    sandbox.close()
    print(f"warm session                      {warm:8.0f} calls/s")
    print(f"fresh jailed session per call     {fresh_session:8.1f} calls/s")
    print(f"{args.threads} threads, 3 calls per session     {concurrent:8.1f} calls/s")
    print(f"fresh `python -c` per call        {fresh_python:8.1f} calls/s")
    print(f"fresh `python -c` + numpy, sympy  {fresh_preload:8.2f} calls/s")


if __name__ == "__main__":
    main()
