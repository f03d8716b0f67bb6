"""Scoring benchmark: what the scorer costs on top of the model (the issue's acceptance 7).

What is measured, and why:

1. **End-to-end batch scoring** (`Scorer.score_batch`: validate + features + predict + decide + log) for
   batches of 10,000, 100 and 1 transactions, against the **baseline** of raw ``booster.inplace_predict``
   on the *same rows*, already featurised, in the *same batch sizes*, with the booster loaded from the
   registry exactly as serving loads it (hash-checked, ``nthread=1``). The ratio e2e / raw says how much of
   the model's speed the platform keeps; the baseline is measured in the same run so the ratio means the
   same thing on a laptop and on a CI runner. 10k batches run with three log-writer settings: written by the
   scoring call after every batch (``flush_rows=1``), buffered into 250k-row chunks written by the scoring
   call, and buffered with a writer thread (``background_writes``). Every row is in DuckDB when the clock
   stops: the closing `flush` (a barrier) is timed and included. Process CPU time per 10k rows is reported
   next to the wall time, because the writer thread uses the second core.
2. **Single-transaction latency** (`Scorer.score_one` on a JSON-like record, the HTTP path): p50 / p99 of
   the wall time the caller sees, in process, with the log written by the caller (buffered) and by the
   writer thread; and the same percentiles of the calling thread's CPU time, which tell the code's own
   tail from the OS scheduler's on a shared machine.
3. **Where the time goes**, for 10k batches and for `score_one`: the same runs again (log buffered, written
   by the caller, so every stage runs on the timed thread) with timers wrapped around the scorer's pieces
   (validation, features, model input, XGBoost, log rows, the DuckDB writes, the duplicate-id set), so
   optimisation starts where the time is. The wrappers name some private methods of `Scorer` and
   `LogWriter`; rename one and this benchmark says so loudly (``mock.patch.object`` refuses a missing
   attribute). The DuckDB share gives the **log floor**: how many transactions per second DuckDB alone
   ingests with their 41 logged columns, which bounds any end-to-end number.
4. **The duplicate-id check** in isolation: `validate` with seen-id sets of growing size, because a check
   whose cost grows with the set would make any number above depend on how long the scorer had run.

Realism: a default-size simulated world (5,000 customers, 10,000 terminals, ~9,700 transactions a day),
60 days of history, a champion trained with the default `TrainParams` (what ``selfheal demo`` serves) and
registered in a temporary workspace on disk, the scorer's feature state warmed with the history (ids as
strings, as `Scorer.warm_up` loads them; see `_as_served`), then the following live days scored in time
order. A check confirms the baseline scores the same values as the scorer on the first call of each row.
Batches arrive as frames (files, the simulator); single transactions as JSON-like dicts (HTTP). Log writes
are buffered for batches of 1 and 100 (``flush_rows=10_000``; the closing flush is timed and included). Each
measurement gets a fresh scorer (a copy of the trained workspace, warmed with the history), so its
duplicate-id set holds only the ids that measurement scored; the seen-id count is reported with each row.
Every measurement first scores a few warm-up batches (model load, first allocations) that are not timed.
The machine is shared: each 10k setting runs three times, interleaved with the others, and the median e2e
run is reported against the median raw baseline, with all runs listed (the load average before the run is
in the results file).
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

import scorer.feature_state as feature_state_module
import scorer.score as score_module
from benchmarks import BenchOptions
from benchmarks.common import Progress, percentile_ms, report_console
from scorer import columns as C
from scorer.feature_state import FeatureState
from scorer.features import FeatureConfig
from scorer.pipeline import train_and_register
from scorer.score import ScorerConfig
from scorer.simulate import LABEL_COLUMNS, Simulator, WorldConfig
from scorer.train import TrainParams
from scorer.validate import validate
from scorer.window_index import WindowIndex
from selfheal.app import Platform
from store import Workspace

P = ParamSpec("P")
R = TypeVar("R")

BIG = 10_000
BATCH_SIZES = (BIG, 100, 1)
BUFFERED_FLUSH_ROWS = 10_000  # what a service scoring small batches would use
# 10k batches, buffered: chunks of 250k log rows (~125k transactions) fill whole DuckDB row groups (122,880
# rows), which DuckDB compresses once and writes straight to the file instead of through its WAL.
BIG_CHUNK_ROWS = 250_000
# Aims from the issue (acceptance 7).
AIM_RATIO_10K = 0.25
AIM_TPS_10K = 100_000.0
AIM_SINGLE_P99_MS = 2.0
SCORE_TOLERANCE = 1e-6  # float32 model input on both sides: scores agree to rounding


@dataclass(frozen=True)
class Plan:
    """How big the run is. `FULL` is the committed benchmark (~3-5 min on 2 cores); `QUICK` a smoke run."""

    world: WorldConfig
    history_days: int
    train_params: TrainParams | None  # None = the defaults, what the demo serves
    big_batches: int  # timed 10k batches (each measurement scores one more, untimed, first)
    big_variants: tuple[str, ...]  # which log-writer settings 10k batches are measured with (see `VARIANTS`)
    big_repeats: int  # runs of each 10k setting, interleaved; the median run is reported (others share the CPU)
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
    # 40 batches = 800k log rows: the 250k-row chunks are written while scoring goes on (steady state), not
    # all at the closing flush.
    big_batches=40,
    big_variants=("every_batch", "buffered", "background"),
    big_repeats=3,
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
    big_batches=14,
    big_variants=("every_batch", "background"),
    big_repeats=1,
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


@dataclass(frozen=True)
class Writer:
    """How a measurement's scorer writes its log (see `store.log_writer`)."""

    label: str
    flush_rows: int
    background: bool = False

    def config(self) -> ScorerConfig:
        return ScorerConfig(flush_rows=self.flush_rows, background_writes=self.background)


