"""Scoring benchmark: what the scorer costs on top of the model (the issue's acceptance 7).

What is measured, and why:

1. **End-to-end batch scoring** (`Scorer.score_batch`: validate + features + predict + decide + log) for
   batches of 10,000, 100 and 1 transactions, against the **baseline** of raw ``booster.inplace_predict``
   on the *same rows*, already featurised, in the *same batch sizes*, with the booster loaded from the
   registry exactly as serving loads it (hash-checked, ``nthread=1``). The ratio e2e / raw says how much of
   the model's speed the platform keeps; the baseline is measured in the same run so the ratio means the
   same thing on a laptop and on a CI runner.
2. **Single-transaction latency** (`Scorer.score_one` on a JSON-like record, the HTTP path): p50 / p99 of
   the wall time the caller sees, in process.
3. **Where the time goes**, for 10k batches and for `score_one`: the same runs again with timers wrapped
   around the scorer's pieces (validation, feature computation and state upkeep, model input, XGBoost, log
   rows, the DuckDB flush, the duplicate-id set), so optimisation starts where the time is. The wrappers
   name some private methods of `Scorer` and `FeatureState`; rename one and this benchmark says so loudly
   (``mock.patch.object`` refuses a missing attribute).
4. **The duplicate-id check** in isolation: `validate` with seen-id sets of growing size, because a check
   whose cost grows with the set would make any number above depend on how long the scorer had run.

Realism: a default-size simulated world (5,000 customers, 10,000 terminals, ~9,700 transactions a day),
60 days of history, a champion trained with the default `TrainParams` (what ``selfheal demo`` serves) and
registered in a temporary workspace on disk, the scorer's feature state warmed with the history (ids as
strings, as `Scorer.warm_up` loads them; see `_as_served`), then the following live days scored in time
order. A check confirms the baseline scores the same values as the scorer on the first call of each row. Batches arrive as frames (files, the simulator); single
transactions as JSON-like dicts (HTTP). Log writes are buffered for batches of 1 and 100
(``flush_rows=10_000``; the closing flush is timed and included) and flushed every batch at 10k. Each
measurement gets a fresh scorer (a copy of the trained workspace, warmed with the history), so its
duplicate-id set holds only the ids that measurement scored; the seen-id count is reported with each row.
Every measurement first scores a few warm-up batches (model load, first allocations) that are not timed.
Measurements of small batches stop after a time budget (the number of calls is reported), so the run
stays within ~3 minutes on 2 cores however slow the scorer is.

Aims (reported, never enforced): at 10k batches end-to-end >= 25 % of raw predict throughput and >= 100k
transactions/s; single-transaction p99 <= 2 ms.
"""

from __future__ import annotations

import gc
import json
import math
import shutil
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, ParamSpec, TypeVar
from unittest import mock

import numpy as np
import pandas as pd
import xgboost as xgb
from rich.console import Console
from rich.table import Table

import scorer.score as score_module
from benchmarks import BenchOptions
from benchmarks.common import percentile_ms
from scorer import columns as C
from scorer.features import FeatureConfig, FeatureState
from scorer.pipeline import train_and_register
from scorer.score import ScorerConfig
from scorer.simulate import LABEL_COLUMNS, Simulator, WorldConfig
from scorer.train import TrainParams
from scorer.validate import validate
from selfheal.app import Platform
from store import Workspace

P = ParamSpec("P")
R = TypeVar("R")

BIG = 10_000
BATCH_SIZES = (BIG, 100, 1)
BUFFERED_FLUSH_ROWS = 10_000  # what a service scoring small batches would use
# Aims from the issue (acceptance 7).
AIM_RATIO_10K = 0.25
AIM_TPS_10K = 100_000.0
AIM_SINGLE_P99_MS = 2.0
SCORE_TOLERANCE = 1e-6  # float32 model input on both sides: scores agree to rounding


