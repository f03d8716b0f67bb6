"""What a report shows, gathered once from the store and the responder's state; rendering reads only this.

`build_report_data` gathers what happened from the store (the incident and its timeline, the monitor's
stored windows and findings, the audit log, the pager outbox) and, when there is one, from the
responder's graph state (steps, diagnosis, plan, verification, page decision). It computes nothing the
monitor does not: per-feature drift and the score distribution are the monitor's stored hourly counts
added up with `monitor.counts.sum_windows` and compared with the model's `ReferenceProfile` through
`monitor.checks.numeric_pair` / `categorical_pair` and `monitor.stats.evaluate`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from monitor.checks import NULL_RATE_FLOOR, categorical_pair, numeric_pair
from monitor.counts import SCORE_SUBJECT, WindowCounts, load_windows, sum_windows
from monitor.incidents import Incident
from monitor.profile import ReferenceProfile
from monitor.runner import Monitor
from monitor.stats import CATEGORICAL_STATS, NUMERIC_STATS, evaluate
from scorer.registry import ModelRegistry
from scorer.serving import as_naive_utc
from store import Store
from tools.audit import ActionLog
from tools.pagers import OutboxPager

__all__ = [
    "FeatureDrift",
    "MetricPoint",
    "MetricSeries",
    "PhaseStats",
    "ReportData",
    "ScoreDistribution",
    "TimelineEntry",
    "build_report_data",
]

HOUR = timedelta(hours=1)
MIN_CONTEXT, MAX_CONTEXT = timedelta(hours=6), timedelta(hours=24)  # before/after shown around the span
MONITOR_EVENTS = frozenset({"opened", "breach", "reopened", "cleared", "folded"})
TEXT_LIMIT = 240


@dataclass(frozen=True)
class TimelineEntry:
    """One line of the timeline; consecutive identical monitor breaches are folded into one (``count``)."""

    at: datetime
    source: str  # monitor | action | page | <actor of a status change or note>
    event: str
    text: str
    count: int = 1
    until: datetime | None = None


@dataclass(frozen=True)
class MetricPoint:
    start: datetime
    end: datetime
    value: float
    breached: bool | None = None


@dataclass(frozen=True)
class PhaseStats:
    phase: str  # before | during | after
    windows: int
    mean: float
    peak: float


@dataclass(frozen=True)
class MetricSeries:
    """The incident's key metric per monitor window, and how it looked before, during and after."""

    name: str
    source: str  # where the numbers come from, for the reader
    points: list[MetricPoint]
    threshold: float | None
    phases: list[PhaseStats]


@dataclass(frozen=True)
class FeatureDrift:
    feature: str
    importance: float
    rows: int
    null_rate: float
    reference_null_rate: float
    stats: dict[str, float]
    implicated: bool  # named by the incident's evidence

    @property
    def psi(self) -> float:
        return self.stats.get("psi", float("nan"))


@dataclass(frozen=True)
class ScoreDistribution:
    """Score shares per reference bin: the reference, the incident span, and after it (when monitored)."""

    model_version: int | None
    bins: list[str]
    series: list[tuple[str, list[float]]]  # (label, shares); the reference first
    psi: dict[str, float]  # label -> PSI against the reference
    rows: dict[str, int]
    alert_rate: dict[str, float]


@dataclass(frozen=True)
class ReportData:
    """Everything a report shows, gathered once; rendering reads only this."""

    incident: Incident
    generated_at: datetime
    span: tuple[datetime, datetime]  # the incident as the monitor saw it: first breached window .. close
    view: tuple[datetime, datetime]  # the charts' time range: the span with context either side
    timeline: list[TimelineEntry]
    metric: MetricSeries | None
    drift: list[FeatureDrift]
    scores: ScoreDistribution | None
    actions: list[dict[str, Any]]  # audit rows (authoritative) joined with the plan's entries
    pages: list[dict[str, Any]]
    state: dict[str, Any] | None  # the responder's state as given (plain dicts), None when absent
    missing: dict[str, str] = field(default_factory=dict)  # chart -> why it has no data

    @property
    def steps(self) -> list[Mapping[str, Any]]:
        return [s for s in _seq((self.state or {}).get("steps")) if isinstance(s, Mapping)]

    @property
    def tool_calls(self) -> int:
        return sum(1 for s in self.steps if s.get("kind") == "tool")



# -- gathering ------------------------------------------------------------------------------------