# Labels: "every call" writes in the scoring call; "Nk, caller" buffers N rows and the scoring call writes
# them; "Nk, thread" buffers N rows and a writer thread writes them.
VARIANTS: dict[str, Writer] = {
    "every_batch": Writer("every call", 1),
    "buffered": Writer(f"{BIG_CHUNK_ROWS // 1000}k, caller", BIG_CHUNK_ROWS),
    "background": Writer(f"{BIG_CHUNK_ROWS // 1000}k, thread", BIG_CHUNK_ROWS, True),
}
SMALL_BATCH_WRITER = Writer(f"{BUFFERED_FLUSH_ROWS // 1000}k, caller", BUFFERED_FLUSH_ROWS)
SINGLE_WRITERS: dict[str, Writer] = {
    "score_one": SMALL_BATCH_WRITER,
    "score_one_background": Writer(f"{BUFFERED_FLUSH_ROWS // 1000}k, thread", BUFFERED_FLUSH_ROWS, True),
}


@contextmanager
def _fresh_platform(setup: Setup, writer: Writer) -> Iterator[Platform]:
    """A copy of the trained workspace whose scorer has seen the history (and no live transaction)."""
    home = Path(tempfile.mkdtemp(prefix="ws-", dir=setup.scratch))
    shutil.rmtree(home)
    shutil.copytree(setup.template, home)
    try:
        with Platform(Workspace(home), scorer_config=writer.config()) as platform:
            # In memory only (not `observe_history`): the benchmark never restarts, and a store write of
            # the history is not what it measures.
            platform.scorer.features.observe(setup.history)
            yield platform
    finally:
        shutil.rmtree(home, ignore_errors=True)


# -- end-to-end measurements ---------------------------------------------------------------------------


@dataclass
class Measured:
    """Timed calls of one measurement: per-call wall (and CPU) times plus the closing flush."""

    batch_size: int
    rows: int
    latencies: list[float]
    final_flush_s: float = 0.0
    writer: Writer | None = None
    seen_ids_at_end: int = 0
    first_scores: np.ndarray | None = None  # the scores of the first timed call, to check the baseline
    process_cpu_s: float | None = None  # CPU time of the whole process (all threads) over the timed span
    thread_cpu: list[float] = field(default_factory=list)  # per call, the calling thread's CPU time

    @property
    def total_s(self) -> float:
        return float(sum(self.latencies)) + self.final_flush_s

    @property
    def tx_per_s(self) -> float:
        return self.rows / self.total_s if self.total_s > 0 else float("nan")


def _batches(live: pd.DataFrame, size: int, start: int, count: int) -> list[pd.DataFrame]:
    return [live.iloc[start + i * size : start + (i + 1) * size] for i in range(count)]