@dataclass(frozen=True)
class Plan:
    """How big the run is. `FULL` is the committed benchmark (~1.5-3 min on 2 cores); `QUICK` a smoke run."""

    world: WorldConfig
    history_days: int
    train_params: TrainParams | None  # None = the defaults, what the demo serves
    big_batches: int  # timed 10k batches (each measurement scores one more, untimed, first)
    max_batches: dict[int, int]  # timed batches of 100 and of 1 (at most)
    single_calls: int  # timed score_one calls (at most)
    warmup_batches: dict[int, int]
    budget_s: float  # a measurement of small batches stops after this long (slow machines, slow code)
    breakdown_budget_s: float  # the same for the instrumented score_one re-run
    seen_probe_sizes: tuple[int, ...]  # seen-id set sizes to validate against (+ what warm_up() would load)


FULL = Plan(
    world=WorldConfig(),
    history_days=60,
    train_params=None,
    big_batches=10,
    max_batches={100: 300, 1: 3000},
    single_calls=3000,
    warmup_batches={BIG: 1, 100: 5, 1: 50},
    budget_s=15.0,
    breakdown_budget_s=6.0,
    seen_probe_sizes=(0, 10_000),
)
QUICK = Plan(
    world=WorldConfig(),
    history_days=45,
    train_params=TrainParams(n_estimators=60, early_stopping_rounds=10),
    big_batches=2,
    max_batches={100: 50, 1: 300},
    single_calls=300,
    warmup_batches={BIG: 1, 100: 2, 1: 10},
    budget_s=4.0,
    breakdown_budget_s=3.0,
    seen_probe_sizes=(0, 10_000),
)


# -- setup -------------------------------------------------------------------------------------------


@dataclass
class Setup:
    """The trained workspace and the traffic every measurement replays."""

    scratch: Path
    template: Path  # a workspace with the champion; measurements copy it, never write to it
    history: pd.DataFrame  # with string ids, as validation and `Scorer.warm_up` give them (see `_as_served`)
    live: pd.DataFrame  # live transactions in time order, as a file or the simulator delivers them
    booster: xgb.Booster  # the champion as serving loads it (verified, nthread=1)
    reference: np.ndarray  # float32 model input for every live row, computed by the streaming features
    info: dict[str, Any]


def _setup(plan: Plan, scratch: Path, console: Console) -> Setup:
    started = time.perf_counter()
    simulator = Simulator(plan.world)
    history = simulator.generate(0, plan.history_days)
    rows_needed = _live_rows_needed(plan)
    per_day = len(history) / plan.history_days
    live_days = math.ceil(rows_needed / per_day) + 1
    live = simulator.generate(plan.history_days, live_days)
    while len(live) < rows_needed:  # an unusually quiet stretch: add days
        live_days += 1
        live = simulator.generate(plan.history_days, live_days)
    live = live.drop(columns=list(LABEL_COLUMNS))
    simulated = time.perf_counter()
    console.print(
        f"  simulated {len(history):,} history + {len(live):,} live transactions ({simulated - started:.1f} s)"
    )

    template = scratch / "template"
    with Platform(Workspace(template)) as platform:
        run = train_and_register(
            platform.registry,
            history,
            params=plan.train_params,
            actor="benchmark",
            reason="scoring benchmark",
        )
        loaded = platform.registry.load(run.model.version)
        feature_config = platform.scorer.features.config
    trained = time.perf_counter()
    columns = loaded.metadata.feature_columns
    console.print(
        f"  trained + registered champion v{run.model.version}: {loaded.booster.num_boosted_rounds()} trees, "
        f"{len(columns)} features, AUC {run.report.auc:.3f} ({trained - simulated:.1f} s)"
    )
    served_history = _as_served(history)
    reference = _reference_matrix(
        served_history, _as_served(live.iloc[:rows_needed]), feature_config, columns
    )
    console.print(
        f"  precomputed model input for {len(reference):,} live rows ({time.perf_counter() - trained:.1f} s)"
    )
    retention_days = feature_config.retention_days
    warm_up_ids = int(
        (history[C.TIMESTAMP] > history[C.TIMESTAMP].max() - pd.Timedelta(days=retention_days + 1)).sum()
    )
    info = {
        "world": {
            "customers": plan.world.customers,
            "terminals": plan.world.terminals,
            "seed": plan.world.seed,
        },
        "history_days": plan.history_days,
        "history_rows": len(history),
        "live_days": live_days,
        "live_rows": len(live),
        "train_params": "defaults" if plan.train_params is None else plan.train_params.model_dump(),
        "model_trees": loaded.booster.num_boosted_rounds(),
        "model_features": len(columns),
        "model_auc": run.report.auc,
        "booster_nthread": 1,
        "seen_ids_after_warm_up": warm_up_ids,
        "setup_seconds": time.perf_counter() - started,
    }
    return Setup(scratch, template, served_history, live, loaded.booster, reference, info)


