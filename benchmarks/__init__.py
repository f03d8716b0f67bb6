"""Performance benchmarks for selfheal: `make bench` (= ``python -m benchmarks``).

Rules every benchmark here follows:

- speed is reported as a *ratio against a baseline measured in the same run* (absolute numbers move with
  the machine, ratios much less), next to the absolute numbers for context;
- nothing here is asserted by the test suite: a benchmark reports whether an aim was met, it never fails a
  build (machines differ, CI runners are noisy);
- results go to ``benchmarks/results/<name>.json`` (stable key order, rounded numbers, machine info) so a
  change in performance shows up as a readable diff in review, and a readable table is printed.

A benchmark is a module with a ``run(options) -> dict`` function (see `BenchmarkModule`), registered in
`BENCHMARKS` below with a one-line summary (so ``--help`` and ``--list`` need not import it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True)
class Benchmark:
    """A registered benchmark: its name on the command line, its module, and what it measures."""

    name: str
    module: str
    summary: str


@dataclass(frozen=True)
class BenchOptions:
    """Options every benchmark receives.

    Attributes:
        quick: a smoke run (smaller world, fewer batches): checks the benchmark works, numbers are rough.
        results_dir: where ``<name>.json`` goes.
        save: write the result file (quick runs never overwrite the committed results unless asked).
    """

    quick: bool = False
    results_dir: Path = Path(__file__).resolve().parent / "results"
    save: bool = True


class BenchmarkModule(Protocol):
    """What a benchmark module provides."""

    def run(self, options: BenchOptions) -> dict[str, Any]:
        """Run the benchmark, print its table, and return the JSON-ready results (without machine info)."""
        ...


BENCHMARKS: tuple[Benchmark, ...] = (
    Benchmark(
        name="scoring",
        module="benchmarks.scoring",
        summary="end-to-end batch scoring (validate + features + predict + log) vs raw XGBoost "
        "inplace_predict, batches of 1/100/10k; single-transaction p50/p99; stage breakdowns",
    ),
    Benchmark(
        name="http",
        module="benchmarks.http_scoring",
        summary="selfheal serve as a process, driven from another: single-transaction p50/p99 sequential and "
        "open-loop at 200 req/s, batch throughput over HTTP, vs in-process score_one/score_batch",
    ),
    Benchmark(
        name="sources",
        module="benchmarks.sources",
        summary="reading CSV for `selfheal score` (Arrow with a per-record salvage, and the Python csv "
        "fallback) vs pandas read_csv; Parquet and JSONL beside them",
    ),
    Benchmark(
        name="drift",
        module="benchmarks.drift",
        summary="drift check, 20 numeric features, 1M x 1M, vs Evidently DataDriftPreset (own venv): time, "
        "peak memory; where the two disagree on the fault library and why",
    ),
)


def find(name: str) -> Benchmark:
    """The registered benchmark called ``name``.

    Raises:
        KeyError: no such benchmark (the message lists the known ones).
    """
    for benchmark in BENCHMARKS:
        if benchmark.name == name:
            return benchmark
    raise KeyError(f"unknown benchmark {name!r}; known: {', '.join(b.name for b in BENCHMARKS)}")