def _measure_batches(
    setup: Setup, size: int, timed: int, warmup: int, writer: Writer, budget_s: float
) -> Measured:
    """Score ``warmup`` then up to ``timed`` batches of ``size`` live rows with a fresh scorer."""
    batches = _batches(setup.live, size, 0, warmup + timed)
    with _fresh_platform(setup, writer) as platform:
        scorer = platform.scorer
        for batch in batches[:warmup]:
            scorer.score_batch(batch, source="benchmark")
        scorer.flush()
        gc.collect()
        latencies: list[float] = []
        rows = 0
        first_scores = None
        deadline = time.perf_counter() + budget_s
        cpu_started = time.process_time()
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
        cpu = time.process_time() - cpu_started
        logged = platform.store.count("predictions")
        seen = len(scorer._seen)
    if logged != rows + warmup * size:  # the clock stopped with every scored row in the store
        raise RuntimeError(f"{logged:,} predictions logged for {rows + warmup * size:,} rows scored")
    return Measured(size, rows, latencies, final_flush, writer, seen, first_scores, cpu)


def _json_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as an HTTP client sends them: ISO timestamps, plain numbers and strings."""
    records: list[dict[str, Any]] = json.loads(frame.to_json(orient="records", date_format="iso"))
    return records


def _measure_single(setup: Setup, calls: int, warmup: int, budget_s: float, writer: Writer) -> Measured:
    """``score_one`` on consecutive live transactions (JSON-like records), log writes buffered."""
    records = _json_records(setup.live.iloc[: warmup + calls])
    with _fresh_platform(setup, writer) as platform:
        scorer = platform.scorer
        for record in records[:warmup]:
            scorer.score_one(record)
        scorer.flush()
        gc.collect()
        latencies: list[float] = []
        thread_cpu: list[float] = []
        first_scores = None
        deadline = time.perf_counter() + budget_s
        cpu_started = time.process_time()
        for record in records[warmup:]:
            started, cpu = time.perf_counter(), time.thread_time()
            answer = scorer.score_one(record)
            thread_cpu.append(time.thread_time() - cpu)
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
        process_cpu = time.process_time() - cpu_started
        seen = len(scorer._seen)
    measured = Measured(1, len(latencies), latencies, final_flush, writer, seen, first_scores, process_cpu)
    measured.thread_cpu = thread_cpu
    return measured


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
    """Accumulates the *exclusive* wall time spent inside wrapped callables.

    A wrapped call nested in another pauses its parent's clock, so each stage counts only its own time and
    the stages add up to the whole (single-threaded runs only: the breakdown writes the log in the caller).
    """

    def __init__(self) -> None:
        self.seconds: defaultdict[str, float] = defaultdict(float)
        self._stack: list[list[Any]] = []  # [stage, since]

    def wrap(self, stage: str, fn: Callable[P, R]) -> Callable[P, R]:
        def timed(*args: P.args, **kwargs: P.kwargs) -> R:
            now = time.perf_counter()
            if self._stack:
                parent = self._stack[-1]
                self.seconds[parent[0]] += now - parent[1]
            self._stack.append([stage, now])
            try:
                return fn(*args, **kwargs)
            finally:
                end = time.perf_counter()
                name, since = self._stack.pop()
                self.seconds[name] += end - since
                if self._stack:
                    self._stack[-1][1] = end

        return timed


STAGES: tuple[tuple[str, str], ...] = (
    ("validate_fields", "validate: field checks"),
    ("validate_seen", "validate: duplicate-id check against seen ids"),
    ("features_queries", "features: window queries + feature matrix"),
    ("features_upkeep", "features: index merges + evictions"),
    ("predict_input", "predict: features -> float32 model input (or rules)"),
    ("predict_xgboost", "predict: XGBoost inplace_predict"),
    ("log_build", "log: build + stage transaction / prediction rows"),
    ("log_arrow", "log: staged rows -> Arrow tables (LogWriter)"),
    ("log_insert", "log: DuckDB INSERT (store.append)"),
    ("log_commit", "log: DuckDB BEGIN + COMMIT"),
    ("remember_ids", "duplicate-id set upkeep (_remember_ids)"),
    ("serving", "serving state + model lookup"),
    ("other", "other: sort, decisions, result frame"),
)


def _stage_breakdown(
    setup: Setup, *, single: bool, timed: int, warmup: int, budget_s: float
) -> dict[str, Any]:
    """Re-run a measurement with timers around the scorer's pieces.

    ``single=False``: ``timed`` 10k frames through `score_batch`, log buffered in 250k-row chunks written by
    the caller. ``single=True``: up to ``timed`` JSON-like records through `score_one`, log buffered in
    10k-row chunks. Both write in the timed thread, and the closing flush is included.
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
    writer = SMALL_BATCH_WRITER if single else VARIANTS["buffered"]
    with _fresh_platform(setup, writer) as platform:
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
        state = scorer.features
        targets: list[tuple[Any, str, str]] = [
            (score_module, "validate_record" if single else "validate", "validate"),
            (state, "transform_one" if single else "transform_columns", "features_queries"),
            (state, "_merge", "features_upkeep"),
            (feature_state_module._RowStore, "compact", "features_upkeep"),
            (WindowIndex, "evict", "features_upkeep"),
            (scorer, "_score_row" if single else "_score", "predict_input"),
            (xgb.Booster, "inplace_predict", "predict_xgboost"),
            (score_module, "record_log_rows" if single else "batch_log_tables", "log_build"),
            (scorer._writer, "append_rows" if single else "append", "log_build"),
            (scorer._writer, "_to_arrow", "log_arrow"),
            (platform.store, "append", "log_insert"),
            (scorer._writer, "_write", "log_commit"),
            (scorer, "_remember_ids", "remember_ids"),
            (scorer, "_resolve_serving", "serving"),
        ]
        with ExitStack() as patches:
            for target, name, stage in targets:
                patches.enter_context(mock.patch.object(target, name, clock.wrap(stage, getattr(target, name))))
            deadline = time.perf_counter() + budget_s
            for item in items[warmup:]:
                seen_sizes.append(len(scorer._seen))
                if not single:
                    # The same validation without the seen-id set, outside the timed call: the difference
                    # is what the duplicate-id check costs.
                    started = time.perf_counter()
                    validate(item, limits=scorer.config.limits)
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
    fields = min(field_checks, s["validate"]) if not single else s["validate"]
    exclusive = {
        "validate_fields": fields,
        "validate_seen": s["validate"] - fields,
        **{key: s[key] for key, _ in STAGES if key not in ("validate_fields", "validate_seen", "other")},
    }
    exclusive["other"] = total - sum(exclusive.values())
    rows = calls * (1 if single else BIG)
    duckdb_s = s["log_insert"] + s["log_commit"]
    return {
        "path": "score_one" if single else f"score_batch x{BIG:,}",
        "calls": calls,
        "rows_per_call": 1 if single else BIG,
        "seen_ids_min": min(seen_sizes),
        "seen_ids_max": max(seen_sizes),
        "total_ms_per_call": total / calls * 1000.0,
        # DuckDB alone (INSERT + COMMIT of both tables' rows): the rate no end-to-end number can beat.
        "log_floor_tx_per_s": rows / duckdb_s if duckdb_s > 0 else None,
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
    assert e2e.writer is not None
    row: dict[str, Any] = {
        "label": label,
        "writer": e2e.writer.label,
        "batch_size": e2e.batch_size,
        "batches": len(e2e.latencies),
        "rows": e2e.rows,
        "flush_rows": e2e.writer.flush_rows,
        "background_writes": e2e.writer.background,
        "e2e_tx_per_s": e2e.tx_per_s,
        "raw_tx_per_s": raw.tx_per_s,
        "e2e_over_raw": e2e.tx_per_s / raw.tx_per_s,
        "e2e_p50_ms": percentile_ms(e2e.latencies, 50),
        "e2e_p99_ms": percentile_ms(e2e.latencies, 99),
        "e2e_max_ms": percentile_ms(e2e.latencies, 100),
        "raw_p50_ms": percentile_ms(raw.latencies, 50),
        "raw_p99_ms": percentile_ms(raw.latencies, 99),
        "final_flush_ms": e2e.final_flush_s * 1e3,
        # All threads (the writer thread too), per 10k rows: the compute an e2e number costs.
        "process_cpu_ms_per_10k": None if e2e.process_cpu_s is None else e2e.process_cpu_s / e2e.rows * 1e7,
        "raw_ms_per_10k": raw.total_s / raw.rows * 1e7,
        "seen_ids_at_end": e2e.seen_ids_at_end,
        "baseline_max_score_diff": score_diff,
    }
    if e2e.thread_cpu:
        row["thread_cpu_p50_ms"] = percentile_ms(e2e.thread_cpu, 50)
        row["thread_cpu_p99_ms"] = percentile_ms(e2e.thread_cpu, 99)
    return row


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median e2e throughput, its ratio taken against the median raw throughput.

    The raw baseline of one run lasts a fraction of a second, so a burst of other work on the machine moves
    it far more than the seconds-long e2e run: the ratio of the two medians is the steadier number.
    """
    ranked = sorted(runs, key=lambda row: row["e2e_tx_per_s"])
    median = dict(ranked[len(ranked) // 2])
    raw = float(np.median([row["raw_tx_per_s"] for row in runs]))
    median["raw_tx_per_s"] = raw
    median["e2e_over_raw"] = median["e2e_tx_per_s"] / raw
    median["runs_e2e_tx_per_s"] = [row["e2e_tx_per_s"] for row in runs]
    median["runs_raw_tx_per_s"] = [row["raw_tx_per_s"] for row in runs]
    return median


def _aims(rows: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    big = max((row for key, row in rows.items() if key.startswith(f"batch_{BIG}")), key=lambda r: r["e2e_tx_per_s"])
    single = rows["score_one"]
    return [
        {"aim": "10k batches: e2e / raw predict throughput", "target": f">= {AIM_RATIO_10K:.0%}",
         "measured": f"{big['e2e_over_raw']:.1%} ({big['writer']})", "met": big["e2e_over_raw"] >= AIM_RATIO_10K},
        {"aim": "10k batches: e2e throughput", "target": f">= {AIM_TPS_10K:,.0f} tx/s",
         "measured": f"{big['e2e_tx_per_s']:,.0f} tx/s ({big['writer']})", "met": big["e2e_tx_per_s"] >= AIM_TPS_10K},
        {"aim": "single transaction (score_one) p99", "target": f"<= {AIM_SINGLE_P99_MS:g} ms",
         "measured": f"{single['e2e_p99_ms']:.2f} ms (thread CPU p99 {single['thread_cpu_p99_ms']:.2f} ms)",
         "met": single["e2e_p99_ms"] <= AIM_SINGLE_P99_MS},
    ]  # fmt: skip


def _print_tables(result: dict[str, Any], console: Console) -> None:
    table = Table(
        title="Scoring: end-to-end (e2e) vs raw inplace_predict on the same rows, same run",
        caption="log: 'every call' = written by each scoring call; 'Nk, caller' = N rows buffered, written by the "
        "scoring call; 'Nk, thread' = by a writer thread. Every row is in DuckDB when the clock stops (the last "
        "flush is timed). CPU ms/10k: all threads of the process.",
    )
    for name in ("path", "log", "calls", "e2e tx/s", "raw tx/s", "e2e/raw", "e2e p50 ms", "e2e p99 ms",
                 "raw p50 ms", "raw p99 ms", "last flush ms", "CPU ms/10k"):  # fmt: skip
        table.add_column(name, justify="left" if name in ("path", "log") else "right")
    for row in result["throughput"].values():
        cpu = row["process_cpu_ms_per_10k"]
        table.add_row(
            row["label"], row["writer"], f"{row['batches']:,}", f"{row['e2e_tx_per_s']:,.0f}",
            f"{row['raw_tx_per_s']:,.0f}", f"{row['e2e_over_raw']:.2%}", f"{row['e2e_p50_ms']:.3f}",
            f"{row['e2e_p99_ms']:.3f}", f"{row['raw_p50_ms']:.3f}", f"{row['raw_p99_ms']:.3f}",
            f"{row['final_flush_ms']:.0f}", "" if cpu is None else f"{cpu:,.0f}",
        )  # fmt: skip
    console.print(table)
    for key, row in result["throughput"].items():
        if len(row.get("runs_e2e_tx_per_s", ())) > 1:
            spread = ", ".join(f"{tps:,.0f}" for tps in row["runs_e2e_tx_per_s"])
            raws = ", ".join(f"{tps:,.0f}" for tps in row["runs_raw_tx_per_s"])
            console.print(f"  {key} ({row['writer']}): runs e2e {spread} tx/s, raw {raws} tx/s (medians in the table)")
    for key, row in result["throughput"].items():
        if "thread_cpu_p99_ms" in row:
            console.print(
                f"  {key}: calling thread's CPU time p50 {row['thread_cpu_p50_ms']:.3f} ms, p99 "
                f"{row['thread_cpu_p99_ms']:.3f} ms (wall p99 {row['e2e_p99_ms']:.3f} ms)"
            )
    diffs = [row["baseline_max_score_diff"] for row in result["throughput"].values()]
    worst = max((d for d in diffs if d is not None), default=float("nan"))
    verdict = (
        "same scores" if worst <= SCORE_TOLERANCE else "DIFFERENT scores: the baseline is not like for like"
    )
    console.print(
        f"  baseline check, first call of each row: raw vs scorer max |score diff| {worst:.1e} ({verdict})"
    )

    big, one = result["stages"]["batch"], result["stages"]["single"]
    stages = Table(title="Where the time goes (instrumented re-runs, log written by the caller; exclusive time per call)")
    stages.add_column("stage")
    for path in (big, one):
        stages.add_column(f"{path['path']}\nms / call", justify="right")
        stages.add_column("share", justify="right")
    for key, _ in sorted(STAGES, key=lambda stage: -big["stages"][stage[0]]["ms_per_call"]):
        cells = [big["stages"][key]["label"]]
        for path in (big, one):
            stage = path["stages"][key]
            cells += [f"{stage['ms_per_call']:.3f}", f"{stage['share']:.1%}"]
        stages.add_row(*cells)
    stages.add_row(
        "total", f"{big['total_ms_per_call']:.1f}", "100%", f"{one['total_ms_per_call']:.3f}", "100%", style="bold"
    )
    console.print(stages)
    console.print(
        f"  {big['calls']} batches (seen ids {big['seen_ids_min']:,}-{big['seen_ids_max']:,}); "
        f"{one['calls']:,} score_one calls (seen ids {one['seen_ids_min']:,}-{one['seen_ids_max']:,})"
    )
    if big["log_floor_tx_per_s"]:
        console.print(
            f"  log floor: DuckDB alone (INSERT + COMMIT of the 41 logged columns per transaction) ingests "
            f"{big['log_floor_tx_per_s']:,.0f} tx/s in 250k-row chunks"
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


def run(options: BenchOptions) -> dict[str, Any]:
    """Run the scoring benchmark; print its tables; return the results."""
    plan = QUICK if options.quick else FULL
    console = report_console(width=150)
    progress = Progress(console)
    with tempfile.TemporaryDirectory(prefix="selfheal-bench-") as scratch:
        progress.step("setup: simulate, train and register a champion, precompute model input")
        setup = _setup(plan, Path(scratch), console)
        rows: dict[str, dict[str, Any]] = {}
        runs: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for repeat in range(plan.big_repeats):  # interleaved, so a burst of other work hits every setting
            for variant in plan.big_variants:
                writer = VARIANTS[variant]
                progress.step(
                    f"end-to-end: score_batch, batches of {BIG:,} ({writer.label}), run {repeat + 1}/{plan.big_repeats}"
                )
                e2e = _measure_batches(setup, BIG, plan.big_batches, plan.warmup_batches[BIG], writer, math.inf)
                raw = _measure_raw(setup, BIG, plan.warmup_batches[BIG] * BIG, len(e2e.latencies))
                runs[variant].append(_row(e2e, raw, f"score_batch x{BIG:,}"))
        for variant in plan.big_variants:
            rows[f"batch_{BIG}" if variant == "every_batch" else f"batch_{BIG}_{variant}"] = _median_run(runs[variant])
        for size in (100, 1):
            warmup = plan.warmup_batches[size]
            progress.step(f"end-to-end: score_batch, batches of {size:,} ({SMALL_BATCH_WRITER.label})")
            e2e = _measure_batches(setup, size, plan.max_batches[size], warmup, SMALL_BATCH_WRITER, plan.budget_s)
            raw = _measure_raw(setup, size, warmup * size, len(e2e.latencies))
            rows[f"batch_{size}"] = _row(e2e, raw, f"score_batch x{size:,}")
        warmup = plan.warmup_batches[1]
        for key, writer in SINGLE_WRITERS.items():
            progress.step(f"end-to-end: score_one on JSON-like records ({writer.label})")
            single = _measure_single(setup, plan.single_calls, warmup, plan.budget_s, writer)
            raw = _measure_raw(setup, 1, warmup, len(single.latencies))
            rows[key] = _row(single, raw, "score_one")
        progress.step("stage breakdown: 10k batches")
        big_stages = _stage_breakdown(
            setup, single=False, timed=plan.big_batches, warmup=plan.warmup_batches[BIG], budget_s=math.inf
        )
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