def build_report_data(
    store: Store,
    registry: ModelRegistry,
    incident_id: str,
    state: Mapping[str, Any] | None,
    *,
    now: datetime,
) -> ReportData:
    """Gather a report's data: pure reads of the store and the registry, nothing written.

    Raises:
        KeyError: There is no such incident.
    """
    now = as_naive_utc(now)
    monitor = Monitor(store, registry, registry.serving)
    incident = monitor.incidents.get(incident_id)
    profile = monitor.profile(incident.model_version)
    audit = ActionLog(store, clock=lambda: now).rows(incident_id=incident.incident_id)
    span = _incident_span(store, incident, now)
    pad = min(max(span[1] - span[0], MIN_CONTEXT), MAX_CONTEXT)
    # "After" runs to the last window the monitor stored, not to the clock: the same store gives the
    # same report whenever it is written.
    monitored = store.scalar("SELECT max(window_end) FROM monitor_windows WHERE cadence = 'hour'")
    latest = _ts(monitored) if monitored is not None and not pd.isna(monitored) else span[1]
    view = (span[0] - pad, max(min(latest, span[1] + pad), span[1]))
    missing: dict[str, str] = {}
    timeline = _timeline(monitor.incidents.events(incident.incident_id), audit)
    if not timeline:
        missing["timeline"] = "no timeline events or actions are recorded for this incident"
    found = _metric(store, incident, profile, span, view)
    metric = found if isinstance(found, MetricSeries) else None
    if isinstance(found, str):
        missing["metric"] = found
    drift: list[FeatureDrift] = []
    scores: ScoreDistribution | None = None
    if incident.model_version is None:
        missing["drift"] = missing["scores"] = "no model served (fallback rules): there is no reference profile"
    elif profile is None:
        missing["drift"] = missing["scores"] = f"model v{incident.model_version} has no reference profile"
    else:
        # One read of the stored hourly windows from the first breached hour to the end of the view.
        first_hour, last_hour = (_ts(pd.Timestamp(at).floor("h")) for at in span)
        windows = load_windows(store, first_hour, view[1], incident.model_version)
        during = [w for w in windows if w.end <= span[1]]
        after = [w for w in windows if w.start >= last_hour]
        if not during:
            missing["drift"] = missing["scores"] = (
                f"the monitor stored no hourly windows for model v{incident.model_version} during the incident"
            )
        else:
            summed = sum_windows(during)
            drift = _drift(profile, summed, set(incident.features))
            if not drift:
                missing["drift"] = "no monitored feature had rows during the incident"
            scores = _scores(profile, summed, sum_windows(after) if after else None)
            if scores is None:
                missing["scores"] = "no scores were counted during the incident"
    plan = [p for p in _seq((state or {}).get("plan")) if isinstance(p, Mapping)]
    pages = [
        {"page_id": r.page_id, "at": r.recorded_at, "channel": r.channel, "status": r.status, "severity": r.severity,
         "summary": r.summary, "error": r.error}
        for r in OutboxPager(store).rows(incident_id=incident.incident_id)
    ]
    return ReportData(
        incident=incident, generated_at=now, span=span, view=view, timeline=timeline, metric=metric, drift=drift,
        scores=scores, actions=_actions(audit, plan), pages=pages, state=dict(state) if state is not None else None,
        missing=missing,
    )


def _ts(value: Any) -> datetime:
    return pd.Timestamp(value).to_pydatetime()


def _incident_span(store: Store, incident: Incident, now: datetime) -> tuple[datetime, datetime]:
    """From the start of the first breached window to the close (else the last breach, else now)."""
    check = str(incident.evidence.get("check", ""))
    opened = _ts(incident.first_breach_at)
    closed = _ts(incident.closed_at) if incident.closed_at is not None else None
    breaches = store.query(
        "SELECT min(window_start) AS first, max(window_end) AS last FROM monitor_findings "
        "WHERE check_name = ? AND subject = ? AND breached AND window_end >= ? AND window_end <= ?",
        [check, incident.subject, opened, closed or now],
    )
    first, last = breaches["first"].iloc[0], breaches["last"].iloc[0]
    start = _ts(first) if not pd.isna(first) else opened - HOUR
    end = closed if closed is not None else _ts(last) if not pd.isna(last) else now
    return min(start, opened), max(end, opened)


