"""Answers about the incident in time and the platform's state: what changed, since when, how long each
phase took, what serves, the monitor's evidence, where the report is, where things stand.

Like `agent.chat.answers`, each takes the `IncidentRecord` and the question and returns an `Answer`.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from agent.chat.answers import Answer, audit_fact, audit_line, run_source
from agent.chat.record import CHANGES_LOOKBACK, IncidentRecord
from agent.chat.text import bullets, duration, minutes, number, quote, when


def what_changed(record: IncidentRecord, question: str) -> Answer:
    """The serving changes before the first breach (the likely trigger) and the ones made for the incident."""
    first = record.incident.first_breach_at
    before = [
        c
        for c in record.serving_changes(first - CHANGES_LOOKBACK, first)
        if c["version"] > 1 and record.incident_id not in c["reason"]
    ]
    lines = []
    if before:
        last = before[-1]
        lines.append(
            f"The last change before the first breach ({when(first)}) was **{duration(first - last['changed_at'])} "
            f"before it**: {_change_line(last)}."
        )
        if len(before) > 1:
            lines.append(f"Earlier, within {CHANGES_LOOKBACK.days} days:")
            lines.append(bullets([_change_line(c) for c in before[-6:-1]]))
    else:
        lines.append(
            f"No serving change (model, threshold, fallback, quarantine) in the {CHANGES_LOOKBACK.days} "
            f"days before the first breach ({when(first)})."
        )
    changes = record.changes()
    if changes:
        lines.append("Changed for this incident:")
        lines.append(bullets([audit_line(r) for r in changes]))
    else:
        lines.append("Nothing was changed for this incident.")
    facts = {
        "first_breach_at": first.isoformat(),
        "before": [{**c, "changed_at": c["changed_at"].isoformat()} for c in before],
        "last_before": {**before[-1], "changed_at": before[-1]["changed_at"].isoformat()} if before else None,
        "by_responder": [audit_fact(r) for r in changes],
    }
    return Answer("\n\n".join(lines), facts, ["serving_state", *[r.audit_id for r in changes]])


def _change_line(change: dict[str, Any]) -> str:
    moved = ", ".join(
        f"{name} {_shown(v['from'])} -> {_shown(v['to'])}" for name, v in change["changed"].items()
    )
    return (
        f"{when(change['changed_at'])} serving state v{change['version']} by {quote(change['changed_by'], 60)}: "
        f"{moved or 'no field changed'} ({quote(change['reason'], 160)})"
    )


def _shown(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(sorted(value)) + "}" if value else "none"
    return number(value)


def since_when(record: IncidentRecord, question: str) -> Answer:
    """When it started, when the incident opened, and whether (and when) it closed."""
    incident = record.incident
    closed = incident.closed_at
    end_text = (
        f"It closed at {when(closed)} ({incident.status}), {duration(closed - incident.first_breach_at)} "
        "after the first breach."
        if closed
        else f"It is still **{incident.status}**."
    )
    text = (
        f"The first breached monitor window was at **{when(incident.first_breach_at)}**; {incident.incident_id} "
        f"opened at {when(incident.opened_at)}. {end_text}"
    )
    facts = {
        "first_breach_at": incident.first_breach_at.isoformat(),
        "opened_at": incident.opened_at.isoformat(),
        "closed_at": closed.isoformat() if closed else None,
        "status": incident.status,
    }
    return Answer(text, facts, ["incidents", "incident_events"])


def serving_now(record: IncidentRecord, question: str) -> Answer:
    """What serves now, and what served when the incident began."""
    if not record.serving:
        return Answer(
            "Nothing has been written to the serving state: no model serves.", {}, ["serving_state"]
        )
    now = record.serving[-1]
    then = record.serving_at(record.incident.first_breach_at)

    def describe(state: Any) -> str:
        quarantined = ", ".join(sorted(state.quarantined_features)) or "none"
        return (
            f"model **v{state.champion_version}**, decline threshold **{number(state.threshold)}**, review "
            f"threshold **{number(state.review_threshold)}**, fallback rules {'ON' if state.fallback else 'off'}, "
            f"quarantined features: {quarantined} (serving state v{state.version}, {when(state.changed_at)} by "
            f"{quote(state.changed_by, 60)})"
        )

    text = f"Serving now: {describe(now)}."
    if then is not None and then.version != now.version:
        text += f"\n\nAt the first breach ({when(record.incident.first_breach_at)}): {describe(then)}."
    facts = {"now": _state_fact(now), "at_first_breach": _state_fact(then) if then is not None else None}
    return Answer(text, facts, ["serving_state"])


def _state_fact(state: Any) -> dict[str, Any]:
    return {
        "version": state.version,
        "champion_version": state.champion_version,
        "threshold": state.threshold,
        "review_threshold": state.review_threshold,
        "fallback": state.fallback,
        "quarantined_features": sorted(state.quarantined_features),
        "changed_at": state.changed_at.isoformat(),
        "changed_by": state.changed_by,
    }


def evidence(record: IncidentRecord, question: str) -> Answer:
    """The monitor's evidence (metric, value, threshold, sample sizes) and what the diagnosis cited."""
    e = record.incident.evidence
    head = (
        f"The monitor's check `{e.get('check')}` found **{e.get('metric')} = {number(e.get('value'))}** against "
        f"threshold {number(e.get('threshold'))} on {record.incident.subject} ({record.incident.kind}, "
        f"severity {record.incident.severity})."
    )
    extra = [
        f"{key}: {number(value)}"
        for key, value in e.items()
        if key not in ("check", "metric", "value", "threshold", "problems") and not isinstance(value, dict)
    ]
    for feature, problem in (e.get("problems") or {}).items():
        extra.append(f"{feature}: " + ", ".join(f"{k} {number(v)}" for k, v in problem.items()))
    text = head + "\n\n" + bullets([quote(x, 200) for x in extra])
    cited = [quote(x, 160) for x in record.diagnosis.get("evidence", [])[:6]]
    if cited:
        text += "\n\nThe diagnosis cites:\n" + bullets(cited)
    facts = {"incident_evidence": e, "diagnosis_evidence": record.diagnosis.get("evidence", [])}
    return Answer(text, facts, ["incidents.evidence", *run_source(record)])


