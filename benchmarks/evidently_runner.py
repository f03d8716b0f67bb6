"""Evidently's side of the drift benchmark; runs inside ``benchmarks/.venv-evidently``, never in the project's.

Evidently needs pandas < 3 and the project runs pandas 3, so `benchmarks.drift` gives it a virtualenv of its
own (``requirements-evidently.txt``) and runs this script there as a subprocess: it imports nothing from
the project, only Evidently, pandas and the standard library. Two modes:

``big``
    Read a reference and a current Parquet file (the same bytes the monitor's side reads), then time
    ``Report([DataDriftPreset()]).run(current, reference)`` with every column declared numerical, and the
    extraction of the per-column results from the snapshot. Prints nothing but Evidently's own output;
    writes timings, the process's peak RSS and the per-column verdicts to ``--out`` as JSON.

``windows``
    Read many small reference samples and current windows (two Parquet files with a key column each) and
    a manifest of (window, reference) pairs, run the preset once per pair, write the per-column verdicts.

Per column Evidently reports a method, a score and a threshold. Its rule, applied here as Evidently applies
it: a p-value method (K-S, chi-square, Z-test) drifts when the p-value is below the threshold, a distance
(Wasserstein normed by the reference's standard deviation, Jensen-Shannon) when the score is at or above
it. Which method a column gets depends on the reference size and the column's distinct values (more than
1 000 reference rows: Wasserstein for > 5 distinct values, Jensen-Shannon otherwise; up to 1 000: K-S, or
chi-square / Z-test for <= 5 distinct values).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

# This script runs as a file in Evidently's virtualenv: its folder is on sys.path, the project is not.
from proc_memory import peak_rss_mib, rss_mib

started = time.perf_counter()

import pandas as pd  # noqa: E402  (timed: imports are part of what a process pays)
from evidently import DataDefinition, Dataset, Report  # noqa: E402
from evidently.presets import DataDriftPreset  # noqa: E402

IMPORT_SECONDS = time.perf_counter() - started
P_VALUE_MARK = "p_value"  # Evidently's method names: "K-S p_value", "chi-square p_value", "Z-test p_value"


def _dataset(frame: pd.DataFrame, columns: list[str]) -> Dataset:
    """The frame with every compared column declared numerical (Evidently would guess from dtypes)."""
    return Dataset.from_pandas(frame[columns], data_definition=DataDefinition(numerical_columns=columns))


def _verdicts(snapshot: Any) -> dict[str, dict[str, Any]]:
    """Per column: Evidently's method, score, threshold and whether it calls the column drifted."""
    columns: dict[str, dict[str, Any]] = {}
    for metric in snapshot.dict()["metrics"]:
        config = metric.get("config", {})
        if not str(config.get("type", "")).endswith("ValueDrift"):
            continue
        method = str(config["method"])
        score = float(metric["value"])
        threshold = float(config["threshold"])
        drifted = score < threshold if P_VALUE_MARK in method else score >= threshold
        columns[str(config["column"])] = {
            "method": method,
            "score": score,
            "threshold": threshold,
            "drifted": bool(drifted),
        }
    return columns


def _versions() -> dict[str, str]:
    found: dict[str, str] = {}
    for package in ("evidently", "pandas", "numpy", "scipy", "pyarrow"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return found


def run_big(reference_path: Path, current_path: Path) -> dict[str, Any]:
    """DataDriftPreset on two large frames: read, run, extract; timings and peak memory."""
    rss_after_imports = rss_mib()
    t0 = time.perf_counter()
    reference = pd.read_parquet(reference_path)
    current = pd.read_parquet(current_path)
    read_s = time.perf_counter() - t0
    rss_after_read = rss_mib()
    columns = [str(c) for c in reference.columns]
    t0, c0 = time.perf_counter(), time.process_time()
    report = Report([DataDriftPreset()])
    snapshot = report.run(_dataset(current, columns), _dataset(reference, columns))
    run_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    verdicts = _verdicts(snapshot)
    extract_s = time.perf_counter() - t1
    compute_cpu_s = time.process_time() - c0
    return {
        "rows_reference": len(reference),
        "rows_current": len(current),
        "columns": len(columns),
        "import_s": IMPORT_SECONDS,
        "read_s": read_s,
        "run_s": run_s,
        "extract_s": extract_s,
        "compute_s": run_s + extract_s,
        # CPU time of this process over run + extract (all threads): far less sensitive than wall time to
        # other work competing for the cores.
        "compute_cpu_s": compute_cpu_s,
        "rss_after_imports_mib": rss_after_imports,
        "rss_after_read_mib": rss_after_read,
        "peak_rss_mib": peak_rss_mib(),
        "features": verdicts,
        "versions": _versions(),
    }


def run_windows(references_path: Path, windows_path: Path, manifest_path: Path) -> dict[str, Any]:
    """DataDriftPreset once per (window, reference) pair of the manifest."""
    manifest = json.loads(manifest_path.read_text())
    key_ref, key_win, columns = manifest["reference_key"], manifest["window_key"], manifest["columns"]
    references = {str(k): g for k, g in pd.read_parquet(references_path).groupby(key_ref, sort=False)}
    windows = {str(k): g for k, g in pd.read_parquet(windows_path).groupby(key_win, sort=False)}
    results: list[dict[str, Any]] = []
    t_all = time.perf_counter()
    for pair in manifest["pairs"]:
        reference, current = references[pair["reference"]], windows[pair["window"]]
        t0 = time.perf_counter()
        snapshot = Report([DataDriftPreset()]).run(_dataset(current, columns), _dataset(reference, columns))
        results.append(
            {
                "window": pair["window"],
                "reference": pair["reference"],
                "seconds": time.perf_counter() - t0,
                "features": _verdicts(snapshot),
            }
        )
    return {
        "pairs": results,
        "total_s": time.perf_counter() - t_all,
        "peak_rss_mib": peak_rss_mib(),
        "versions": _versions(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="mode", required=True)
    big = sub.add_parser("big", help="one large reference vs one large current frame, timed")
    big.add_argument("--reference", type=Path, required=True)
    big.add_argument("--current", type=Path, required=True)
    big.add_argument("--out", type=Path, required=True)
    windows = sub.add_parser("windows", help="many small (window, reference) pairs")
    windows.add_argument("--references", type=Path, required=True)
    windows.add_argument("--windows", type=Path, required=True)
    windows.add_argument("--manifest", type=Path, required=True)
    windows.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.mode == "big":
        result = run_big(args.reference, args.current)
    else:
        result = run_windows(args.references, args.windows, args.manifest)
    args.out.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