def _timeline(events: pd.DataFrame, audit: Sequence[Any]) -> list[TimelineEntry]:
    entries: list[TimelineEntry] = []
    for row in events.itertuples():
        detail = _json(row.detail)
        event = str(row.event)
        source = "monitor" if event in MONITOR_EVENTS else "page" if event == "page" else str(detail.get("actor", "agent"))
        entries.append(TimelineEntry(at=_ts(row.recorded_at), source=source, event=event, text=_event_text(event, detail)))
    for record in audit:
        entries.append(
            TimelineEntry(at=record.recorded_at, source="action", event=record.action,
                          text=f"{record.status or 'unknown'} by {record.actor} (audit {record.audit_id})")
        )
    entries.sort(key=lambda e: e.at)  # stable: store order within the same instant
    # The monitor repeats itself every window while a fault lasts: keep the first of each repeated
    # breach or fold, with how many times and until when, so the timeline stays readable.
    first: dict[tuple[str, str], int] = {}
    folded: list[TimelineEntry] = []
    for entry in entries:
        key = (entry.event, entry.text)
        if entry.event in ("breach", "folded") and key in first:
            i = first[key]
            folded[i] = replace(folded[i], count=folded[i].count + 1, until=entry.at)
            continue
        first.setdefault(key, len(folded))
        folded.append(entry)
    return folded


def _event_text(event: str, detail: dict[str, Any]) -> str:
    if "metric" in detail and "value" in detail:
        features = ", ".join(str(f) for f in (detail.get("features") or [])[:5])
        return f"{detail['metric']} {_num(detail['value'])} (threshold {_num(detail.get('threshold'))})" + (
            f" on {features}" if features else ""
        )
    if "value" in detail and "threshold" in detail:  # cleared: calm for some windows
        calm = f" for {detail['after_windows']} windows" if "after_windows" in detail else ""
        return f"value {_num(detail['value'])} below threshold {_num(detail['threshold'])}{calm}"
    for key in ("why", "note", "text", "summary"):
        if detail.get(key):
            return _cut(str(detail[key]))
    if "finding" in detail:
        return _event_text(event, detail["finding"])
    return _cut(json.dumps(detail, sort_keys=True, default=str))


def _metric(
    store: Store, incident: Incident, profile: ReferenceProfile | None, span: tuple[datetime, datetime],
    view: tuple[datetime, datetime],
) -> MetricSeries | str:
    """The key metric per window over the view: a broken feature's null rate, else the finding's value."""
    problems = incident.evidence.get("problems") or {}
    top = incident.features[0] if incident.features else None
    if top and profile is not None and top in profile.numeric and "null_rate" in (problems.get(top) or {}):
        frame = store.query(
            "SELECT window_start, window_end, sum(nulls) / greatest(sum(rows), 1) AS value FROM monitor_counts "
            "WHERE subject = ? AND window_start >= ? AND window_end <= ? GROUP BY ALL ORDER BY window_start",
            [top, view[0], view[1]],
        )
        points = [MetricPoint(_ts(r.window_start), _ts(r.window_end), float(r.value)) for r in frame.itertuples()]
        name, source = f"null rate of {top}", "monitor_counts (hourly)"
        threshold: float | None = profile.numeric[top].null_rate + NULL_RATE_FLOOR
    else:
        check = str(incident.evidence.get("check", ""))
        frame = store.query(
            "SELECT window_start, window_end, value, threshold, breached, metric, cadence FROM monitor_findings "
            "WHERE check_name = ? AND subject = ? AND window_start >= ? AND window_end <= ? "
            "ORDER BY window_end, cadence",
            [check, incident.subject, view[0], view[1]],
        )
        if not frame.empty:  # one cadence: hourly when the check runs hourly (sorted last), else daily
            frame = frame[frame["cadence"] == frame["cadence"].iloc[-1]]
        points = [
            MetricPoint(_ts(r.window_start), _ts(r.window_end), _float(r.value), bool(r.breached))
            for r in frame.itertuples()
        ]
        metric = str(frame["metric"].iloc[-1]) if not frame.empty else str(incident.evidence.get("metric", "value"))
        name, source = metric, f"monitor_findings ({check}, {incident.subject})"
        threshold = _float(frame["threshold"].iloc[-1]) if not frame.empty else None
    if not points:
        return f"the monitor stored no windows for {name} between {view[0]:%Y-%m-%d %H:%M} and {view[1]:%Y-%m-%d %H:%M}"
    return MetricSeries(name=name, source=source, points=points, threshold=threshold, phases=_phases(points, span))


def _phases(points: Sequence[MetricPoint], span: tuple[datetime, datetime]) -> list[PhaseStats]:
    groups: dict[str, list[float]] = {"before": [], "during": [], "after": []}
    for p in points:
        phase = "before" if p.end <= span[0] else "after" if p.start >= span[1] else "during"
        groups[phase].append(p.value)
    out = []
    for phase, values in groups.items():
        finite = [v for v in values if math.isfinite(v)]
        out.append(PhaseStats(phase, len(values), float(np.mean(finite)) if finite else math.nan,
                              max(finite) if finite else math.nan))
    return out


