"""The scoring engine: validate -> features -> champion model (or fallback rules) -> decision -> log.

One `Scorer` serves a workspace. `score_batch` is the vectorised path (files, the simulator, HTTP batches);
`score_one` is the single-transaction path (HTTP). Both run the same steps and log the same rows:

- every input row ends up either in ``predictions`` (with latency, model version and serving-state version)
  or in ``dead_letters`` (with the reason and the raw payload): rows in = rows scored + rows dead-lettered;
- serving state decides what serves: the champion model, or the fallback rules when fallback is on, when no
  champion exists, or when the champion's artifact fails its integrity check (recorded in the audit log);
- quarantined features are imputed (from a healthy sibling feature, else their serving-state constant:
  `scorer.imputation`) before the model sees them (the logged features stay as computed, so the monitor
  keeps seeing the broken feature);
- log rows go through a `store.LogWriter`: buffered (``flush_rows``), written in large chunks, optionally
  by a writer thread (``background_writes``); `flush` is the barrier after which every row is in the
  store. What a hard kill can lose is spelled out in `store.log_writer`. A failed write does not fail the
  scoring call that hears of it: the writer has staged that call's rows before raising, keeps the failed
  chunk for the next flush, and reports it in `log_health`; the error is logged. A transaction's id joins
  the duplicate check only once its log rows are staged, so a call that fails before that can be retried.

One record (`score_one`, or `score_batch` of a one-record list) does not run the vectorised machinery:
`validate_record` checks it in plain Python, `FeatureState.transform_one` reads its windows with a few
binary searches, the model predicts one ``(1, n)`` float32 row, and the log rows are staged as tuples. It
gives exactly what the vectorised path gives on that record (tests/test_score_one.py holds the two to each
other); records it does not recognise, and any call while fault-injection hooks are installed, take the
vectorised path itself.

Scoring is a pure function of (batch, feature state, serving state, model) apart from the logging, which is
what lets the same code run inside Spark ``mapInPandas`` or Ray ``map_batches`` (DESIGN 10).
"""

from __future__ import annotations

import json
import logging
import math
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from scorer import columns as C
from scorer.errors import ModelIntegrityError, ModelRegistryError
from scorer.feature_state import FeatureState
from scorer.features import FeatureConfig
from scorer.history import HistoryCoverage, WarmUp, keep_history, warm_up_rows
from scorer.imputation import Surrogate, impute_column, impute_value, usable_surrogates
from scorer.one_row import OneRowPredictor
from scorer.outcomes import (
    DECISIONS,
    FEATURE_INDEX,
    LOGGED_FEATURES,
    BatchText,
    OneOutcome,
    ScoreResult,
    Serving,
    answer_of,
    arrow_column,
    batch_log_tables,
    dead_letter_row,
    predictions_frame,
    record_log_rows,
    score_result,
)
from scorer.registry import LoadedModel, ModelRegistry
from scorer.rules import score_with_rules
from scorer.serving import ServingState, ServingStateStore
from scorer.validate import ScoringLimits, validate
from scorer.validate_record import DeadRecord, validate_record
from store import LogWriteError, LogWriter, Store

# The public face: what the platform, the service, the fault library and the evals import from here.
__all__ = [
    "DECISIONS",
    "LOGGED_FEATURES",
    "HistoryCoverage",
    "ScoreResult",
    "Scorer",
    "ScorerConfig",
    "ScorerHooks",
    "WarmUp",
]

logger = logging.getLogger(__name__)
WRITE_WARNING_INTERVAL_S = 60.0


class ScorerConfig(BaseModel):
    """How the scorer runs."""

    limits: ScoringLimits = Field(default_factory=ScoringLimits)
    label_delay_days: int = Field(7, ge=1, description="label delay the terminal features are shifted by")
    flush_rows: int = Field(1, ge=1, description="buffer this many log rows before writing (1 = every batch)")
    background_writes: bool = Field(
        False,
        description="write full log chunks on a writer thread instead of in the scoring call; flush() still "
        "waits for every row (see store.log_writer for what a hard kill can lose)",
    )
    max_queued_chunks: int = Field(
        2, ge=1, description="background writes: sealed log chunks that may wait before scoring calls block"
    )
    seen_ids_capacity: int = Field(2_000_000, ge=0, description="recent transaction ids kept for duplicate checks")


