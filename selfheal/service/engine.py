"""The one place the service drives the scorer: a coroutine on the event loop, and why it is there.

`Scorer` keeps state between calls (streaming feature windows, the recent-id set for duplicate checks, the
log buffer, the loaded model) and is not thread-safe; the store underneath has one DuckDB connection. So
every scoring call in the service goes through `ScoringEngine`:

- a request puts a *job* (its records) on a queue and awaits a future; one worker coroutine takes jobs
  off the queue and calls the scorer;
- **two paths**: a transaction sent on its own goes through `Scorer.score_one` (the single-transaction
  path, without per-batch costs); a batch request through `Scorer.score_batch` (batch semantics: rows in
  time order, duplicates within the batch named as such);
- **coalescing**: jobs that queued up while the scorer was busy are taken together (up to
  ``coalesce_max_rows`` rows). Fewer than ``batch_path_min_rows`` waiting single transactions are scored
  one by one; more, and they are scored as one batch, whose fixed cost is then shared (where the two
  cross depends on the scorer: ~30 rows when a 1-row batch costs ~15 ms and `score_one` ~0.5 ms). The
  worker never waits to fill a batch, so an idle service answers a lone request at once;
- **on the event loop, not in a thread**: scoring is CPU-bound Python, and a CPU-bound thread next to the
  event loop's thread starves it under the GIL (every socket wake-up of the loop waits for the GIL switch
  interval, the "convoy effect"): requests then reach the queue too slowly to be coalesced, and latency
  grows without bound at loads the scorer could carry. Run inline, a batch blocks the loop for its
  duration; requests arriving meanwhile wait in the socket buffers, are all parsed when it ends, and the
  worker yields to the loop until they are queued (`_gather_arrivals`) before taking the next batch. The
  price: ``/healthz`` and every other request wait for the batch in progress (a 10,000-row batch: ~1 s);
- **writing the log**: the scorer stages log rows and writes them in chunks (`store.LogWriter`; the
  service turns on its writer thread, so a full chunk of ``flush_rows`` rows is written while scoring
  goes on). A write costs a DuckDB transaction, 10-60 ms whatever its size, so the worker forces one
  (`Scorer.flush`, a barrier) only when traffic pauses: no request for ``_IDLE_S`` and rows staged for
  longer than ``flush_interval_s``; at the latest after ``_MAX_STALE_INTERVALS`` intervals; and on `stop`.
  The barrier runs off the loop, which keeps reading requests meanwhile. What a hard kill (``kill -9``)
  loses is what is staged: under load up to a chunk or two of rows, when quiet about one interval;
- other threads (read handlers, periodic jobs) that touch the scorer take `exclusive()`, the lock the
  worker holds while scoring or flushing.

Rows come back to their request by position: dead letters carry their row number, scored rows their
transaction id (unique among a batch's valid rows: the validator dead-letters duplicates).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import pandas as pd

from scorer.columns import TRANSACTION_ID
from scorer.score import Scorer, ScoreResult
from scorer.validate import id_text
from selfheal.service.metrics import ServiceMetrics

logger = logging.getLogger(__name__)

_STOP: Final = object()
_MAX_GATHER_YIELDS: Final = 16
_IDLE_S: Final = 0.25  # no request for this long: traffic paused, a forced write delays (almost) nobody
# Under traffic that never pauses, write anyway after this many intervals. Rarely needed: under load the
# scorer writes a chunk whenever `flush_rows` rows are staged, without stopping scoring.
_MAX_STALE_INTERVALS: Final = 60


class EngineOverloaded(Exception):
    """Too many rows are already waiting to be scored; the caller should retry later."""


class EngineStopped(Exception):
    """The engine is not running (not started yet, or shutting down)."""


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
    batch_id: str | None  # the scorer's batch id (None on the single-transaction path)
    batch_rows: int  # rows in the scorer call this job was part of (> len(rows) when coalesced)
    model_version: int | None
    serving_state_version: int
    used_fallback: bool
    fallback_reason: str | None


@dataclass
class _Job:
    records: list[Any]
    source: str
    single: bool  # one transaction sent on its own (not a batch request of one)
    future: asyncio.Future[JobOutcome] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class ScoringEngine:
    """Owns the scorer while the service runs (see the module docstring). Start and submit on the loop."""

    def __init__(
        self,
        scorer: Scorer,
        metrics: ServiceMetrics,
        *,
        coalesce_max_rows: int = 256,
        batch_path_min_rows: int = 32,
        max_queued_rows: int = 100_000,
        flush_interval_s: float = 0.5,
    ) -> None:
        self.scorer = scorer
        self.metrics = metrics
        self.coalesce_max_rows = coalesce_max_rows
        self.batch_path_min_rows = batch_path_min_rows
        self.max_queued_rows = max_queued_rows
        self.flush_interval_s = flush_interval_s
        self._lock = threading.RLock()
        self._queue: asyncio.Queue[Any] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._queued_rows = 0
        self._last_flush = time.monotonic()
        self._carry: _Job | None = None
        self._accepting = False

    # -- lifecycle (on the event loop) --------------------------------------------------------------

    def start(self) -> None:
        """Start the worker on the running event loop."""
        if self._worker is not None:
            return
        self._queue = asyncio.Queue()
        self._accepting = True
        self._worker = asyncio.get_running_loop().create_task(self._run(), name="selfheal-scorer")

    async def stop(self) -> None:
        """Score what is queued, stop the worker, and flush the log buffer."""
        self._accepting = False  # on the loop, like `submit`: nothing can queue behind the stop signal
        worker, self._worker = self._worker, None
        if worker is not None and self._queue is not None:
            self._queue.put_nowait(_STOP)
            await worker
        self.flush()

    @property
    def running(self) -> bool:
        return self._accepting and self._worker is not None and not self._worker.done()

    @property
    def queued_rows(self) -> int:
        return self._queued_rows

    # -- requests (on the event loop) ---------------------------------------------------------------

    def submit(
        self, records: Sequence[Any], *, source: str = "api", single: bool = False
    ) -> asyncio.Future[JobOutcome]:
        """Queue records for scoring; the future resolves to their outcomes in request order.

        ``single`` marks one transaction sent on its own: it may take the scorer's single-transaction path
        (`Scorer.score_one`); a batch request always keeps batch semantics (`Scorer.score_batch`).

        Raises:
            EngineOverloaded: More than ``max_queued_rows`` rows are waiting already.
            EngineStopped: The engine is not running.
        """
        if not self.running or self._queue is None:
            raise EngineStopped("the scoring engine is not running")
        job = _Job(list(records), source, single and len(records) == 1)
        if self._queued_rows > 0 and self._queued_rows + len(job.records) > self.max_queued_rows:
            raise EngineOverloaded(f"{self._queued_rows:,} rows are waiting to be scored; retry shortly")
        self._queued_rows += len(job.records)
        self.metrics.queued_rows.set(self._queued_rows)
        self._queue.put_nowait(job)
        return job.future

    # -- from any thread ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[Scorer]:
        """Hold the scorer while no batch runs (status reads, model invalidation). Keep it short: the
        event loop waits for this lock before its next batch."""
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

    def log_health(self) -> dict[str, Any]:
        """The scoring log writer's health (its own lock: never waits for a batch being scored)."""
        return self.scorer.log_health()

    # -- the worker ---------------------------------------------------------------------------------

    async def _run(self) -> None:
        assert self._queue is not None
        while True:
            job = await self._next()
            if job is None:  # traffic paused: a forced write now delays nobody
                if time.monotonic() - self._last_flush >= self.flush_interval_s:
                    await self._flush_off_loop()
                continue
            if job is _STOP:
                break
            await self._gather_arrivals()
            jobs, stop = self._coalesce(job)
            await self._score(jobs)
            if stop:
                break
            if time.monotonic() - self._last_flush >= _MAX_STALE_INTERVALS * self.flush_interval_s:
                await self._flush_off_loop()
        while self._carry is not None or not self._queue.empty():  # what was accepted before the stop
            job = self._carry or self._queue.get_nowait()
            self._carry = None
            if job is not _STOP:
                await self._score(self._coalesce(job)[0])

    async def _next(self) -> Any:
        assert self._queue is not None
        if self._carry is not None:
            job, self._carry = self._carry, None
            return job
        try:
            return await asyncio.wait_for(self._queue.get(), timeout=_IDLE_S)
        except TimeoutError:
            return None

    async def _gather_arrivals(self) -> None:
        """Let the loop parse the requests that arrived during the last batch, until the queue stops growing.

        A request needs a couple of loop turns from its bytes being read to its job being queued.
        """
        assert self._queue is not None
        size, still = self._queue.qsize(), 0
        for _ in range(_MAX_GATHER_YIELDS):
            await asyncio.sleep(0)
            grown = self._queue.qsize()
            still = still + 1 if grown == size else 0
            if still >= 2:
                return
            size = grown

    def _coalesce(self, first: _Job) -> tuple[list[_Job], bool]:
        """`first` plus the jobs waiting with the same source, up to the row limit; and whether a stop came.

        A job that repeats a transaction id of the jobs already taken waits for the next batch: merged, its
        row would be dead-lettered as a "duplicate in batch" of another caller's request; scored after it,
        it gets what sending it later would give, "already scored".
        """
        assert self._queue is not None
        jobs, rows = [first], len(first.records)
        ids: set[str] | None = None  # the taken jobs' ids, collected only once a second job comes
        while rows < self.coalesce_max_rows and not self._queue.empty():
            nxt = self._queue.get_nowait()
            if nxt is _STOP:
                return jobs, True
            if nxt.source != first.source or rows + len(nxt.records) > self.coalesce_max_rows:
                self._carry = nxt
                break
            ids = _ids_of(first) if ids is None else ids
            theirs = _ids_of(nxt)
            if not ids.isdisjoint(theirs):
                self._carry = nxt
                break
            ids |= theirs
            jobs.append(nxt)
            rows += len(nxt.records)
        return jobs, False

    async def _flush_off_loop(self) -> None:
        """Write the log buffer in a thread; the worker (so no scoring) waits, the loop does not."""
        await asyncio.get_running_loop().run_in_executor(None, self._forced_flush)

    def _forced_flush(self) -> None:
        """`flush`, logging a failure instead of raising it: the log writer keeps the rows that failed and
        writes them again at the next flush, so scoring goes on; the next forced write waits an interval."""
        try:
            self.flush()
        except Exception as error:
            # The error's text, not a traceback: an expected outage (a full disk) needs no stack, and
            # CPython 3.11 can fail formatting tracebacks in two threads at once (gh-106905: a spurious
            # "AST constructor recursion depth mismatch", which pytest's log capture turned into a failure).
            logger.warning(
                "forced scoring-log write failed (%s: %s); its rows are kept and written at the next flush",
                type(error).__name__, error,
            )  # fmt: skip
            self._last_flush = time.monotonic()

    async def _score(self, jobs: list[_Job]) -> None:
        rows = sum(len(job.records) for job in jobs)
        self._queued_rows -= rows
        self.metrics.queued_rows.set(self._queued_rows)
        if rows < self.batch_path_min_rows and all(job.single and isinstance(job.records[0], Mapping) for job in jobs):
            for job in jobs:
                self._score_single(job)
                await asyncio.sleep(0)  # its answer goes out before the next one is scored
        else:
            self._score_batch(jobs)

    def _score_single(self, job: _Job) -> None:
        """One transaction through `Scorer.score_one` (no per-batch costs)."""
        try:
            with self._lock:
                answer = self.scorer.score_one(job.records[0], source=job.source)
                # What served: the same state score_one just resolved, read under the same lock. (A change
                # made through the API between the two reads would show the newer version; score and
                # model version come from score_one itself.)
                status = self.scorer.status()
        except Exception as error:
            if not job.future.done():
                job.future.set_exception(error)
            return
        tid = _text(answer.get("transaction_id"))
        if "error" in answer:
            row = RowOutcome(index=0, transaction_id=tid, scored=False, field=_text(answer.get("field")),
                             reason=str(answer["error"]))
            self.metrics.dead_letters.inc(field=row.field or "record")
        else:
            row = RowOutcome(index=0, transaction_id=tid, scored=True, score=float(answer["score"]),
                             decision=str(answer["decision"]))
            self.metrics.decisions.inc(decision=str(row.decision))
        self.metrics.scoring_calls.inc(path="single")
        outcome = JobOutcome(
            rows=[row],
            batch_id=None,
            batch_rows=1,
            model_version=answer.get("model_version", status["model_version"]),
            serving_state_version=int(status["serving_state_version"]),
            used_fallback=bool(answer.get("used_fallback", status["fallback"])),
            fallback_reason=status["fallback_reason"],
        )
        if not job.future.done():  # a client that went away cancelled its future
            job.future.set_result(outcome)

    def _score_batch(self, jobs: list[_Job]) -> None:
        """Every job's records in one `Scorer.score_batch` call, answered job by job."""
        records = [record for job in jobs for record in job.records]
        try:
            with self._lock:
                result = self.scorer.score_batch(records, source=jobs[0].source)
            outcomes = _split(jobs, records, result)
        except Exception as error:
            # Every merged request gets the error. (A failed log write is not one: the scorer keeps those
            # rows and answers.) Scoring the requests again one by one is not done: the feature state may
            # already hold the failed batch's rows, and a retry would count them twice.
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(error)
            return
        self._count(result)
        for job, outcome in zip(jobs, outcomes, strict=True):
            if not job.future.done():
                job.future.set_result(outcome)

    def _count(self, result: ScoreResult) -> None:
        self.metrics.scoring_calls.inc(path="batch")
        if result.scored:
            for decision, count in result.predictions["decision"].value_counts().items():
                self.metrics.decisions.inc(float(count), decision=str(decision))
        if result.dead_lettered:
            fields = result.dead_letters["field"].astype(object).where(result.dead_letters["field"].notna(), "")
            for name, count in fields.value_counts().items():
                self.metrics.dead_letters.inc(float(count), field=str(name) or "record")


def _ids_of(job: _Job) -> set[str]:
    """The canonical transaction ids a job's records carry (records that are not objects carry none)."""
    ids = (canonical_id(r.get(TRANSACTION_ID)) for r in job.records if isinstance(r, Mapping))
    return {i for i in ids if i is not None}


def canonical_id(value: Any) -> str | None:
    """The transaction id as the validator stores it (`scorer.validate.id_text`): what finds a scored
    row's request again; anything the validator rejects never gets here."""
    text, wrong_type = id_text(value)
    return None if wrong_type else text


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
