"""Answers built from an incident's record: one function per question the chat answers without a model.

This module answers about what the responder decided and did (why this action, root cause, paging,
verification, runbook, actions, steps); `agent.chat.state_answers` about time and the platform's state.
Each takes the `IncidentRecord` (and the question, for the few that pick what to show) and returns an
`Answer`: markdown text quoting the record's numbers, the facts it used, and its sources (audit ids, step
numbers, tables, files). Free text from the record (agent notes, reasons, page summaries) is quoted inert.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from agent.chat.record import IncidentRecord
from agent.chat.text import bullets, call, number, quote, when
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


def run_source(record: IncidentRecord) -> list[str]:
    return [f"agent_runs {record.thread}"] if record.thread else []


def audit_line(row: AuditRecord) -> str:
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
    elif row.status in ("approved", "denied") and "request" in result:  # agent.chat.requests
        detail = f": decision on chat request `{quote(str(result['request']), 80)}`"
    return (
        f"`{row.audit_id}` {when(row.recorded_at)} {call(row.action, row.args)} **{row.status}** "
        f"by {quote(row.actor, 60)}{detail}"
    )


def audit_fact(row: AuditRecord) -> dict[str, Any]:
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
    sources = run_source(record)
    for action in chosen:
        row = by_id.get(str(action.get("audit_id")))
        lines.append(
            f"{call(action['action'], action.get('args'))}: {action.get('status')}"
            + (f" (audit {audit_line(row)})" if row else "")
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


def paging(record: IncidentRecord, question: str) -> Answer:
    """Whether a human was paged, by which rule and why, and what the outbox holds."""
    decision = record.page_decision
    if not decision:
        if not record.state:
            return not_investigated(record)
        return Answer("The investigation has not decided on paging yet.", {"paged": None}, run_source(record))
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
    sources = [*run_source(record), "pages", *[str(p["page_id"]) for p in record.pages]]
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
    return Answer(text, facts, [*run_source(record), *steps])


def verified(record: IncidentRecord, question: str) -> Answer:
    """Whether the fix verified: the check re-run after the action, its window and findings."""
    v = record.verification
    if not v:
        return (
            not_investigated(record)
            if not record.state
            else Answer("Nothing has been verified yet.", {"status": None}, run_source(record))
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
    return Answer(text, facts, [*run_source(record), *steps])


def runbook(record: IncidentRecord, question: str) -> Answer:
    """Which runbook the responder followed and what it allows."""
    book = record.runbook
    if book is None:
        matched = ", ".join(m.get("runbook_id", "?") for m in record.state.get("matches", [])) or "none"
        return Answer(
            f"No runbook was followed for {record.incident_id} (matches: {matched}).",
            {"runbook_id": None},
            run_source(record),
        )
    allowed = ", ".join(f"{a} ({p})" for a, p in book.actions.items())
    fallback_check = book.verification.while_fallback
    under_rules = f" (`{fallback_check}` while the fallback rules serve)" if fallback_check else ""
    text = (
        f"Runbook **{book.id}**: {quote(book.title, 160)}. Root cause {book.root_cause}; allows {allowed}; "
        f"verifies with check `{book.verification.check}`{under_rules} within {book.verification.within}; paging "
        f"`{book.paging}`. Use `/runbook` for its text."
    )
    facts = {
        "runbook_id": book.id,
        "title": book.title,
        "actions": dict(book.actions),
        "verification": book.verification.model_dump(exclude_none=True),
        "paging": book.paging,
    }
    return Answer(text, facts, [str(book.path or f"runbook {book.id}")])


def actions(record: IncidentRecord, question: str) -> Answer:
    """Every action the audit log records for the incident."""
    rows = record.audit
    if not rows:
        return Answer(
            f"The audit log holds no action for {record.incident_id}.", {"actions": []}, ["audit_log"]
        )
    text = f"{len(rows)} audit row(s) for {record.incident_id}:\n\n" + bullets([audit_line(r) for r in rows])
    return Answer(text, {"actions": [audit_fact(r) for r in rows]}, [r.audit_id for r in rows])


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
    return Answer(text, {"steps": len(record.steps), "tool_calls": tools}, run_source(record))
