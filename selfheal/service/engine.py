"""The one thread that drives the scorer inside the service, and why there is exactly one.

`Scorer` keeps state between calls (streaming feature windows, the recent-id set for duplicate checks, the
log buffer, the loaded model) and is not thread-safe; the store underneath has one DuckDB connection. So
every scorer call in the service goes through `ScoringEngine`:

- requests put a *job* (their records) on a queue and wait on a future; one worker thread takes jobs off
  the queue and calls `Scorer.score_batch`;
- **coalescing**: jobs that queued up while a batch was scoring are scored together in the next batch (up
  to ``coalesce_max_rows`` rows). The worker never waits to fill a batch, so an idle service scores a lone
  request at once; under load the scorer's fixed per-batch cost is shared instead of queued;
- **flushing**: the scorer buffers log rows (DuckDB takes a batch far faster than single rows); the worker
  writes the buffer at least every ``flush_interval_s``, when idle, and on `stop`. Rows scored but not yet
  flushed are lost if the process is killed hard (``kill -9``): at most one interval of logs;
- anything else that touches the scorer (status, warm-up, a job that invalidates the model) takes
  `exclusive()`, the same lock the worker holds while scoring.

Rows come back to their request by position: dead letters carry their row number, scored rows their
transaction id (unique among a batch's valid rows: the validator dead-letters duplicates).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import queue
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import pandas as pd

from scorer.score import Scorer, ScoreResult
from selfheal.service.metrics import ServiceMetrics

_STOP: Final = object()


class EngineOverloaded(Exception):
    """Too many rows are already waiting to be scored; the caller should retry later."""


class EngineStopped(Exception):
    """The engine is not running (shutting down)."""


@dataclass(frozen=True)
class RowOutcome:
    """What became of one submitted record."""

    index: int  # position in the request
    transaction_id: str | None
    scored: bool
    score: float | None = None
    decision: str | None = None
    field: str | None = None  # dead letters: the field that failed (None: the record as a whole)
    reason: str | None = None  # dead letters: why


@dataclass(frozen=True)
class JobOutcome:
    """What one request's records became, and what served them."""

    rows: list[RowOutcome]
    batch_id: str
    batch_rows: int  # rows in the scorer batch this job was part of (> len(rows) when coalesced)
    model_version: int | None
    serving_state_version: int
    used_fallback: bool
    fallback_reason: str | None


@dataclass
class _Job:
    records: list[Any]
    source: str
    future: Future[JobOutcome] = field(default_factory=Future)