def _live_rows_needed(plan: Plan) -> int:
    big = (plan.warmup_batches[BIG] + plan.big_batches) * BIG
    small = max((plan.warmup_batches[s] + plan.max_batches[s]) * s for s in (100, 1))
    single = plan.warmup_batches[1] + plan.single_calls
    return max(big, small, single)


def _as_served(frame: pd.DataFrame) -> pd.DataFrame:
    """Ids as the scorer holds them: text (validation writes integer ids in decimal, the store keeps them
    as VARCHAR, and `FeatureState` keys its windows by text). Converting the history once here spares
    every fresh scorer the conversion (and keeps the ids consistent whatever `FeatureState.observe` does)."""
    ids = (C.TRANSACTION_ID, C.CUSTOMER_ID, C.TERMINAL_ID)
    return frame.astype(dict.fromkeys(ids, str))


def _reference_matrix(
    history: pd.DataFrame, live: pd.DataFrame, config: FeatureConfig, columns: list[str]
) -> np.ndarray:
    """The model input the scorer computes for the live rows (same streaming path, same ids, same order)."""
    state = FeatureState(config)
    state.observe(history)
    parts = [state.transform(live.iloc[i : i + BIG]) for i in range(0, len(live), BIG)]
    return np.ascontiguousarray(pd.concat(parts)[columns].to_numpy(dtype=np.float32))


@contextmanager
def _fresh_platform(setup: Setup, flush_rows: int) -> Iterator[Platform]:
    """A copy of the trained workspace whose scorer has seen the history (and no live transaction)."""
    home = Path(tempfile.mkdtemp(prefix="ws-", dir=setup.scratch))
    shutil.rmtree(home)
    shutil.copytree(setup.template, home)
    try:
        with Platform(Workspace(home), scorer_config=ScorerConfig(flush_rows=flush_rows)) as platform:
            platform.scorer.features.observe(setup.history)
            yield platform
    finally:
        shutil.rmtree(home, ignore_errors=True)


# -- end-to-end measurements ---------------------------------------------------------------------------


@dataclass
class Measured:
    """Timed calls of one measurement: per-call wall times plus the closing flush."""

    batch_size: int
    rows: int
    latencies: list[float]
    final_flush_s: float = 0.0
    flush_rows: int = 1
    seen_ids_at_end: int = 0
    first_scores: np.ndarray | None = None  # the scores of the first timed call, to check the baseline

    @property
    def total_s(self) -> float:
        return float(sum(self.latencies)) + self.final_flush_s

    @property
    def tx_per_s(self) -> float:
        return self.rows / self.total_s if self.total_s > 0 else float("nan")


def _batches(live: pd.DataFrame, size: int, start: int, count: int) -> list[pd.DataFrame]:
    return [live.iloc[start + i * size : start + (i + 1) * size] for i in range(count)]


