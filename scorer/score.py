"""The scoring engine: validate -> features -> champion model (or fallback rules) -> decision -> log.

One `Scorer` serves a workspace. `score_batch` is the vectorised path (files, the simulator, HTTP batches);
`score_one` is the single-transaction path (HTTP). Both run the same steps and log the same rows:

- every input row ends up either in ``predictions`` (with latency, model version and serving-state version)
  or in ``dead_letters`` (with the reason and the raw payload): rows in = rows scored + rows dead-lettered;
- serving state decides what serves: the champion model, or the fallback rules when fallback is on, when no
  champion exists, or when the champion's artifact fails its integrity check (recorded in the audit log);
- quarantined features are imputed from their serving-state values before the model sees them (the logged
  features stay as computed, so the monitor keeps seeing the broken feature);
- log rows can be buffered (``flush_rows``): DuckDB takes a batch of rows far faster than single rows.

Scoring is a pure function of (batch, feature state, serving state, model) apart from the logging, which is
what lets the same code run inside Spark ``mapInPandas`` or Ray ``map_batches`` (DESIGN 10).
"""

from __future__ import annotations

import json
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
from scorer.features import FeatureConfig, FeatureState
from scorer.registry import LoadedModel, ModelRegistry
from scorer.rules import score_with_rules
from scorer.serving import ServingState, ServingStateStore
from scorer.validate import ScoringLimits, ValidationResult, validate
from store import Store

DECISIONS = ("approve", "review", "decline")
LOGGED_FEATURES = FeatureConfig(extra_features=True).columns


class ScorerConfig(BaseModel):
    """How the scorer runs."""

    limits: ScoringLimits = Field(default_factory=ScoringLimits)
    label_delay_days: int = Field(7, ge=1, description="label delay the terminal features are shifted by")
    flush_rows: int = Field(1, ge=1, description="buffer this many log rows before writing (1 = every batch)")
    seen_ids_capacity: int = Field(2_000_000, ge=0, description="recent transaction ids kept for duplicate checks")


@dataclass
class ScoreResult:
    """What one call to `Scorer.score_batch` did."""

    batch_id: str
    rows_in: int
    predictions: pd.DataFrame  # transaction_id, score, decision, model_version, used_fallback, latency_ms
    dead_letters: pd.DataFrame  # row, transaction_id, reason, field, payload
    serving_state_version: int
    model_version: int | None
    used_fallback: bool
    fallback_reason: str | None

    @property
    def scored(self) -> int:
        return len(self.predictions)

    @property
    def dead_lettered(self) -> int:
        return len(self.dead_letters)


@dataclass
class ScorerHooks:
    """Seams where the fault library (evals/faults.py) injects failures into a running scorer.

    They model what breaks *outside* this code in production: an upstream feature job shipping nulls or
    constants (``features``), or a slow host (``extra_latency_ms``). Empty by default; production code never
    sets them. Each hook sees the batch's transactions so it can decide by time or by row.
    """

    features: list[Callable[[pd.DataFrame, pd.DataFrame], pd.DataFrame]] = field(default_factory=list)
    extra_latency_ms: list[Callable[[pd.DataFrame], np.ndarray]] = field(default_factory=list)


@dataclass
class _Serving:
    """What serves this batch, resolved from serving state and the registry."""

    state: ServingState
    model: LoadedModel | None
    fallback_reason: str | None


