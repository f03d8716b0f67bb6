"""Drift benchmark: the monitor's binned drift check against Evidently's DataDriftPreset, in the same run.

What is measured, and why (DESIGN 6; the issue's acceptance: "drift over 20 numeric features, 1M reference
rows x 1M current rows, against Evidently's DataDriftPreset in the same run ... >= 50x faster and less
memory, and report where the two disagree on the fault library and why"):

1. **Cost at 1M x 1M x 20.** One seeded data set -- 20 numeric features shaped like a card-fraud feature
   store (skewed amounts, zero-inflated counts, zero-inflated bounded ratios, 0/1 flags, an hour of day,
   a column with 1 % nulls; see `FEATURE_SHAPES`), 1,000,000 reference rows and 1,000,000 current rows
   with three realistic changes (card testing at tiny amounts, travellers far from home, more foreign
   terminals) -- is written once to two Parquet files, and each side reads those same bytes in a fresh
   subprocess of its own, so its peak RSS (``VmHWM``: the peak of that process image, not inherited from
   this one) is its own:

   - **ours, full**: profile the reference (`monitor.profile.numeric_profile`: quantile + tail + business
     edges and counts per feature), count the current window in one pass (`histogram_counts`), decide per
     feature (`decide_feature` over PSI, JS, binned KS and Wasserstein/IQR with a `NoDriftBootstrap` per
     feature, as `monitor.checks` does) and Benjamini-Hochberg across features (`DRIFT_FDR`). Two ways
     of reading: **whole frames** (``pd.read_parquet`` of both files, exactly as the Evidently side reads
     them: like for like) and **column at a time** (how the monitor reads: it never needs a whole frame);
   - **ours, steady state**: the profile was built once per model version (loaded from JSON here); each
     window is counted and decided, with the no-drift bootstrap simulated cold; then, in the same
     process, counted and decided again with the bootstrap cached (the monitor caches it per feature and
     window-size bucket, so every later window of that size pays only this);
   - **Evidently**: ``Report([DataDriftPreset()]).run(current, reference)`` with every column declared
     numerical, plus extracting the per-column verdicts, in its own virtualenv (Evidently needs pandas <
     3; `ensure_evidently_env` builds ``benchmarks/.venv-evidently`` from ``requirements-evidently.txt``
     idempotently).

   Times exclude the Parquet read on both sides (it is the same read; it is reported apart, as are the
   interpreter start and imports). Peak memory includes everything the process held, data included:
   that is what a deployment pays. Ours runs several times (median reported); Evidently once, twice when
   the first run was quick enough. Ratios are Evidently / ours.

2. **Where the two disagree on the fault library.** A simulated world (defaults, but fraud stationary from
   day 0, so a no-fault window differs from the reference by sampling alone), features computed as the
   scorer computes them (`compute_features`, with the payload extras, full look-back for every row), the
   monitor's 15 drift subjects (calendar features excluded, as in `monitor.profile`). References: 10,000
   rows sampled from the week before the live period, and a 1,000-row subsample of it (at <= 1,000
   reference rows Evidently switches from distances to K-S / chi-square / Z-test p-values). Current windows: 100, 1,000 and 10,000
   consecutive transactions from 09:00 of a live day, with each stream fault of `evals.faults` applied
   through ``apply_transactions`` (its example parameters; schema changes as the scorer receives them),
   the two feature-hook faults applied to the features, and no-fault control windows from several days.
   Both sides decide per feature; every (window, feature) where they differ is tabulated with the
   numbers behind each verdict and a reason (`_reason`). Ours is the decision of `decide_window`: the
   monitor's pair and bootstrap, `decide_feature`, Benjamini-Hochberg. Gates that `monitor.checks` may
   add on top of it from per-day reference counts (a day-to-day variability allowance) are not mirrored:
   the profiles here have no days, and such gates only raise thresholds (fewer "ours" flags).

Caveats printed with the results: the machine is shared (other processes run while this does, so
absolute times are noisy; the load average is recorded), and 2 cores.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from benchmarks import BenchOptions
from benchmarks.common import Progress, report_console
from benchmarks.proc_memory import peak_rss_mib, rss_mib

if TYPE_CHECKING:  # parent-only imports; the measured child process must not pay for them
    import pandas as pd
    from rich.console import Console

    from monitor.profile import NumericProfile
    from monitor.thresholds import NoDriftBootstrap

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
EVIDENTLY_VENV = HERE / ".venv-evidently"
EVIDENTLY_REQUIREMENTS = HERE / "requirements-evidently.txt"
EVIDENTLY_RUNNER = HERE / "evidently_runner.py"
EVIDENTLY_STAMP = ".requirements-sha256"

AIM_SPEEDUP = 50.0  # the aim: Evidently / ours wall time
AIM_MEMORY = 1.0  # "and less memory": Evidently / ours peak RSS above 1

DATA_SEED = 20240601
SYNTHETIC_DRIFT = (
    "current = same generator, another seed, plus: 5 % extra card-testing rows (amount U(0.5, 2), online), "
    "8 % of rows by travellers (distance from home x6, foreign 50 %)"
)


@dataclass(frozen=True)
class Plan:
    """How big the run is. `FULL` is the committed benchmark (~8-10 min on 2 cores); `QUICK` a smoke run."""

    rows: int  # reference rows = current rows
    ours_repeats: int
    evidently_runs: int  # at most; the second only if the first finished within `evidently_repeat_budget_s`
    evidently_repeat_budget_s: float
    # Reference size -> the window sizes compared with it. Evidently spends ~3 s per report whatever the
    # sizes (mostly building its plots), so every pair costs; the 1k reference (Evidently's p-value regime)
    # is compared at one window size only.
    pairs: dict[int, tuple[int, ...]]
    control_days: int

    @property
    def window_sizes(self) -> tuple[int, ...]:
        return tuple(sorted({size for sizes in self.pairs.values() for size in sizes}))

    @property
    def reference_sizes(self) -> tuple[int, ...]:
        return tuple(self.pairs)


FULL = Plan(
    rows=1_000_000,
    ours_repeats=5,
    evidently_runs=2,
    evidently_repeat_budget_s=60.0,  # ~100 s here: one run (the 10-minute budget); two on a faster machine
    pairs={10_000: (100, 1_000, 10_000), 1_000: (1_000,)},
    control_days=3,
)
QUICK = Plan(
    rows=100_000,
    ours_repeats=2,
    evidently_runs=1,
    evidently_repeat_budget_s=0.0,
    pairs={10_000: (100, 1_000)},
    control_days=2,
)

# ---------------------------------------------------------------------------------------------------------
# Synthetic 20-feature data (part 1)
# ---------------------------------------------------------------------------------------------------------

FEATURE_SHAPES: dict[str, str] = {
    "amount": "log-normal(3.6, 0.85), cents (skewed, long tail)",
    "customer_avg_amount_1d": "log-normal(3.6, 0.6)",
    "customer_avg_amount_7d": "log-normal(3.7, 0.45)",
    "customer_avg_amount_30d": "log-normal(3.7, 0.35)",
    "customer_tx_count_1d": "1 + Poisson(2.5) (count)",
    "customer_tx_count_7d": "1 + negative binomial(mean 17, r 5)",
    "customer_tx_count_30d": "negative binomial(mean 50, r 3)",
    "terminal_tx_count_1d": "Poisson(0.85) (zero-inflated count: 43 % zeros)",
    "terminal_tx_count_7d": "negative binomial(mean 5.4, r 2)",
    "terminal_tx_count_30d": "negative binomial(mean 15, r 1.5)",
    "terminal_risk_1d": "0 for 99.5 %, else Beta(1, 3) (zero-inflated ratio in [0, 1])",
    "terminal_risk_7d": "0 for 98.5 %, else Beta(1.2, 8)",
    "terminal_risk_30d": "0 for 97 %, else Beta(1.5, 20)",
    "is_online": "flag, 20 %",
    "is_high_risk_mcc": "flag, 4 %",
    "is_foreign": "flag, 3 %",
    "hour_of_day": "integer 0-23, day-shaped (few at night)",
    "seconds_since_last_tx": "exponential(mean 8 h), 1 % nulls (a card's first transaction)",
    "distance_from_home_km": "log-normal(1.5, 1.3) (heavy tail)",
    "amount_to_customer_avg": "log-normal(0, 0.7) (ratio)",
}
FEATURES: tuple[str, ...] = tuple(FEATURE_SHAPES)


def synthetic_features(rows: int, seed: int, *, drifted: bool) -> dict[str, np.ndarray]:
    """20 float64 feature columns with the shapes of `FEATURE_SHAPES`; `drifted` adds `SYNTHETIC_DRIFT`."""
    rng = np.random.default_rng(seed)

    def lognormal(mu: float, sigma: float) -> np.ndarray:
        return rng.lognormal(mu, sigma, rows)

    def negbin(mean: float, r: float) -> np.ndarray:
        return rng.negative_binomial(r, r / (r + mean), rows).astype(np.float64)

    def zero_inflated_beta(zero_share: float, a: float, b: float) -> np.ndarray:
        return np.where(rng.random(rows) < zero_share, 0.0, rng.beta(a, b, rows))

    hour_weights = np.array([1, 0.6, 0.4, 0.3, 0.3, 0.5, 1.5, 3, 5, 6, 6.5, 7, 7.5, 7, 6.5, 6.5, 7, 7.5, 8,
                             7, 6, 4.5, 3, 2], dtype=np.float64)  # fmt: skip
    data: dict[str, np.ndarray] = {
        "amount": np.maximum(np.round(lognormal(3.6, 0.85), 2), 0.01),
        "customer_avg_amount_1d": lognormal(3.6, 0.6),
        "customer_avg_amount_7d": lognormal(3.7, 0.45),
        "customer_avg_amount_30d": lognormal(3.7, 0.35),
        "customer_tx_count_1d": 1.0 + rng.poisson(2.5, rows),
        "customer_tx_count_7d": 1.0 + negbin(17.0, 5.0),
        "customer_tx_count_30d": negbin(50.0, 3.0),
        "terminal_tx_count_1d": rng.poisson(0.85, rows).astype(np.float64),
        "terminal_tx_count_7d": negbin(5.4, 2.0),
        "terminal_tx_count_30d": negbin(15.0, 1.5),
        "terminal_risk_1d": zero_inflated_beta(0.995, 1.0, 3.0),
        "terminal_risk_7d": zero_inflated_beta(0.985, 1.2, 8.0),
        "terminal_risk_30d": zero_inflated_beta(0.97, 1.5, 20.0),
        "is_online": (rng.random(rows) < 0.20).astype(np.float64),
        "is_high_risk_mcc": (rng.random(rows) < 0.04).astype(np.float64),
        "is_foreign": (rng.random(rows) < 0.03).astype(np.float64),
        "hour_of_day": rng.choice(24, size=rows, p=hour_weights / hour_weights.sum()).astype(np.float64),
        "seconds_since_last_tx": np.where(rng.random(rows) < 0.01, np.nan, rng.exponential(8 * 3600.0, rows)),
        "distance_from_home_km": lognormal(1.5, 1.3),
        "amount_to_customer_avg": lognormal(0.0, 0.7),
    }
    if drifted:
        testing = rng.random(rows) < 0.05
        data["amount"][testing] = np.round(rng.uniform(0.5, 2.0, int(testing.sum())), 2)
        data["is_online"][testing] = 1.0
        travelling = rng.random(rows) < 0.08
        data["distance_from_home_km"][travelling] *= 6.0
        data["is_foreign"][travelling] = (rng.random(int(travelling.sum())) < 0.5).astype(np.float64)
    assert tuple(data) == FEATURES
    return data


def write_parquet(data: dict[str, np.ndarray], path: Path) -> None:
    """Write the columns as one float64 Parquet file (pyarrow defaults: snappy, 1M-row groups)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table(data), path)


