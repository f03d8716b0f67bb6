"""The live loop behind `selfheal run`: a transaction source played hour by hour through the platform.

For each hour of transaction time, in order:

1. score the hour's rows (``Scorer.score_batch``; a bad row is dead-lettered with its reason, never lost);
2. deliver the labels that came due in the hour (a row's ``label_time``, else its timestamp plus the label
   delay) when the source carries labels (``is_fraud`` / ``TX_FRAUD``);
3. write the logs, then hand the closed hour to the `Autopilot` (monitor -> responder -> verification ->
   resolve pages), or to the monitor alone.

Labels not due yet when the source ends (a file's last week, with a 7-day delay) are handed back
(`LiveLoop.pending_labels`) and kept in the workspace (`save_pending_labels`), so the next run, on the
next file, delivers them when they come due: a team plays its data a month at a time.

Time is the data's time (a `SimClock` set to the end of each hour), so replaying a file gives the same
incidents as living through it, and it only runs forward: rows older than the hour being played (late
arrivals) are scored with the current hour. Hours without rows are still closed, one by one, so the
monitor sees a volume drop. Rows whose timestamp cannot be read are scored with the current hour (the
scorer dead-letters them with the reason).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from agent.autopilot import Autopilot, AutopilotEvent
from evals.live import SimClock
from monitor.runner import Monitor
from scorer import columns as C
from scorer.simulate import LABEL_COLUMNS, LABEL_TIME
from scorer.sources import Batch

HOUR = timedelta(hours=1)
# Labels a run read but could not deliver yet, in the workspace folder (see the module docstring).
PENDING_LABELS_FILE = "pending-labels.parquet"


class LoopPlatform(Protocol):
    """What the loop needs of `selfheal.app.Platform`."""

    @property
    def scorer(self) -> Any: ...


@dataclass
class HourDone:
    """One closed hour: what came in and what the platform did about it."""

    end: datetime
    rows_in: int = 0
    scored: int = 0
    dead_lettered: int = 0
    labels: int = 0
    events: list[AutopilotEvent] = field(default_factory=list)


@dataclass
class LoopTotals:
    hours: int = 0
    rows_in: int = 0
    scored: int = 0
    dead_lettered: int = 0
    labels: int = 0
    labels_pending: int = 0  # read from the source, due after it ended (kept for the next run)
    opened: list[str] = field(default_factory=list)

    def add(self, hour: HourDone) -> None:
        self.hours += 1
        self.rows_in += hour.rows_in
        self.scored += hour.scored
        self.dead_lettered += hour.dead_lettered
        self.labels += hour.labels
        self.opened += [e.incident_id for e in hour.events if e.what in ("opened", "reopened")]


class LiveLoop:
    """Plays batches of transactions hour by hour (see the module docstring).

    Args:
        platform: Built with ``clock=clock``.
        clock: The platform's simulated clock; moved to the end of each hour played.
        monitor: Evaluates each closed hour when no ``autopilot`` is given.
        autopilot: Monitor + responder; when given it evaluates the hour and responds.
        label_delay: When a row's label arrives if the source gives no ``label_time``.
        source: Recorded with dead letters, e.g. ``file:live.jsonl``.
        pending_labels: Labels an earlier run read and did not deliver (`load_pending_labels`).
    """

    def __init__(
        self,
        platform: LoopPlatform,
        clock: SimClock,
        *,
        monitor: Monitor,
        autopilot: Autopilot | None = None,
        label_delay: timedelta = timedelta(days=7),
        source: str = "run",
        pending_labels: pd.DataFrame | None = None,
    ) -> None:
        self.platform, self.clock, self.monitor, self.autopilot = platform, clock, monitor, autopilot
        self.label_delay, self.source = label_delay, source
        self.totals = LoopTotals()
        self._hour_start: datetime | None = None  # the hour being filled
        self._pending: list[Batch] = []  # its rows
        self._labels = pd.DataFrame(columns=[C.TRANSACTION_ID, C.LABEL, LABEL_TIME])
        if pending_labels is not None and len(pending_labels):
            self._labels = pending_labels[[C.TRANSACTION_ID, C.LABEL, LABEL_TIME]].reset_index(drop=True)

    @property
    def pending_labels(self) -> pd.DataFrame:
        """Labels read from the source and not delivered yet: not due before the last hour closed."""
        return self._labels

    def play(self, batches: Iterable[Batch]) -> Iterator[HourDone]:
        """Feed every batch, closing hours as transaction time passes them; the last hour closes at the end."""
        for batch in batches:
            yield from self.feed(batch)
        yield from self.finish()

    def feed(self, batch: Batch) -> Iterator[HourDone]:
        """Take a batch, a frame or JSON-like records (in time order across batches); yields the hours it closed.

        Records stay records (a missing field is a missing key, dead-lettered as such); a record that is
        not an object (a line that was not JSON) is scored, and dead-lettered, with the current hour.
        """
        if len(batch) == 0:
            return
        if isinstance(batch, pd.DataFrame):
            batch = self._take_labels(batch.reset_index(drop=True))
            stamps = (
                batch[C.TIMESTAMP] if C.TIMESTAMP in batch.columns else pd.Series(None, index=batch.index)
            )
        else:
            batch = self._take_record_labels(batch)
            stamps = pd.Series(
                [r.get(C.TIMESTAMP) if isinstance(r, dict) else None for r in batch], dtype=object
            )
        hours = _timestamps(stamps).dt.floor("h")
        if self._hour_start is None:
            first = hours.dropna().min()
            start = first.to_pydatetime() if pd.notna(first) else _floor_hour(self.clock())
            self._hour_start = max(start, _floor_hour(self.clock()))
        # Late rows and unreadable timestamps join the hour being filled (time only runs forward).
        hours = hours.where(hours.notna() & (hours > self._hour_start), self._hour_start)
        for hour, positions in pd.Series(range(len(hours))).groupby(hours.to_numpy(), sort=True):
            moment = pd.Timestamp(hour).to_pydatetime()
            while moment > self._hour_start:
                yield self._close_hour()
            if isinstance(batch, pd.DataFrame):
                self._pending.append(batch.iloc[positions.to_numpy()])
            else:
                self._pending.append([batch[i] for i in positions])

    def finish(self) -> Iterator[HourDone]:
        """Close the hour being filled (the end of the source)."""
        if self._hour_start is not None and (self._pending or self.totals.hours == 0):
            yield self._close_hour()

    # -- one hour -----------------------------------------------------------------------------------

    def _close_hour(self) -> HourDone:
        assert self._hour_start is not None
        end = self._hour_start + HOUR
        self.clock.set(max(end, self.clock()))
        done = HourDone(end)
        if self._pending:
            rows = _joined(self._pending)
            self._pending = []
            result = self.platform.scorer.score_batch(rows, source=self.source)
            done.rows_in, done.scored, done.dead_lettered = (
                result.rows_in,
                result.scored,
                result.dead_lettered,
            )
        done.labels = self._deliver_labels(end)
        self.platform.scorer.flush()
        if self.autopilot is not None:
            done.events = self.autopilot.after_hour(end)
        else:
            report = self.monitor.run_hour(end - HOUR)
            done.events = [
                AutopilotEvent(end, c.change, c.incident_id, self.monitor.incidents.get(c.incident_id).title)
                for c in report.changes
            ]
        self._hour_start = end
        self.totals.add(done)
        return done

    # -- labels -------------------------------------------------------------------------------------

    def _take_labels(self, batch: pd.DataFrame) -> pd.DataFrame:
        """Split the label columns off (the scorer takes transactions only) and queue the labels."""
        carried = [c for c in (*LABEL_COLUMNS, LABEL_TIME) if c in batch.columns]
        if not carried:
            return batch
        if C.LABEL in batch.columns and C.TRANSACTION_ID in batch.columns:
            labels = pd.DataFrame(
                {
                    C.TRANSACTION_ID: batch[C.TRANSACTION_ID].astype(str),
                    C.LABEL: pd.to_numeric(batch[C.LABEL], errors="coerce"),
                    LABEL_TIME: _timestamps(batch[LABEL_TIME])
                    if LABEL_TIME in batch.columns
                    else _timestamps(batch[C.TIMESTAMP]) + self.label_delay
                    if C.TIMESTAMP in batch.columns
                    else pd.NaT,
                }
            )
            # A label that is not 0/1 or has no time is not a label: the transaction is still scored.
            labels = labels.loc[labels[C.LABEL].isin([0, 1]) & labels[LABEL_TIME].notna()]
            self._labels = (
                pd.concat([self._labels, labels], ignore_index=True) if len(self._labels) else labels
            )
        return batch.drop(columns=carried)

    def _take_record_labels(self, records: list[Any]) -> list[Any]:
        """`_take_labels` for JSON-like records: the label keys come off each record."""
        label_keys = (*LABEL_COLUMNS, LABEL_TIME)
        if not any(isinstance(r, dict) and any(k in r for k in label_keys) for r in records):
            return records
        carried = pd.DataFrame(
            [
                {k: r.get(k) for k in (C.TRANSACTION_ID, C.TIMESTAMP, *label_keys)}
                if isinstance(r, dict)
                else {}
                for r in records
            ]
        )
        self._take_labels(carried.dropna(axis=1, how="all"))
        return [
            {k: v for k, v in r.items() if k not in label_keys} if isinstance(r, dict) else r for r in records
        ]

    def _deliver_labels(self, end: datetime) -> int:
        if self._labels.empty:
            return 0
        due = self._labels[LABEL_TIME] < pd.Timestamp(end)
        if not due.any():
            return 0
        delivered = self._labels.loc[due]
        self._labels = self._labels.loc[~due].reset_index(drop=True)
        return int(self.platform.scorer.add_labels(delivered.astype({C.LABEL: int})))


def load_pending_labels(home: Path) -> pd.DataFrame | None:
    """The labels an earlier run of this workspace left for later, or None."""
    path = home / PENDING_LABELS_FILE
    return pd.read_parquet(path) if path.exists() else None


def save_pending_labels(home: Path, labels: pd.DataFrame) -> None:
    """Keep the labels not due yet for the next run (replacing what an earlier run kept); none: no file."""
    path = home / PENDING_LABELS_FILE
    if labels.empty:
        path.unlink(missing_ok=True)
        return
    part = path.with_name(path.name + ".part")  # a run killed mid-write leaves the last whole file
    labels.astype({C.TRANSACTION_ID: str, C.LABEL: int}).to_parquet(part, index=False)
    part.replace(path)


def _timestamps(values: pd.Series) -> pd.Series:
    """Timestamps as naive UTC; what cannot be read becomes NaT."""
    if pd.api.types.is_datetime64_any_dtype(values):  # Parquet, the simulator: no per-row look needed
        return values.dt.tz_convert(None) if values.dt.tz is not None else values
    # Text or mixed objects: numbers and other odd values are not timestamps (the scorer dead-letters them).
    text = values.where(values.map(lambda v: isinstance(v, (str, pd.Timestamp, datetime))), None)
    parsed = pd.to_datetime(text, errors="coerce", utc=True, format="mixed")
    return parsed.dt.tz_convert(None)


def _joined(parts: list[Batch]) -> Batch:
    if all(isinstance(p, pd.DataFrame) for p in parts):
        return pd.concat(parts, ignore_index=True)
    return [record for part in parts for record in part]


def _floor_hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)