@dataclass
class _LogBuffer:
    frames: dict[str, list[pd.DataFrame]] = field(default_factory=dict)
    rows: int = 0

    def add(self, table: str, frame: pd.DataFrame) -> None:
        if len(frame):
            self.frames.setdefault(table, []).append(frame)
            self.rows += len(frame)


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
        self._model: LoadedModel | None = None
        self._failed: dict[int, str] = {}  # champion version -> why it could not load (until state changes)
        self._failed_state_version: int | None = None
        self._seen: set[str] = set()
        self._seen_order: deque[str] = deque()
        self._buffer = _LogBuffer()

    # -- public API -------------------------------------------------------------------------------

    def score_batch(self, records: pd.DataFrame | Sequence[Mapping[str, Any]], *, source: str = "batch") -> ScoreResult:
        """Validate, featurise, score and log a batch.

        Args:
            records: a frame or a list of JSON-like records with the canonical fields (DESIGN 5b).
            source: where the batch came from (recorded with dead letters), e.g. ``file:x.csv``, ``api``.

        Returns:
            The predictions and dead letters of this batch, and what served it.
        """
        started = time.perf_counter()
        batch_id = uuid.uuid4().hex[:16]
        checked = validate(records, limits=self.config.limits, seen_ids=self._seen)
        serving = self._resolve_serving()
        valid = checked.valid.sort_values(C.TIMESTAMP, kind="stable") if len(checked.valid) > 1 else checked.valid
        features = self.features.transform(valid) if len(valid) else pd.DataFrame(columns=LOGGED_FEATURES)
        for hook in self.hooks.features:
            features = hook(valid, features)
        scores, fired = self._score(features, serving)
        state = serving.state
        decisions = np.where(
            scores >= state.threshold, "decline", np.where(scores >= state.review_threshold, "review", "approve")
        )
        # Per-row latency: the batch's wall time shared over its rows (a one-row batch is a request's latency).
        latency_ms = np.full(len(valid), (time.perf_counter() - started) * 1000.0 / max(len(valid), 1))
        for extra in self.hooks.extra_latency_ms:
            latency_ms = latency_ms + extra(valid)
        model_version = None if serving.model is None else serving.model.version
        fallback_reason = serving.fallback_reason
        predictions = pd.DataFrame(
            {
                C.TRANSACTION_ID: valid[C.TRANSACTION_ID].to_numpy(),
                C.TIMESTAMP: valid[C.TIMESTAMP].to_numpy(),
                "score": scores,
                "decision": decisions,
                "model_version": pd.array([model_version] * len(valid), dtype="Int64"),
                "serving_state_version": state.version,
                "used_fallback": serving.model is None,
                "fallback_reason": fallback_reason,
                "rule": fired,
                "latency_ms": latency_ms,
                "model_ms": self._last_model_ms,
            },
            index=valid.index,
        )
        self._remember_ids(valid[C.TRANSACTION_ID])
        self._log(batch_id, source, valid, features, predictions, checked)
        return ScoreResult(
            batch_id=batch_id,
            rows_in=checked.rows_in,
            predictions=predictions.reset_index(drop=True),
            dead_letters=checked.dead,
            serving_state_version=state.version,
            model_version=model_version,
            used_fallback=serving.model is None,
            fallback_reason=fallback_reason,
        )

    def score_one(self, record: Mapping[str, Any], *, source: str = "api") -> dict[str, Any]:
        """Score one transaction; returns its decision or, if it was dead-lettered, the reason."""
        result = self.score_batch([record], source=source)
        if result.scored:
            row = result.predictions.iloc[0]
            return {
                C.TRANSACTION_ID: row[C.TRANSACTION_ID],
                "score": float(row["score"]),
                "decision": row["decision"],
                "model_version": result.model_version,
                "used_fallback": result.used_fallback,
                "latency_ms": float(row["latency_ms"]),
            }
        dead = result.dead_letters.iloc[0]
        return {C.TRANSACTION_ID: dead[C.TRANSACTION_ID], "error": dead["reason"], "field": dead["field"]}

    def add_labels(self, labels: pd.DataFrame) -> int:
        """Record labels that arrived (``transaction_id``, ``is_fraud``, ``label_time``); feeds terminal risk."""
        if labels.empty:
            return 0
        frame = pd.DataFrame(
            {
                C.TRANSACTION_ID: labels[C.TRANSACTION_ID].astype(str).to_numpy(),
                C.LABEL: labels[C.LABEL].astype(int).to_numpy(),
                "label_time": pd.to_datetime(labels["label_time"]).to_numpy()
                if "label_time" in labels
                else np.datetime64(self.clock()),
                "received_at": np.datetime64(self.clock()),
            }
        )
        self._buffer.add("labels", frame)
        self._maybe_flush()
        self.features.add_labels(frame[C.TRANSACTION_ID].to_numpy(), frame[C.LABEL].to_numpy())
        return len(frame)

    def warm_up(self) -> int:
        """Rebuild the streaming feature state from the store (after a restart); returns rows loaded."""
        self.flush()
        latest = self.store.scalar("SELECT max(timestamp) FROM transactions")
        if latest is None:
            return 0
        since = pd.Timestamp(latest) - pd.Timedelta(days=self.features.config.retention_days + 1)
        history = self.store.query(
            "SELECT t.transaction_id, t.timestamp, t.customer_id, t.terminal_id, t.amount, t.channel, t.mcc, "
            "l.is_fraud FROM transactions t LEFT JOIN labels l USING (transaction_id) "
            "WHERE t.timestamp > ? ORDER BY t.timestamp",
            [since.to_pydatetime()],
        )
        self.features.observe(history)
        self._remember_ids(history[C.TRANSACTION_ID])
        return len(history)

    def flush(self) -> int:
        """Write buffered log rows; returns how many."""
        written = 0
        if not self._buffer.rows:
            return 0
        with self.store.transaction():
            for table, frames in self._buffer.frames.items():
                # One frame (flush_rows=1, a batch per flush) goes as it is: concat would only copy it.
                frame = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
                written += self.store.append(table, frame)
        self._buffer = _LogBuffer()
        return written

    def close(self) -> None:
        self.flush()

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

    def _resolve_serving(self) -> _Serving:
        state = self.serving.current()
        if state.fallback:
            return _Serving(state, None, state.fallback_reason or f"fallback rules enabled (serving state v{state.version})")
        version = state.champion_version
        if version is None:
            return _Serving(state, None, "no champion model registered")
        if self._model is not None and self._model.version == version:
            return _Serving(state, self._model, None)
        if self._failed_state_version != state.version:
            self._failed, self._failed_state_version = {}, state.version  # a state change earns a retry
        if version in self._failed:
            return _Serving(state, None, self._failed[version])
        try:
            self._model = self.registry.load(version)
        except (ModelIntegrityError, ModelRegistryError) as error:
            reason = f"champion v{version} refused: {error}"
            self._failed[version] = reason
            self._audit_load_failure(version, reason)
            return _Serving(state, None, reason)
        return _Serving(state, self._model, None)

    def _score(self, features: pd.DataFrame, serving: _Serving) -> tuple[np.ndarray, np.ndarray]:
        started = time.perf_counter()
        scores, fired = self._predict(features, serving)
        # The model's own time per row, logged apart from the batch latency: a slow model hides inside
        # fixed per-batch costs otherwise (the monitor's model-latency check reads it).
        self._last_model_ms = (time.perf_counter() - started) * 1000.0 / max(len(features), 1)
        return scores, fired

    def _predict(self, features: pd.DataFrame, serving: _Serving) -> tuple[np.ndarray, np.ndarray]:
        if len(features) == 0:
            return np.empty(0), np.empty(0, dtype=object)
        quarantined = serving.state.quarantined_features
        model_input = features.assign(**dict(quarantined.items())) if quarantined else features
        if serving.model is None:
            rules = score_with_rules(model_input)
            return rules.scores, rules.fired
        columns = serving.model.metadata.feature_columns
        matrix = model_input[columns].to_numpy(dtype=np.float32)
        scores = np.asarray(serving.model.booster.inplace_predict(matrix), dtype=np.float64)
        return scores, np.full(len(scores), "", dtype=object)

    def _log(
        self,
        batch_id: str,
        source: str,
        valid: pd.DataFrame,
        features: pd.DataFrame,
        predictions: pd.DataFrame,
        checked: ValidationResult,
    ) -> None:
        now = np.datetime64(self.clock())
        if len(valid):
            self._buffer.add("transactions", valid.assign(batch_id=batch_id, received_at=now))
            if features.index.equals(predictions.index):
                # One dict -> one frame (no drop/assign/concat copies of a 10k x 28 frame); rows line up.
                logged = {name: predictions[name].array for name in predictions.columns if name != "rule"}
                logged.update(batch_id=batch_id, scored_at=now)
                logged.update({name: features[name].to_numpy() for name in LOGGED_FEATURES})
                self._buffer.add("predictions", pd.DataFrame(logged, index=predictions.index))
            else:  # a feature hook changed the rows: align by index as before
                base = predictions.drop(columns=["rule"]).assign(batch_id=batch_id, scored_at=now)
                self._buffer.add("predictions", pd.concat([base, features[LOGGED_FEATURES]], axis=1))
        if len(checked.dead):
            dead = checked.dead
            self._buffer.add(
                "dead_letters",
                pd.DataFrame(
                    {
                        "dead_letter_id": [f"{batch_id}-{row}" for row in dead["row"]],
                        "received_at": now,
                        "batch_id": batch_id,
                        "source": source,
                        C.TRANSACTION_ID: dead[C.TRANSACTION_ID].to_numpy(dtype=object),
                        "reason": dead["reason"].to_numpy(),
                        "field": dead["field"].to_numpy(dtype=object),
                        "payload": dead["payload"].to_numpy(),
                    }
                ),
            )
        self._maybe_flush()

    def _maybe_flush(self) -> None:
        if self._buffer.rows >= self.config.flush_rows:
            self.flush()

    def _remember_ids(self, ids: pd.Series) -> None:
        capacity = self.config.seen_ids_capacity
        if capacity == 0:
            return
        values = ids.tolist()
        self._seen.update(values)
        self._seen_order.extend(values)
        while len(self._seen_order) > capacity:
            self._seen.discard(self._seen_order.popleft())

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


def _utc_now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)