# ---------------------------------------------------------------------------------------------------------
# Our side: the monitor's code path (shared by the measured child and the disagreement study)
# ---------------------------------------------------------------------------------------------------------


def extra_edges(name: str) -> tuple[float, ...]:
    """Business edges `monitor.profile.build_profile` adds for a feature of this name."""
    from monitor.profile import BUSINESS_EDGES, COUNT_FEATURE_EDGES

    return BUSINESS_EDGES.get(name, COUNT_FEATURE_EDGES if "count" in name or "risk" in name else ())


def decide_window(
    profiles: dict[str, NumericProfile],
    counts: dict[str, np.ndarray],
    nulls: dict[str, NoDriftBootstrap] | None = None,
) -> dict[str, dict[str, Any]]:
    """Per feature: the monitor's drift verdict for one window, as `monitor.checks.data_drift_check` decides.

    The pair of count vectors comes from the monitor's own ``monitor.checks.numeric_pair`` (so the
    reference counts and the Wasserstein scale are the monitor's, whatever it chooses) and the bootstrap is
    built as `monitor.checks.CheckContext.null_for` builds it; then `decide_feature` over the numeric
    statistics (Bonferroni inside) and Benjamini-Hochberg across the features at `DRIFT_FDR`: a feature
    drifts when both hold. `nulls` caches the bootstraps per feature across windows, as the monitor does.
    A window with no non-null rows is not tested (nulls are data quality, not drift). Renaming the private
    helper breaks this benchmark loudly, on purpose: it must compare the monitor's real decision.
    """
    from monitor.checks import DRIFT_FDR, numeric_pair
    from monitor.counts import SubjectCounts
    from monitor.stats import NUMERIC_STATS
    from monitor.thresholds import NoDriftBootstrap, benjamini_hochberg, decide_feature

    nulls = {} if nulls is None else nulls
    results: dict[str, dict[str, Any]] = {}
    for name, profile in profiles.items():
        cur = np.asarray(counts[name], dtype=np.int64)
        if cur.sum() == 0:
            results[name] = {"drifted": False, "p_value": 1.0, "n_cur": 0, "stats": {}, "untested": True}
            continue
        pair = numeric_pair(profile, SubjectCounts(cur, 0, int(cur.sum())))
        if name not in nulls:
            nulls[name] = NoDriftBootstrap(
                pair.ref, edges=pair.edges, lower=pair.lower, upper=pair.upper, scale=pair.scale
            )
        combined = decide_feature(pair, list(NUMERIC_STATS), null=nulls[name])
        results[name] = {
            "drifted": combined.drifted,
            "p_value": combined.p_value,
            "n_cur": int(cur.sum()),
            "stats": {
                d.statistic: {
                    "value": d.value,
                    "threshold": d.threshold,
                    "floor": d.floor,
                    "no_drift_q": d.no_drift_quantile,
                    "drifted": d.drifted,
                }
                for d in combined.decisions
            },
        }
    names = [n for n in results if not results[n].get("untested")]
    if names:
        significant = benjamini_hochberg(np.array([results[n]["p_value"] for n in names]), DRIFT_FDR)
        for name, ok in zip(names, significant, strict=True):
            results[name]["per_feature_drifted"] = results[name]["drifted"]
            results[name]["suppressed_by_fdr"] = bool(results[name]["drifted"] and not ok)
            results[name]["drifted"] = bool(results[name]["drifted"] and ok)
    return results


# ---------------------------------------------------------------------------------------------------------
# Measured child processes
# ---------------------------------------------------------------------------------------------------------


