"""Helpers shared by the benchmarks: machine description, percentiles, rounding, result files."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # rich is imported where a console is made: measured child processes never pay for it
    from rich.console import Console

REPO_ROOT = Path(__file__).resolve().parents[1]
# Libraries whose versions move the numbers; recorded with every result.
VERSIONED_PACKAGES = ("numpy", "pandas", "pyarrow", "xgboost-cpu", "xgboost", "duckdb", "scikit-learn")


def machine_info() -> dict[str, Any]:
    """Where and when the numbers were measured (enough to tell two result files apart)."""
    try:
        usable_cpus: int | None = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable_cpus = None
    versions: dict[str, str] = {}
    for package in VERSIONED_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    try:
        load: list[float] | None = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable_cpus,
        "cpu_model": _cpu_model(),
        "machine": platform.machine(),
        "os": f"{platform.system()} {platform.release()}",
        "python": sys.version.split()[0],
        "packages": versions,
        "git": _git_revision(),
        # 1/5/15-minute load before the run: other processes on the machine skew every absolute number.
        "load_average_before": load,
    }


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _git_revision() -> str | None:
    """Short commit hash, with ``+dirty`` when the work tree has changes (benchmarks run before commits)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{head}+dirty" if dirty else head


def percentile_ms(seconds: Sequence[float] | np.ndarray, q: float) -> float:
    """The q-th percentile of durations given in seconds, in milliseconds (NaN when there are none)."""
    values = np.asarray(seconds, dtype=np.float64)
    return float(np.percentile(values, q) * 1000.0) if len(values) else float("nan")


def round_significant(value: float, digits: int = 4) -> float:
    """Round to ``digits`` significant digits: enough for a benchmark, few enough for a readable diff."""
    if value == 0 or not np.isfinite(value):
        return value
    return float(f"{value:.{digits}g}")


def rounded(obj: Any, digits: int = 4) -> Any:
    """``obj`` with every float rounded to ``digits`` significant digits (dicts and lists recursively)."""
    if isinstance(obj, bool | int | str) or obj is None:
        return obj
    if isinstance(obj, float | np.floating):
        value = float(obj)
        return None if not np.isfinite(value) else round_significant(value, digits)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, dict):
        return {str(k): rounded(v, digits) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [rounded(v, digits) for v in obj]
    raise TypeError(f"cannot store {type(obj).__name__} in a benchmark result")


def write_results(name: str, payload: dict[str, Any], directory: Path, machine: dict[str, Any]) -> Path:
    """Write ``<directory>/<name>.json``: machine info first, rounded numbers, stable layout."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    document = {"benchmark": name, "machine": machine, **payload}
    path.write_text(json.dumps(rounded(document), indent=2, ensure_ascii=False) + "\n")
    return path


def report_console(width: int = 160) -> Console:
    """The console benchmark tables print to; logs and pipes get ``width`` columns, enough for them."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=width)


@dataclass
class Progress:
    """Timestamped progress lines for long benchmark runs."""

    console: Console
    started: float = field(default_factory=time.perf_counter)

    def step(self, what: str) -> None:
        self.console.print(f"[{time.perf_counter() - self.started:5.0f} s] {what}", highlight=False)