def _measure_batches(
    setup: Setup, size: int, timed: int, warmup: int, flush_rows: int, budget_s: float
) -> Measured:
    """Score ``warmup`` then up to ``timed`` batches of ``size`` live rows with a fresh scorer."""
    batches = _batches(setup.live, size, 0, warmup + timed)
    with _fresh_platform(setup, flush_rows) as platform:
        scorer = platform.scorer
        for batch in batches[:warmup]:
            scorer.score_batch(batch, source="benchmark")
        scorer.flush()
        gc.collect()
        latencies: list[float] = []
        rows = 0
        first_scores = None
        deadline = time.perf_counter() + budget_s
        for batch in batches[warmup:]:
            started = time.perf_counter()
            result = scorer.score_batch(batch, source="benchmark")
            latencies.append(time.perf_counter() - started)
            if result.scored != len(batch):
                raise RuntimeError(f"benchmark traffic was dead-lettered: {result.dead_letters.head()}")
            if first_scores is None:
                first_scores = result.predictions["score"].to_numpy()
            rows += len(batch)
            if time.perf_counter() > deadline:
                break
        started = time.perf_counter()
        scorer.flush()
        final_flush = time.perf_counter() - started
        seen = len(scorer._seen)
    return Measured(size, rows, latencies, final_flush, flush_rows, seen, first_scores)


