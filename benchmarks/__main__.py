"""`python -m benchmarks run [--quick] [--only NAME,...] [--output DIR] [--model M] [--dtype D] [--device D]
[--workloads NAME,...] [--betas B,...]`."""

from __future__ import annotations

import argparse
import sys

from benchmarks.run import BENCHMARKS, failed, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    bench = commands.add_parser("run", help="measure the machine and run the benchmarks; writes results.json and results.md")
    bench.add_argument("--quick", action="store_true", help="tiny sizes: well under a minute per benchmark (checks the machinery, not speed)")
    bench.add_argument("--only", default="", help=f"comma-separated subset of {','.join(BENCHMARKS)} (the machine section always runs)")
    bench.add_argument("--output", default="", help="folder for results.json / results.md (default runs/bench/<timestamp>)")
    bench.add_argument("--model", default="smollm2-135m", help="policy: smollm2-135m (embedded), a hub id or a local directory")
    bench.add_argument("--dtype", default="auto", choices=("auto", "fp32", "bf16", "fp16"), help="policy dtype (auto: as icrl-lite picks it)")
    bench.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    bench.add_argument("--workloads", default="", help='GRPO benchmark: comma-separated workload names, e.g. "0 demos" (default all)')
    bench.add_argument("--betas", default="", help="GRPO benchmark: comma-separated KL coefficients, e.g. 0 (default all)")
    args = parser.parse_args(argv)
    only = [name.strip() for name in args.only.split(",") if name.strip()] or None
    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()] or None
    betas = [float(b) for b in args.betas.split(",") if b.strip()] or None
    results, output = run(only=only, quick=args.quick, output=args.output or None, model=args.model,
                          dtype=args.dtype, device=args.device, workloads=workloads, betas=betas)
    print(f"[bench] results: {output / 'results.md'} and results.json")
    return 1 if failed(results) else 0


if __name__ == "__main__":
    sys.exit(main())