def _drift(profile: ReferenceProfile, window: WindowCounts, implicated: set[str]) -> list[FeatureDrift]:
    """Each monitored feature's drift over the whole incident span, largest PSI first."""
    out = []
    for name in [*profile.numeric, *profile.categorical]:
        counts = window.subjects.get(name)
        if counts is None or counts.rows == 0:
            continue
        if name in profile.numeric:
            reference = profile.numeric[name]
            pair, stats, ref_null = numeric_pair(reference, counts), NUMERIC_STATS, reference.null_rate
        else:
            categorical = profile.categorical[name]
            pair, stats = categorical_pair(categorical, counts), CATEGORICAL_STATS
            ref_null = categorical.counts[-1] / max(categorical.rows, 1)
        comparable = pair.cur.sum() > 0 and pair.ref.sum() > 0  # an all-null window has no distribution
        out.append(FeatureDrift(
            feature=name, importance=profile.importance.get(name, 0.0), rows=counts.rows,
            null_rate=counts.nulls / counts.rows, reference_null_rate=ref_null,
            stats={s: evaluate(s, pair) if comparable else math.nan for s in stats}, implicated=name in implicated,
        ))
    return sorted(out, key=lambda d: (-_finite_or(d.psi, -1.0), d.feature))


def _scores(profile: ReferenceProfile, during: WindowCounts, after: WindowCounts | None) -> ScoreDistribution | None:
    reference = profile.score
    ref = np.asarray(reference.counts, dtype=np.float64)
    series = [("reference", [float(v) for v in ref / max(ref.sum(), 1.0)])]
    psi: dict[str, float] = {}
    rows = {"reference": int(ref.sum())}
    alert_rate = {"reference": profile.alert_rate}
    for label, window in (("during", during), ("after", after)):
        counts = window.subjects.get(SCORE_SUBJECT) if window is not None else None
        if window is None or counts is None or counts.counts.sum() == 0:
            continue
        series.append((label, [float(v) for v in counts.counts / counts.counts.sum()]))
        psi[label] = evaluate("psi", numeric_pair(reference, counts))
        rows[label] = int(counts.rows)
        alert_rate[label] = window.scalars.get("alerts", 0.0) / max(window.rows, 1)
    if len(series) == 1:
        return None
    edges = reference.edges
    bins = [f"≤{edges[i]:.3g}" if i < len(edges) else f">{edges[-1]:.3g}" for i in range(len(edges) + 1)]
    return ScoreDistribution(profile.model_version, bins, series, psi, rows, alert_rate)


def _actions(audit: Sequence[Any], plan: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Audit rows in order, each with its plan entry; planned actions that never ran come last."""
    by_audit = {str(p["audit_id"]): p for p in plan if p.get("audit_id")}
    rows = [
        {"audit_id": r.audit_id, "at": r.recorded_at, "actor": r.actor, "action": r.action, "args": r.args,
         "status": r.status, "approval": r.approval, "reason": r.reason, "inverse": r.inverse,
         "message": r.result.get("message"), "plan_status": by_audit.get(r.audit_id, {}).get("status"),
         "why": by_audit.get(r.audit_id, {}).get("why")}
        for r in audit
    ]
    ran = {r["audit_id"] for r in rows}
    for p in plan:
        if not p.get("audit_id") or str(p["audit_id"]) not in ran:
            rows.append({"audit_id": p.get("audit_id"), "at": None, "actor": p.get("decided_by"), "action": p.get("action"),
                         "args": p.get("args"), "status": None, "approval": p.get("approval"), "reason": None,
                         "inverse": None, "message": None, "plan_status": p.get("status"), "why": p.get("why")})
    return rows


def _json(text: Any) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return {"text": str(text)}
    return value if isinstance(value, dict) else {"text": str(value)}


def _float(value: Any) -> float:
    try:
        return float(value) if value is not None and not pd.isna(value) else math.nan
    except (TypeError, ValueError):
        return math.nan


def _finite_or(value: float, default: float) -> float:
    return value if math.isfinite(value) else default


def _num(value: Any) -> str:
    number = _float(value)
    return f"{number:.4g}" if math.isfinite(number) else "–"


def _cut(text: str, limit: int = TEXT_LIMIT) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _seq(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []
