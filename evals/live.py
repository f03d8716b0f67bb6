"""Play live days of a simulated world hour by hour through the real scorer, with faults active.

`LiveWorld` is the eval harness's (and the tests') stage: for each live day it generates the day, lets
the active stream faults change it (before it is cut into hours, so the labels that arrive later
describe what really happened), then for each hour

1. installs the serving faults whose ``start`` has come and uninstalls those whose ``end`` has: an hour
   is cut at those instants, so a fault that starts at 10:30 acts from 10:30 exactly;
2. scores the hour's transactions through ``platform.scorer.score_batch``, as JSON-like records by
   default, with the clock at the end of each piece;
3. delivers the labels that come due in the hour (``label_time = timestamp + label delay``, including
   those of the last days of history) through the label faults, via ``platform.scorer.add_labels``;
4. flushes the scorer's log buffer and calls ``on_hour(now, report)`` (when given), where the monitor and the
   responder hook in; they may end a fault with `LiveWorld.end_fault` (remediation).

Everything is a function of the world's seed and the faults, so two runs store the same predictions.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, Literal

import numpy as np
import pandas as pd

from evals.faults import WIRE_EDITS, Fault, FaultContext, PlatformLike
from scorer import columns as C
from scorer.score import ScoreResult
from scorer.simulate import LABEL_COLUMNS, LABEL_TIME, Simulator

__all__ = ["HourReport", "LiveRun", "LiveWorld", "Payload", "SimClock"]

_HOUR: Final = timedelta(hours=1)
_DAY: Final = timedelta(days=1)
# Spawn-key prefixes of the random streams: stream faults per (fault, day), serving faults per fault.
_STREAM_RNG: Final = 1
_SERVING_RNG: Final = 2

Payload = Literal["records", "frame"]


class SimClock:
    """The simulated "now", shared by the platform and the world; it only moves forward.

    Build the `Platform` with ``clock=`` this object so logs, registry events and serving-state changes
    carry simulated time.
    """

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        """Move forward by ``timedelta(**delta)`` (``advance(hours=1)``)."""
        self.set(self.now + timedelta(**delta))

    def set(self, moment: datetime) -> None:
        """Move to ``moment``.

        Raises:
            ValueError: ``moment`` is before now (simulated time never runs backwards).
        """
        if moment < self.now:
            raise ValueError(f"the simulated clock cannot go back from {self.now} to {moment}")
        self.now = moment


@dataclass(frozen=True)
class HourReport:
    """What one live hour did.

    Attributes:
        start: First instant of the hour.
        end: First instant after it (the clock when its last piece was scored).
        rows_in: Records sent to the scorer.
        scored: Rows that got a prediction.
        dead_lettered: Rows refused by validation.
        fallback_rows: Rows scored by the fallback rules instead of a model.
        model_versions: The model version that served each piece of the hour (None: fallback).
        labels_delivered: Labels that arrived in the hour.
        labels_withheld: Labels due in the hour that label faults held back.
        active_faults: Kinds of the faults active at some instant of the hour.
        results: The scorer's result for each piece of the hour.
    """

    start: datetime
    end: datetime
    rows_in: int
    scored: int
    dead_lettered: int
    fallback_rows: int
    model_versions: tuple[int | None, ...]
    labels_delivered: int
    labels_withheld: int
    active_faults: tuple[str, ...]
    results: tuple[ScoreResult, ...] = field(repr=False)

    @property
    def model_version(self) -> int | None:
        """The model version serving at the end of the hour."""
        return self.model_versions[-1] if self.model_versions else None

    @property
    def used_fallback(self) -> bool:
        return self.fallback_rows > 0


@dataclass
class LiveRun:
    """Every hour a `LiveWorld` played."""

    hours: list[HourReport] = field(default_factory=list)

    def total(
        self,
        name: Literal[
            "rows_in", "scored", "dead_lettered", "fallback_rows", "labels_delivered", "labels_withheld"
        ],
    ) -> int:
        """The sum of one count over all hours."""
        return sum(getattr(hour, name) for hour in self.hours)


@dataclass
class _Slot:
    """One fault as the world plays it: the world's own copy, its context, and whether it is installed."""

    original: Fault
    fault: Fault
    context: FaultContext
    installed: bool = False
    cancelled: bool = False  # ended before it ever started

    def live(self) -> bool:
        return not self.cancelled


