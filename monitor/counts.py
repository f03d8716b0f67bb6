"""Window counting: one pass over a window's logged rows into count vectors that add up.

Every hourly window is read once (predictions joined with their transactions, dead letters, labels and
the scorer's audit events) and reduced to:

- per monitored subject (numeric features, categorical fields, the score): a count vector over the
  reference profile's bins plus a null count -- stored in ``monitor_counts``;
- scalars for data-quality and ops checks (rows, dead letters by reason, fallback rows, alert and decline
  counts, invalid scores, latency percentiles, labels received) -- stored in ``monitor_windows``.

Rows are assigned to windows by their transaction time; events that only have a log time (dead letters,
labels, audit rows) by that time in (start, end], because a batch's events are logged when the batch
closes, at the end of the window it belongs to.

Count vectors and most scalars add up, so a daily or weekly window is the sum of its hours: drift over a
day never rescans the day's rows (`sum_windows`). Latency percentiles do not add up; longer windows keep
the worst hour.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from monitor.profile import CATEGORICAL_FIELDS, ReferenceProfile
from monitor.stats import category_counts, histogram_counts
from store import Store

SCORE_SUBJECT = "score"
# Scalars that add up across windows; everything else in `WindowCounts.scalars` is "worst of".
ADDITIVE = frozenset(
    {
        "rows",
        "dead_letters",
        "fallback_rows",
        "alerts",
        "declines",
        "invalid_scores",
        "labels_received",
        "model_load_failures",
    }
)


@dataclass
class SubjectCounts:
    """Counts of one subject in one window."""

    counts: np.ndarray
    nulls: int
    rows: int

    def __add__(self, other: SubjectCounts) -> SubjectCounts:
        return SubjectCounts(self.counts + other.counts, self.nulls + other.nulls, self.rows + other.rows)


@dataclass
class WindowCounts:
    """A window reduced to count vectors and scalars."""

    start: datetime
    end: datetime
    model_version: int | None
    subjects: dict[str, SubjectCounts] = field(default_factory=dict)
    scalars: dict[str, float] = field(default_factory=dict)
    dead_letter_reasons: dict[str, int] = field(default_factory=dict)  # "field: reason" -> rows
    invalid_range: dict[str, int] = field(default_factory=dict)  # feature -> rows outside its valid range
    beyond_reference: dict[str, int] = field(default_factory=dict)  # feature -> rows outside [ref min, ref max]

    @property
    def rows(self) -> int:
        return int(self.scalars.get("rows", 0))


def _alert_sources(rows: pd.DataFrame) -> float:
    """Flagged rows counted once per card or per terminal, whichever is fewer.

    Fraud comes in clusters (a compromised card or terminal makes several transactions in an hour, all
    rightly flagged), so flagged rows are over-dispersed against a binomial; distinct sources are not.
    """
    if not len(rows) or "customer_id" not in rows or "terminal_id" not in rows:
        return float("nan")
    flagged = rows.loc[rows["decision"] != "approve"]
    return float(min(flagged["customer_id"].nunique(), flagged["terminal_id"].nunique()))


def count_window(store: Store, profile: ReferenceProfile, start: datetime, end: datetime) -> WindowCounts:
    """Read one window's rows once and count them over the profile's bins."""
    rows = store.query(
        "SELECT p.*, t.channel, t.mcc, t.country, t.customer_id, t.terminal_id FROM predictions p "
        "LEFT JOIN transactions t USING (transaction_id) WHERE p.timestamp >= ? AND p.timestamp < ?",
        [start, end],
    )
    window = WindowCounts(start=start, end=end, model_version=profile.model_version)
    for name, reference in profile.numeric.items():
        values = rows[name].to_numpy(dtype=np.float64, na_value=np.nan) if name in rows else np.full(len(rows), np.nan)
        counts, nulls = histogram_counts(values, np.asarray(reference.edges))
        window.subjects[name] = SubjectCounts(np.asarray(counts), int(nulls), len(values))
        window.invalid_range[name] = _invalid(name, values)
        with np.errstate(invalid="ignore"):
            window.beyond_reference[name] = int(((values < reference.lower) | (values > reference.upper)).sum())
    for name, categorical in profile.categorical.items():
        values = rows[name].to_numpy(dtype=object) if name in rows else np.full(len(rows), None, dtype=object)
        counts = np.asarray(category_counts(values, categorical.categories))
        window.subjects[name] = SubjectCounts(counts, int(counts[-1]), len(values))
    scores = rows["score"].to_numpy(dtype=np.float64, na_value=np.nan) if len(rows) else np.empty(0)
    counts, nulls = histogram_counts(scores, np.asarray(profile.score.edges))
    window.subjects[SCORE_SUBJECT] = SubjectCounts(np.asarray(counts), int(nulls), len(scores))
    window.scalars.update(_scalars(store, rows, scores, profile, start, end))
    window.dead_letter_reasons = _dead_letter_reasons(store, start, end)
    window.scalars["dead_letters"] = float(sum(window.dead_letter_reasons.values()))
    return window


def _invalid(name: str, values: np.ndarray) -> int:
    """Rows whose value cannot be produced by a healthy feature job (NaN is counted as a null instead)."""
    finite = values[~np.isnan(values)]
    if "risk" in name:
        bad = (finite < 0) | (finite > 1)
    elif name.startswith("is_"):
        bad = (finite != 0) & (finite != 1)
    elif "count" in name or name.endswith("amount") or "amount" in name:
        bad = (finite < 0) | np.isinf(finite)
    else:
        bad = np.isinf(finite)
    return int(bad.sum())


def _scalars(
    store: Store, rows: pd.DataFrame, scores: np.ndarray, profile: ReferenceProfile, start: datetime, end: datetime
) -> dict[str, float]:
    latency = rows["latency_ms"].to_numpy(dtype=np.float64) if len(rows) else np.empty(0)
    invalid_scores = int((~np.isfinite(scores) | (scores < 0) | (scores > 1)).sum()) if len(scores) else 0
    labels = store.query(
        "SELECT count(*) AS n, max(label_time) AS latest FROM labels WHERE received_at > ? AND received_at <= ?",
        [start, end],
    )
    failures = store.scalar(
        "SELECT count(*) FROM audit_log WHERE action = 'model_load_failed' AND recorded_at > ? AND recorded_at <= ?",
        [start, end],
    )
    fallback = rows["used_fallback"].to_numpy(dtype=bool) if len(rows) else np.empty(0, dtype=bool)
    return {
        "rows": float(len(rows)),
        "fallback_rows": float(fallback.sum()),
        "alerts": float((rows["decision"] != "approve").sum()) if len(rows) else 0.0,
        "alert_sources": _alert_sources(rows),
        "declines": float((rows["decision"] == "decline").sum()) if len(rows) else 0.0,
        "invalid_scores": float(invalid_scores),
        "latency_p50_ms": float(np.percentile(latency, 50)) if len(latency) else float("nan"),
        "latency_p99_ms": float(np.percentile(latency, 99)) if len(latency) else float("nan"),
        "model_ms_per_row": _mean_or_nan(rows["model_ms"]) if "model_ms" in rows else float("nan"),
        "labels_received": float(labels["n"].iloc[0]),
        "latest_label_time": _epoch(labels["latest"].iloc[0]),
        "model_load_failures": float(failures or 0),
        "threshold": float(rows["score"].where(rows["decision"] == "decline").min()) if len(rows) else float("nan"),
    }


def _mean_or_nan(values: pd.Series) -> float:
    finite = values.to_numpy(dtype=np.float64, na_value=np.nan)
    finite = finite[np.isfinite(finite)]
    return float(finite.mean()) if len(finite) else float("nan")


def _epoch(value: Any) -> float:
    if value is None or pd.isna(value):
        return float("nan")
    return float(pd.Timestamp(value).timestamp())


def _dead_letter_reasons(store: Store, start: datetime, end: datetime) -> dict[str, int]:
    frame = store.query(
        "SELECT coalesce(field, '') AS field, reason, count(*) AS n FROM dead_letters "
        "WHERE received_at > ? AND received_at <= ? GROUP BY ALL",
        [start, end],
    )
    return {f"{r.field}: {r.reason}" if r.field else str(r.reason): int(r.n) for r in frame.itertuples()}


def sum_windows(windows: Iterable[WindowCounts]) -> WindowCounts:
    """Add hourly windows into one longer window (no rescan of rows)."""
    items = list(windows)
    if not items:
        raise ValueError("no windows to add up")
    total = WindowCounts(start=items[0].start, end=items[-1].end, model_version=items[-1].model_version)
    for window in items:
        for name, counts in window.subjects.items():
            total.subjects[name] = total.subjects[name] + counts if name in total.subjects else counts
        for key, value in window.scalars.items():
            if key in ADDITIVE:
                total.scalars[key] = total.scalars.get(key, 0.0) + value
            elif not np.isnan(value):
                total.scalars[key] = max(total.scalars.get(key, value), value)
        for key, n in window.dead_letter_reasons.items():
            total.dead_letter_reasons[key] = total.dead_letter_reasons.get(key, 0) + n
        for key, n in window.invalid_range.items():
            total.invalid_range[key] = total.invalid_range.get(key, 0) + n
        for key, n in window.beyond_reference.items():
            total.beyond_reference[key] = total.beyond_reference.get(key, 0) + n
    return total


def save_window(store: Store, window: WindowCounts, cadence: str, evaluated_at: datetime) -> None:
    """Persist a window's counts (so longer windows and restarts need no rescan), replacing any earlier count
    of the same window.

    A window is counted again when `selfheal run` is started again after a crash (it replays the source
    from its start) or `selfheal monitor run` covers hours already monitored. Appended, the second copy
    made `load_windows` return that hour twice and the day's sum counted its rows twice.
    """
    window_key = [window.start, window.end, window.model_version]
    with store.transaction():  # the counts and their window's row together, or neither
        store.execute(
            "DELETE FROM monitor_counts WHERE window_start = ? AND window_end = ? "
            "AND model_version IS NOT DISTINCT FROM ?",
            window_key,
        )
        store.execute(
            "DELETE FROM monitor_windows WHERE window_start = ? AND window_end = ? "
            "AND model_version IS NOT DISTINCT FROM ? AND cadence = ?",
            [*window_key, cadence],
        )
        _append_window(store, window, cadence, evaluated_at)


def _append_window(store: Store, window: WindowCounts, cadence: str, evaluated_at: datetime) -> None:
    store.append(
        "monitor_counts",
        pd.DataFrame(
            {
                "window_start": window.start,
                "window_end": window.end,
                "model_version": window.model_version,
                "subject": list(window.subjects),
                "rows": [c.rows for c in window.subjects.values()],
                "nulls": [c.nulls for c in window.subjects.values()],
                "counts": [c.counts.astype(np.int64).tolist() for c in window.subjects.values()],
            }
        ),
    )
    stats = {
        "scalars": window.scalars,
        "dead_letter_reasons": window.dead_letter_reasons,
        "invalid_range": window.invalid_range,
        "beyond_reference": window.beyond_reference,
    }
    store.append(
        "monitor_windows",
        pd.DataFrame(
            {
                "window_start": [window.start],
                "window_end": [window.end],
                "cadence": [cadence],
                "model_version": [window.model_version],
                "stats": [json.dumps(stats, default=_json_default)],
                "evaluated_at": [evaluated_at],
            }
        ),
    )


def load_windows(store: Store, start: datetime, end: datetime, model_version: int | None) -> list[WindowCounts]:
    """Hourly windows saved in [start, end) for a model version, rebuilt from stored counts."""
    meta = store.query(
        "SELECT window_start, window_end, stats FROM monitor_windows WHERE cadence = 'hour' "
        "AND window_start >= ? AND window_end <= ? AND model_version IS NOT DISTINCT FROM ? ORDER BY window_start",
        [start, end, model_version],
    )
    counts = store.query(
        "SELECT window_start, subject, rows, nulls, counts FROM monitor_counts "
        "WHERE window_start >= ? AND window_end <= ? AND model_version IS NOT DISTINCT FROM ?",
        [start, end, model_version],
    )
    grouped = {key: frame for key, frame in counts.groupby("window_start")}
    windows = []
    for row in meta.itertuples():
        stats = json.loads(row.stats)
        window = WindowCounts(
            start=pd.Timestamp(row.window_start).to_pydatetime(),
            end=pd.Timestamp(row.window_end).to_pydatetime(),
            model_version=model_version,
            scalars={k: float(v) for k, v in stats["scalars"].items()},
            dead_letter_reasons=stats["dead_letter_reasons"],
            invalid_range=stats["invalid_range"],
            beyond_reference=stats.get("beyond_reference", {}),
        )
        for item in grouped.get(row.window_start, pd.DataFrame()).itertuples():
            window.subjects[str(item.subject)] = SubjectCounts(
                np.asarray(item.counts, dtype=np.int64), int(item.nulls), int(item.rows)
            )
        windows.append(window)
    return windows


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return str(value)


__all__ = [
    "CATEGORICAL_FIELDS",
    "SCORE_SUBJECT",
    "SubjectCounts",
    "WindowCounts",
    "count_window",
    "load_windows",
    "save_window",
    "sum_windows",
]
