"""Actions asked for in chat that wait for a person: listed, then approved (run) or denied.

An action asked for in chat whose runbook says ``approval: human`` is not run: `agent.chat.actions` writes it
to the audit log with status ``pending_approval`` (``via: chat``). This module is the other half, what
``selfheal approve INC-7 --request ID --by alice`` (and the service's approve / deny with ``request``) call:

- `open_requests`: the incident's chat requests that no decision row answers yet, oldest first;
- `decide_request`: approving runs the action through its tool with approval ``human:<who>`` and the approver as
  the actor (its preconditions and rate limits still apply and may refuse it); denying runs nothing. Either
  way a decision row (status ``approved`` / ``denied``, ``request``: the asked-for row's audit id) closes
  the request, so it is decided once.

Crash safety: an approval runs the tool first (idempotent on incident, action and arguments) and records the
decision after. A crash in between leaves the request open; approving it again finds the applied action and
reports it as a repeat, so nothing is done twice.
"""

from __future__ import annotations

from typing import Any, Literal

from agent.chat.actions import PENDING, run_through_tool
from agent.chat.parts import ChatParts
from scorer.serving import utc_now
from store import Store
from tools.audit import ActionLog, AuditRecord, bounded_text, idempotency_key

VIA_CHAT = "chat"
DECIDED = ("approved", "denied")


def open_requests(store: Store, incident_id: str) -> list[AuditRecord]:
    """The incident's chat requests that wait for a person's decision, oldest first."""
    rows = ActionLog(store, utc_now).rows(incident_id=incident_id)  # reads only: the clock is never asked
    decided = {
        str(row.result.get("request"))
        for row in rows
        if row.result.get("via") == VIA_CHAT and row.status in DECIDED
    }
    return [
        row
        for row in rows
        if row.status == PENDING and row.result.get("via") == VIA_CHAT and row.audit_id not in decided
    ]


def decide_request(
    parts: ChatParts,
    incident_id: str,
    decision: Literal["approve", "deny"],
    request_id: str,
    *,
    by: str,
    note: str = "",
) -> dict[str, Any]:
    """Approve (run) or deny one open chat request of the incident; returns what happened.

    Args:
        by: Who decides, as the audit log records it (the actor of the action and of the decision row).
        request_id: The request's audit id (the chat's reply gives it).

    Returns:
        ``request``, ``action``, ``args``, ``decision``, ``status`` (``applied``, ``repeat``, ``refused`` or
        ``denied``), ``message``, ``audit_id`` (of the action's row, when one ran) and ``decision_audit_id``.

    Raises:
        KeyError: There is no such incident.
        ValueError: ``request_id`` is not an open chat request of the incident.
    """
    incident_id = parts.incidents.get(incident_id).incident_id  # INC-7 whether asked as 7 or INC-7
    request = _the_request(open_requests(parts.store, incident_id), incident_id, request_id)
    why = f"{decision}d chat request {request.audit_id}" + (f": {note}" if note else "")
    outcome: dict[str, Any] = {
        "request": request.audit_id,
        "action": request.action,
        "args": request.args,
        "decision": decision,
        "audit_id": None,
    }
    if decision == "approve":
        # "human:<who>", as the responder records an approved action (agent.nodes).
        ctx = parts.tool_context(incident_id, actor=by, reason=bounded_text(why), approval=f"human:{by}")
        outcome.update(run_through_tool(parts, ctx, request.action, request.args))
    else:
        outcome.update(status="denied", message=f"{request.action} was not run: denied by {by}")
    decided = ActionLog(parts.store, parts.clock).record(
        actor=by,
        action=request.action,
        incident_id=incident_id,
        args=request.args,
        result={
            "status": "approved" if decision == "approve" else "denied",
            "request": request.audit_id,
            "via": VIA_CHAT,
            "outcome": outcome["status"],
            "action_audit_id": outcome["audit_id"],
        },
        reason=bounded_text(why),
        approval=f"human:{by}",
        idempotency_key=idempotency_key(incident_id, f"decide:{request.audit_id}", {}),
        inverse=None,
    )
    return {**outcome, "decision_audit_id": decided.audit_id}


def _the_request(requests: list[AuditRecord], incident_id: str, request_id: str) -> AuditRecord:
    for request in requests:
        if request.audit_id == request_id:
            return request
    listed = ", ".join(f"{r.audit_id} ({r.action})" for r in requests) or "none"
    raise ValueError(f"{request_id} is not a chat request of {incident_id} that waits for approval (open: {listed})")