def _json_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as an HTTP client sends them: ISO timestamps, plain numbers and strings."""
    records: list[dict[str, Any]] = json.loads(frame.to_json(orient="records", date_format="iso"))
    return records


def _measure_single(setup: Setup, calls: int, warmup: int, budget_s: float) -> Measured:
    """``score_one`` on consecutive live transactions (JSON-like records), log writes buffered."""
    records = _json_records(setup.live.iloc[: warmup + calls])
    with _fresh_platform(setup, BUFFERED_FLUSH_ROWS) as platform:
        scorer = platform.scorer
        for record in records[:warmup]:
            scorer.score_one(record)
        scorer.flush()
        gc.collect()
        latencies: list[float] = []
        first_scores = None
        deadline = time.perf_counter() + budget_s
        for record in records[warmup:]:
            started = time.perf_counter()
            answer = scorer.score_one(record)
            latencies.append(time.perf_counter() - started)
            if "error" in answer:
                raise RuntimeError(f"benchmark transaction was dead-lettered: {answer}")
            if first_scores is None:
                first_scores = np.array([answer["score"]])
            if time.perf_counter() > deadline:
                break
        started = time.perf_counter()
        scorer.flush()
        final_flush = time.perf_counter() - started
        seen = len(scorer._seen)
    return Measured(1, len(latencies), latencies, final_flush, BUFFERED_FLUSH_ROWS, seen, first_scores)


def _measure_raw(setup: Setup, size: int, start: int, batches: int) -> Measured:
    """The baseline: ``inplace_predict`` on the precomputed model input of the same rows and batch size."""
    matrix, booster = setup.reference, setup.booster
    for i in range(min(batches, 20)):  # warm-up
        booster.inplace_predict(matrix[start + i * size : start + (i + 1) * size])
    latencies: list[float] = []
    first_scores = None
    for i in range(batches):
        block = matrix[start + i * size : start + (i + 1) * size]
        started = time.perf_counter()
        scores = booster.inplace_predict(block)
        latencies.append(time.perf_counter() - started)
        if first_scores is None:
            first_scores = np.asarray(scores, dtype=np.float64)
    return Measured(size, batches * size, latencies, first_scores=first_scores)


# -- stage breakdown -------------------------------------------------------------------------------------


class _StageClock:
    """Accumulates the wall time spent inside wrapped callables (nested wraps each count their own time)."""

    def __init__(self) -> None:
        self.seconds: defaultdict[str, float] = defaultdict(float)

    def wrap(self, stage: str, fn: Callable[P, R]) -> Callable[P, R]:
        def timed(*args: P.args, **kwargs: P.kwargs) -> R:
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[stage] += time.perf_counter() - started

        return timed


STAGES: tuple[tuple[str, str], ...] = (
    ("validate_fields", "validate: field checks"),
    ("validate_seen", "validate: duplicate-id check against seen ids"),
    ("features_compute", "features: window aggregates (FeatureState.transform)"),
    ("features_remember", "features: remember batch + index rebuilds"),
    ("predict_input", "predict: frame -> float32 matrix"),
    ("predict_xgboost", "predict: XGBoost inplace_predict"),
    ("log_build", "log: build transaction + prediction rows"),
    ("log_insert", "log: DuckDB INSERT (store.append)"),
    ("log_commit", "log: concat + COMMIT"),
    ("remember_ids", "duplicate-id set upkeep (_remember_ids)"),
    ("serving", "serving state + model lookup"),
    ("other", "other: sort, decisions, result frames"),
)


def _stage_breakdown(
    setup: Setup, *, single: bool, timed: int, warmup: int, budget_s: float
) -> dict[str, Any]:
    """Re-run a measurement with timers around the scorer's pieces.

    ``single=False``: ``timed`` 10k frames through `score_batch`, flushing every batch (as measured above).
    ``single=True``: up to ``timed`` JSON-like records through `score_one`, log writes buffered, the
    closing flush included.
    """
    items: list[Any]
    if single:
        items = _json_records(setup.live.iloc[: warmup + timed])
    else:
        items = _batches(setup.live, BIG, 0, warmup + timed)
    clock = _StageClock()
    field_checks = 0.0
    total = 0.0
    calls = 0
    seen_sizes: list[int] = []
    with _fresh_platform(setup, BUFFERED_FLUSH_ROWS if single else 1) as platform:
        scorer = platform.scorer

        def call(item: Any) -> None:
            if single:
                scorer.score_one(item, source="benchmark")
            else:
                scorer.score_batch(item, source="benchmark")

        for item in items[:warmup]:
            call(item)
        scorer.flush()
        gc.collect()
        with ExitStack() as patches:
            for target, name, stage in (
                (score_module, "validate", "validate"),
                (scorer.features, "transform", "features"),
                (scorer.features, "_remember", "remember"),
                (scorer, "_score", "predict"),
                (xgb.Booster, "inplace_predict", "xgboost"),
                (scorer, "_log", "log"),
                (scorer, "flush", "flush"),
                (platform.store, "append", "append"),
                (scorer, "_remember_ids", "remember_ids"),
                (scorer, "_resolve_serving", "serving"),
            ):
                patches.enter_context(
                    mock.patch.object(target, name, clock.wrap(stage, getattr(target, name)))
                )
            deadline = time.perf_counter() + budget_s
            for item in items[warmup:]:
                seen_sizes.append(len(scorer._seen))
                # The same validation without the seen-id set, outside the timed call: the difference is
                # what the duplicate-id check costs.
                started = time.perf_counter()
                validate([item] if single else item, limits=scorer.config.limits)
                field_checks += time.perf_counter() - started
                started = time.perf_counter()
                call(item)
                total += time.perf_counter() - started
                calls += 1
                if time.perf_counter() > deadline:
                    break
            started = time.perf_counter()
            scorer.flush()
            total += time.perf_counter() - started
    s = clock.seconds
    fields = min(field_checks, s["validate"])
    exclusive = {
        "validate_fields": fields,
        "validate_seen": s["validate"] - fields,
        "features_compute": s["features"] - s["remember"],
        "features_remember": s["remember"],
        "predict_input": s["predict"] - s["xgboost"],
        "predict_xgboost": s["xgboost"],
        "log_build": s["log"] - s["flush"],
        "log_insert": s["append"],
        "log_commit": s["flush"] - s["append"],
        "remember_ids": s["remember_ids"],
        "serving": s["serving"],
    }
    exclusive["other"] = total - sum(exclusive.values())
    return {
        "path": "score_one" if single else f"score_batch x{BIG:,}",
        "calls": calls,
        "rows_per_call": 1 if single else BIG,
        "seen_ids_min": min(seen_sizes),
        "seen_ids_max": max(seen_sizes),
        "total_ms_per_call": total / calls * 1000.0,
        "stages": {
            key: {
                "label": label,
                "ms_per_call": exclusive[key] / calls * 1000.0,
                "share": exclusive[key] / total,
            }
            for key, label in STAGES
        },
    }


# -- duplicate-id check ---------------------------------------------------------------------------------


def _seen_probe(setup: Setup, sizes: Sequence[int]) -> dict[str, Any]:
    """`validate` of 1 record and of a 10k frame against seen-id sets of growing size.

    The check must cost O(batch): a service holds hundreds of thousands of recent ids (``warm_up`` loads
    the retention window's). Also times the plain ``id in seen`` loop, the floor for the check.
    """
    frame = setup.live.iloc[:BIG]
    record = _json_records(setup.live.iloc[:1])
    ids = frame[C.TRANSACTION_ID].astype(str).tolist()
    validate(record)  # first calls pay for imports and caches
    validate(frame)
    rows: list[dict[str, Any]] = []
    for size in sizes:
        seen = {str(10**12 + i) for i in range(size)}  # never collides with simulated ids
        repeats = 3 if size <= 10_000 else 2
        one = _best_of(repeats, partial(validate, record, seen_ids=seen))
        big = _best_of(repeats, partial(validate, frame, seen_ids=seen))
        lookup = _best_of(repeats, partial(_membership, ids, seen))
        rows.append(
            {
                "seen_ids": size,
                "validate_1_ms": one * 1e3,
                "validate_10k_ms": big * 1e3,
                "set_lookup_10k_ms": lookup * 1e3,
            }
        )
    first, last = rows[0], rows[-1]
    growth = last["validate_1_ms"] / first["validate_1_ms"]
    slope_us = max(last["validate_1_ms"] - first["validate_1_ms"], 0.0) * 1e3 / max(last["seen_ids"], 1)
    # Noise moves a 1-record validate by tens of percent; a check that scans the set grows it many-fold.
    return {
        "rows": rows,
        "growth_1_record": growth,
        "grows_with_set": growth > 2.0,
        "us_per_seen_id": slope_us,
    }


def _best_of(repeats: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def _membership(ids: list[str], seen: set[str]) -> np.ndarray:
    return np.fromiter((i in seen for i in ids), dtype=bool, count=len(ids))


# -- reporting ------------------------------------------------------------------------------------------


def _row(e2e: Measured, raw: Measured, label: str) -> dict[str, Any]:
    # The baseline must do the same work: its scores of the first timed call equal the scorer's.
    score_diff = None
    if e2e.first_scores is not None and raw.first_scores is not None:
        score_diff = float(np.max(np.abs(e2e.first_scores - raw.first_scores)))
    return {
        "label": label,
        "batch_size": e2e.batch_size,
        "batches": len(e2e.latencies),
        "rows": e2e.rows,
        "flush_rows": e2e.flush_rows,
        "e2e_tx_per_s": e2e.tx_per_s,
        "raw_tx_per_s": raw.tx_per_s,
        "e2e_over_raw": e2e.tx_per_s / raw.tx_per_s,
        "e2e_p50_ms": percentile_ms(e2e.latencies, 50),
        "e2e_p99_ms": percentile_ms(e2e.latencies, 99),
        "e2e_max_ms": percentile_ms(e2e.latencies, 100),
        "raw_p50_ms": percentile_ms(raw.latencies, 50),
        "raw_p99_ms": percentile_ms(raw.latencies, 99),
        "final_flush_ms": e2e.final_flush_s * 1e3,
        "seen_ids_at_end": e2e.seen_ids_at_end,
        "baseline_max_score_diff": score_diff,
    }


def _aims(rows: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    big, single = rows[f"batch_{BIG}"], rows["score_one"]
    return [
        {"aim": "10k batches: e2e / raw predict throughput", "target": f">= {AIM_RATIO_10K:.0%}",
         "measured": f"{big['e2e_over_raw']:.1%}", "met": big["e2e_over_raw"] >= AIM_RATIO_10K},
        {"aim": "10k batches: e2e throughput", "target": f">= {AIM_TPS_10K:,.0f} tx/s",
         "measured": f"{big['e2e_tx_per_s']:,.0f} tx/s", "met": big["e2e_tx_per_s"] >= AIM_TPS_10K},
        {"aim": "single transaction (score_one) p99", "target": f"<= {AIM_SINGLE_P99_MS:g} ms",
         "measured": f"{single['e2e_p99_ms']:.2f} ms", "met": single["e2e_p99_ms"] <= AIM_SINGLE_P99_MS},
    ]  # fmt: skip


def _print_tables(result: dict[str, Any], console: Console) -> None:
    table = Table(title="Scoring: end-to-end (e2e) vs raw inplace_predict on the same rows, same run")
    for name in ("path", "calls", "e2e tx/s", "raw tx/s", "e2e/raw", "e2e p50 ms", "e2e p99 ms", "raw p50 ms",
                 "raw p99 ms", "log flush", "seen ids"):  # fmt: skip
        table.add_column(name, justify="left" if name in ("path", "log flush") else "right")
    for row in result["throughput"].values():
        flush = (
            "every batch" if row["flush_rows"] == 1 else f"buffered (+{row['final_flush_ms']:.0f} ms at end)"
        )
        table.add_row(
            row["label"], f"{row['batches']:,}", f"{row['e2e_tx_per_s']:,.0f}", f"{row['raw_tx_per_s']:,.0f}",
            f"{row['e2e_over_raw']:.2%}", f"{row['e2e_p50_ms']:.3f}", f"{row['e2e_p99_ms']:.3f}",
            f"{row['raw_p50_ms']:.3f}", f"{row['raw_p99_ms']:.3f}", flush, f"{row['seen_ids_at_end']:,}",
        )  # fmt: skip
    console.print(table)
    diffs = [row["baseline_max_score_diff"] for row in result["throughput"].values()]
    worst = max((d for d in diffs if d is not None), default=float("nan"))
    verdict = (
        "same scores" if worst <= SCORE_TOLERANCE else "DIFFERENT scores: the baseline is not like for like"
    )
    console.print(
        f"  baseline check, first call of each row: raw vs scorer max |score diff| {worst:.1e} ({verdict})"
    )

    big, one = result["stages"]["batch"], result["stages"]["single"]
    stages = Table(title="Where the time goes (instrumented re-runs; exclusive time per call)")
    stages.add_column("stage")
    for path in (big, one):
        stages.add_column(f"{path['path']}\nms / call", justify="right")
        stages.add_column("share", justify="right")
    for key, _ in sorted(STAGES, key=lambda stage: -big["stages"][stage[0]]["ms_per_call"]):
        cells = [big["stages"][key]["label"]]
        for path in (big, one):
            stage = path["stages"][key]
            cells += [f"{stage['ms_per_call']:.2f}", f"{stage['share']:.1%}"]
        stages.add_row(*cells)
    stages.add_row(
        "total",
        f"{big['total_ms_per_call']:.1f}",
        "100%",
        f"{one['total_ms_per_call']:.2f}",
        "100%",
        style="bold",
    )
    console.print(stages)
    console.print(
        f"  {big['calls']} batches (seen ids {big['seen_ids_min']:,}-{big['seen_ids_max']:,}); "
        f"{one['calls']:,} score_one calls (seen ids {one['seen_ids_min']:,}-{one['seen_ids_max']:,})"
    )

    probe = result["duplicate_check"]
    seen = Table(title="Duplicate-id check: validate() against N seen ids")
    for name in ("seen ids", "validate 1 record ms", "validate 10k frame ms", "`id in set` x 10k ms"):
        seen.add_column(name, justify="right")
    for row in probe["rows"]:
        seen.add_row(
            f"{row['seen_ids']:,}", f"{row['validate_1_ms']:.2f}", f"{row['validate_10k_ms']:.1f}",
            f"{row['set_lookup_10k_ms']:.2f}",
        )  # fmt: skip
    console.print(seen)
    largest = probe["rows"][-1]["seen_ids"]
    if probe["grows_with_set"]:
        slope = probe["us_per_seen_id"]
        console.print(
            f"  [bold]the check GROWS with the set[/]: ~{slope:.2f} µs per seen id per call whatever the batch "
            f"size, ~{slope * 2_000_000 / 1e3:,.0f} ms per call at the default capacity (2M ids)"
        )
    else:
        console.print(
            f"  flat: validating 1 record with {largest:,} seen ids (the ids warm_up() loads) costs "
            f"{probe['growth_1_record']:.2f}x what it costs with none"
        )

    aims = Table(title="Aims (issue acceptance 7; reported, not enforced)")
    for name in ("aim", "target", "measured", "met"):
        aims.add_column(name)
    for aim in result["aims"]:
        aims.add_row(aim["aim"], aim["target"], aim["measured"], "yes" if aim["met"] else "NO")
    console.print(aims)


# -- entry point ------------------------------------------------------------------------------------------


@dataclass
class _Progress:
    console: Console
    started: float = field(default_factory=time.perf_counter)

    def step(self, what: str) -> None:
        self.console.print(f"[{time.perf_counter() - self.started:5.0f} s] {what}", highlight=False)


def run(options: BenchOptions) -> dict[str, Any]:
    """Run the scoring benchmark; print its tables; return the results."""
    plan = QUICK if options.quick else FULL
    console = Console()
    if not console.is_terminal:  # logs and pipes: wide enough for the tables
        console = Console(width=150)
    progress = _Progress(console)
    with tempfile.TemporaryDirectory(prefix="selfheal-bench-") as scratch:
        progress.step("setup: simulate, train and register a champion, precompute model input")
        setup = _setup(plan, Path(scratch), console)
        rows: dict[str, dict[str, Any]] = {}
        for size in BATCH_SIZES:
            warmup = plan.warmup_batches[size]
            if size == BIG:
                timed, flush_rows, budget = plan.big_batches, 1, math.inf
            else:
                timed, flush_rows, budget = plan.max_batches[size], BUFFERED_FLUSH_ROWS, plan.budget_s
            flushing = "every batch" if flush_rows == 1 else f"every {flush_rows:,} rows"
            progress.step(f"end-to-end: score_batch, batches of {size:,} (log flushed {flushing})")
            e2e = _measure_batches(setup, size, timed, warmup, flush_rows, budget)
            raw = _measure_raw(setup, size, warmup * size, len(e2e.latencies))
            rows[f"batch_{size}"] = _row(e2e, raw, f"score_batch x{size:,}")
        progress.step("end-to-end: score_one on JSON-like records (log buffered)")
        warmup = plan.warmup_batches[1]
        single = _measure_single(setup, plan.single_calls, warmup, plan.budget_s)
        raw = _measure_raw(setup, 1, warmup, len(single.latencies))
        rows["score_one"] = _row(single, raw, "score_one")
        progress.step("stage breakdown: 10k batches")
        big_stages = _stage_breakdown(
            setup, single=False, timed=rows[f"batch_{BIG}"]["batches"], warmup=plan.warmup_batches[BIG],
            budget_s=math.inf,
        )  # fmt: skip
        progress.step("stage breakdown: score_one")
        single_stages = _stage_breakdown(
            setup, single=True, timed=plan.single_calls, warmup=warmup, budget_s=plan.breakdown_budget_s
        )
        progress.step("duplicate-id check probe")
        probe = _seen_probe(setup, (*plan.seen_probe_sizes, setup.info["seen_ids_after_warm_up"]))
        progress.step("done")
    result: dict[str, Any] = {
        "quick": options.quick,
        "setup": setup.info,
        "throughput": rows,
        "stages": {"batch": big_stages, "single": single_stages},
        "duplicate_check": probe,
        "aims": _aims(rows),
    }
    _print_tables(result, console)
    return result
