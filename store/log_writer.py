"""Buffered, chunked appends to the append-only log tables, optionally written by a background thread.

DuckDB's cost per logged row is mostly per statement, per commit and per row group (each commit of a small
append goes through the write-ahead log and is compressed again at the next checkpoint; an append of a
whole row group, 122,880 rows, is compressed once and written straight to the file). So a few large writes
cost far less than many small ones; benchmarks/README.md has the numbers. `LogWriter` collects rows, whole
frames or Arrow tables from batch scoring and single rows from the one-transaction path, and writes them
in chunks:

- a chunk is sealed when ``flush_rows`` rows are staged (checked after each `append` / `append_rows`
  call, so the tables one call stages always land in the same chunk), on `flush`, and on `close`;
- each chunk is written in one transaction, one INSERT per table from one Arrow table with the table's own
  column types: either all of a chunk's rows are in the database or none are;
- with ``background=True`` sealed chunks are written by a writer thread (DuckDB releases the GIL while it
  inserts, so it uses the second core); at most ``max_queued_chunks`` chunks wait for it, after which the
  caller blocks, so memory stays bounded and a slow disk slows the caller down instead of growing a queue.

Durability, i.e. what a hard kill can lose: rows are in the database once `flush` (a barrier: it returns
when every row appended before it is committed) or `close` returns. Until then they exist only in this
process's memory, so ``kill -9``, the OOM killer or a power cut loses the rows appended since the last
completed write: at most ``flush_rows`` staged rows, plus in the background mode up to
``max_queued_chunks`` sealed chunks and the one being written (each about ``flush_rows`` rows; the chunk
being written is all-or-nothing). Callers that must not lose a row across a crash call `flush` before they
acknowledge it. A chunk is written under the store's lock, so other readers of the store wait for it (a
250k-row chunk takes about a second on a busy 2-core machine).

A failed write is never dropped: its chunk is kept, written again (first) by the next `flush`, and the
error is raised to the caller, as a `LogWriteError`, at its next `append`, `append_rows` or `flush`. Rows
handed to `append` or `append_rows` are staged *before* any error is raised, so the rows of the call that
hears about a failure are kept too: a caller may treat them as accepted (the scorer does, and remembers
their ids). `close` sets aside whatever it cannot write, so closing never loses a row either.

Failed chunks wait in memory, merged as they come (one chunk per call with ``flush_rows=1``), up to
``max_unwritten_rows``: beyond it the oldest are set aside at once, and when even that fails,
`check_capacity` (which the scorer calls before it accepts a call's rows) raises `LogWriterFull` so the
caller refuses new work instead of growing until the OOM killer takes every row in memory.

A chunk that fails `MAX_WRITE_ATTEMPTS` times, the first at least ``min_spill_age_s`` ago, is most likely
not failing for the disk's sake but for its own (a value the database cannot hold): retried first
forever, it would block every later chunk. It is then *set aside*: its rows are written as JSON lines (non-ASCII escaped, so any Python text fits) to
``log-spill/`` beside the database file, the error is logged, and later chunks go on. Nothing is lost;
`spilled` lists the files, and `selfheal load-spills` (`store.spill.load_spilled`) loads them once the
cause is fixed.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

import pandas as pd
import pyarrow as pa

from store.db import Store
from store.errors import LogWriteError, LogWriterFull
from store.spill import spill_folder, write_spill_file

Frame: TypeAlias = pd.DataFrame | pa.Table
MAX_WRITE_ATTEMPTS = 3  # then a chunk is set aside (see the module docstring)
_MERGE_ROWS = 100_000  # failed chunks are merged up to this many rows
log = logging.getLogger(__name__)


@dataclass
class _Rows:
    """Single rows staged for one table, all with the same columns (values in ``columns`` order)."""

    columns: tuple[str, ...]
    values: list[tuple[Any, ...]] = field(default_factory=list)


Segment: TypeAlias = pd.DataFrame | pa.Table | _Rows


@dataclass
class _Chunk:
    """Rows sealed for one write: per table, segments in arrival order."""

    tables: dict[str, list[Segment]]
    rows: int
    attempts: int = 0  # failed writes so far
    last_error: str = ""
    first_failed: float | None = None  # time.monotonic() of its first failed write

    def absorb(self, other: _Chunk) -> None:
        """Take ``other``'s rows after this chunk's own (both failed as often: they are retried as one)."""
        for table, segments in other.tables.items():
            self.tables.setdefault(table, []).extend(segments)
        self.rows += other.rows


class LogWriter:
    """Stages log rows and writes them to the store in large chunks (see the module docstring).

    Args:
        store: The database the rows go to.
        flush_rows: Seal a chunk once this many rows (all tables together) are staged; 1 writes every call.
        background: Write sealed chunks on a writer thread instead of in the caller.
        max_queued_chunks: Background mode: how many sealed chunks may wait for the writer thread.
        duckdb_threads: DuckDB worker threads while a chunk is written (None: DuckDB's setting). With a
            writer thread, 1 leaves the other core to the caller (see `Store.threads`).
        max_unwritten_rows: Rows of failed chunks kept in memory for a retry; beyond it the oldest are
            set aside at once, and `check_capacity` refuses new work when that fails too.
        min_spill_age_s: A chunk is set aside after `MAX_WRITE_ATTEMPTS` failed writes only once its first
            failure is this old, so a burst of flushes during a short outage does not spill it.
    """

    def __init__(
        self,
        store: Store,
        *,
        flush_rows: int = 1,
        background: bool = False,
        max_queued_chunks: int = 2,
        duckdb_threads: int | None = None,
        max_unwritten_rows: int = 1_000_000,
        min_spill_age_s: float = 60.0,
    ) -> None:
        if flush_rows < 1 or max_queued_chunks < 1 or max_unwritten_rows < 1:
            raise ValueError("flush_rows, max_queued_chunks and max_unwritten_rows must be at least 1")
        self.store = store
        self.flush_rows = flush_rows
        self.max_unwritten_rows = max_unwritten_rows
        self.min_spill_age_s = min_spill_age_s
        self.background = background
        self.duckdb_threads = duckdb_threads
        self._staged: dict[str, list[Segment]] = {}
        self._staged_rows = 0
        self._written = 0  # rows committed so far (all threads)
        self._failed: list[_Chunk] = []  # chunks whose write failed: written again, first, by `flush`
        self.spilled: list[Path] = []  # files of chunks set aside after MAX_WRITE_ATTEMPTS failures
        self._error: BaseException | None = None  # raised to the caller once
        self._write_failures = 0  # failed chunk writes since start (for `health`)
        self._last_error = ""
        self._pending = 0  # chunks handed to the writer thread and not finished yet
        self._done = threading.Condition()
        self._queue: queue.Queue[_Chunk | None] | None = None
        self._thread: threading.Thread | None = None
        if background:
            self._queue = queue.Queue(maxsize=max_queued_chunks)
            self._thread = threading.Thread(target=self._run, name="selfheal-log-writer", daemon=True)
            self._thread.start()

    # -- staging --------------------------------------------------------------------------------

    @property
    def staged_rows(self) -> int:
        """Rows staged and not yet sealed into a chunk."""
        return self._staged_rows

    @property
    def written_rows(self) -> int:
        """Rows committed to the database by this writer so far."""
        return self._written

    def health(self) -> dict[str, Any]:
        """How writing goes: failed writes since start, chunks waiting for a retry, spill files, last error."""
        with self._done:
            return {
                "write_failures": self._write_failures,
                "unwritten_chunks": len(self._failed),
                "unwritten_rows": _rows(self._failed),
                "spilled_files": len(self.spilled),
                "last_error": self._last_error or None,
            }

    def check_capacity(self) -> None:
        """Make room before new rows come: past `max_unwritten_rows`, set the oldest failed chunks aside.

        Raises:
            LogWriterFull: They cannot be set aside either (the spill folder's disk fails too). Nothing
                new should be accepted then: memory would grow until the process is killed, losing all.
        """
        if not self._failed:  # the usual case, on every scoring call: no lock, no sum
            return
        with self._done:
            excess = _rows(self._failed) - self.max_unwritten_rows
            oldest: list[_Chunk] = []
            while excess > 0 and self._failed:
                oldest.append(self._failed.pop(0))
                excess -= oldest[-1].rows
        _, left, error = self._spill_in_order(oldest)
        if error is not None:
            with self._done:
                self._failed[:0] = left
            raise LogWriterFull(
                f"{_rows(left):,} log rows wait for a write and cannot be set aside ({_cause(error)}): refusing "
                "new rows until the log can be written"
            ) from error

    def append(self, frames: Mapping[str, Frame]) -> None:
        """Stage frames (or Arrow tables), one per table; they are sealed into the same chunk.

        Raises:
            LogWriteError: This or an earlier write failed. The frames are staged all the same.
        """
        for table, frame in frames.items():
            rows = frame.num_rows if isinstance(frame, pa.Table) else len(frame)
            if rows:
                self._staged.setdefault(table, []).append(frame)
                self._staged_rows += rows
        self._after_staging()

    def append_rows(self, rows: Mapping[str, tuple[tuple[str, ...], tuple[Any, ...]]]) -> None:
        """Stage one row per table, as ``{table: (columns, values)}``; cheap enough to call per transaction.

        Rows for a table that share their ``columns`` tuple are collected into one segment, converted to
        Arrow only when their chunk is written.

        Raises:
            LogWriteError: This or an earlier write failed. The rows are staged all the same.
        """
        for table, (columns, values) in rows.items():
            segments = self._staged.setdefault(table, [])
            last = segments[-1] if segments else None
            if isinstance(last, _Rows) and last.columns is columns:
                last.values.append(values)
            else:
                segments.append(_Rows(columns, [values]))
            self._staged_rows += 1
        self._after_staging()

    # -- writing --------------------------------------------------------------------------------

    def flush(self) -> int:
        """Write every staged row and wait until all rows appended so far are committed.

        Returns:
            How many rows were committed between the call and its return (staged, queued and retried
            chunks; in the background mode also chunks the writer thread finished meanwhile).

        Raises:
            LogWriteError: A write failed; its rows are kept for the next `flush`.

        Never call it inside `Store.transaction` (or while otherwise holding the store's lock) in the
        background mode: the writer thread needs that lock to finish what `flush` waits for.
        """
        try:
            return self._flush()
        except Exception as error:
            raise _write_error(error) from error

    def _after_staging(self) -> None:
        """Raise what the writer thread met, then write a chunk that is full: rows are staged by now."""
        try:
            self._raise_pending_error()
            self._seal_if_full()
        except Exception as error:  # an inline try: this runs on every scoring call
            raise _write_error(error) from error

    def _flush(self) -> int:
        before = self._written
        self._raise_pending_error()
        chunk = self._seal()
        if self._queue is not None:
            if chunk is not None:
                self._hand_over(chunk)
            self._wait_idle()
            self._raise_pending_error()
        retry, self._failed = self._failed, []
        for index, failed in enumerate(retry):
            try:
                if failed.attempts >= MAX_WRITE_ATTEMPTS and self._old_enough(failed):
                    self._spill(failed)  # can fail too (the spill folder's disk is full): kept then
                else:
                    self._write(failed)
            except BaseException:
                self._failed = retry[index:] + self._failed
                if chunk is not None and self._queue is None:
                    self._add_failed(chunk)
                raise
        if self._queue is None and chunk is not None:
            try:
                self._write(chunk)
            except BaseException:
                self._add_failed(chunk)
                raise
        return self._written - before

    def _old_enough(self, chunk: _Chunk) -> bool:
        first = chunk.first_failed
        return first is None or time.monotonic() - first >= self.min_spill_age_s

    def _add_failed(self, chunk: _Chunk) -> None:
        """Keep a chunk whose write failed, merged into the last one kept when both failed as often (with
        `flush_rows=1` every call is its own chunk: thousands of one-row chunks, one spill file each)."""
        with self._done:
            last = self._failed[-1] if self._failed else None
            if last is not None and last.attempts == chunk.attempts and last.rows + chunk.rows <= _MERGE_ROWS:
                last.absorb(chunk)
            else:
                self._failed.append(chunk)

    def close(self) -> None:
        """Flush, then stop the writer thread; the writer must not be used afterwards.

        Raises:
            LogWriteError: The flush failed. Every row not written was set aside in a spill file first
                (`spilled`), so closing loses nothing.
        """
        try:
            for attempt in range(2):  # the first may only raise a stale error of the writer thread
                try:
                    self.flush()
                    return
                except LogWriteError as error:
                    if attempt == 1:
                        self._stop_thread()  # the chunks it still held are written or failed by now
                        raise self._set_aside_on_close(error.__cause__ or error) from error.__cause__
        finally:
            self._stop_thread()

    def _stop_thread(self) -> None:
        if self._queue is not None and self._thread is not None:
            self._queue.put(None)  # after the chunks already queued: they are written first
            self._thread.join()
            self._queue, self._thread = None, None

    def _set_aside_on_close(self, cause: BaseException) -> LogWriteError:
        """Spill every chunk not written, and what is staged, one by one; the error that says what became
        of them (set aside, or lost when the spill folder's disk fails too)."""
        staged = self._seal()
        chunks, self._failed = self._failed + ([staged] if staged is not None else []), []
        set_aside, self._failed, spill_error = self._spill_in_order(chunks)
        if spill_error is not None:  # nothing more can be done: say exactly what is lost
            return LogWriteError(
                f"writing logged rows failed: {_cause(cause)}; on close, {set_aside:,} log rows were set aside "
                f"in {spill_folder(self.store)}, and setting aside the other {_rows(self._failed):,} failed too "
                f"({_cause(spill_error)}): those are lost"
            )
        return LogWriteError(
            f"writing logged rows failed: {_cause(cause)}; on close, the {set_aside:,} log rows not written were "
            f"set aside as JSON lines in {spill_folder(self.store)}"
        )

    def _spill_in_order(self, chunks: list[_Chunk]) -> tuple[int, list[_Chunk], OSError | None]:
        """Set chunks aside, oldest first, until one cannot be: (rows set aside, the chunks left from the
        one that failed on, its error or None)."""
        set_aside = 0
        for index, chunk in enumerate(chunks):
            try:
                self._spill(chunk)
            except OSError as error:
                return set_aside, chunks[index:], error
            set_aside += chunk.rows
        return set_aside, [], None

    # -- internals --------------------------------------------------------------------------------

    def _seal(self) -> _Chunk | None:
        if not self._staged_rows:
            return None
        chunk = _Chunk(self._staged, self._staged_rows)
        self._staged, self._staged_rows = {}, 0
        return chunk

    def _seal_if_full(self) -> None:
        if self._staged_rows < self.flush_rows:
            return
        chunk = self._seal()
        assert chunk is not None
        if self._queue is not None:
            self._hand_over(chunk)
            return
        try:
            self._write(chunk)
        except BaseException:
            self._add_failed(chunk)
            raise

    def _hand_over(self, chunk: _Chunk) -> None:
        assert self._queue is not None
        with self._done:
            self._pending += 1
        self._queue.put(chunk)  # blocks while max_queued_chunks chunks wait: backpressure

    def _wait_idle(self) -> None:
        with self._done:
            while self._pending:
                self._done.wait()

    def _run(self) -> None:
        assert self._queue is not None
        while True:
            chunk = self._queue.get()
            if chunk is None:
                return
            try:
                self._write(chunk)
            except BaseException as error:
                self._add_failed(chunk)
                with self._done:
                    self._error = self._error or error
            finally:
                with self._done:
                    self._pending -= 1
                    self._done.notify_all()

    def _raise_pending_error(self) -> None:
        with self._done:
            error, self._error = self._error, None
        if error is not None:
            raise error

    def _write(self, chunk: _Chunk) -> None:
        try:
            tables = {name: self._to_arrow(name, segments) for name, segments in chunk.tables.items()}
            with self.store.threads(self.duckdb_threads), self.store.transaction():
                for name, data in tables.items():
                    self.store.append(name, data)
        except BaseException as error:
            chunk.attempts += 1
            chunk.last_error = f"{type(error).__name__}: {error}"
            chunk.first_failed = chunk.first_failed or time.monotonic()
            with self._done:
                self._write_failures += 1
                self._last_error = chunk.last_error
            raise
        with self._done:
            self._written += chunk.rows

    def _spill(self, chunk: _Chunk) -> None:
        """Set a chunk that keeps failing aside as JSON lines beside the database (see the module docstring)."""
        folder = spill_folder(self.store)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"chunk-{uuid.uuid4().hex[:12]}.jsonl"
        rows = ((table, row) for table, segments in chunk.tables.items() for s in segments for row in _segment_rows(s))
        write_spill_file(path, rows)
        self.spilled.append(path)
        log.error(
            "%d log rows set aside in %s after %d failed writes (last: %s); later rows are written as usual",
            chunk.rows, path, chunk.attempts, chunk.last_error,
        )

    def _to_arrow(self, table: str, segments: Sequence[Segment]) -> pa.Table:
        """One Arrow table with the database table's column types from a table's staged segments."""
        schema = self.store.arrow_schema(table)
        known = set(self.store.columns(table))
        # Runs of segments with one schema (a stream of same-shaped batches: the usual case) are joined
        # first, zero-copy, and conformed once: a chunk of 100 small batches pays one conversion, not 100.
        runs: list[list[pa.Table]] = []
        for data in (_segment_to_arrow(segment, schema) for segment in segments):
            if runs and runs[-1][0].schema == data.schema:
                runs[-1].append(data)
            else:
                runs.append([data])
        parts = [_conform(run[0] if len(run) == 1 else pa.concat_tables(run), schema, known, table) for run in runs]
        return parts[0] if len(parts) == 1 else pa.concat_tables(parts)


def _write_error(error: Exception) -> LogWriteError:
    """A failed write as the callers see it (the rows concerned are kept); raise it ``from error``."""
    return LogWriteError(
        f"writing logged rows failed: {_cause(error)}; the rows are kept and written again by the next flush"
    )


def _rows(chunks: Sequence[_Chunk]) -> int:
    return sum(chunk.rows for chunk in chunks)


def _cause(error: BaseException) -> str:
    return f"{error} ({type(error).__name__})"


def _segment_rows(segment: Segment) -> list[dict[str, Any]]:
    """A staged segment's rows as plain dicts (for a spill file)."""
    if isinstance(segment, pa.Table):
        return segment.to_pylist()
    if isinstance(segment, pd.DataFrame):
        return segment.to_dict("records")
    return [dict(zip(segment.columns, values, strict=True)) for values in segment.values]


def _segment_to_arrow(segment: Segment, schema: pa.Schema) -> pa.Table:
    if isinstance(segment, pa.Table):
        return segment
    if isinstance(segment, pd.DataFrame):
        return pa.Table.from_pandas(segment, preserve_index=False)
    arrays = []
    for name, values in zip(segment.columns, zip(*segment.values, strict=True), strict=True):
        kind = schema.field(name).type if schema.get_field_index(name) >= 0 else None
        # numpy datetime64 values only convert to their own unit; `_conform` casts them afterwards.
        arrays.append(pa.array(values, type=None if kind is None or pa.types.is_timestamp(kind) else kind))
    return pa.Table.from_arrays(arrays, names=list(segment.columns))


def _conform(data: pa.Table, schema: pa.Schema, known: set[str], table: str) -> pa.Table:
    """``data`` with every column of ``schema`` (absent ones null) in its order and types.

    Segments of one table then concatenate, and DuckDB scans them without casting. Timestamps are cut to
    microseconds (what DuckDB's TIMESTAMP holds anyway). Columns of types `Store.arrow_schema` does not
    map are passed through as they are.
    """
    unknown = set(data.column_names) - known
    if unknown:
        raise ValueError(f"columns not in table {table}: {sorted(unknown)}")
    arrays, names = [], []
    for target in schema:
        if target.name not in data.column_names:
            arrays.append(pa.nulls(data.num_rows, target.type))
        else:
            column = data.column(target.name)
            if column.type != target.type:
                column = column.cast(target.type, safe=not pa.types.is_timestamp(target.type))
            arrays.append(column)
        names.append(target.name)
    for name in data.column_names:
        if name not in schema.names:
            arrays.append(data.column(name))
            names.append(name)
    return pa.Table.from_arrays(arrays, names=names)
