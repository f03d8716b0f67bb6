"""An action asked for in chat goes through the responder's own checks, and every outcome is audited.

The checks, in order (the first that fails refuses the request, and the refusal is an audit-log row):

1. the incident was investigated with a runbook (no runbook: nothing is allowed);
2-4. `agent.runbook_steps.proposal_problem`, the check the LLM planner's `validated_plan` makes too: the
   action is not ``page`` (paging is a policy in code: `agent.paging`), the runbook allows it (its
   allowlist), and the arguments fit the action's schema;
5. the runbook's approval policy: ``human`` means the request is recorded as pending a person's approval
   and **not run** (a person approves or denies it later: `agent.chat.requests`); ``auto`` runs it through the tool itself, whose preconditions and rate limits refuse
   it (audited by `tools.audit.run_action`) or apply it (audited, with its inverse).

The audit row records who asked (the chat's actor), under which approval, and why (the model's reason).
"""

from __future__ import annotations

from typing import Any

from agent.chat.parts import ChatParts
from agent.chat.record import IncidentRecord
from agent.runbook_steps import proposal_problem
from tools.audit import ActionLog, bounded_text, idempotency_key
from tools.context import ToolContext
from tools.errors import ToolError, ToolRefused
from tools.registry import call_tool

REFUSED, PENDING = "refused", "pending_approval"


def approve_hint(incident_id: str, audit_id: str) -> str:
    """The command that approves one waiting request (`agent.chat.requests`; the reply tells the asker)."""
    return f"selfheal approve {incident_id} --request {audit_id} --by NAME"


def request_action(
    parts: ChatParts, record: IncidentRecord, action: str, args: dict[str, Any], why: str, *, actor: str
) -> dict[str, Any]:
    """Check and (when the policy allows) run one action asked for in chat; returns its outcome.

    The outcome: ``action``, ``args``, ``status`` (``applied`` | ``repeat`` | ``refused`` |
    ``pending_approval``), ``message``, ``audit_id``, ``approval``.
    """
    runbook = record.runbook
    reason = bounded_text(f"asked in chat by {actor}: {why}" if why else f"asked in chat by {actor}")

    def not_run(status: str, approval: str, message: str) -> dict[str, Any]:
        return record_not_run(parts, record.incident_id, action, args, actor, reason, status, approval, message)

    if runbook is None:
        return not_run(REFUSED, "n/a", f"{record.incident_id} was not investigated with a runbook, so no action is allowed")
    problem = proposal_problem(runbook, action, args)
    if problem:
        return not_run(REFUSED, "n/a", problem)
    if runbook.approval(action) == "human":
        waiting = not_run(PENDING, "human", f"runbook {runbook.id} requires a human's approval for {action}: it was not run")
        waiting["message"] += f"; a person approves it with `{approve_hint(record.incident_id, waiting['audit_id'])}`"
        return waiting
    ctx = parts.tool_context(record.incident_id, actor=actor, reason=reason, approval="auto")
    ran = run_through_tool(parts, ctx, action, args)
    if ran["status"] == REFUSED and ran["audit_id"] is None:  # refused before the tool ran: record it here
        return not_run(REFUSED, "auto", ran["message"])
    return {"action": action, "args": args, "approval": "auto", **ran}


def run_through_tool(parts: ChatParts, ctx: ToolContext, action: str, args: dict[str, Any]) -> dict[str, Any]:
    """Run one action through its tool (which checks preconditions and audits, `tools.audit.run_action`).

    Returns ``status`` (``applied`` | ``repeat`` | ``refused``), ``message``, ``audit_id`` and, when it ran,
    ``result``. A refusal by a precondition or rate limit carries the tool's audit row; any other tool error
    (bad arguments, say) happened before anything was audited: ``audit_id`` is None.
    """
    try:
        result = call_tool(action, ctx, args).data
    except ToolRefused as refusal:
        latest = ActionLog(parts.store, parts.clock).rows(incident_id=ctx.incident_id, action=action)
        return {"status": REFUSED, "message": str(refusal), "audit_id": latest[-1].audit_id if latest else None}
    except ToolError as error:
        return {"status": REFUSED, "message": str(error)[:400], "audit_id": None}
    status = "repeat" if result.get("repeat") else "applied"
    return {
        "status": status,
        "message": f"{action} {status}",
        "audit_id": result.get("audit_id"),
        "result": {k: v for k, v in result.items() if k != "inverse"},
    }


def record_not_run(
    parts: ChatParts,
    incident_id: str,
    action: str,
    args: dict[str, Any],
    actor: str,
    reason: str,
    status: str,
    approval: str,
    message: str,
) -> dict[str, Any]:
    """Audit a request that did not run (refused, or waiting for a person) and describe it."""
    row = ActionLog(parts.store, parts.clock).record(
        actor=actor,
        action=action,
        incident_id=incident_id,
        args=args,
        result={"status": status, "message": message, "via": "chat"},
        reason=reason,
        approval=approval,
        idempotency_key=idempotency_key(incident_id, action, args),
        inverse=None,
    )
    return {
        "action": action,
        "args": args,
        "status": status,
        "message": message,
        "audit_id": row.audit_id,
        "approval": approval,
    }
