"""Answers built from an incident's record: one function per question the chat answers without a model.

Each takes the `IncidentRecord` (and the question, for the few that pick what to show) and returns an
`Answer`: markdown text quoting the record's numbers, the facts it used, and its sources (audit ids, step
numbers, tables, files). Free text from the record (agent notes, reasons, page summaries) is quoted inert.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from agent.chat.record import CHANGES_LOOKBACK, IncidentRecord
from agent.chat.text import bullets, call, duration, minutes, number, quote, when
from tools.audit import AuditRecord


@dataclass(frozen=True)
class Answer:
    text: str
    facts: dict[str, Any] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)


# Words a question uses for an action, to focus "why did you roll back?" on the rollback.
ACTION_WORDS: dict[str, str] = {
    r"roll\s*-?back|revert|previous (model|version)": "rollback_model",
    r"promot": "promote_model",
    r"quarantin|impute": "quarantine_feature",
    r"releas": "release_feature",
    r"threshold": "set_threshold",
    r"fallback|rules": "enable_fallback_rules",
    r"retrain": "retrain_model",
    r"note": "add_note",
}


def _run_source(record: IncidentRecord) -> list[str]:
    return [f"agent_runs {record.thread}"] if record.thread else []


def _audit_line(row: AuditRecord) -> str:
    result = row.result
    detail = ""
    if row.action == "rollback_model" and "from_version" in result:
        detail = f": champion v{result['from_version']} -> v{result.get('to_version')}"
    elif row.action == "promote_model" and "version" in result:
        detail = f": champion -> v{result['version']}"
    elif row.action == "set_threshold" and "previous_threshold" in result:
        detail = (
            f": threshold {number(result['previous_threshold'])} -> {number(result.get('threshold'))}, "
            f"review threshold {number(result.get('previous_review_threshold'))} -> "
            f"{number(result.get('review_threshold'))}"
        )
    elif row.action == "quarantine_feature" and "imputed_value" in result:
        detail = f": imputed {number(result['imputed_value'])} ({quote(result.get('imputed_from', ''), 80)})"
    elif row.status == "refused":
        detail = f": {quote(result.get('message', ''))}"
    return (
        f"`{row.audit_id}` {when(row.recorded_at)} {call(row.action, row.args)} **{row.status}** "
        f"by {quote(row.actor, 60)}{detail}"
    )


def _audit_fact(row: AuditRecord) -> dict[str, Any]:
    return {
        "audit_id": row.audit_id,
        "action": row.action,
        "args": row.args,
        "status": row.status,
        "actor": row.actor,
        "recorded_at": row.recorded_at.isoformat(),
        "approval": row.approval,
        "result": {k: v for k, v in row.result.items() if k not in ("inverse",)},
    }


def not_investigated(record: IncidentRecord) -> Answer:
    return Answer(
        f"{record.incident_id} has not been investigated yet (no row in `agent_runs`): the record "
        f"holds only the monitor's evidence. Status: **{record.incident.status}**.",
        {"investigated": False, "status": record.incident.status},
        ["incidents", "agent_runs"],
    )


# -- the questions ----------------------------------------------------------------------------------


def why_action(record: IncidentRecord, question: str) -> Answer:
    """Why the responder did what it did (focused on the action the question names, if any)."""
    if not record.state:
        return not_investigated(record)
    wanted = {name for pattern, name in ACTION_WORDS.items() if re.search(pattern, question, re.I)}
    plan = [a for a in record.plan if a.get("action") != "add_note" or "add_note" in wanted]
    chosen = [a for a in plan if a.get("action") in wanted] if wanted else plan
    diagnosis = record.diagnosis
    lines = [
        f"The responder diagnosed **{diagnosis.get('root_cause')}** (confidence "
        f"{number(float(diagnosis.get('confidence', 0.0)))}, {diagnosis.get('planner')} planner) and followed "
        f"runbook **{diagnosis.get('runbook_id')}**: {quote(diagnosis.get('reason', ''))}."
    ]
    if wanted and not chosen:
        done = ", ".join(call(a["action"], a.get("args")) for a in plan) or "nothing"
        lines.append(f"It did not take {' or '.join(sorted(wanted))} for this incident; what it did: {done}.")
    by_id = {row.audit_id: row for row in record.audit}
    sources = _run_source(record)
    for action in chosen:
        row = by_id.get(str(action.get("audit_id")))
        lines.append(
            f"{call(action['action'], action.get('args'))}: {action.get('status')}"
            + (f" (audit {_audit_line(row)})" if row else "")
            + f". Why: {quote(action.get('why', ''))}."
        )
        if row:
            sources.append(row.audit_id)
    sources += [
        f"step {s['n']}" for s in record.steps if s.get("node") in ("diagnose", "plan", "act") and "n" in s
    ]
    facts = {
        "root_cause": diagnosis.get("root_cause"),
        "runbook_id": diagnosis.get("runbook_id"),
        "confidence": diagnosis.get("confidence"),
        "reason": diagnosis.get("reason"),
        "actions": [
            {k: a.get(k) for k in ("action", "args", "status", "audit_id", "why", "approval")} for a in chosen
        ],
    }
    return Answer("\n\n".join(lines), facts, sources)


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
        lines.append(bullets([_audit_line(r) for r in changes]))
    else:
        lines.append("Nothing was changed for this incident.")
    facts = {
        "first_breach_at": first.isoformat(),
        "before": [{**c, "changed_at": c["changed_at"].isoformat()} for c in before],
        "last_before": {**before[-1], "changed_at": before[-1]["changed_at"].isoformat()} if before else None,
        "by_responder": [_audit_fact(r) for r in changes],
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


def paging(record: IncidentRecord, question: str) -> Answer:
    """Whether a human was paged, by which rule and why, and what the outbox holds."""
    decision = record.page_decision
    if not decision:
        if not record.state:
            return not_investigated(record)
        return Answer(
            "The investigation has not decided on paging yet.", {"paged": None}, _run_source(record)
        )
    sent = bool(decision.get("sent"))
    triggers = [p for p in record.pages if p.get("action") == "trigger"]
    if sent:
        text = (
            f"**Yes, a human was paged** (rule `{decision.get('rule')}`, severity {decision.get('severity')}): "
            f"{quote(decision.get('reason', ''))}"
        )
        if triggers:
            text += "\n\nPages in the outbox:\n" + bullets(
                [
                    f"`{p['page_id']}` {when(p['recorded_at'])} {p['action']} via {p['channel']} ({p['status']}): "
                    f"{quote(p['summary'], 200)}"
                    for p in record.pages
                ]
            )
    else:
        text = f"**No page was sent** (rule `{decision.get('rule')}`): {quote(decision.get('reason', ''))}"
    facts = {
        "paged": sent,
        "rule": decision.get("rule"),
        "reason": decision.get("reason"),
        "page_id": decision.get("page_id"),
        "severity": decision.get("severity"),
        "pages": [
            {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in p.items()} for p in record.pages
        ],
    }
    sources = [*_run_source(record), "pages", *[str(p["page_id"]) for p in record.pages]]
    sources += [f"step {s['n']}" for s in record.steps if s.get("node") == "decide_page" and "n" in s]
    return Answer(text, facts, sources)


def root_cause(record: IncidentRecord, question: str) -> Answer:
    """The diagnosis: root cause, confidence, runbook, and the evidence it cites."""
    if not record.state:
        return not_investigated(record)
    d = record.diagnosis
    abstained = bool(d.get("abstained"))
    head = (
        "The responder **abstained**: no runbook fit with confidence."
        if abstained
        else f"Root cause: **{d.get('root_cause')}**, confidence **{number(float(d.get('confidence', 0.0)))}** "
        f"({d.get('planner')} planner, runbook {d.get('runbook_id')})."
    )
    evidence = [quote(e, 160) for e in d.get("evidence", [])[:6]]
    text = (
        head
        + f"\n\nWhy: {quote(d.get('reason', ''))}"
        + ("\n\nEvidence:\n" + bullets(evidence) if evidence else "")
    )
    facts = {
        k: d.get(k)
        for k in ("root_cause", "confidence", "runbook_id", "planner", "abstained", "reason", "evidence")
    }
    steps = [f"step {s['n']}" for s in record.steps if s.get("node") == "diagnose" and "n" in s]
    return Answer(text, facts, [*_run_source(record), *steps])


def verified(record: IncidentRecord, question: str) -> Answer:
    """Whether the fix verified: the check re-run after the action, its window and findings."""
    v = record.verification
    if not v:
        return (
            not_investigated(record)
            if not record.state
            else Answer("Nothing has been verified yet.", {"status": None}, _run_source(record))
        )
    findings = [
        f"{f.get('metric')} = {number(f.get('value'))} (threshold {number(f.get('threshold'))}, "
        f"{'breached' if f.get('breached') else 'clean'})"
        for f in v.get("findings", [])[:4]
    ]
    status = v.get("status")
    head = {
        "verified": "**Yes, the fix verified.**",
        "failed": "**No: verification failed.**",
        "pending": "**Not yet**: verification is waiting for data.",
        "not_applicable": "**Nothing to verify**: nothing was changed.",
    }.get(str(status), f"Status: {status}.")
    text = (
        f"{head} Check `{v.get('check')}` re-run on {when(v.get('since'))} .. {when(v.get('until'))} "
        f"({v.get('attempts')} evaluation(s)): {quote(v.get('reason', ''))}"
    )
    if findings:
        text += "\n\n" + bullets(findings)
    facts = {
        k: v.get(k)
        for k in ("status", "check", "since", "until", "deadline", "attempts", "reason", "findings")
    }
    steps = [f"step {s['n']}" for s in record.steps if s.get("node") == "verify" and "n" in s]
    return Answer(text, facts, [*_run_source(record), *steps])


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
    return Answer(text, facts, ["incidents.evidence", *_run_source(record)])


def runbook(record: IncidentRecord, question: str) -> Answer:
    """Which runbook the responder followed and what it allows."""
    book = record.runbook
    if book is None:
        matched = ", ".join(m.get("runbook_id", "?") for m in record.state.get("matches", [])) or "none"
        return Answer(
            f"No runbook was followed for {record.incident_id} (matches: {matched}).",
            {"runbook_id": None},
            _run_source(record),
        )
    allowed = ", ".join(f"{a} ({p})" for a, p in book.actions.items())
    text = (
        f"Runbook **{book.id}**: {quote(book.title, 160)}. Root cause {book.root_cause}; allows {allowed}; "
        f"verifies with check `{book.verification.check}` within {book.verification.within}; paging "
        f"`{book.paging}`. Use `/runbook` for its text."
    )
    facts = {
        "runbook_id": book.id,
        "title": book.title,
        "actions": dict(book.actions),
        "verification": {"check": book.verification.check, "within": book.verification.within},
        "paging": book.paging,
    }
    return Answer(text, facts, [str(book.path or f"runbook {book.id}")])


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
            f" (`selfheal report {record.incident_id}` rewrites it; the service shows it at "
            f"/incidents/{record.incident_id}/report)."
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
    return Answer(text, facts, ["incidents", *_run_source(record)])


def actions(record: IncidentRecord, question: str) -> Answer:
    """Every action the audit log records for the incident."""
    rows = record.audit
    if not rows:
        return Answer(
            f"The audit log holds no action for {record.incident_id}.", {"actions": []}, ["audit_log"]
        )
    text = f"{len(rows)} audit row(s) for {record.incident_id}:\n\n" + bullets([_audit_line(r) for r in rows])
    return Answer(text, {"actions": [_audit_fact(r) for r in rows]}, [r.audit_id for r in rows])


def steps(record: IncidentRecord, question: str) -> Answer:
    """What the investigation did, step by step (tool calls and decisions)."""
    if not record.state:
        return not_investigated(record)
    lines = [
        f"{s.get('n')}. {s.get('node')}: {s.get('kind')} `{s.get('name')}`"
        + ("" if s.get("ok", True) else " (failed)")
        + (f": {quote(s.get('note') or '', 140)}" if s.get("note") else "")
        for s in record.steps
    ]
    tools = [
        s.get("name") for s in record.steps if s.get("kind") == "tool" and s.get("node") == "investigate"
    ]
    text = (
        f"{len(record.steps)} steps, {len(tools)} read tool call(s) ({', '.join(map(str, tools))}):\n\n"
        + "\n".join(lines)
    )
    return Answer(text, {"steps": len(record.steps), "tool_calls": tools}, _run_source(record))