class LiveWorld:
    """Plays live days through the real scorer with faults active (see the module docstring).

    Args:
        platform: The platform to play against: a champion registered, feature state warmed with the
            history (``platform.scorer.features.observe(history)``), built with ``clock=clock``.
        simulator: The world.
        clock: The platform's clock.
        start_day: Index of the first live day (the day after the history).
        days: Number of live days.
        faults: Faults to play; the world works on its own copies, so they can be reused.
        label_delay: How long after a transaction its label arrives; default the world's.
        history: What the champion was trained on (deploy faults retrain from it); default the days
            before ``start_day``, generated only if a fault needs it.
        seed: Seed of the faults' random streams; default the world's seed.
        payload: Send each hour as JSON-like ``records`` (a dropped field is a missing key) or as a
            ``frame`` (a dropped field is a null value).
        on_hour: Called after each hour with (end of the hour, its report); the scorer's log buffer is
            flushed just before, so the store holds the hour.
        on_day: Called after each day with (day index, the day's hour reports); the log buffer is
            flushed at the end of every day in any case.
        progress: Called after each hour with (hours done, hours in the run), for long runs.
    """

    def __init__(
        self,
        platform: PlatformLike,
        simulator: Simulator,
        *,
        clock: SimClock,
        start_day: int,
        days: int,
        faults: Sequence[Fault] = (),
        label_delay: timedelta | None = None,
        history: pd.DataFrame | None = None,
        seed: int | None = None,
        payload: Payload = "records",
        on_hour: Callable[[datetime, HourReport], None] | None = None,
        on_day: Callable[[int, list[HourReport]], None] | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        if start_day < 0 or days < 0:
            raise ValueError(f"start_day and days must be >= 0, got {start_day} and {days}")
        if platform.scorer.clock is not clock or platform.serving.clock is not clock:
            raise ValueError(
                "build the Platform with clock=<this SimClock>: logs and state changes need simulated time"
            )
        self.platform = platform
        self.simulator = simulator
        self.clock = clock
        self.start_day = start_day
        self.days = days
        self.label_delay = (
            label_delay if label_delay is not None else timedelta(days=simulator.config.label_delay_days)
        )
        if self.label_delay < timedelta(0):
            raise ValueError(f"label_delay must be >= 0, got {self.label_delay}")
        self.seed = simulator.config.seed if seed is None else seed
        self.payload: Payload = payload
        self.on_hour, self.on_day, self.progress = on_hour, on_day, progress
        self._history = history
        self._slots = [self._slot(index, fault) for index, fault in enumerate(faults)]
        self._frames: dict[int, pd.DataFrame] = {}  # day -> its played (fault-changed) transactions
        self._raw: tuple[int, pd.DataFrame] | None = None  # the current day as generated
        self._played_until = datetime.min  # rows before this instant have been scored
        self._resplice = False  # a fault ended: regenerate the rest of the current day
        self._started = False

    # -- public API -------------------------------------------------------------------------------

    @property
    def faults(self) -> list[Fault]:
        """The world's copies of the faults (their ``end`` reflects remediation)."""
        return [slot.fault for slot in self._slots]

    def run(self) -> LiveRun:
        """Play every live day; returns the hour reports."""
        return LiveRun(list(self.hours()))

    def hours(self) -> Iterator[HourReport]:
        """Play hour by hour, yielding each hour's report (after ``on_hour`` and ``progress``).

        Stopping early is allowed (stop iterating); the scorer's log buffer is then flushed only up to
        the last full day, so call ``platform.scorer.flush()`` before reading the store.

        Raises:
            RuntimeError: The world was already played (a world plays once).
        """
        if self._started:
            raise RuntimeError("this LiveWorld has already been played; build a new one")
        self._started = True
        self._queue_history_labels()
        total, done = self.days * 24, 0
        for day in range(self.start_day, self.start_day + self.days):
            day_reports: list[HourReport] = []
            self._begin_day(day)
            for hour in range(24):
                report = self._play_hour(self._day_start(day) + hour * _HOUR)
                day_reports.append(report)
                done += 1
                if self.progress is not None:
                    self.progress(done, total)
                yield report
            self._forget_delivered(self._day_start(day + 1))
            self.platform.scorer.flush()
            if self.on_day is not None:
                self.on_day(day, day_reports)

    def end_fault(self, fault: Fault, now: datetime) -> None:
        """End a fault at ``now`` (remediation): serving faults are uninstalled, stream faults stop.

        Args:
            fault: One of the faults given to the world (or its copy from `faults`).
            now: When it ends; not before the rows already scored. A later instant schedules the end.

        Raises:
            KeyError: The fault is not played by this world.
            ValueError: ``now`` is before rows already scored.
        """
        slot = next((s for s in self._slots if fault is s.original or fault is s.fault), None)
        if slot is None:
            raise KeyError(f"fault {fault.kind} starting {fault.start} is not played by this world")
        if now < self._played_until:
            raise ValueError(f"cannot end {fault.kind} at {now}: rows up to {self._played_until} are scored")
        current = slot.fault
        if not slot.live() or (current.end is not None and current.end <= now):
            return
        if now <= current.start:
            slot.cancelled = True
        else:
            current.end = now
        if slot.installed and now <= self.clock():
            current.uninstall(slot.context)
            slot.installed = False
        self._resplice = True  # the rest of the day must be generated again without this fault

    def truth(self) -> pd.DataFrame:
        """The live transactions played so far as they happened (after stream faults, with labels).

        Sorted by time; includes rows that were dead-lettered, and labels that label faults withheld.
        """
        cut = np.datetime64(self._played_until, "ns")
        frames = [
            frame.loc[frame[C.TIMESTAMP].to_numpy() < cut].drop(columns=[WIRE_EDITS], errors="ignore")
            for day, frame in sorted(self._frames.items())
            if day >= self.start_day
        ]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    # -- days -------------------------------------------------------------------------------------

    def _day_start(self, day: int) -> datetime:
        return (self.simulator.config.start + pd.Timedelta(days=day)).to_pydatetime()

    def _queue_history_labels(self) -> None:
        """Days of history whose labels are still to arrive when the live period starts."""
        back = math.ceil(self.label_delay / _DAY)
        for day in range(max(0, self.start_day - back), self.start_day):
            self._frames[day] = self.simulator.day(day)

    def _begin_day(self, day: int) -> None:
        raw = self.simulator.day(day)
        self._raw = (day, raw)
        self._frames[day] = self._with_faults(day, raw)
        self._resplice = False

    def _with_faults(self, day: int, frame: pd.DataFrame) -> pd.DataFrame:
        """The day as the stream faults make it, sorted by time; a function of (seed, faults, day)."""
        start, end = self._day_start(day), self._day_start(day + 1)
        for index, slot in enumerate(self._slots):
            fault = slot.fault
            if not slot.live() or fault.start >= end or (fault.end is not None and fault.end <= start):
                continue
            rng = np.random.default_rng(
                np.random.SeedSequence(self.seed, spawn_key=(_STREAM_RNG, index, day))
            )
            frame = fault.apply_transactions(frame, rng)
            frame = frame.sort_values(C.TIMESTAMP, kind="stable", ignore_index=True)
        return frame

    def _splice(self, day: int) -> None:
        """Regenerate the unplayed rest of the day after a fault ended; played rows stay as they were."""
        assert self._raw is not None and self._raw[0] == day
        played = self._frames[day]
        fresh = self._with_faults(day, self._raw[1])
        cut = np.datetime64(self._played_until, "ns")
        kept = played.loc[played[C.TIMESTAMP].to_numpy() < cut]
        rest = fresh.loc[fresh[C.TIMESTAMP].to_numpy() >= cut]
        self._frames[day] = pd.concat([kept, rest], ignore_index=True)
        self._resplice = False

    def _forget_delivered(self, now: datetime) -> None:
        """Drop history days whose labels have all arrived (live days stay for `truth`)."""
        for day in [d for d in self._frames if d < self.start_day]:
            if self._day_start(day + 1) + self.label_delay <= now:
                del self._frames[day]

    # -- hours ------------------------------------------------------------------------------------

    def _play_hour(self, start: datetime) -> HourReport:
        end = start + _HOUR
        day = (start - self._day_start(0)) // _DAY
        if self._resplice:
            self._splice(day)
        results: list[ScoreResult] = []
        for piece_start, piece_end in self._pieces(start, end):
            self._sync_faults(piece_start)
            frame = self._frames[day]
            times = frame[C.TIMESTAMP].to_numpy()
            lo, hi = np.searchsorted(
                times, [np.datetime64(piece_start, "ns"), np.datetime64(piece_end, "ns")]
            )
            self.clock.set(piece_end)
            if hi > lo:
                results.append(
                    self.platform.scorer.score_batch(self._payload(frame.iloc[lo:hi]), source="simulator")
                )
            self._played_until = piece_end
        delivered, withheld = self._deliver_labels(start, end)
        if self.on_hour is not None:
            self.platform.scorer.flush()  # the monitor reads the store; otherwise the scorer's policy holds
        report = HourReport(
            start=start,
            end=end,
            rows_in=sum(r.rows_in for r in results),
            scored=sum(r.scored for r in results),
            dead_lettered=sum(r.dead_lettered for r in results),
            fallback_rows=sum(r.scored for r in results if r.used_fallback),
            model_versions=tuple(r.model_version for r in results),
            labels_delivered=delivered,
            labels_withheld=withheld,
            active_faults=tuple(
                s.fault.kind for s in self._slots if s.live() and _overlaps(s.fault, start, end)
            ),
            results=tuple(results),
        )
        if self.on_hour is not None:
            self.on_hour(end, report)
        return report

    def _pieces(self, start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
        """The hour cut at every fault start or end inside it."""
        cuts = {start, end}
        for slot in self._slots:
            for moment in (slot.fault.start, slot.fault.end):
                if moment is not None and start < moment < end:
                    cuts.add(moment)
        edges = sorted(cuts)
        return list(itertools.pairwise(edges))

    def _sync_faults(self, now: datetime) -> None:
        """Install serving faults that are due and uninstall those that are over, at ``now``."""
        self.clock.set(now)
        for slot in self._slots:
            active = slot.live() and slot.fault.active_at(now)
            if active and not slot.installed:
                slot.fault.install(slot.context)
                slot.installed = True
            elif slot.installed and not active:
                slot.fault.uninstall(slot.context)
                slot.installed = False

    def _deliver_labels(self, start: datetime, end: datetime) -> tuple[int, int]:
        """Labels whose label_time is in [start, end), through the label faults; (delivered, withheld)."""
        parts = []
        lo_ts, hi_ts = (
            np.datetime64(start - self.label_delay, "ns"),
            np.datetime64(end - self.label_delay, "ns"),
        )
        for frame in self._frames.values():
            lo, hi = np.searchsorted(frame[C.TIMESTAMP].to_numpy(), [lo_ts, hi_ts])
            if hi > lo:
                rows = frame.iloc[lo:hi]
                parts.append(pd.DataFrame({
                    C.TRANSACTION_ID: rows[C.TRANSACTION_ID].to_numpy(),
                    C.LABEL: rows[C.LABEL].to_numpy(),
                    LABEL_TIME: (rows[C.TIMESTAMP] + self.label_delay).to_numpy(),
                }))  # fmt: skip
        if not parts:
            return 0, 0
        due = pd.concat(parts, ignore_index=True)
        labels = due
        for slot in self._slots:
            if slot.live():
                labels = slot.fault.filter_labels(labels, end)
        self.platform.scorer.add_labels(labels)
        return len(labels), len(due) - len(labels)

    def _payload(self, rows: pd.DataFrame) -> list[dict[str, Any]] | pd.DataFrame:
        """What the upstream sends for these rows: records (or a frame), schema changes applied."""
        edits = rows[WIRE_EDITS].to_numpy() if WIRE_EDITS in rows else None
        sent = rows.drop(columns=[*LABEL_COLUMNS, WIRE_EDITS], errors="ignore")
        if self.payload == "frame":
            return sent if edits is None else _edit_frame(sent, edits)
        records: list[dict[str, Any]] = sent.to_dict("records")
        if edits is not None:
            for record, edit in zip(records, edits, strict=True):
                for name, new in (edit or {}).items():
                    value = record.pop(name, None)
                    if new is not None:
                        record[new] = value
        return records

    # -- set-up -----------------------------------------------------------------------------------

    def _slot(self, index: int, fault: Fault) -> _Slot:
        rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(_SERVING_RNG, index)))
        context = FaultContext(
            platform=self.platform,
            simulator=self.simulator,
            rng=rng,
            clock=self.clock,
            load_history=self._load_history,
        )
        return _Slot(original=fault, fault=fault.model_copy(deep=True), context=context)

    def _load_history(self) -> pd.DataFrame:
        if self._history is None:
            self._history = self.simulator.generate(0, self.start_day)
        return self._history


def _overlaps(fault: Fault, start: datetime, end: datetime) -> bool:
    return fault.start < end and (fault.end is None or fault.end > start)


def _edit_frame(frame: pd.DataFrame, edits: np.ndarray) -> pd.DataFrame:
    """Schema changes in a frame: a dropped field is null, a renamed one moves to its new column."""
    edited = frame.copy()
    for row, edit in enumerate(edits):
        for name, new in (edit or {}).items():
            if new is not None:
                if new not in edited:
                    edited[new] = pd.Series(pd.NA, index=edited.index, dtype="object")
                edited.iloc[row, edited.columns.get_loc(new)] = frame.iloc[row][name]
            edited[name] = edited[name].astype(object)
            edited.iloc[row, edited.columns.get_loc(name)] = None
    return edited