@dataclass
class ScorerHooks:
    """Seams where the fault library (evals/faults.py) injects failures into a running scorer.

    They model what breaks *outside* this code in production: an upstream feature job shipping nulls or
    constants (``features``), or a slow host (``extra_latency_ms``). Empty by default; production code never
    sets them. Each hook sees the batch's transactions so it can decide by time or by row. While any hook is
    installed `Scorer.score_one` takes the batch path, so hooks see single transactions as one-row frames.
    """

    features: list[Callable[[pd.DataFrame, pd.DataFrame], pd.DataFrame]] = field(default_factory=list)
    extra_latency_ms: list[Callable[[pd.DataFrame], np.ndarray]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.features or self.extra_latency_ms)


class Scorer:
    """Scores transactions for one workspace and logs everything to its store."""

    def __init__(
        self,
        store: Store,
        serving: ServingStateStore,
        registry: ModelRegistry,
        *,
        config: ScorerConfig | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.store = store
        self.serving = serving
        self.registry = registry
        self.config = config or ScorerConfig()
        self.clock = clock or _utc_now
        self.features = FeatureState(FeatureConfig(extra_features=True, label_delay_days=self.config.label_delay_days))
        self.hooks = ScorerHooks()
        self._last_model_ms = 0.0
        self._last_write_warning = -math.inf
        self._model: LoadedModel | None = None
        self._model_columns: tuple[LoadedModel | None, np.ndarray] = (None, np.empty(0, dtype=np.int64))
        self._one_row: tuple[LoadedModel | None, OneRowPredictor | None] = (None, None)
        self._failed: dict[int, str] = {}  # champion version -> why it could not load (until state changes)
        self._failed_state_version: int | None = None
        self._seen: set[str] = set()
        self._seen_order: deque[list[str]] = deque()  # ids in arrival order, in the chunks they came in
        self._seen_count = 0
        # Ids of transactions the feature state holds as observed history (`observe_history`, `warm_up`),
        # never scored. One that is scored later (training data rescored after `selfheal train` kept it)
        # has its observed copy forgotten first, or it would count twice in its own windows. One entry per
        # observed row for the scorer's life; empty (one truth test per call) when nothing was observed.
        self._observed_ids: set[object] = set()
        self._writer = LogWriter(
            store,
            flush_rows=self.config.flush_rows,
            background=self.config.background_writes,
            max_queued_chunks=self.config.max_queued_chunks,
            # A writer thread shares two cores with the scoring thread: DuckDB gets one, not both.
            duckdb_threads=1 if self.config.background_writes else None,
        )

    # -- public API -------------------------------------------------------------------------------

    def score_batch(self, records: pd.DataFrame | Sequence[Mapping[str, Any]], *, source: str = "batch") -> ScoreResult:
        """Validate, featurise, score and log a batch.

        A list of exactly one record takes the one-record path (`score_one`'s), which gives the same result
        without the vectorised path's per-batch costs.

        Args:
            records: a frame or a list of JSON-like records with the canonical fields (DESIGN 5b).
            source: where the batch came from (recorded with dead letters), e.g. ``file:x.csv``, ``api``.

        Returns:
            The predictions and dead letters of this batch, and what served it.
        """
        self._writer.check_capacity()  # LogWriterFull: refuse before any row is taken
        if not isinstance(records, pd.DataFrame) and isinstance(records, Sequence) and len(records) == 1:
            one = self._score_record(records[0], source)
            if one is not None:
                return one.result()
        return self._score_vectorised(records, source)

    def score_one(self, record: Mapping[str, Any], *, source: str = "api") -> dict[str, Any]:
        """Score one transaction; returns its decision or, if it was dead-lettered, the reason.

        Exactly ``score_batch([record])``, without the vectorised path's per-batch costs (see the module
        docstring).
        """
        self._writer.check_capacity()  # LogWriterFull: refuse before the row is taken
        one = self._score_record(record, source)
        return answer_of(self._score_vectorised([record], source)) if one is None else one.answer()

    def add_labels(self, labels: pd.DataFrame) -> int:
        """Record labels that arrived (``transaction_id``, ``is_fraud``, ``label_time``); feeds terminal risk."""
        if labels.empty:
            return 0
        now = np.datetime64(self.clock(), "us")
        when: np.ndarray | np.datetime64 = now
        if "label_time" in labels:
            # A label without its time (one a team sends as it learns it) is dated when it arrives.
            given = pd.to_datetime(labels["label_time"]).to_numpy(dtype="datetime64[us]")
            when = np.where(np.isnat(given), now, given)
        frame = pd.DataFrame(
            {
                C.TRANSACTION_ID: labels[C.TRANSACTION_ID].astype(str).to_numpy(),
                C.LABEL: labels[C.LABEL].astype(int).to_numpy(),
                "label_time": when,
                "received_at": now,
            }
        )
        self._stage(frame={"labels": frame})
        self.features.add_labels(frame[C.TRANSACTION_ID].to_numpy(), frame[C.LABEL].to_numpy())
        return len(frame)

    def observe_history(self, history: pd.DataFrame) -> int:
        """Learn earlier transactions (with labels) without scoring them, and keep them in the workspace so
        a restarted scorer (`warm_up`) rebuilds the same feature state; returns the rows taken.

        Rows whose transaction id the state already holds (logged and warmed up, or observed before) are
        taken once. Only rows the windows can still reach are stored (`scorer.history.keep_history`).
        """
        rows = self.features.history_frame(history)
        rows = rows[~self.features.holds(rows[C.TRANSACTION_ID].to_numpy())]
        self.features.observe(rows)
        self._observed_ids.update(rows[C.TRANSACTION_ID].dropna().tolist())
        self._keep(rows)
        return len(rows)

    def keep_history(self, history: pd.DataFrame) -> int:
        """Store earlier transactions (with labels) for the next `warm_up`, without learning them now (a
        command that ends without scoring, such as `selfheal train` keeping its training data); returns the
        rows kept."""
        return self._keep(self.features.history_frame(history))

    def _keep(self, rows: pd.DataFrame) -> int:
        return keep_history(self.store, rows, kept_days=self.features.config.kept_days, observed_at=self._now())

    def warm_up(self) -> WarmUp:
        """Rebuild the streaming feature state from the store (after a restart): the logged transactions and
        the observed history the windows can still reach; the logged ids join the duplicate check."""
        self.flush()
        rows = warm_up_rows(self.store, kept_days=self.features.config.kept_days)
        if rows.empty:
            return WarmUp(logged=0, observed=0)
        logged = rows.pop("logged").to_numpy(dtype=bool)
        self.features.observe(rows)
        ids = rows[C.TRANSACTION_ID].to_numpy(dtype=object)
        self._remember_ids(ids[logged])
        self._observed_ids.update(pd.Series(ids[~logged]).dropna().tolist())
        return WarmUp(logged=int(logged.sum()), observed=int((~logged).sum()))

    def history_coverage(self) -> HistoryCoverage:
        """How far back the feature state's history reaches, against the days its longest window needs."""
        return HistoryCoverage(
            rows=self.features.rows,
            held_days=self.features.history_days,
            needed_days=self.features.config.retention_days,
        )

    def log_health(self) -> dict[str, Any]:
        """The log writer's failed writes, chunks waiting for a retry, spill files and last error."""
        return self._writer.health()

    def flush(self) -> int:
        """Write buffered log rows and wait until every row logged so far is in the store; returns how many."""
        return self._writer.flush()

    def close(self) -> None:
        """Flush the log and stop its writer thread (if any)."""
        self._writer.close()

    def invalidate_model(self) -> None:
        """Forget the loaded model so the next batch loads (and verifies) the champion again.

        A new process does this implicitly; a long-running one calls it when an artifact may have changed
        on disk.
        """
        self._model = None
        self._failed, self._failed_state_version = {}, None

    def status(self) -> dict[str, Any]:
        """What serves right now, and why (for CLIs, the API and the agent)."""
        serving = self._resolve_serving()
        return {
            "serving_state_version": serving.state.version,
            "champion_version": serving.state.champion_version,
            "model_version": None if serving.model is None else serving.model.version,
            "fallback": serving.model is None,
            "fallback_reason": serving.fallback_reason,
            "threshold": serving.state.threshold,
            "review_threshold": serving.state.review_threshold,
            "quarantined_features": dict(serving.state.quarantined_features),
        }

    # -- internals --------------------------------------------------------------------------------

    def _score_vectorised(self, records: pd.DataFrame | Sequence[Mapping[str, Any]], source: str) -> ScoreResult:
        """The batch path: vectorised validation, features, model and log rows (the reference semantics)."""
        started = time.perf_counter()
        batch_id = uuid.uuid4().hex[:16]
        checked = validate(records, limits=self.config.limits, seen_ids=self._seen)
        serving = self._resolve_serving()
        rows, positions = checked.columns, checked.positions
        times = rows[C.TIMESTAMP]
        if len(times) > 1 and not bool((times[1:] >= times[:-1]).all()):  # scored in time order
            order = np.argsort(times, kind="stable")
            rows, positions = {name: values[order] for name, values in rows.items()}, positions[order]
        self._forget_observed(rows[C.TRANSACTION_ID])
        matrix = self.features.transform_columns(
            transaction_id=rows[C.TRANSACTION_ID], timestamp=rows[C.TIMESTAMP], customer_id=rows[C.CUSTOMER_ID],
            terminal_id=rows[C.TERMINAL_ID], amount=rows[C.AMOUNT], channel=rows[C.CHANNEL], mcc=rows[C.MCC],
        )  # fmt: skip
        valid: pd.DataFrame | None = None
        if self.hooks:
            valid = pd.DataFrame(rows, index=positions)
            matrix = self._apply_feature_hooks(valid, matrix)
        scores, fired = self._score(matrix, serving)
        state = serving.state
        decision_codes = np.where(scores >= state.threshold, 2, np.where(scores >= state.review_threshold, 1, 0))
        n = len(positions)
        # Per-row latency: the batch's wall time shared over its rows (a one-row batch is a request's latency).
        latency_ms = np.full(n, (time.perf_counter() - started) * 1000.0 / max(n, 1))
        for extra in self.hooks.extra_latency_ms:
            assert valid is not None
            latency_ms = latency_ms + extra(valid)
        text = BatchText.of(arrow_column(rows[C.TRANSACTION_ID]), decision_codes, batch_id, serving)
        tables = batch_log_tables(
            batch_id, source, rows, text, matrix, scores, latency_ms, self._last_model_ms, serving, checked.dead,
            self._now(),
        )  # fmt: skip
        self._stage(frame=tables)
        self._remember_ids(rows[C.TRANSACTION_ID])  # staged: a retry is now a duplicate
        predictions = predictions_frame(
            text, rows[C.TIMESTAMP], scores, None if serving.model is not None else fired, latency_ms,
            self._last_model_ms, serving,
        )  # fmt: skip
        return score_result(batch_id, checked.rows_in, predictions, checked.dead, serving)

    def _score_record(self, record: Any, source: str) -> OneOutcome | None:
        """The one-record path; None when the record needs the vectorised path (or hooks are installed).

        Hooks see frames: while one is installed every record takes the batch path, so faults injected
        through them act on single transactions exactly as on batches.
        """
        if self.hooks:
            return None
        started = time.perf_counter()
        checked = validate_record(record, limits=self.config.limits, seen_ids=self._seen)
        if checked is None:  # a shape `validate_record` leaves to the vectorised validator
            return None
        batch_id = uuid.uuid4().hex[:16]
        serving = self._resolve_serving()
        if isinstance(checked, DeadRecord):
            self._stage(rows=dead_letter_row(batch_id, source, checked, self._now()))
            return OneOutcome(batch_id, serving, dead=checked)
        self._forget_observed((checked.transaction_id,))
        features = self.features.transform_one(
            checked.transaction_id, checked.timestamp_ns // 1_000_000, checked.customer_id, checked.terminal_id,
            checked.amount, checked.channel, checked.mcc,
        )  # fmt: skip
        score, rule = self._score_row(features, serving)
        state = serving.state
        decision = DECISIONS[2 if score >= state.threshold else 1 if score >= state.review_threshold else 0]
        latency_ms = (time.perf_counter() - started) * 1000.0
        self._stage(
            rows=record_log_rows(
                batch_id, checked, features, score, decision, latency_ms, self._last_model_ms, serving, self._now()
            )
        )
        self._remember_ids([checked.transaction_id])
        return OneOutcome(batch_id, serving, checked, None, score, rule, decision, latency_ms, self._last_model_ms)

    def _stage(
        self,
        *,
        frame: Mapping[str, Any] | None = None,
        rows: Mapping[str, tuple[tuple[str, ...], tuple[Any, ...]]] | None = None,
    ) -> None:
        """Hand log rows to the writer. A write failure it reports is logged, not raised: the rows are
        staged whatever it says, and the scoring answer stands (see the module docstring)."""
        try:
            if frame is not None:
                self._writer.append(frame)
            if rows is not None:
                self._writer.append_rows(rows)
        except LogWriteError as error:
            now = time.monotonic()
            if now - self._last_write_warning >= WRITE_WARNING_INTERVAL_S:  # an outage fails every call
                self._last_write_warning = now
                # The text, not a traceback (see `ScoringEngine._forced_flush`: CPython 3.11, gh-106905).
                logger.warning(
                    "scoring-log write failed (%s); the rows are kept and written again at the next flush "
                    "(repeats are not logged for %.0f s; /healthz and log_health() count them)",
                    error, WRITE_WARNING_INTERVAL_S,
                )  # fmt: skip

    def _resolve_serving(self) -> Serving:
        state = self.serving.current()
        if state.fallback:
            return Serving(state, None, state.fallback_reason or f"fallback rules enabled (serving state v{state.version})")
        version = state.champion_version
        if version is None:
            return Serving(state, None, "no champion model registered")
        if self._model is not None and self._model.version == version:
            return Serving(state, self._model, None)
        if self._failed_state_version != state.version:
            self._failed, self._failed_state_version = {}, state.version  # a state change earns a retry
        if version in self._failed:
            return Serving(state, None, self._failed[version])
        try:
            self._model = self.registry.load(version)
        except (ModelIntegrityError, ModelRegistryError) as error:
            reason = f"champion v{version} refused: {error}"
            self._failed[version] = reason
            self._audit_load_failure(version, reason)
            return Serving(state, None, reason)
        return Serving(state, self._model, None)

    def _apply_feature_hooks(self, valid: pd.DataFrame, matrix: np.ndarray) -> np.ndarray:
        """Run the feature hooks on frames; their result is aligned back to the valid rows by index."""
        features = pd.DataFrame(dict(zip(LOGGED_FEATURES, matrix, strict=True)), index=valid.index)
        for hook in self.hooks.features:
            features = hook(valid, features)
        aligned = features.reindex(index=valid.index)
        return np.ascontiguousarray(aligned[LOGGED_FEATURES].to_numpy(dtype=np.float64).T)

    def _score(self, matrix: np.ndarray, serving: Serving) -> tuple[np.ndarray, np.ndarray]:
        started = time.perf_counter()
        scores, fired = self._predict(matrix, serving)
        # The model's own time per row, logged apart from the batch latency: a slow model hides inside
        # fixed per-batch costs otherwise (the monitor's model-latency check reads it).
        self._last_model_ms = (time.perf_counter() - started) * 1000.0 / max(matrix.shape[1], 1)
        return scores, fired

    def _predict(self, matrix: np.ndarray, serving: Serving) -> tuple[np.ndarray, np.ndarray]:
        """Scores and fired rules for a (features, rows) matrix, quarantined features imputed."""
        n = matrix.shape[1]
        if n == 0:
            return np.empty(0), np.empty(0, dtype=object)
        quarantined: dict[int, np.ndarray] = {}
        if serving.state.quarantined_features:
            live = dict(zip(LOGGED_FEATURES, matrix, strict=True))
            quarantined = {
                FEATURE_INDEX[name]: impute_column(constant, surrogates, live, n)
                for name, (constant, surrogates) in _imputations(serving.state).items()
            }
        if serving.model is None:
            features = dict(zip(LOGGED_FEATURES, matrix, strict=True))
            for i, values in quarantined.items():
                features[LOGGED_FEATURES[i]] = values
            rules = score_with_rules(features)
            return rules.scores, rules.fired
        model_input = np.empty((n, len(self._columns_of(serving.model))), dtype=np.float32)
        for j, i in enumerate(self._columns_of(serving.model)):
            model_input[:, j] = quarantined[i] if i in quarantined else matrix[i]
        scores = np.asarray(serving.model.booster.inplace_predict(model_input), dtype=np.float64)
        return scores, np.full(n, "", dtype=object)

    def _score_row(self, features: list[float], serving: Serving) -> tuple[float, str]:
        """`_predict` for one transaction's features (the same float32 input, the same rules)."""
        started = time.perf_counter()
        if serving.state.quarantined_features:
            live = dict(zip(LOGGED_FEATURES, features, strict=True))
            features = list(features)
            for name, (constant, surrogates) in _imputations(serving.state).items():
                features[FEATURE_INDEX[name]] = impute_value(constant, surrogates, live)
        rule = ""
        if serving.model is None:
            rules = score_with_rules({name: np.array([value]) for name, value in zip(LOGGED_FEATURES, features, strict=True)})
            score, rule = float(rules.scores[0]), str(rules.fired[0])
        else:
            values = [features[i] for i in self._columns_of(serving.model).tolist()]
            predictor = self._one_row_predictor(serving.model)
            if predictor is not None:  # the same C call as inplace_predict, without its per-call Python
                score = predictor.predict(values)
            else:
                score = float(serving.model.booster.inplace_predict(np.array([values], dtype=np.float32))[0])
        self._last_model_ms = (time.perf_counter() - started) * 1000.0
        return score, rule

    def _one_row_predictor(self, model: LoadedModel) -> OneRowPredictor | None:
        """`scorer.one_row.OneRowPredictor` for the loaded model (built once per model; None: not usable)."""
        cached, predictor = self._one_row
        if cached is not model:
            predictor = OneRowPredictor.for_booster(model.booster)
            self._one_row = (model, predictor)
        return predictor

    def _columns_of(self, model: LoadedModel) -> np.ndarray:
        """Positions of the model's feature columns among `LOGGED_FEATURES` (cached per loaded model)."""
        cached, positions = self._model_columns
        if cached is not model:
            positions = np.array([FEATURE_INDEX[name] for name in model.metadata.feature_columns], dtype=np.int64)
            self._model_columns = (model, positions)
        return positions

    def _forget_observed(self, ids: Sequence[str] | np.ndarray) -> None:
        """Scored ids the state holds as observed history: forget those copies (the scored rows replace
        them). A set test at C speed on the scoring path; the rebuild only when some id does overlap."""
        observed = self._observed_ids
        if not observed or observed.isdisjoint(ids):
            return
        again = [i for i in ids if i in observed]
        observed.difference_update(again)
        forgotten = self.features.forget(again)
        logger.info("%d scored transactions were held as observed history; their observed copies were "
                 "replaced (%d rows)", len(again), forgotten)  # fmt: skip

    def _now(self) -> np.datetime64:
        """The log rows' ``received_at`` / ``scored_at``: the clock, at the tables' microsecond resolution."""
        return np.datetime64(self.clock(), "us")

    def _remember_ids(self, ids: Sequence[str] | np.ndarray) -> None:
        """Add scored ids to the duplicate-check set, forgetting the oldest beyond the capacity."""
        capacity = self.config.seen_ids_capacity
        if capacity == 0:
            return
        values = ids.tolist() if isinstance(ids, np.ndarray) else list(ids)
        if not values:
            return
        self._seen.update(values)
        if self._seen_order and len(self._seen_order[-1]) < 4096:  # single ids: no list per transaction
            self._seen_order[-1].extend(values)
        else:
            self._seen_order.append(values)
        self._seen_count += len(values)
        while self._seen_count > capacity:  # whole chunks at C speed; the last one cut
            oldest = self._seen_order[0]
            excess = self._seen_count - capacity
            if len(oldest) <= excess:
                self._seen_order.popleft()
                self._seen.difference_update(oldest)
                self._seen_count -= len(oldest)
            else:
                self._seen.difference_update(oldest[:excess])
                self._seen_order[0] = oldest[excess:]
                self._seen_count -= excess

    def _audit_load_failure(self, version: int, reason: str) -> None:
        self.store.append(
            "audit_log",
            pd.DataFrame(
                {
                    "audit_id": [uuid.uuid4().hex],
                    "recorded_at": [self.clock()],
                    "actor": ["scorer"],
                    "action": ["model_load_failed"],
                    "incident_id": [None],
                    "args": [json.dumps({"version": version})],
                    "result": [json.dumps({"served_with": "fallback_rules"})],
                    "reason": [reason],
                    "approval": ["not_required"],
                    "idempotency_key": [None],
                    "inverse": [None],
                }
            ),
        )


def _imputations(state: ServingState) -> dict[str, tuple[float, list[Surrogate]]]:
    """Quarantined logged features -> (constant, usable surrogates best first) under `state`."""
    quarantined = state.quarantined_features
    return {
        name: (value, usable_surrogates(name, state.quarantine_surrogates, quarantined))
        for name, value in quarantined.items()
        if name in FEATURE_INDEX
    }


def _utc_now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)