class ScoringEngine:
    """Owns the scorer while the service runs (see the module docstring)."""

    def __init__(
        self,
        scorer: Scorer,
        metrics: ServiceMetrics,
        *,
        coalesce_max_rows: int = 256,
        max_queued_rows: int = 100_000,
        flush_interval_s: float = 0.5,
    ) -> None:
        self.scorer = scorer
        self.metrics = metrics
        self.coalesce_max_rows = coalesce_max_rows
        self.max_queued_rows = max_queued_rows
        self.flush_interval_s = flush_interval_s
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.RLock()
        self._queued_rows = 0
        self._queued_lock = threading.Lock()
        self._last_flush = time.monotonic()
        self._thread: threading.Thread | None = None
        self._carry: _Job | None = None
        self._accepting = False
        self._stop_seen = False

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._accepting, self._stop_seen = True, False
        self._thread = threading.Thread(target=self._run, name="selfheal-scorer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Score what is queued, stop the worker, and flush the log buffer."""
        with self._queued_lock:  # refuse new work first, so nothing can queue behind the stop signal
            self._accepting = False
        thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(_STOP)
            thread.join(timeout)
        self.flush()

    @property
    def running(self) -> bool:
        return self._accepting and self._thread is not None and self._thread.is_alive()

    # -- requests ---------------------------------------------------------------------------------

    def submit(self, records: Sequence[Any], *, source: str = "api") -> Future[JobOutcome]:
        """Queue records for scoring; the future resolves to their outcomes in request order.

        Raises:
            EngineOverloaded: More than ``max_queued_rows`` rows are waiting already.
            EngineStopped: The engine is not running.
        """
        job = _Job(list(records), source)
        with self._queued_lock:  # the same lock `stop` takes: nothing is queued behind the stop signal
            if not self.running:
                raise EngineStopped("the scoring engine is not running")
            if self._queued_rows > 0 and self._queued_rows + len(job.records) > self.max_queued_rows:
                raise EngineOverloaded(f"{self._queued_rows:,} rows are waiting to be scored; retry shortly")
            self._queued_rows += len(job.records)
            self.metrics.queued_rows.set(self._queued_rows)
            self._queue.put(job)
        return job.future

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[Scorer]:
        """Hold the scorer while no batch runs (status reads, warm-up, model invalidation)."""
        with self._lock:
            yield self.scorer

    def flush(self) -> int:
        """Write the scorer's buffered log rows now; returns how many."""
        with self._lock:
            written = self.scorer.flush()
            self._last_flush = time.monotonic()
            return written

    def status(self) -> dict[str, Any]:
        with self._lock:
            return self.scorer.status()

    # -- the worker -------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            job = self._next(timeout=self.flush_interval_s)
            if job is None:  # idle: a good moment to write the log buffer
                self._flush_if_buffered()
                continue
            if job is _STOP:
                self._stop_seen = True
            else:
                self._score(self._coalesce(job))
            if self._stop_seen:
                self._drain()
                return
            if time.monotonic() - self._last_flush >= self.flush_interval_s:
                self._flush_if_buffered()

    def _next(self, timeout: float) -> Any:
        if self._carry is not None:
            job, self._carry = self._carry, None
            return job
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def _coalesce(self, first: _Job) -> list[_Job]:
        """`first` plus the jobs already waiting with the same source, up to the row limit."""
        jobs, rows = [first], len(first.records)
        while rows < self.coalesce_max_rows:
            try:
                nxt = self._queue.get_nowait()
            except queue.Empty:
                break
            if nxt is _STOP:
                self._stop_seen = True
                break
            if nxt.source != first.source or rows + len(nxt.records) > self.coalesce_max_rows:
                self._carry = nxt
                break
            jobs.append(nxt)
            rows += len(nxt.records)
        return jobs

    def _drain(self) -> None:
        """Score every job still queued (submissions stopped before the stop signal was sent)."""
        while True:
            if self._carry is not None:
                job, self._carry = self._carry, None
            else:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    return
            if job is not _STOP:
                self._score(self._coalesce(job))

    def _flush_if_buffered(self) -> None:
        try:
            self.flush()
        except Exception:
            self._last_flush = time.monotonic()

    def _score(self, jobs: list[_Job]) -> None:
        records = [record for job in jobs for record in job.records]
        with self._queued_lock:
            self._queued_rows -= len(records)
            self.metrics.queued_rows.set(self._queued_rows)
        try:
            with self._lock:
                result = self.scorer.score_batch(records, source=jobs[0].source)
            outcomes = _split(jobs, records, result)
        except Exception as error:
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(error)
            return
        self._count(result)
        for job, outcome in zip(jobs, outcomes, strict=True):
            job.future.set_result(outcome)

    def _count(self, result: ScoreResult) -> None:
        self.metrics.scoring_batches.inc()
        if result.scored:
            for decision, count in result.predictions["decision"].value_counts().items():
                self.metrics.decisions.inc(float(count), decision=str(decision))
        if result.dead_lettered:
            fields = result.dead_letters["field"].astype(object).where(result.dead_letters["field"].notna(), "")
            for name, count in fields.value_counts().items():
                self.metrics.dead_letters.inc(float(count), field=str(name) or "record")


def canonical_id(value: Any) -> str | None:
    """The transaction id as the validator stores it (text stripped; integers in decimal).

    Only needed to find a scored row's request again; anything the validator rejects never gets here.
    """
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)) and math.isfinite(value) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, str):
        return value.strip()
    return None


def _split(jobs: list[_Job], records: list[Any], result: ScoreResult) -> list[JobOutcome]:
    """Each job's rows, back in request order, from one scorer batch."""
    n = len(records)
    outcomes: list[RowOutcome | None] = [None] * n
    dead = result.dead_letters
    for row, tid, reason, fld in zip(
        dead["row"].tolist(), dead["transaction_id"].tolist(), dead["reason"].tolist(), dead["field"].tolist(),
        strict=True,
    ):
        outcomes[int(row)] = RowOutcome(
            index=int(row), transaction_id=_text(tid), scored=False, field=_text(fld), reason=str(reason)
        )
    by_id: dict[str, int] = {}
    for i, record in enumerate(records):
        if outcomes[i] is None and isinstance(record, Mapping):
            key = canonical_id(record.get("transaction_id"))
            if key is not None:
                by_id[key] = i
    predictions = result.predictions
    for tid, score, decision in zip(
        predictions["transaction_id"].tolist(), predictions["score"].tolist(), predictions["decision"].tolist(),
        strict=True,
    ):
        position = by_id.get(str(tid))
        if position is None:
            raise RuntimeError(f"scored transaction {tid!r} matches no submitted record")
        outcomes[position] = RowOutcome(
            index=position, transaction_id=str(tid), scored=True, score=float(score), decision=str(decision)
        )
    missing = [i for i, outcome in enumerate(outcomes) if outcome is None]
    if missing:  # conservation is the scorer's invariant; if it ever breaks, fail loudly, not silently
        raise RuntimeError(f"rows {missing[:5]} came back neither scored nor dead-lettered")
    split: list[JobOutcome] = []
    offset = 0
    for job in jobs:
        rows = []
        for i in range(offset, offset + len(job.records)):
            outcome = outcomes[i]
            assert outcome is not None
            rows.append(dataclasses.replace(outcome, index=i - offset))
        offset += len(job.records)
        split.append(
            JobOutcome(
                rows=rows,
                batch_id=result.batch_id,
                batch_rows=n,
                model_version=result.model_version,
                serving_state_version=result.serving_state_version,
                used_fallback=result.used_fallback,
                fallback_reason=result.fallback_reason,
            )
        )
    return split


def _text(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return None
    return str(value)