def ours_child(mode: str, data_dir: Path, profile_json: Path | None = None) -> dict[str, Any]:
    """Our side at scale, in a fresh process: ``whole``, ``columns`` or ``steady`` (see the module doc).

    Returns phase timings (read, profile, count, decide), peak RSS, and the per-feature verdicts. With
    `profile_json` in mode ``whole``/``columns`` the profiles are written there after the timed work. In
    mode ``steady`` the window is then counted and decided a second time with the bootstraps cached
    (``warm_*``): what an hourly monitor pays once it has seen a window of that size.
    """
    started = time.perf_counter()
    import pandas as pd
    import pyarrow.parquet as pq

    import monitor.checks  # noqa: F401  (scipy, the store: imported here, not timed as "decide")
    from monitor.profile import NumericProfile, numeric_profile
    from monitor.stats import histogram_counts

    import_s = time.perf_counter() - started
    rss_after_imports = rss_mib()
    reference_path, current_path = data_dir / "reference.parquet", data_dir / "current.parquet"
    phases = dict.fromkeys(("read", "profile", "count", "decide", "warm_count", "warm_decide"), 0.0)
    cpu = dict.fromkeys(phases, 0.0)  # CPU time of the same phases: robust to competing processes
    profiles: dict[str, NumericProfile] = {}
    counts: dict[str, np.ndarray] = {}

    @contextmanager
    def timed(phase: str) -> Iterator[None]:
        t0, c0 = time.perf_counter(), time.process_time()
        yield
        phases[phase] += time.perf_counter() - t0
        cpu[phase] += time.process_time() - c0

    rss_after_read: float | None = None
    if mode == "whole":
        with timed("read"):
            reference = pd.read_parquet(reference_path)
            current = pd.read_parquet(current_path)
        rss_after_read = rss_mib()
        names = [str(c) for c in reference.columns]
        for name in names:
            values = reference[name].to_numpy(dtype=np.float64)
            with timed("profile"):
                profiles[name] = numeric_profile(values, extra_edges(name))
        for name in names:
            values = current[name].to_numpy(dtype=np.float64)
            with timed("count"):
                counts[name] = histogram_counts(values, np.asarray(profiles[name].edges))[0]
    elif mode in ("columns", "steady"):
        ref_file, cur_file = pq.ParquetFile(reference_path), pq.ParquetFile(current_path)
        names = [str(c) for c in cur_file.schema_arrow.names]
        if mode == "steady":
            if profile_json is None:
                raise ValueError("steady mode needs the profile JSON")
            stored = json.loads(profile_json.read_text())
            profiles = {n: NumericProfile.model_validate(stored[n]) for n in names}
        for name in names:
            if mode == "columns":
                with timed("read"):
                    values = _column(ref_file, name)
                with timed("profile"):
                    profiles[name] = numeric_profile(values, extra_edges(name))
                del values
            with timed("read"):
                values = _column(cur_file, name)
            with timed("count"):
                counts[name] = histogram_counts(values, np.asarray(profiles[name].edges))[0]
            del values
    else:
        raise ValueError(f"unknown mode {mode!r}")
    nulls: dict[str, NoDriftBootstrap] = {}
    with timed("decide"):
        verdicts = decide_window(profiles, counts, nulls)
    if mode == "steady":
        for name in names:
            values = _column(cur_file, name)
            with timed("warm_count"):
                counts[name] = histogram_counts(values, np.asarray(profiles[name].edges))[0]
            del values
        with timed("warm_decide"):
            decide_window(profiles, counts, nulls)
    result = {
        "mode": mode,
        "import_s": import_s,
        "read_s": phases["read"],
        "profile_s": phases["profile"],
        "count_s": phases["count"],
        "decide_s": phases["decide"],
        "compute_s": phases["profile"] + phases["count"] + phases["decide"],
        "compute_cpu_s": cpu["profile"] + cpu["count"] + cpu["decide"],
        "warm_count_s": phases["warm_count"],
        "warm_decide_s": phases["warm_decide"],
        "warm_cpu_s": cpu["warm_count"] + cpu["warm_decide"],
        "rss_after_imports_mib": rss_after_imports,
        "rss_after_read_mib": rss_after_read,
        "peak_rss_mib": peak_rss_mib(),
        "features": {
            n: {"drifted": v["drifted"], "p_value": v["p_value"], "stats": v["stats"]}
            for n, v in verdicts.items()
        },
    }
    if profile_json is not None and mode != "steady":
        profile_json.write_text(json.dumps({n: p.model_dump() for n, p in profiles.items()}))
    return result


def _column(parquet_file: Any, name: str) -> np.ndarray:
    """One column of a Parquet file as float64 (nulls as NaN), without reading the others."""
    column = parquet_file.read(columns=[name]).column(0)
    values: np.ndarray = column.to_numpy().astype(np.float64, copy=False)
    return values


CHILD_USAGE = "python -m benchmarks.drift ours MODE DATA_DIR OUT [PROFILE_JSON]"


def _child_main(argv: Sequence[str]) -> int:
    """``python -m benchmarks.drift ours MODE DATA_DIR OUT [PROFILE_JSON]`` (used by the parent only)."""
    if len(argv) < 4 or argv[0] != "ours":
        print(f"usage: {CHILD_USAGE}", file=sys.stderr)
        return 2
    mode, data_dir, out = argv[1], Path(argv[2]), Path(argv[3])
    profile = Path(argv[4]) if len(argv) > 4 else None
    out.write_text(json.dumps(ours_child(mode, data_dir, profile)))
    return 0


@dataclass
class ChildRun:
    """One measured subprocess: its JSON result and the wall time the parent saw (start to exit)."""

    result: dict[str, Any]
    process_s: float


def _run_children(commands: list[list[str]], outs: list[Path], timeout_s: float) -> list[ChildRun]:
    """Run children concurrently (unmeasured work only: they compete for the cores).

    Their output goes to files beside `outs` (a full pipe would stall a child while another is waited on).
    """
    started = time.perf_counter()
    running = []
    for command, out in zip(commands, outs, strict=True):
        out.unlink(missing_ok=True)
        with out.with_suffix(".log").open("w") as log:
            running.append(subprocess.Popen(command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT))
    finished = []
    for process, out, command in zip(running, outs, commands, strict=True):
        remaining = max(timeout_s - (time.perf_counter() - started), 1.0)
        try:
            process.wait(timeout=remaining)
        except subprocess.TimeoutExpired:
            for other in running:
                other.kill()
                other.wait()
            raise
        if process.returncode != 0 or not out.exists():
            tail = "\n".join(out.with_suffix(".log").read_text().strip().splitlines()[-15:])
            raise RuntimeError(f"{' '.join(command[:4])} ... failed (exit {process.returncode}):\n{tail}")
        finished.append(ChildRun(json.loads(out.read_text()), time.perf_counter() - started))
    return finished


def _run_child(command: list[str], out: Path, timeout_s: float) -> ChildRun:
    """Run a measuring child; raise with the end of its stderr if it fails."""
    out.unlink(missing_ok=True)
    started = time.perf_counter()
    completed = subprocess.run(
        command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout_s, check=False
    )
    elapsed = time.perf_counter() - started
    if completed.returncode != 0 or not out.exists():
        tail = "\n".join((completed.stderr or completed.stdout).strip().splitlines()[-15:])
        raise RuntimeError(f"{' '.join(command[:4])} ... failed (exit {completed.returncode}):\n{tail}")
    return ChildRun(json.loads(out.read_text()), elapsed)


# ---------------------------------------------------------------------------------------------------------
# Evidently's virtualenv
# ---------------------------------------------------------------------------------------------------------


