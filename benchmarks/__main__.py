"""``python -m benchmarks [NAME ...]``: run every registered benchmark, or the ones named."""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path
from typing import cast

from benchmarks import BENCHMARKS, BenchmarkModule, BenchOptions, find
from benchmarks.common import machine_info, write_results


def _parser() -> argparse.ArgumentParser:
    listing = "\n".join(f"  {b.name:<10} {b.summary}" for b in BENCHMARKS)
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Run selfheal's performance benchmarks. Speeds are reported as ratios against a "
        "baseline measured in the same run; aims are reported, never enforced.",
        epilog=f"benchmarks:\n{listing}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help="benchmarks to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: smaller world, fewer batches; results are not saved"
    )
    parser.add_argument(
        "--results-dir",
        type=Path,
        default=BenchOptions().results_dir,
        help="where <name>.json is written (default: benchmarks/results)",
    )
    parser.add_argument("--no-save", action="store_true", help="print the tables only; write no result file")
    parser.add_argument("--save", action="store_true", help="write the result file even with --quick")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.list:
        for benchmark in BENCHMARKS:
            print(f"{benchmark.name:<10} {benchmark.summary}")
        return 0
    try:
        selected = [find(name) for name in args.names] if args.names else list(BENCHMARKS)
    except KeyError as error:
        print(error.args[0], file=sys.stderr)
        return 2
    save = not args.no_save and (args.save or not args.quick)
    options = BenchOptions(quick=args.quick, results_dir=args.results_dir, save=save)
    for benchmark in selected:
        started = time.perf_counter()
        machine = machine_info()  # before the run: its load average says how busy the machine was
        print(f"== {benchmark.name}: {benchmark.summary}", flush=True)
        module = cast(BenchmarkModule, importlib.import_module(benchmark.module))
        payload = module.run(options)
        payload["wall_seconds"] = time.perf_counter() - started
        if options.save:
            path = write_results(benchmark.name, payload, options.results_dir, machine)
            print(f"results: {path}")
        else:
            print("results not saved (--quick or --no-save)")
        print(f"== {benchmark.name} took {payload['wall_seconds']:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
