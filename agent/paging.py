"""The page decision (a policy in code the planner can inform but not override) and the page summary.

Rules, first that fires wins:

| rule | page | when |
|---|---|---|
| ``abstained`` | yes | no runbook fits the evidence, or two fit equally and disagree: a human decides |
| ``remediation_failed`` | yes | an action the plan needed was refused or failed, or a human denied it |
| ``runbook_always`` | yes | the runbook says a human must act whatever the platform did (upstream outages) |
| ``unverified`` | yes | the fix did not verify and the incident is high/critical or the runbook pages if unverified |
| ``agent_degraded`` | yes | the LLM planner was unavailable or stopped by a budget; the deterministic planner took over |
| ``fixed_and_verified`` | no | remediation applied and the verification check is back under its threshold |
| ``no_action_needed`` | no | the runbook's answer is to watch and note (benign shifts), and it never pages |
| ``low_severity_unverified`` | no | not verified, but low/medium severity and the runbook does not ask for a page |
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from agent.state import PageDecision, ResponderState
from tools.runbooks import Runbook

APPLIED = ("applied", "repeat")
FAILED = ("refused", "failed", "denied")
HIGH = ("high", "critical")


def decide_page(state: ResponderState, runbook: Runbook | None) -> PageDecision:
    """Whether to page a human, by which rule, and why (one sentence a human reads)."""
    incident = state.get("incident", {})
    severity = str(incident.get("severity") or (runbook.severity if runbook else "high"))
    diagnosis = state.get("diagnosis", {})
    plan = state.get("plan", [])
    verification = state.get("verification", {})
    verified = verification.get("status") == "verified"
    failed = [a for a in plan if a.get("status") in FAILED]
    changes = [a for a in plan if a.get("status") in APPLIED and a.get("action") != "add_note"]

    def decision(page: bool, rule: str, reason: str) -> PageDecision:
        return {"page": page, "rule": rule, "reason": reason, "severity": severity, "page_id": None, "sent": False}

    if runbook is None or diagnosis.get("abstained"):
        return decision(True, "abstained", f"no runbook could be applied with confidence: {diagnosis.get('reason', 'no match')}")
    if failed:
        names = ", ".join(f"{a['action']} ({a.get('status')})" for a in failed)
        return decision(True, "remediation_failed", f"remediation did not go through: {names}")
    if runbook.paging == "always":
        return decision(True, "runbook_always", f"runbook {runbook.id} says a human must act: {_escalate_line(runbook)}")
    if changes and not verified and (severity in HIGH or runbook.paging == "if_unverified"):
        return decision(True, "unverified", f"the fix did not verify: {verification.get('reason', 'no verification')}")
    if state.get("degraded"):
        return decision(True, "agent_degraded", "the responder degraded: " + "; ".join(state.get("degraded", [])))
    if changes and verified:
        done = ", ".join(action_text(a) for a in changes)
        return decision(False, "fixed_and_verified", f"fixed and verified without a human: {done}; {verification.get('reason')}")
    if not changes:
        return decision(False, "no_action_needed", f"runbook {runbook.id} needs no change (paging {runbook.paging}): {diagnosis.get('reason', '')}")
    return decision(False, "low_severity_unverified", f"{severity} severity and runbook {runbook.id} pages {runbook.paging}; not verified yet")


def action_text(action: Mapping[str, Any]) -> str:
    """``rollback_model(to_version=1)``: an action as a person reads it in a page."""
    args = ", ".join(f"{k}={v}" for k, v in (action.get("args") or {}).items() if k not in ("reason", "text"))
    return f"{action['action']}({args})"


def _escalate_prose(runbook: Runbook) -> str:
    """The first paragraph of the runbook's Escalate section (people's words, no fenced steps or headings)."""
    section = runbook.section("escalate")
    text = re.sub(r"```.*?```", "", section.text, flags=re.S) if section else ""
    prose = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")).strip()
    return prose.split("\n\n")[0]


def _escalate_line(runbook: Runbook) -> str:
    """The first sentence of the Escalate section: what the human is asked to do."""
    prose = _escalate_prose(runbook)
    first = re.split(r"(?<=[.!?])\s", prose, maxsplit=1)[0] if prose else "see the runbook"
    return first.replace("\n", " ")[:300]


def next_steps(runbook: Runbook | None, decision: PageDecision) -> str:
    """What the human should do next, from the runbook's Escalate prose (authored by people)."""
    if runbook is None:
        return "Investigate by hand: no runbook fits. Start from the evidence below and `selfheal chat`."
    prose = _escalate_prose(runbook)
    if not decision.get("page"):
        return f"Nothing now. {prose}"
    return prose or "Follow the runbook."


def summary_markdown(state: ResponderState, runbook: Runbook | None, decision: PageDecision, report_url: str) -> str:
    """The page / incident summary an on-call engineer can act on in thirty seconds."""
    incident = state.get("incident", {})
    evidence = incident.get("evidence") or {}
    diagnosis = state.get("diagnosis", {})
    verification = state.get("verification", {})
    lines = [
        f"## {incident.get('incident_id')}: {incident.get('title')}",
        "",
        f"**What broke.** {incident.get('kind')} on `{incident.get('subject')}` since "
        f"{incident.get('first_breach_at')}; root cause **{diagnosis.get('root_cause', 'unknown')}** "
        f"(confidence {float(diagnosis.get('confidence', 0.0)):.2f}, runbook `{diagnosis.get('runbook_id')}`, "
        f"{diagnosis.get('planner', 'deterministic')} planner).",
        "",
        "**Evidence.**",
        f"- {evidence.get('metric', 'metric')} = {_number(evidence.get('value'))} against threshold "
        f"{_number(evidence.get('threshold'))}" + (f"; features {evidence.get('features')}" if evidence.get("features") else ""),
    ]
    lines += [f"- {item}" for item in diagnosis.get("evidence", [])[:6]]
    lines += ["", "**What was done.**"]
    plan = state.get("plan", [])
    if not plan:
        lines.append("- nothing changed")
    for action in plan:
        audit = f" (audit `{action['audit_id']}`)" if action.get("audit_id") else ""
        lines.append(f"- {action_text(action)}: {action.get('status')}{audit}")
    lines += [
        "",
        f"**Verified.** {verification.get('status', 'not applicable')}: {verification.get('reason', 'no change to verify')}",
        "",
        f"**Page.** {'sent' if decision.get('page') else 'not sent'} ({decision.get('rule')}): {decision.get('reason')}",
        "",
        f"**What to do next.** {next_steps(runbook, decision)}",
        "",
        f"**Report.** {report_url}",
    ]
    if state.get("degraded"):
        lines += ["", "**Responder degraded.** " + "; ".join(state.get("degraded", []))]
    return "\n".join(lines)


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