@dataclass
class EvidentlyEnv:
    """The state of ``benchmarks/.venv-evidently``: ready (python set) or why not."""

    python: Path | None
    status: str  # "reused", "installed" or "failed"
    detail: str = ""
    seconds: float = 0.0


def ensure_evidently_env(console: Console) -> EvidentlyEnv:
    """Create or update ``benchmarks/.venv-evidently`` from ``requirements-evidently.txt``, idempotently.

    A stamp file holds the requirements' hash: an unchanged venv is reused without touching the network;
    a changed requirements file triggers ``pip install -r`` again. Failures (no registry, no wheel for this
    Python) are reported, never raised: the benchmark then reports our side alone.
    """
    started = time.perf_counter()
    python = EVIDENTLY_VENV / "bin" / "python"
    wanted = hashlib.sha256(EVIDENTLY_REQUIREMENTS.read_bytes()).hexdigest()
    stamp = EVIDENTLY_VENV / EVIDENTLY_STAMP
    if python.exists() and stamp.exists() and stamp.read_text().strip() == wanted:
        return EvidentlyEnv(python, "reused", str(EVIDENTLY_VENV.relative_to(REPO_ROOT)))
    console.print(f"  installing Evidently into {EVIDENTLY_VENV.relative_to(REPO_ROOT)} (first run: ~2 min)")
    steps: list[list[str]] = []
    if not python.exists():
        steps.append([sys.executable, "-m", "venv", str(EVIDENTLY_VENV)])
    steps.append(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r",
         str(EVIDENTLY_REQUIREMENTS)]
    )  # fmt: skip
    steps.append(
        [str(python), "-c", "import evidently, pandas; assert int(pandas.__version__.split('.')[0]) < 3"]
    )
    for step in steps:
        try:
            completed = subprocess.run(step, capture_output=True, text=True, timeout=1200, check=False)
        except (OSError, subprocess.TimeoutExpired) as error:
            return EvidentlyEnv(None, "failed", f"{step[:4]}: {error}", time.perf_counter() - started)
        if completed.returncode != 0:
            lines = [
                line
                for line in (completed.stderr or completed.stdout).strip().splitlines()
                if not line.startswith("WARNING: Location")
            ]
            return EvidentlyEnv(None, "failed", "\n".join(lines[-8:]), time.perf_counter() - started)
    stamp.write_text(wanted + "\n")
    return EvidentlyEnv(
        python, "installed", str(EVIDENTLY_VENV.relative_to(REPO_ROOT)), time.perf_counter() - started
    )


# ---------------------------------------------------------------------------------------------------------
# Part 1: cost at 1M x 1M
# ---------------------------------------------------------------------------------------------------------

OURS_VARIANTS: dict[str, str] = {
    "whole": "ours, full: profile + count + decide (whole frames, read like Evidently)",
    "columns": "ours, full: profile + count + decide (column at a time)",
    "steady": "ours, steady state: count + decide (profile built once per model)",
}
WARM_LABEL = "ours, steady state, bootstrap cached (every later window of that size)"
SUMMARY_KEYS = (
    "compute_s",
    "compute_cpu_s",
    "read_s",
    "profile_s",
    "count_s",
    "decide_s",
    "import_s",
    "process_s",
    "peak_rss_mib",
)


def _median_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for key in SUMMARY_KEYS:
        values = [float(r[key]) for r in runs if r.get(key) is not None]
        if values:
            summary[key] = statistics.median(values)
    compute = [float(r["compute_s"]) for r in runs]
    summary["compute_s_min"], summary["compute_s_max"] = min(compute), max(compute)
    return summary


