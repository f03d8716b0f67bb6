"""Reading a file for ``selfheal score``: `scorer.sources.read_records` against pandas' C reader.

What is measured: the time to turn a CSV file of simulated live traffic (the handbook columns plus
merchant, category, country and channel) into the batches the scorer takes, 10k records each, cells
left as text (validation judges the types), through

- **pandas** ``read_csv(dtype=str, keep_default_na=False, chunksize=10_000)``, then empty cells as
  missing: the baseline, a C reader with no per-record salvage (one ragged line stops it);
- **ours, Arrow**: `read_records`, i.e. `pyarrow.csv` with an invalid-row handler, re-cut into batches;
- **ours, Arrow, one block**: the same rows as Excel writes them (CRLF line ends, every text cell quoted),
  which `read_records` has Arrow read in a single block (apache/arrow#51368, `scorer/sources.py`);
- **ours, Python `csv`**: the fallback `read_records` uses for files that are not UTF-8 (and, from the
  record where Arrow stopped, for a record longer than 1 MiB).

Parquet and JSONL (same rows) are reported beside them for context. Every variant is run ``rounds``
times, interleaved, from the page cache (one untimed read first); the table shows the median rows/s and
the ratio to pandas' median. Reading the same file, each variant must deliver the same number of
records (checked, not timed).
"""

from __future__ import annotations

import csv
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
from rich.table import Table

from benchmarks import BenchOptions
from benchmarks.common import Progress, report_console
from scorer import sources
from scorer.simulate import LABEL_COLUMNS, Simulator, WorldConfig

BATCH_ROWS = 10_000


def _pandas_batches(path: Path) -> Iterator[pd.DataFrame]:
    for chunk in pd.read_csv(path, dtype=str, keep_default_na=False, chunksize=BATCH_ROWS):
        yield chunk.replace("", float("nan"))


def _python_batches(path: Path) -> Iterator[Any]:
    header = sources.csv_header(path)
    return iter(()) if header is None else sources._python_csv_rows(path, BATCH_ROWS, header)


def _count(batches: Iterator[Any]) -> int:
    return sum(len(batch) for batch in batches)


def _write_files(folder: Path, days: int) -> tuple[dict[str, Path], int]:
    frame = Simulator(WorldConfig()).generate(0, days).drop(columns=list(LABEL_COLUMNS), errors="ignore")
    paths = {
        "csv": folder / "live.csv",
        "excel_csv": folder / "live-excel.csv",
        "parquet": folder / "live.parquet",
        "jsonl": folder / "live.jsonl",
    }
    frame.to_csv(paths["csv"], index=False)
    frame.to_csv(paths["excel_csv"], index=False, lineterminator="\r\n", quoting=csv.QUOTE_NONNUMERIC)
    frame.to_parquet(paths["parquet"], index=False)
    frame.to_json(paths["jsonl"], orient="records", lines=True, date_format="iso")
    return paths, len(frame)


def run(options: BenchOptions) -> dict[str, Any]:
    console = report_console()
    progress = Progress(console)
    days, rounds = (5, 2) if options.quick else (60, 3)
    with tempfile.TemporaryDirectory(prefix="selfheal-bench-sources-") as tmp:
        progress.step(f"simulating {days} days of live traffic and writing it as CSV, Parquet and JSONL")
        paths, rows = _write_files(Path(tmp), days)
        # Else the Arrow rows would time another reader.
        for path, reading in ((paths["csv"], "blocks"), (paths["excel_csv"], "one block")):
            if sources._arrow_reading(path) != reading:
                raise RuntimeError(f"{path} would not be read through Arrow in {reading}")
        variants: dict[str, Callable[[], int]] = {
            "pandas read_csv (baseline)": lambda: _count(_pandas_batches(paths["csv"])),
            "ours, CSV (Arrow)": lambda: _count(sources.read_records(paths["csv"], batch_size=BATCH_ROWS)),
            "ours, CRLF + quotes CSV (Arrow, one block)": lambda: _count(
                sources.read_records(paths["excel_csv"], batch_size=BATCH_ROWS)
            ),
            "ours, CSV (Python csv fallback)": lambda: _count(_python_batches(paths["csv"])),
            "ours, Parquet": lambda: _count(sources.read_records(paths["parquet"], batch_size=BATCH_ROWS)),
            "ours, JSONL": lambda: _count(sources.read_records(paths["jsonl"], batch_size=BATCH_ROWS)),
        }
        for name, read in variants.items():  # warm the page cache; each must deliver every record
            delivered = read()
            if delivered != rows:
                raise RuntimeError(f"{name} delivered {delivered:,} records of {rows:,}")
        seconds: dict[str, list[float]] = {name: [] for name in variants}
        for round_number in range(rounds):
            progress.step(f"round {round_number + 1} of {rounds}")
            for name, read in variants.items():
                started = time.perf_counter()
                read()
                seconds[name].append(time.perf_counter() - started)
        csv_mib = paths["csv"].stat().st_size / 2**20

    baseline = rows / statistics.median(seconds["pandas read_csv (baseline)"])
    table = Table(title=f"reading {rows:,} records ({csv_mib:.0f} MiB of CSV) into batches of {BATCH_ROWS:,}")
    for column in ("reader", "rows/s (median)", "vs pandas read_csv", "runs (s)"):
        table.add_column(column, justify="left" if column == "reader" else "right")
    results = []
    for name, runs in seconds.items():
        rate = rows / statistics.median(runs)
        table.add_row(name, f"{rate:,.0f}", f"{rate / baseline:.2f}x", " / ".join(f"{s:.2f}" for s in runs))
        results.append({"reader": name, "rows_per_s": rate, "vs_pandas": rate / baseline, "seconds": runs})
    console.print(table)
    return {"rows": rows, "csv_mib": csv_mib, "batch_rows": BATCH_ROWS, "rounds": rounds, "readers": results}
