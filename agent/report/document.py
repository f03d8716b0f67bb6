"""One small document model of a report (sections of paragraphs, code, tables and figures).

`sections(data)` decides what a report says and in which order; the markdown and HTML renderers only
turn its blocks into text, so both formats always say the same thing. `agent.charts` draws the figures.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from agent import charts
from agent.report.data import ReportData, _cut, _num, _seq

__all__ = ["Block", "Cell", "Code", "Figure", "Para", "Table", "sections"]


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


def sections(data: ReportData) -> list[tuple[str, list[Block]]]:
    """The report's sections in order, each a title and its blocks."""
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