def measure_scale(plan: Plan, scratch: Path, env: EvidentlyEnv, progress: Progress) -> dict[str, Any]:
    """Part 1: generate the data, run ours (each variant `ours_repeats` times) and Evidently, in children."""
    t0 = time.perf_counter()
    data_dir = scratch / "scale"
    data_dir.mkdir()
    write_parquet(synthetic_features(plan.rows, DATA_SEED, drifted=False), data_dir / "reference.parquet")
    write_parquet(synthetic_features(plan.rows, DATA_SEED + 1, drifted=True), data_dir / "current.parquet")
    parquet_mib = sum(p.stat().st_size for p in data_dir.glob("*.parquet")) / 2**20
    data = {
        "rows_reference": plan.rows,
        "rows_current": plan.rows,
        "features": len(FEATURES),
        "shapes": FEATURE_SHAPES,
        "current_changes": SYNTHETIC_DRIFT,
        "seed": DATA_SEED,
        "parquet_mib": parquet_mib,
        "in_memory_mib_per_frame": plan.rows * len(FEATURES) * 8 / 2**20,
        "generate_s": time.perf_counter() - t0,
    }
    progress.step(
        f"wrote {plan.rows:,} x {plan.rows:,} x {len(FEATURES)} to Parquet ({parquet_mib:.0f} MiB, "
        f"{data['generate_s']:.1f} s)"
    )

    profile_json = scratch / "profiles.json"
    out = scratch / "child.json"
    ours_runs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    evidently_runs: list[dict[str, Any]] = []
    evidently_error: str | None = None

    def ours_round(repeat: int) -> None:
        for variant in OURS_VARIANTS:  # "whole" first: it writes the profiles "steady" loads
            command = [sys.executable, "-m", "benchmarks.drift", "ours", variant, str(data_dir), str(out)]
            if variant in ("whole", "steady"):
                command.append(str(profile_json))
            child = _run_child(command, out, timeout_s=600)
            ours_runs[variant].append({**child.result, "process_s": child.process_s})
        last = {v: runs[-1] for v, runs in ours_runs.items()}
        progress.step(
            f"ours run {repeat + 1}/{plan.ours_repeats}: "
            + ", ".join(f"{v} {r['compute_s']:.2f} s / {r['peak_rss_mib']:.0f} MiB" for v, r in last.items())
        )

    def evidently_run(attempt: int) -> None:
        nonlocal evidently_error
        if env.python is None or evidently_error is not None:
            return
        if attempt and evidently_runs[-1]["compute_s"] > plan.evidently_repeat_budget_s:
            return
        progress.step(f"Evidently DataDriftPreset run {attempt + 1} (slow: minutes)")
        command = [str(env.python), str(EVIDENTLY_RUNNER), "big", "--reference",
                   str(data_dir / "reference.parquet"), "--current", str(data_dir / "current.parquet"),
                   "--out", str(out)]  # fmt: skip
        try:
            child = _run_child(command, out, timeout_s=1800)
        except (RuntimeError, subprocess.TimeoutExpired) as failure:
            evidently_error = str(failure)
            return
        evidently_runs.append({**child.result, "process_s": child.process_s})
        last = evidently_runs[-1]
        progress.step(
            f"Evidently run {attempt + 1}: {last['compute_s']:.1f} s / {last['peak_rss_mib']:.0f} MiB"
        )

    # Interleaved (ours, Evidently, ours, ...) so that both sides see the machine's load of the same period.
    rounds = list(range(plan.ours_repeats))
    halves = [rounds[: (len(rounds) + 1) // 2], rounds[(len(rounds) + 1) // 2 :]]
    for half, attempt in zip(halves, range(2), strict=True):
        for repeat in half:
            ours_round(repeat)
        if attempt < plan.evidently_runs:
            evidently_run(attempt)

    ours = {
        variant: {
            "label": OURS_VARIANTS[variant],
            "median": _median_summary(runs),
            "runs": [{k: r.get(k) for k in SUMMARY_KEYS} for r in runs],
            "features": runs[-1]["features"],
        }
        for variant, runs in ours_runs.items()
    }
    # The same steady-state processes, second pass: count again and decide with the bootstraps cached.
    warm = [
        {**r, "compute_s": r["warm_count_s"] + r["warm_decide_s"], "count_s": r["warm_count_s"],
         "decide_s": r["warm_decide_s"], "compute_cpu_s": r["warm_cpu_s"], "process_s": None}
        for r in ours_runs["steady"]
    ]  # fmt: skip
    ours["steady_warm"] = {
        "label": WARM_LABEL,
        "median": _median_summary(warm),
        "runs": [{k: r.get(k) for k in SUMMARY_KEYS} for r in warm],
        "features": ours_runs["steady"][-1]["features"],
    }

    evidently: dict[str, Any]
    if env.python is None:
        evidently = {"error": f"Evidently's virtualenv is not available ({env.status}): {env.detail}"}
    elif evidently_runs:
        evidently = {
            "label": "Evidently DataDriftPreset (run + per-column results)",
            "median": _median_summary(evidently_runs),
            "runs": [{k: r.get(k) for k in SUMMARY_KEYS} for r in evidently_runs],
            "run_s": statistics.median(float(r["run_s"]) for r in evidently_runs),
            "extract_s": statistics.median(float(r["extract_s"]) for r in evidently_runs),
            "versions": evidently_runs[-1]["versions"],
            "features": evidently_runs[-1]["features"],
        }
        if evidently_error:
            evidently["error_later_run"] = evidently_error
    else:
        evidently = {"error": evidently_error or "no run"}

    ratios: dict[str, Any] = {}
    if "median" in evidently:
        theirs = evidently["median"]
        for variant, entry in ours.items():
            mine = entry["median"]
            ratios[variant] = {
                "time": theirs["compute_s"] / mine["compute_s"],
                "cpu": theirs["compute_cpu_s"] / mine["compute_cpu_s"],
                "time_with_read": (theirs["compute_s"] + theirs["read_s"])
                / (mine["compute_s"] + mine["read_s"]),
                "process": theirs["process_s"] / mine["process_s"] if "process_s" in mine else None,
                "memory": theirs["peak_rss_mib"] / mine["peak_rss_mib"],
            }
    verdicts = {
        name: {
            "ours": ours["whole"]["features"][name]["drifted"],
            "evidently": evidently["features"][name]["drifted"] if "features" in evidently else None,
            "evidently_method": evidently["features"][name]["method"] if "features" in evidently else None,
            "evidently_score": evidently["features"][name]["score"] if "features" in evidently else None,
            "ours_top_statistic": _top_statistic(ours["whole"]["features"][name]["stats"]),
        }
        for name in FEATURES
    }
    for entry in ours.values():
        del entry["features"]
    evidently.pop("features", None)
    return {"data": data, "ours": ours, "evidently": evidently, "ratios": ratios, "verdicts": verdicts}


def _top_statistic(stats: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The statistic closest to (or furthest past) its threshold: what drove the verdict."""
    if not stats:
        return None
    name = max(stats, key=lambda s: stats[s]["value"] / max(stats[s]["threshold"], 1e-12))
    return {"statistic": name, **stats[name]}


# ---------------------------------------------------------------------------------------------------------
# Part 2: disagreements on the fault library
# ---------------------------------------------------------------------------------------------------------

# Every reference row needs its full feature history: terminal windows look back 7 + 30 days, and the
# reference starts REFERENCE_DAYS before the live day (the world is simulated from day 0).
LIVE_DAY = 45
REFERENCE_DAYS = 7  # the reference is sampled from the week before the live period
WINDOW_START_HOUR = 9
STUDY_SEED = 7
EVIDENTLY_STUDY_WORKERS = 2


@dataclass(frozen=True)
class Scenario:
    """A current-window scenario: a fault (or none) and what the monitor is expected to raise for it."""

    name: str
    kind: str | None  # fault kind, None for a control
    params: dict[str, Any] = field(default_factory=dict)
    expected: tuple[str, ...] = ()
    family: str = "control"


def scenarios() -> list[Scenario]:
    """Every stream fault with its example parameters, a second new-fraud pattern, the feature hooks.

    ``schema_change``'s example drops and renames *required* fields: every affected record is
    dead-lettered and the window is empty, so it is run as a drop of the optional ``channel`` field from
    half the records instead (``is_online`` arrives null there).
    """
    from evals.faults import FAULTS

    overrides: dict[str, list[tuple[str, dict[str, Any]]]] = {
        "schema_change": [("schema_change(drop channel, 50%)", {"drop": ["channel"], "share": 0.5})],
        "new_fraud_pattern": [
            ("new_fraud_pattern(mid_amount_online)", {"pattern": "mid_amount_online", "rate": 0.05}),
            ("new_fraud_pattern(account_takeover)", {"pattern": "account_takeover", "rate": 0.05}),
        ],
    }
    found: list[Scenario] = []
    for kind, cls in sorted(FAULTS.items()):
        if cls.family == "stream" or kind in ("feature_nulls", "feature_constant"):
            for name, params in overrides.get(kind, [(kind, dict(cls.example_params))]):
                found.append(Scenario(name, kind, params, tuple(cls.expected_kinds), cls.family))
    return found


def _apply_wire_edits(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame as the scorer receives it: records missing a required field are dead-lettered (gone),
    dropped or renamed optional fields arrive null."""
    from evals.faults import WIRE_EDITS
    from scorer import columns as C

    if WIRE_EDITS not in frame:
        return frame
    edits = frame[WIRE_EDITS].to_numpy(dtype=object)
    received = frame.drop(columns=[WIRE_EDITS])
    touched = [set(e) if e else set() for e in edits]
    dead = np.array([bool(t & set(C.REQUIRED_INPUT_COLUMNS)) for t in touched])
    for name in C.OPTIONAL_INPUT_COLUMNS:
        mask = np.array([name in t for t in touched])
        if mask.any() and name in received:
            values = received[name].astype(object).to_numpy(copy=True)
            values[mask] = None
            received[name] = values
    return received.loc[~dead].reset_index(drop=True)


@dataclass
class StudyData:
    """Feature frames for the study: references by size, windows by (scenario, size)."""

    columns: list[str]
    references: dict[int, pd.DataFrame]
    windows: dict[tuple[str, int], pd.DataFrame]
    scenarios: list[Scenario]
    info: dict[str, Any]
    pairs: dict[int, tuple[int, ...]]

    def compared(self) -> Iterator[tuple[str, int, int]]:
        """Every (scenario, window size, reference size) both sides decide."""
        for name, size in self.windows:
            for ref_size, sizes in self.pairs.items():
                if size in sizes:
                    yield name, size, ref_size


def build_study(plan: Plan) -> StudyData:
    """Simulate, apply each fault to the live days, compute features, cut references and windows."""
    import pandas as pd

    from evals.faults import FeatureConstant, FeatureNulls, make_fault
    from monitor.profile import CALENDAR_FEATURES
    from scorer import columns as C
    from scorer.features import FeatureConfig, compute_features
    from scorer.simulate import Simulator, WorldConfig

    started = time.perf_counter()
    config = FeatureConfig(extra_features=True)
    columns = [c for c in config.columns if c not in CALENDAR_FEATURES]
    # Stationary fraud from day 0 (no ramp-up): a control window then differs from the reference by
    # sampling alone, so what either side flags there is a false alarm.
    simulator = Simulator(WorldConfig(fraud_warmup=False))
    first = LIVE_DAY - REFERENCE_DAYS - config.retention_days - 1
    assert first >= 0, "the reference's feature windows must start at or after day 0"
    last_live = LIVE_DAY + max(plan.control_days, 2)  # a 10k window from 09:00 runs into the next day
    days = {d: simulator.day(d) for d in range(first, last_live + 1)}
    origin = simulator.config.start
    live_start = origin + pd.Timedelta(days=LIVE_DAY)

    def features_of(frames: list[pd.DataFrame]) -> tuple[pd.DataFrame, pd.Series]:
        tx = pd.concat(frames, ignore_index=True)
        return compute_features(tx, config)[columns], tx[C.TIMESTAMP]

    def windows_from(feats: pd.DataFrame, stamps: pd.Series, start: pd.Timestamp) -> dict[int, pd.DataFrame]:
        at = int(np.searchsorted(stamps.to_numpy(), np.datetime64(start, "ns")))
        return {n: feats.iloc[at : at + n].reset_index(drop=True) for n in plan.window_sizes}

    clean, stamps = features_of([days[d] for d in sorted(days)])
    week = ((stamps >= live_start - pd.Timedelta(days=REFERENCE_DAYS)) & (stamps < live_start)).to_numpy()
    rng = np.random.default_rng(STUDY_SEED)
    pool = np.flatnonzero(week)
    sample = rng.choice(pool, size=max(plan.reference_sizes), replace=False)
    references = {
        size: clean.iloc[np.sort(sample[:size])].reset_index(drop=True) for size in plan.reference_sizes
    }
    windows: dict[tuple[str, int], pd.DataFrame] = {}
    found = [Scenario(f"control(day {k})", None) for k in range(plan.control_days)]
    for k in range(plan.control_days):
        start = live_start + pd.Timedelta(days=k, hours=WINDOW_START_HOUR)
        for size, frame in windows_from(clean, stamps, start).items():
            windows[(found[k].name, size)] = frame

    # Live windows need only their own look-back (not the reference's): fewer rows to featurise per fault.
    history = [days[d] for d in range(LIVE_DAY - config.retention_days - 1, LIVE_DAY)]
    window_start = live_start + pd.Timedelta(hours=WINDOW_START_HOUR)
    for index, scenario in enumerate(scenarios()):
        assert scenario.kind is not None
        fault = make_fault(scenario.kind, scenario.params, live_start.to_pydatetime(), None)
        if isinstance(fault, FeatureNulls | FeatureConstant):
            # A feature-hook fault: the feature job breaks after the features are computed.
            feats, fault_stamps = clean.copy(), stamps
            hook_rng = np.random.default_rng([STUDY_SEED, index])
            hit = fault.in_window(stamps) & (hook_rng.random(len(feats)) < fault.rate)
            fault._break(feats, hit)
        else:
            live = []
            for day in (LIVE_DAY, LIVE_DAY + 1):
                day_rng = np.random.default_rng(np.random.SeedSequence(STUDY_SEED, spawn_key=(index, day)))
                frame = fault.apply_transactions(days[day], day_rng)
                live.append(
                    _apply_wire_edits(frame.sort_values(C.TIMESTAMP, kind="stable", ignore_index=True))
                )
            feats, fault_stamps = features_of([*history, *live])
        for size, frame in windows_from(feats, fault_stamps, window_start).items():
            windows[(scenario.name, size)] = frame
        found.append(scenario)
    info = {
        "world": "WorldConfig(fraud_warmup=False): 5,000 customers, 10,000 terminals, seed 0",
        "live_day": LIVE_DAY,
        "reference": f"random sample of the {REFERENCE_DAYS} days before the live period (seed {STUDY_SEED})",
        "pairs": {f"reference {r:,}": list(sizes) for r, sizes in plan.pairs.items()},
        "windows": f"consecutive transactions from {WINDOW_START_HOUR:02d}:00 of the live day (controls: of "
        f"{plan.control_days} consecutive days, no fault)",
        "features": columns,
        "build_s": time.perf_counter() - started,
    }
    return StudyData(columns, references, windows, found, info, dict(plan.pairs))


def ours_study(study: StudyData) -> tuple[dict[tuple[str, int, int], dict[str, dict[str, Any]]], float]:
    """Our verdicts for every (scenario, window size, reference size), with the time it took."""
    from monitor.profile import numeric_profile
    from monitor.stats import histogram_counts

    started = time.perf_counter()
    verdicts: dict[tuple[str, int, int], dict[str, dict[str, Any]]] = {}
    for ref_size, reference in study.references.items():
        profiles = {
            n: numeric_profile(reference[n].to_numpy(dtype=np.float64), extra_edges(n)) for n in study.columns
        }
        nulls: dict[str, NoDriftBootstrap] = {}
        for (scenario, size), window in study.windows.items():
            if size not in study.pairs[ref_size]:
                continue
            counts = {
                n: histogram_counts(window[n].to_numpy(dtype=np.float64), np.asarray(profiles[n].edges))[0]
                for n in study.columns
            }
            verdicts[(scenario, size, ref_size)] = decide_window(profiles, counts, nulls)
    return verdicts, time.perf_counter() - started


def evidently_study(
    study: StudyData, env: EvidentlyEnv, scratch: Path
) -> tuple[dict[tuple[str, int, int], dict[str, dict[str, Any]]], dict[str, Any]]:
    """Evidently's verdicts for the same pairs (one subprocess for all of them)."""
    import pandas as pd

    if env.python is None:
        return {}, {"error": f"Evidently's virtualenv is not available ({env.status}): {env.detail}"}
    ref_key, win_key = "__reference__", "__window__"
    references = pd.concat(
        [frame.assign(**{ref_key: str(size)}) for size, frame in study.references.items()], ignore_index=True
    )
    windows = pd.concat(
        [frame.assign(**{win_key: f"{name}|{size}"}) for (name, size), frame in study.windows.items()],
        ignore_index=True,
    )
    references.to_parquet(scratch / "study_references.parquet")
    windows.to_parquet(scratch / "study_windows.parquet")
    pairs = [
        {"window": f"{name}|{size}", "reference": str(ref_size)} for name, size, ref_size in study.compared()
    ]
    # Reports are independent and Evidently spends ~3 s on each whatever its size: split them over
    # EVIDENTLY_STUDY_WORKERS processes so this part stays within a few minutes (verdicts, not timings).
    commands, outs = [], []
    for worker in range(EVIDENTLY_STUDY_WORKERS):
        share = pairs[worker::EVIDENTLY_STUDY_WORKERS]
        manifest = {"reference_key": ref_key, "window_key": win_key, "columns": study.columns, "pairs": share}
        manifest_path = scratch / f"study_manifest_{worker}.json"
        manifest_path.write_text(json.dumps(manifest))
        outs.append(scratch / f"study_evidently_{worker}.json")
        commands.append(
            [str(env.python), str(EVIDENTLY_RUNNER), "windows", "--references",
             str(scratch / "study_references.parquet"), "--windows", str(scratch / "study_windows.parquet"),
             "--manifest", str(manifest_path), "--out", str(outs[-1])]
        )  # fmt: skip
    started = time.perf_counter()
    try:
        children = _run_children(commands, outs, timeout_s=900)
    except (RuntimeError, subprocess.TimeoutExpired) as failure:
        return {}, {"error": str(failure)}
    results = [pair for child in children for pair in child.result["pairs"]]
    verdicts: dict[tuple[str, int, int], dict[str, dict[str, Any]]] = {}
    for pair in results:
        name, size = pair["window"].rsplit("|", 1)
        verdicts[(name, int(size), int(pair["reference"]))] = pair["features"]
    return verdicts, {
        "total_s": time.perf_counter() - started,
        "reports": len(pairs),
        "workers": EVIDENTLY_STUDY_WORKERS,
        "seconds_per_report": statistics.median(float(p["seconds"]) for p in results),
    }


NOISE_REASON = "E only: within no-drift noise for this n"


def _fmt(value: float) -> str:
    return f"{value:.3g}"


def _reason(ours: dict[str, Any], theirs: dict[str, Any], n_ref: int) -> tuple[str, str]:
    """Why the two verdicts differ for one (window, feature): a short tag and the numbers behind it."""
    method, score, threshold = theirs["method"], theirs["score"], theirs["threshold"]
    p_value_method = "p_value" in method
    below = score < threshold  # Evidently's rule: a p-value below, or a distance at or above, drifts
    theirs_text = f"Evidently {method} {_fmt(score)} {'<' if below else '>='} {_fmt(threshold)}"
    if ours.get("untested"):
        return "ours: all null (data quality)", f"every value null: ours counts nulls apart; {theirs_text}"
    top = _top_statistic(ours["stats"])
    assert top is not None
    ours_text = (
        f"ours {top['statistic']} {_fmt(top['value'])} vs floor {_fmt(top['floor'])}, "
        f"no-drift p99 {_fmt(top['no_drift_q'])} (n={ours['n_cur']:,})"
    )
    if theirs["drifted"]:  # Evidently only
        if ours.get("suppressed_by_fdr"):
            return (
                "E only: held back by BH across features",
                f"{ours_text}; p={_fmt(ours['p_value'])}; {theirs_text}",
            )
        above_floor = [s for s, v in ours["stats"].items() if v["value"] > v["floor"]]
        if above_floor:
            tag = NOISE_REASON
            if p_value_method:
                tag = "E only: p-value at alpha 0.05 (no multiplicity, no floor)"
            return tag, f"{ours_text}; {theirs_text}"
        if p_value_method:
            return "E only: p-value flags an effect below our floors", f"{ours_text}; {theirs_text}"
        if "Wasserstein" in method:
            return "E only: W1/std >= 0.1 but below our floors", f"{ours_text}; {theirs_text}"
        return "E only: below our practical floors", f"{ours_text}; {theirs_text}"
    # ours only
    if p_value_method:
        tag = "ours only: Evidently's test lacks power here"
        if n_ref <= 1000:
            tag = "ours only: Evidently's p-value test lacks power (1k reference)"
        return tag, f"{ours_text}; {theirs_text}"
    if "Wasserstein" in method:
        return "ours only: tail/quantile bins see it, W1/std does not", f"{ours_text}; {theirs_text}"
    return f"ours only: {method} below its cut-off", f"{ours_text}; {theirs_text}"


def compare(
    study: StudyData,
    ours: dict[tuple[str, int, int], dict[str, dict[str, Any]]],
    theirs: dict[tuple[str, int, int], dict[str, dict[str, Any]]],
) -> dict[str, Any]:
    """Per (scenario, size, reference): features flagged by each side, and every disagreement with a reason."""
    expected = {s.name: s.expected for s in study.scenarios}
    windows: list[dict[str, Any]] = []
    disagreements: list[dict[str, Any]] = []
    for key, mine in ours.items():
        name, size, ref_size = key
        other = theirs.get(key)
        ours_flags = sorted(f for f, v in mine.items() if v["drifted"])
        row: dict[str, Any] = {
            "scenario": name,
            "expected": list(expected.get(name, ())),
            "window": size,
            "reference": ref_size,
            "ours": ours_flags,
            "evidently": None if other is None else sorted(f for f, v in other.items() if v["drifted"]),
        }
        windows.append(row)
        if other is None:
            continue
        for feature in study.columns:
            o, e = bool(mine[feature]["drifted"]), bool(other[feature]["drifted"])
            if o == e:
                continue
            tag, detail = _reason(mine[feature], other[feature], ref_size)
            disagreements.append(
                {
                    "scenario": name,
                    "window": size,
                    "reference": ref_size,
                    "feature": feature,
                    "flagged_by": "ours" if o else "evidently",
                    "reason": tag,
                    "detail": detail,
                }
            )
    controls = [w for w in windows if w["scenario"].startswith("control")]
    false_alarms: dict[str, Any] = {}
    for ref_size, sizes in study.pairs.items():
        for size in sizes:
            group = [w for w in controls if w["window"] == size and w["reference"] == ref_size]
            tests = len(group) * len(study.columns)
            entry: dict[str, Any] = {"windows": len(group), "feature_tests": tests}
            for side in ("ours", "evidently"):
                flagged = [w[side] for w in group if w[side] is not None]
                if flagged:
                    entry[f"{side}_flags"] = sum(len(f) for f in flagged)
                    entry[f"{side}_windows_with_any"] = sum(1 for f in flagged if f)
            false_alarms[f"ref {ref_size:,} / window {size:,}"] = entry
    grouped: dict[tuple[str, int, int, str, str], list[str]] = defaultdict(list)
    for d in disagreements:
        grouped[
            (d["scenario"].split("(day")[0], d["reference"], d["window"], d["flagged_by"], d["reason"])
        ].append(d["feature"])
    methods: dict[str, dict[str, str]] = {}
    for (_, _, ref_size), features in theirs.items():
        methods.setdefault(str(ref_size), {f: v["method"] for f, v in features.items()})
    # The result file keeps the numbers behind every disagreement except the commonest kind (small-window
    # noise, over a hundred near-identical rows), which `by_reason` counts and names.
    detailed = [d for d in disagreements if d["reason"] != NOISE_REASON]
    return {
        "evidently_methods": methods,
        "windows": windows,
        "control_false_alarms": false_alarms,
        "by_reason": [
            {
                "scenario": s,
                "reference": r,
                "window": w,
                "flagged_by": b,
                "reason": t,
                "count": len(f),
                "features": sorted(set(f)),
            }
            for (s, r, w, b, t), f in sorted(grouped.items(), key=lambda item: item[0][:3])
        ],
        "disagreements": detailed,
        "disagreements_not_detailed": {"reason": NOISE_REASON, "count": len(disagreements) - len(detailed)},
    }


def _aims(scale: dict[str, Any]) -> list[dict[str, Any]]:
    ratios = scale["ratios"]
    if not ratios:
        return [{"aim": "vs Evidently", "target": f">= {AIM_SPEEDUP:g}x faster, less memory",
                 "measured": "Evidently did not run", "met": None}]  # fmt: skip
    full, steady = ratios["whole"], ratios["steady"]
    return [
        {"aim": "speed: Evidently / ours full pipeline (whole frames), compute", "target": f">= {AIM_SPEEDUP:g}x",
         "measured": f"{full['time']:.1f}x (CPU time {full['cpu']:.1f}x)", "met": full["time"] >= AIM_SPEEDUP},
        {"aim": "speed: Evidently / ours steady state, compute", "target": f">= {AIM_SPEEDUP:g}x",
         "measured": f"{steady['time']:.1f}x (CPU time {steady['cpu']:.1f}x)", "met": steady["time"] >= AIM_SPEEDUP},
        {"aim": "memory: Evidently / ours full pipeline (whole frames), peak RSS", "target": "> 1x (less memory)",
         "measured": f"{full['memory']:.1f}x", "met": full["memory"] > AIM_MEMORY},
        {"aim": "memory: Evidently / ours column at a time, peak RSS", "target": "> 1x (less memory)",
         "measured": f"{ratios['columns']['memory']:.1f}x", "met": ratios["columns"]["memory"] > AIM_MEMORY},
    ]  # fmt: skip


def _print_tables(result: dict[str, Any], console: Console) -> None:
    from rich.table import Table

    scale = result["scale"]
    data = scale["data"]
    table = Table(
        title=f"Drift at {data['rows_reference']:,} x {data['rows_current']:,} x {data['features']} numeric "
        "features (same Parquet bytes; times exclude the read; median of runs)"
    )
    for name in ("side", "runs", "compute s (min-max)", "CPU s", "profile s", "count s", "decide s", "read s",
                 "process s", "peak RSS MiB", "Evidently / ours:\ntime", "CPU", "memory"):  # fmt: skip
        table.add_column(name, justify="left" if name == "side" else "right")
    for variant, entry in scale["ours"].items():
        m = entry["median"]
        ratio = scale["ratios"].get(variant)
        table.add_row(
            entry["label"], str(len(entry["runs"])),
            f"{m['compute_s']:.2f} ({m['compute_s_min']:.2f}-{m['compute_s_max']:.2f})",
            f"{m['compute_cpu_s']:.2f}", f"{m.get('profile_s', 0):.2f}", f"{m['count_s']:.2f}", f"{m['decide_s']:.2f}", f"{m['read_s']:.2f}",
            f"{m['process_s']:.1f}" if "process_s" in m else "(same)", f"{m['peak_rss_mib']:,.0f}",
            f"{ratio['time']:.0f}x" if ratio else "-", f"{ratio['cpu']:.0f}x" if ratio else "-",
            f"{ratio['memory']:.1f}x" if ratio else "-",
        )  # fmt: skip
    evidently = scale["evidently"]
    if "median" in evidently:
        m = evidently["median"]
        table.add_row(
            f"Evidently {evidently['versions'].get('evidently', '?')} DataDriftPreset", str(len(evidently["runs"])),
            f"{m['compute_s']:.1f} ({m['compute_s_min']:.1f}-{m['compute_s_max']:.1f})",
            f"{m['compute_cpu_s']:.1f}", "-", "-", "-", f"{m['read_s']:.2f}", f"{m['process_s']:.1f}",
            f"{m['peak_rss_mib']:,.0f}", "1x", "1x", "1x",
        )  # fmt: skip
    console.print(table)
    if "error" in evidently:
        console.print(f"  [bold red]Evidently did not run[/]: {evidently['error']}")

    verdicts = scale["verdicts"]
    ours_flags = [n for n, v in verdicts.items() if v["ours"]]
    their_flags = [n for n, v in verdicts.items() if v["evidently"]]
    console.print(f"  at {data['rows_reference']:,} rows ({data['current_changes']}):")
    console.print(f"    ours flags: {', '.join(ours_flags) or 'nothing'}")
    console.print(f"    Evidently flags: {', '.join(their_flags) or 'nothing'}")

    study = result["disagreements"]
    if "error" in study:
        console.print(f"  [bold red]disagreement study: Evidently did not run[/]: {study['error']}")
    summary = Table(
        title="Features flagged per window: ours / Evidently (15 features; reference 10k unless noted)"
    )
    summary.add_column("scenario (expected incidents)")
    keys = sorted({(w["reference"], w["window"]) for w in study["windows"]}, key=lambda k: (-k[0], k[1]))
    for ref_size, size in keys:
        summary.add_column(f"ref {ref_size // 1000}k\nwin {size:,}", justify="right")
    by_name: dict[str, dict[tuple[int, int], dict[str, Any]]] = defaultdict(dict)
    expected: dict[str, list[str]] = {}
    for w in study["windows"]:
        by_name[w["scenario"]][(w["reference"], w["window"])] = w
        expected[w["scenario"]] = w["expected"]
    for name, cells in by_name.items():
        label = f"{name} ({', '.join(expected[name]) or 'none'})" if not name.startswith("control") else name
        row = [label]
        for key in keys:
            w = cells.get(key)
            theirs = "-" if w is None or w["evidently"] is None else str(len(w["evidently"]))
            row.append("" if w is None else f"{len(w['ours'])} / {theirs}")
        summary.add_row(*row)
    console.print(summary)

    alarms = Table(
        title="No-fault controls: false alarms (flagged feature tests / tests; windows with any flag)"
    )
    for name in ("reference / window", "tests", "ours", "Evidently"):
        alarms.add_column(name, justify="left" if name.startswith("ref") else "right")
    for label, entry in study["control_false_alarms"].items():
        alarm_cells = [label, str(entry["feature_tests"])]
        for side in ("ours", "evidently"):
            if f"{side}_flags" in entry:
                alarm_cells.append(
                    f"{entry[f'{side}_flags']} ({entry[f'{side}_windows_with_any']}/{entry['windows']} windows)"
                )
            else:
                alarm_cells.append("-")
        alarms.add_row(*alarm_cells)
    console.print(alarms)

    reasons = Table(title="Disagreements by scenario, window and reason (controls pooled)")
    for name in ("scenario", "ref", "window", "flagged by", "reason", "n", "features"):
        reasons.add_column(name, justify="right" if name in ("ref", "window", "n") else "left")
    for entry in study["by_reason"]:
        names = entry["features"]
        shown = ", ".join(names) if len(names) <= 3 else f"{', '.join(names[:2])}, +{len(names) - 2} more"
        reasons.add_row(
            entry["scenario"], f"{entry['reference'] // 1000}k", f"{entry['window']:,}", entry["flagged_by"],
            entry["reason"], str(entry["count"]), shown,
        )  # fmt: skip
    console.print(reasons)

    aims = Table(title="Aims (the issue's acceptance; reported, not enforced)")
    for name in ("aim", "target", "measured", "met"):
        aims.add_column(name)
    for aim in result["aims"]:
        aims.add_row(
            aim["aim"], aim["target"], aim["measured"], {True: "yes", False: "NO", None: "-"}[aim["met"]]
        )
    console.print(aims)
    console.print(
        "  note: the machine is shared with other work (load average in the results file) and has 2 cores: "
        "absolute times are noisy; ratios measured in the same run much less so."
    )


def _key_list(verdicts: dict[tuple[str, int, int], Any]) -> Iterator[str]:
    return (f"{name}|{size}|{ref}" for name, size, ref in verdicts)


def run(options: BenchOptions) -> dict[str, Any]:
    """Run the drift benchmark; print its tables; return the results."""
    plan = QUICK if options.quick else FULL
    console = report_console()
    progress = Progress(console)
    progress.step("Evidently's virtualenv (benchmarks/.venv-evidently)")
    env = ensure_evidently_env(console)
    if env.python is None:
        console.print(
            f"  [bold red]Evidently could not be installed[/]; reporting our side only:\n{env.detail}"
        )
    else:
        console.print(f"  {env.status}: {env.detail} ({env.seconds:.0f} s)")
    with tempfile.TemporaryDirectory(prefix="selfheal-drift-") as tmp:
        scratch = Path(tmp)
        progress.step(
            f"part 1: {plan.rows:,} x {plan.rows:,} x {len(FEATURES)}, each side in its own process"
        )
        scale = measure_scale(plan, scratch, env, progress)
        progress.step("part 2: fault library windows (simulate, apply faults, compute features)")
        study = build_study(plan)
        progress.step(
            f"  {len(study.windows)} windows x {len(study.references)} references built "
            f"({study.info['build_s']:.1f} s); our verdicts"
        )
        ours, ours_s = ours_study(study)
        progress.step(f"  ours: {ours_s:.1f} s; Evidently's verdicts ({len(ours)} reports)")
        theirs, evidently_info = evidently_study(study, env, scratch)
        progress.step(f"  Evidently: {evidently_info.get('total_s', float('nan')):.1f} s")
        comparison = compare(study, ours, theirs)
        comparison.update(
            setup=study.info,
            ours_s=ours_s,
            evidently=evidently_info,
            missing=len(set(_key_list(ours)) - set(_key_list(theirs))),
        )
        if "error" in evidently_info:
            comparison["error"] = evidently_info["error"]
    result: dict[str, Any] = {
        "quick": options.quick,
        "timing": "compute excludes the Parquet read on both sides (same bytes; read reported apart); peak RSS "
        "(VmHWM of each child process) includes the data and the interpreter",
        "evidently_env": {"status": env.status, "detail": env.detail, "seconds": env.seconds},
        "scale": scale,
        "disagreements": comparison,
    }
    result["aims"] = _aims(scale)
    _print_tables(result, console)
    return result


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
