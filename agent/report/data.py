"""The incident report: written when an incident closes, as markdown and as one self-contained HTML file.

`build_report_data` gathers what happened from the store (the incident and its timeline, the monitor's
stored windows and findings, the audit log, the pager outbox) and, when there is one, from the
responder's graph state (steps, diagnosis, plan, verification, page decision). It computes nothing the
monitor does not: per-feature drift and the score distribution are the monitor's stored hourly counts
added up with `monitor.counts.sum_windows` and compared with the model's `ReferenceProfile` through
`monitor.checks.numeric_pair` / `categorical_pair` and `monitor.stats.evaluate`.

`render_markdown` and `render_html` turn the same `ReportData` into text through one small document
model (`agent.charts` draws the SVG), so both formats always say the same thing. Everything that comes
from incident data or from the agent (titles, notes, merchant names, model output) is untrusted: the
HTML escapes it and forbids every fetch with a Content-Security-Policy, the markdown escapes it or
quotes it as code, so it reads as data and never as markup, links or instructions.

Output is deterministic for the same store, state and ``now`` (only the generated-at line moves).
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from agent import charts
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
    "MetricSeries",
    "ReportData",
    "ReportPaths",
    "ScoreDistribution",
    "TimelineEntry",
    "build_report_data",
    "render_html",
    "render_markdown",
    "write_report",
]

HOUR = timedelta(hours=1)
MIN_CONTEXT, MAX_CONTEXT = timedelta(hours=6), timedelta(hours=24)  # before/after shown around the span
MONITOR_EVENTS = frozenset({"opened", "breach", "reopened", "cleared", "folded"})
TEXT_LIMIT = 240
_INCIDENT_ID = re.compile(r"^INC-\d+$")


@dataclass(frozen=True)
class ReportPaths:
    markdown: Path
    html: Path


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


# -- writing --------------------------------------------------------------------------------------


def write_report(
    store: Store,
    registry: ModelRegistry,
    incident_id: str,
    state: Mapping[str, Any] | None,
    out_dir: Path,
    *,
    now: datetime,
) -> ReportPaths:
    """Write ``<out_dir>/INC-n.md`` and ``<out_dir>/INC-n.html`` (normally the workspace's reports dir).

    Args:
        store: The workspace database.
        registry: The model registry (reference profiles live in model metadata).
        incident_id: The incident, e.g. "INC-7".
        state: The responder's graph state (plain dicts), or None to report from the store alone.
        out_dir: Where to write; created if missing.
        now: The generated-at time (platform clock), the only thing that differs between two runs.

    Raises:
        KeyError: There is no such incident.
    """
    data = build_report_data(store, registry, incident_id, state, now=now)
    name = data.incident.incident_id
    if not _INCIDENT_ID.match(name):  # the file name comes from the store: never let it leave out_dir
        raise ValueError(f"refusing to write a report named {name!r}")
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = ReportPaths(markdown=out_dir / f"{name}.md", html=out_dir / f"{name}.html")
    paths.markdown.write_text(render_markdown(data), encoding="utf-8")
    paths.html.write_text(render_html(data), encoding="utf-8")
    return paths


# -- rendering: one small document model, two renderers -------------------------------------------


@dataclass(frozen=True)
class Code:
    """Text quoted verbatim (JSON arguments, model output): a code span or block, never markup."""

    text: str


Cell = str | Code
DATE = "%Y-%m-%d %H:%M"
CHART_TITLES = {
    "timeline": "Timeline",
    "metric": "Key metric before / during / after",
    "drift": "Per-feature drift during the incident (PSI)",
    "scores": "Score distribution: reference vs during / after the incident",
}


@dataclass(frozen=True)
class Table:
    headers: tuple[str, ...]
    rows: list[list[Cell]]


@dataclass(frozen=True)
class Para:
    text: str


@dataclass(frozen=True)
class Figure:
    chart: str
    svg: str
    missing: str | None = None  # why the chart has no data


Block = Table | Para | Code | Figure


def _when(value: datetime | None) -> str:
    return "–" if value is None else f"{value:{DATE}}"


def _compact(value: Any, limit: int = 160) -> Code:
    return Code(_cut(json.dumps(value, sort_keys=True, default=str, ensure_ascii=False), limit))


def _document(data: ReportData) -> list[tuple[str, list[Block]]]:
    inc, state = data.incident, data.state or {}
    diagnosis, verification, decision = _map(state, "diagnosis"), _map(state, "verification"), _map(state, "page_decision")
    no_state = data.state is None
    absent = Para("No agent state was given: this part of the report comes from the store alone.")
    duration = data.span[1] - data.span[0]
    overview = Table(("field", "value"), [
        ["kind", inc.kind], ["subject", inc.subject], ["severity", inc.severity], ["status", inc.status],
        ["model version", str(inc.model_version)], ["dedup key", Code(inc.dedup_key)],
        ["first breach", _when(inc.first_breach_at)], ["opened", _when(inc.opened_at)], ["closed", _when(inc.closed_at)],
        ["incident span", f"{_when(data.span[0])} → {_when(data.span[1])} ({duration.total_seconds() / 3600:.1f} h)"],
        ["root cause", str(inc.root_cause or diagnosis.get("root_cause") or "not named")],
        ["outcome", str(state.get("outcome") or "–")],
        ["verification", str(verification.get("status") or "–")],
        ["paged", "–" if not decision else f"{'yes' if decision.get('page') else 'no'} ({decision.get('rule', '')})"],
        ["agent steps / tool calls", f"{len(data.steps)} / {data.tool_calls}"],
        ["generated at", _when(data.generated_at)],
    ])
    summary = state.get("summary") or inc.summary
    evidence: list[list[Cell]] = [[str(k), _compact(v)] for k, v in sorted(inc.evidence.items())]
    return [
        ("Overview", [Para(inc.title), overview]),
        ("Summary", [Code(str(summary)) if summary else Para("No summary was written.")]),
        ("Evidence", [Table(("key", "value"), evidence)]),
        ("Timeline", [_figure(data, "timeline"), Table(("time", "source", "event", "detail"), [
            [_when(e.at) + (f" … {_when(e.until)} (×{e.count})" if e.count > 1 else ""), e.source, e.event, e.text]
            for e in data.timeline])]),
        ("Key metric", _metric_blocks(data)),
        ("Per-feature drift", _drift_blocks(data)),
        ("Score distribution", _score_blocks(data)),
        ("Diagnosis", [absent] if no_state else [
            Table(("field", "value"), [[k, str(diagnosis.get(k, "–"))] for k in
                                       ("root_cause", "runbook_id", "confidence", "abstained", "planner", "reason")]),
            Table(("#", "evidence"), [[str(i + 1), str(e)] for i, e in enumerate(_seq(diagnosis.get("evidence")))]),
        ]),
        ("Agent steps and tool calls", [absent] if no_state else [
            Para(f"{len(data.steps)} steps, {data.tool_calls} tool calls."),
            Table(("#", "node", "kind", "name", "arguments", "ok", "output"), [
                [str(s.get("n", "")), str(s.get("node", "")), str(s.get("kind", "")), str(s.get("name", "")),
                 _compact(s.get("args", {})), str(s.get("ok", "")), Code(_cut(str(s.get("error") or s.get("output") or "")))]
                for s in data.steps]),
        ]),
        ("Actions", [Table(("audit id", "time", "actor", "action", "arguments", "result", "approval", "plan", "why", "inverse"), [
            [Code(str(a["audit_id"] or "–")), _when(a["at"]), str(a["actor"] or "–"), str(a["action"]), _compact(a["args"]),
             str(a["status"] or "not run") + (f": {a['message']}" if a["message"] else ""), str(a["approval"] or "–"),
             str(a["plan_status"] or "–"), _cut(str(a["why"] or a["reason"] or "–")), _compact(a["inverse"])]
            for a in data.actions]) if data.actions else Para("No actions were taken.")]),
        ("Verification", [absent] if no_state else [
            Table(("field", "value"), [[k, str(verification.get(k, "–"))] for k in
                                       ("status", "check", "since", "until", "attempts", "reason")]),
            Table(("subject", "value", "threshold", "breached"), [
                [str(f.get("subject", "")), _num(f.get("value")), _num(f.get("threshold")), str(f.get("breached", ""))]
                for f in _seq(verification.get("findings")) if isinstance(f, Mapping)]),
        ]),
        ("Paging", [
            absent if no_state else Table(("field", "value"), [[k, str(decision.get(k, "–"))] for k in
                                                                ("page", "rule", "reason", "severity", "page_id")]),
            Table(("page id", "time", "channel", "status", "severity", "summary"), [
                [Code(p["page_id"]), _when(p["at"]), str(p["channel"]),
                 str(p["status"]) + (f": {p['error']}" if p["error"] else ""), str(p["severity"]), _cut(str(p["summary"]))]
                for p in data.pages]) if data.pages else Para("No page was sent."),
        ]),
        ("Limits", [absent] if no_state else [
            Para("Degraded: " + ("; ".join(str(d) for d in _seq(state.get("degraded"))) or "no")),
            Table(("usage", "value"), [[str(k), _num(v)] for k, v in sorted(_map(state, "usage").items())]),
        ]),
    ]


def _map(state: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    """A record of the state, or empty when absent or not a record (the state is data, not a contract)."""
    value = state.get(key)
    return value if isinstance(value, Mapping) else {}


def _seq(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []


def _figure(data: ReportData, chart: str) -> Figure:
    title = CHART_TITLES[chart]
    if chart in data.missing:
        return Figure(chart, charts.no_data(chart, title, data.missing[chart]), data.missing[chart])
    start, end = data.view
    if chart == "timeline":
        lanes = ["monitor", "action", "page"]
        lanes += sorted({e.source for e in data.timeline} - set(lanes))
        events = [charts.TimelineEvent(at, e.source, e.event, e.text)
                  for e in data.timeline for at in ([e.at] if e.until is None else [e.at, e.until])]
        first, last = min([start, *(e.at for e in events)]), max([end, *(e.at for e in events)])
        svg = charts.timeline_chart(chart, title, events, start=first, end=last, lanes=lanes, span=data.span)
    elif chart == "metric" and data.metric is not None:
        metric = data.metric
        line = charts.Line(metric.name, [(p.start + (p.end - p.start) / 2, p.value) for p in metric.points])
        markers = [charts.Marker(a["at"], str(a["action"])) for a in data.actions if a["at"] and a["status"] == "applied"]
        svg = charts.line_chart(chart, f"{title}: {metric.name}", [line], start=start, end=end, span=data.span,
                                threshold=metric.threshold, markers=markers)
    elif chart == "drift":
        bars = [(d.feature, d.psi, d.implicated) for d in data.drift[:12]]
        svg = charts.bar_chart(chart, title, bars, guides=[(0.1, "0.1 moderate"), (0.25, "0.25 major")])
    elif chart == "scores" and data.scores is not None:
        svg = charts.paired_histogram(chart, f"{title} (model v{data.scores.model_version})", data.scores.bins,
                                      data.scores.series)
    else:  # pragma: no cover - gathering records a reason for every chart it leaves empty
        raise ValueError(f"no data and no reason for chart {chart!r}")
    return Figure(chart, svg)


def _metric_blocks(data: ReportData) -> list[Block]:
    metric = data.metric
    if metric is None:
        return [_figure(data, "metric")]
    return [
        _figure(data, "metric"),
        Para(f"{metric.name}, from {metric.source}; threshold {_num(metric.threshold)}."),
        Table(("phase", "windows", "mean", "peak"),
              [[p.phase, str(p.windows), _num(p.mean), _num(p.peak)] for p in metric.phases]),
    ]


def _drift_blocks(data: ReportData) -> list[Block]:
    if not data.drift:
        return [_figure(data, "drift")]
    names = sorted({s for d in data.drift for s in d.stats})
    return [
        _figure(data, "drift"),
        Para("Each feature over the whole incident span against the model's whole reference profile (the "
             "monitor's daily check also matches weekdays and weekends); nulls are left out of the distribution "
             "and shown as their own rate."),
        Table(("feature", "named", "importance", "rows", "null rate", "reference null rate", *names), [
            [d.feature, "yes" if d.implicated else "", _num(d.importance), str(d.rows), _num(d.null_rate),
             _num(d.reference_null_rate), *(_num(d.stats.get(n)) for n in names)] for d in data.drift]),
    ]


def _score_blocks(data: ReportData) -> list[Block]:
    scores = data.scores
    if scores is None:
        return [_figure(data, "scores")]
    return [_figure(data, "scores"), Table(("distribution", "rows", "alert rate", "PSI vs reference"), [
        [label, str(scores.rows.get(label, "")), _num(scores.alert_rate.get(label)), _num(scores.psi.get(label))]
        for label, _ in scores.series])]


# Markdown: escape what CommonMark/GFM would read as markup; code goes in spans or fences long enough.
# An underscore between two letters or digits can neither open nor close emphasis, so names like
# terminal_risk_7d stay readable; brackets are escaped, so parentheses can never become a link.
_MD_SPECIAL = re.compile(r"[\\`*<>\[\]|~&]|(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])")
# A line start that would begin a list, heading or thematic break ("- x", "1. x", "# x", "---").
_MD_LINE_START = re.compile(r"^(?:([-+=#])(?=[\s\-=#]|$)|(\d{1,9})([.)])(?=\s|$))")


def md_text(text: str) -> str:
    """Untrusted text as inert markdown on one line: no emphasis, links, HTML, headings or lists."""
    escaped = _MD_SPECIAL.sub(lambda m: "\\" + m.group(0), " ".join(str(text).split()))
    return _MD_LINE_START.sub(lambda m: f"\\{m.group(1)}" if m.group(1) else f"{m.group(2)}\\{m.group(3)}", escaped)


def _md_code(text: str, *, block: bool = False) -> str:
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    if block:
        fence = "`" * max(3, longest + 1)
        return f"{fence}text\n{text}\n{fence}"
    flat = " ".join(text.split()).replace("|", "\\|")  # a bar would end the table cell, even inside code
    ticks = "`" * (longest + 1)
    return f"{ticks} {flat} {ticks}" if flat else "–"


def _md_cell(cell: Cell) -> str:
    return _md_code(cell.text) if isinstance(cell, Code) else md_text(cell) or "–"


def render_markdown(data: ReportData) -> str:
    """The report as GitHub-flavoured markdown (charts are in the HTML file; the numbers are here too)."""
    inc = data.incident
    out = [f"# {inc.incident_id}: {md_text(inc.kind)} on {md_text(inc.subject)}", "",
           f"Generated {_when(data.generated_at)} by selfheal. Text from incident data is quoted as data.", ""]
    for title, blocks in _document(data):
        out += [f"## {title}", ""]
        for block in blocks:
            if isinstance(block, Para):
                out += [md_text(block.text), ""]
            elif isinstance(block, Code):
                out += [_md_code(block.text, block=True), ""]
            elif isinstance(block, Figure):
                shown = f"No data: {md_text(block.missing)}" if block.missing else f"Chart `{block.chart}`: see the HTML report."
                out += [shown, ""]
            elif block.rows:
                out.append("| " + " | ".join(block.headers) + " |")
                out.append("|" + "---|" * len(block.headers))
                out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
                out.append("")
    return "\n".join(out).rstrip() + "\n"


CSS = """
body{font-family:system-ui,sans-serif;margin:0;background:#f3f4f6;color:#111827;font-size:14px}
main{max-width:1000px;margin:0 auto;padding:24px;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #e5e7eb;padding-bottom:4px}
.meta{color:#6b7280;margin:0 0 12px}table{border-collapse:collapse;width:100%;margin:8px 0;font-size:12.5px}
th,td{border:1px solid #e5e7eb;padding:4px 6px;text-align:left;vertical-align:top;overflow-wrap:break-word}
td code{overflow-wrap:anywhere}
th{background:#f9fafb}code,pre{font-family:ui-monospace,monospace;font-size:12px;background:#f3f4f6}
pre{padding:8px;white-space:pre-wrap;overflow-wrap:anywhere}figure{margin:8px 0}svg{max-width:100%;height:auto}
"""


def _html_cell(cell: Cell) -> str:
    return f"<code>{_e(cell.text)}</code>" if isinstance(cell, Code) else _e(cell)


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def render_html(data: ReportData) -> str:
    """The report as one HTML file: inline CSS and SVG, no script, and a policy that forbids any fetch."""
    inc = data.incident
    out = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        # Defence in depth: even if something slipped through escaping, the page can load and run nothing.
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">",
        f"<title>{_e(inc.incident_id)}: {_e(inc.kind)} on {_e(inc.subject)}</title><style>{CSS}</style></head>",
        f"<body><main><h1>{_e(inc.incident_id)}: {_e(inc.kind)} on {_e(inc.subject)}</h1>",
        f'<p class="meta">Generated {_when(data.generated_at)} by selfheal. Text from incident data is quoted as data.</p>',
    ]
    for title, blocks in _document(data):
        out.append(f'<section data-section="{_e(title)}"><h2>{_e(title)}</h2>')
        for block in blocks:
            if isinstance(block, Para):
                out.append(f"<p>{_e(block.text)}</p>")
            elif isinstance(block, Code):
                out.append(f"<pre>{_e(block.text)}</pre>")
            elif isinstance(block, Figure):
                out.append(f"<figure>{block.svg}</figure>")
            elif block.rows:
                head = "".join(f"<th>{_e(h)}</th>" for h in block.headers)
                body = "".join("<tr>" + "".join(f"<td>{_html_cell(c)}</td>" for c in row) + "</tr>" for row in block.rows)
                out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        out.append("</section>")
    out.append("</main></body></html>")
    return "\n".join(out) + "\n"