def timing(record: IncidentRecord, question: str) -> Answer:
    """How long detection, mitigation, verification and closing took, from the record's timestamps."""
    incident = record.incident
    changes = record.changes()
    acted = changes[0].recorded_at if changes else None
    until = record.verification.get("until") if record.verification.get("status") == "verified" else None
    verified_at = datetime.fromisoformat(until) if until else None
    start = incident.first_breach_at
    rows = [
        f"first breach {when(start)} -> incident opened {when(incident.opened_at)}: "
        f"**{duration(incident.opened_at - start)}** to detect (after the first breached window)"
    ]
    rows.append(
        f"opened -> first fix ({changes[0].action}, `{changes[0].audit_id}`) {when(acted)}: "
        f"**{duration(acted - incident.opened_at)}** to mitigate"
        if acted
        else "no fix was applied"
    )
    if verified_at and acted:
        rows.append(f"fix -> verified {when(verified_at)}: **{duration(verified_at - acted)}**")
    if incident.closed_at:
        rows.append(
            f"opened -> closed {when(incident.closed_at)}: **{duration(incident.closed_at - incident.opened_at)}**"
        )
    text = bullets(rows) + (
        "\n\nThe fault's own start is not in the record: the monitor sees it at the end of the "
        "first hourly window that breached."
    )
    facts = {
        "first_breach_at": start.isoformat(),
        "opened_at": incident.opened_at.isoformat(),
        "first_action_at": acted.isoformat() if acted else None,
        "verified_at": verified_at.isoformat() if verified_at else None,
        "closed_at": incident.closed_at.isoformat() if incident.closed_at else None,
        "detect_minutes": minutes(incident.opened_at - start),
        "mitigate_minutes": minutes(acted - incident.opened_at) if acted else None,
        "verify_minutes": minutes(verified_at - acted) if verified_at and acted else None,
    }
    return Answer(text, facts, ["incidents", *([changes[0].audit_id] if changes else [])])


def report(record: IncidentRecord, question: str) -> Answer:
    """Where the incident report is."""
    paths = record.report_paths()
    exists = {kind: Path(path).exists() for kind, path in paths.items()}
    if any(exists.values()):
        text = "The report: " + ", ".join(f"`{p}`" for k, p in paths.items() if exists[k])
        text += (
            f" (`selfheal serve` shows it at /ui/incidents/{record.incident_id}; `/report` here shows its summary)."
        )
    else:
        text = f"No report has been written for {record.incident_id} yet (it is written when the investigation ends)."
    return Answer(text, {"paths": paths, "exists": exists}, [p for k, p in paths.items() if exists[k]])


def status(record: IncidentRecord, question: str) -> Answer:
    """Where the incident stands."""
    incident = record.incident
    run = record.run or {}
    text = (
        f"{incident.incident_id} is **{incident.status}** (severity {incident.severity}): {quote(incident.title, 200)}."
        + (
            f" Investigation {run['thread_id']}: {run['status']}, outcome **{run.get('outcome')}**."
            if run
            else " It has not been investigated."
        )
    )
    facts = {
        "status": incident.status,
        "severity": incident.severity,
        "kind": incident.kind,
        "outcome": run.get("outcome"),
        "run_status": run.get("status"),
    }
    return Answer(text, facts, ["incidents", *run_source(record)])
