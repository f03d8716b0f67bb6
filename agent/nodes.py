"""The responder's nodes: ``(state, runtime) -> partial update``, one per step of an investigation.

Nodes that change the world (``load_incident``, ``match_runbooks``' note when it waits for labels, ``act``,
``notify``, ``report``) are written to be re-run after a crash: every change goes through an idempotent
door (actions through `tools.audit.run_action`, status changes only when the status differs, files
rewritten whole), so a resumed node repeats nothing.
Code before an `interrupt()` re-runs on resume, so it only reads.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from langgraph.runtime import Runtime
from langgraph.types import interrupt

from agent import paging
from agent.context import AgentRuntime, incident_review_url
from agent.label_evidence import awaits_labels
from agent.planners import deterministic, llm_planner
from agent.runbook_steps import incident_scope, page_arguments, plan_from_runbook, step_record
from agent.state import PlannedAction, ResponderState, StepRecord
from agent.verify import next_wake, verify_fix
from tools.audit import ActionLog, bounded_text, canonical_json, idempotency_key
from tools.errors import ToolError, ToolRefused
from tools.registry import call_tool
from tools.runbooks import Runbook

RUNNABLE = ("planned", "approved")


# -- helpers -----------------------------------------------------------------------------------------


def _runbook(runtime: AgentRuntime, state: ResponderState) -> Runbook | None:
    runbook_id = state.get("diagnosis", {}).get("runbook_id")
    return runtime.runbooks.get(runbook_id) if runbook_id and runbook_id in runtime.runbooks else None


def _scope(runtime: AgentRuntime, state: ResponderState) -> dict[str, Any]:
    return incident_scope(runtime, state["incident_id"], state.get("results"))


def _set_status(
    runtime: AgentRuntime, incident_id: str, status: str, note: str, *, acted_at: str | None = None
) -> None:
    """Change the incident's status once (a re-run node finds it already changed and does nothing).

    An incident the monitor resolved after the run's changes were in force (its condition stayed clear
    for the check's clear-after windows) stays resolved: "mitigated" or "investigating" would put it back
    among the active ones, and the monitor would resolve it a second time an hour later (the demo printed
    INC-2 "resolved by the monitor" twice). The run's own outcome still says what it did. A run that
    acted only after the monitor resolved it (it waited for labels or for a person) does set the status:
    its change (a quarantine, say) must be watched, and undone when the monitor resolves it again.
    """
    incident = runtime.incidents.get(incident_id)
    if incident.status == status:
        return
    if incident.status == "resolved" and status in ("mitigated", "investigating"):
        acted = datetime.fromisoformat(acted_at) if acted_at else None
        if acted is None or incident.closed_at is None or acted <= incident.closed_at:
            return
    runtime.incidents.set_status(incident_id, status, actor="agent", note=note)  # type: ignore[arg-type]


# -- nodes -------------------------------------------------------------------------------------------


def load_incident(state: ResponderState, runtime: Runtime[AgentRuntime]) -> dict[str, Any]:
    rt = runtime.context
    incident = rt.incidents.get(state["incident_id"])
    if incident.status == "open":
        _set_status(rt, incident.incident_id, "investigating", f"{state.get('planner')} responder started")
        rt.side_effect("load_incident", "status:investigating")
    record = step_record("load_incident", "decision", "load_incident", rt, ok=True,
                         note=f"{incident.kind} on {incident.subject}, severity {incident.severity}")
    return {"incident": incident.model_dump(mode="json"), "steps": [record]}


def match_runbooks(state: ResponderState, runtime: Runtime[AgentRuntime]) -> dict[str, Any]:
    rt = runtime.context
    scope = _scope(rt, state)
    matches = rt.runbooks.match(state["incident"]["kind"], scope)
    found = [
        {"runbook_id": m.runbook.id, "root_cause": m.runbook.root_cause, "score": m.score, "reasons": m.reasons}
        for m in matches
    ]
    note = ", ".join(f"{m['runbook_id']} ({m['score']:g})" for m in found) or "none"
    records = [step_record("match_runbooks", "decision", "match_runbooks", rt, ok=True, note=f"matches: {note}")]
    # Nothing claims it yet, but the labels due soon may: wait for them rather than give up (label_evidence).
    why = None if found else awaits_labels(rt.incidents.get(state["incident_id"]), scope["labels"])
    label_wait = None if why is None else {"not_before": scope["labels"]["matures_at"], "reason": why}
    if label_wait is not None:
        records.append(step_record("match_runbooks", "decision", "wait_for_labels", rt, ok=True, note=why))
        # On the incident's timeline too, so whoever looks at it knows why nobody was paged yet. The same
        # text again (a re-match after an early wake-up, a crash) is a repeat, not a second note.
        ctx = rt.tool_context(state["incident_id"], reason="waiting for labels")
        call_tool("add_note", ctx, {"text": f"Waiting for labels before deciding: {why}"})
        rt.side_effect("match_runbooks", "note:wait_for_labels")
    return {"matches": found, "label_wait": label_wait, "steps": records}


def wait_for_labels(state: ResponderState, runtime: Runtime[AgentRuntime]) -> dict[str, Any]:
    """Pause until the labels `match_runbooks` waits for are in; the hourly loop wakes the thread, and the
    runbooks are matched again (a wake-up that comes too early is sent back here by the same check)."""
    waiting = state.get("label_wait") or {}
    interrupt({
        "type": "wait_for_data",
        "incident_id": state["incident_id"],
        "check": "labels",
        "not_before": waiting.get("not_before"),
        "deadline": waiting.get("not_before"),
        "reason": waiting.get("reason"),
    })
    return {}


def investigate(state: ResponderState, runtime: Runtime[AgentRuntime]) -> dict[str, Any]:
    rt = runtime.context
    if state.get("planner") == "llm":
        return llm_planner.investigate(state, rt)
    records, results = deterministic.investigate(state, rt)
    return {"steps": records, "results": results}


def diagnose(state: ResponderState, runtime: Runtime[AgentRuntime]) -> dict[str, Any]:
    rt = runtime.context
    if state.get("planner") == "llm" and state.get("proposal"):
        diagnosis, notes = llm_planner.validated_diagnosis(state, rt)
    else:
        diagnosis, notes = deterministic.diagnose(state["incident"], state.get("matches", []), state.get("steps", [])), []
    record = step_record("diagnose", "decision", "diagnose", rt, ok=True,
                         note=f"root cause {diagnosis['root_cause']} via {diagnosis.get('runbook_id')}: {diagnosis['reason']}")
    update: dict[str, Any] = {"diagnosis": diagnosis, "steps": [record]}
    if notes:
        update["degraded"] = [*state.get("degraded", []), *notes]
    return update


def plan(state: ResponderState, runtime: Runtime[AgentRuntime]) -> dict[str, Any]:
    rt = runtime.context
    runbook = _runbook(rt, state)
    if runbook is None:
        return {"plan": []}
    if state.get("planner") == "llm" and state.get("proposal"):
        actions, notes = llm_planner.validated_plan(state, rt, runbook, _scope(rt, state))
    else:
        actions, notes = plan_from_runbook(runbook, _scope(rt, state))
    records = [step_record("plan", "decision", "plan", rt, ok=True, note=n) for n in notes]
    records.append(step_record("plan", "decision", "plan", rt, ok=True,
                               note="plan: " + (", ".join(a["action"] for a in actions) or "no action")))
    return {"plan": actions, "steps": records}


def request_approval(state: ResponderState, runtime: Runtime[AgentRuntime]) -> dict[str, Any]:
    """Page a person that the plan waits for their approval, before the run pauses for it, when the
    runbook's severity is high or critical (as the page policy pages an unverified fix).

    A run paused for approval used to wait without telling anyone. A low or medium one still waits quietly
    for working hours: `selfheal status` (and `--check`), the web review and the API list what waits for a
    person (a population shift's retrain would otherwise page at night). The page is its own, once per
    incident (`page_for_approval`): the page that says how the incident ended still goes out. Re-run
    after a crash, it finds the page it sent (the audit key) and sends none.
    """
    from tools.actions.notify import page_for_approval

    rt = runtime.context
    incident_id = state["incident_id"]
    incident = state.get("incident", {})
    waiting = [a for a in state.get("plan", []) if a.get("approval") == "human" and a.get("status") == "planned"]
    actions = ", ".join(paging.action_text(a) for a in waiting)
    runbook = _runbook(rt, state)
    severity = runbook.severity if runbook is not None else "high"
    if severity not in paging.HIGH:
        note = f"waits for approval of {actions}; not paged ({severity} severity): `selfheal status` lists it"
        return {"steps": [step_record("request_approval", "decision", "page", rt, ok=True, note=note)]}
    review = incident_review_url(rt.config.public_url, incident_id)
    runbook_id = state.get("diagnosis", {}).get("runbook_id")
    ctx = rt.tool_context(incident_id, reason=f"runbook {runbook_id} needs a person's approval for {actions}")
    result = page_for_approval(
        ctx,
        summary=f"{incident_id} waits for your approval: {actions} ({incident.get('title', '')})",
        severity=str(incident.get("severity") or "high"),  # type: ignore[arg-type]
        details={"page_rule": "approval_needed", "runbook": runbook_id, "actions": [
            {"action": a["action"], "args": a["args"], "why": a.get("why", "")} for a in waiting]},
        body=(f"The investigation of {incident_id} (runbook `{runbook_id}`) waits for a person before it runs "
              f"{actions}.\n\nApprove or deny: `selfheal approve {incident_id} --by NAME` / "
              f"`selfheal deny {incident_id} --by NAME`, or the buttons at {review}"),
    )  # fmt: skip
    rt.side_effect("request_approval", "page")
    record = step_record("request_approval", "tool", "page", rt, ok=True,
                         note=f"paged for approval of {actions}: {result.get('page_id')}")  # fmt: skip
    return {"approval_page": {"page_id": result.get("page_id"), "actions": [a["action"] for a in waiting]},
            "steps": [record]}  # fmt: skip


def approval(state: ResponderState, runtime: Runtime[AgentRuntime]) -> dict[str, Any]:
    """Pause for a human when the runbook's policy says so; ``selfheal approve/deny`` resumes."""
    waiting = [a for a in state.get("plan", []) if a.get("approval") == "human" and a.get("status") == "planned"]
    if not waiting:
        return {}
    answer = interrupt({
        "type": "approval",
        "incident_id": state["incident_id"],
        "actions": [{"action": a["action"], "args": a["args"], "why": a.get("why", "")} for a in waiting],
    })
    decision = str((answer or {}).get("decision", "deny"))
    by = str((answer or {}).get("by", "unknown"))
    status = "approved" if decision == "approve" else "denied"
    decided_at = runtime.context.now_iso()  # after the interrupt: stored with the answer, never re-read
    updated: list[PlannedAction] = []
    for action in state.get("plan", []):
        if action.get("approval") == "human" and action.get("status") == "planned":
            action = {**action, "status": status, "decided_by": by, "decided_at": decided_at}
        updated.append(action)
    note = f"{status} by {by}" + (f": {answer.get('note')}" if isinstance(answer, dict) and answer.get("note") else "")
    record = step_record("approval", "decision", "approval", runtime.context, ok=True, note=note)
    return {"plan": updated, "steps": [record]}


def act(state: ResponderState, runtime: Runtime[AgentRuntime]) -> dict[str, Any]:
    rt = runtime.context
    diagnosis = state.get("diagnosis", {})
    reason = f"{diagnosis.get('root_cause')} ({diagnosis.get('runbook_id')}): {diagnosis.get('reason', '')}"
    runbook = _runbook(rt, state)
    # Action steps that save their result (``save_as``) feed later steps: a promotion guarded by the
    # retrain's ``beats_champion`` cannot be planned before the retrain ran, so it is planned after it.
    saves = {s.line: s.save_as for s in runbook.steps if s.block == "action" and s.save_as} if runbook else {}
    follow_runbook = runbook is not None and not (state.get("planner") == "llm" and state.get("proposal"))
    results = dict(state.get("results") or {})
    updated: list[PlannedAction] = []
    records: list[StepRecord] = []
    acted_at = state.get("acted_at")
    pending = list(state.get("plan", []))
    for _ in range(MAX_FOLLOW_UPS + 1):
        saved = False
        for action in pending:
            if action.get("status") == "denied" and not action.get("audit_id"):
                action = _audit_denial(rt, state["incident_id"], action)
            if action.get("status") not in RUNNABLE:
                updated.append(action)
                continue
            undone = [a for a in updated if a["action"] != "add_note" and a.get("status") in paging.FAILED]
            if action["action"] == "add_note" and undone:
                # A runbook's note after an action records that action as done ("restored 0.5"): after a
                # denial or a refusal the audit log would say what never happened.
                names = ", ".join(f"{a['action']} ({a.get('status')})" for a in undone)
                action = {**action, "status": "skipped", "result": {"message": f"not written: {names} did not happen"}}
                records.append(step_record("act", "decision", "add_note", rt, ok=True, note=action["result"]["message"]))
                updated.append(action)
                continue
            action, record = _run_planned(rt, state["incident_id"], action, reason)
            if action["status"] in ("applied", "repeat"):
                if action["action"] != "add_note":
                    acted_at = rt.now_iso()
                if action.get("step_line") in saves:
                    results[str(saves[action["step_line"]])] = action.get("result", {})
                    saved = True
            records.append(record)
            updated.append(action)
            rt.side_effect("act", action["action"])
        if not (saved and follow_runbook and runbook is not None):
            break
        pending, notes = _follow_ups(rt, state["incident_id"], runbook, results, updated)
        records += [step_record("act", "decision", "plan", rt, ok=True, note=n) for n in notes]
        if not pending:
            break
    return {"plan": updated, "acted_at": acted_at, "steps": records, "results": results}


MAX_FOLLOW_UPS = 3  # rounds of steps planned from an action's saved result (retrain -> promote is one)


def _run_planned(rt: AgentRuntime, incident_id: str, action: PlannedAction, reason: str) -> tuple[PlannedAction, StepRecord]:
    approval_text = f"human:{action['decided_by']}" if action.get("status") == "approved" else "auto"
    ctx = rt.tool_context(incident_id, reason=reason, approval=approval_text)
    try:
        result = call_tool(action["action"], ctx, action["args"]).data
    except ToolRefused as refusal:
        action = {**action, "status": "refused", "result": {"message": str(refusal)}}
    except ToolError as error:
        action = {**action, "status": "failed", "result": {"message": str(error)}}
    else:
        status = "repeat" if result.get("repeat") else "applied"
        action = {**action, "status": status, "audit_id": result.get("audit_id"), "result": result}
    record = step_record("act", "tool", action["action"], rt, args=action["args"],
                         ok=action["status"] in ("applied", "repeat"), output=str(action.get("result", ""))[:400])
    return action, record


def _audit_denial(rt: AgentRuntime, incident_id: str, action: PlannedAction) -> PlannedAction:
    """A row in the audit log for an action a person denied, once: its key names the decision, so the act
    node re-run after a crash finds the row it wrote instead of writing another."""
    by = str(action.get("decided_by", "unknown"))
    key = idempotency_key(incident_id, f"deny:{action['action']}", {
        "args": action["args"], "decided_at": action.get("decided_at"), "step": action.get("step_line")})  # fmt: skip
    log = ActionLog(rt.store, rt.clock)
    row = log.recorded(key) or log.record(
        actor=by, action=action["action"], incident_id=incident_id, args=action["args"],
        result={"status": "denied", "message": f"{action['action']} was not run: denied by {by}"},
        reason=bounded_text(str(action.get("why") or "")), approval=f"human:{by}", idempotency_key=key, inverse=None,
    )  # fmt: skip
    return {**action, "audit_id": row.audit_id}


def _follow_ups(
    rt: AgentRuntime, incident_id: str, runbook: Runbook, results: dict[str, Any], done: list[PlannedAction]
) -> tuple[list[PlannedAction], list[str]]:
    """Runbook actions that can be planned now that earlier actions saved their results, and were not yet.

    Only actions the runbook lets run without a person are taken here; one that needs approval is noted
    (the approval node has already run for this plan).
    """
    lines = {a.get("step_line") for a in done}
    known = {(a["action"], canonical_json(a["args"])) for a in done}
    planned, _ = plan_from_runbook(runbook, incident_scope(rt, incident_id, results))
    # A step runs once: one already planned (even rendered differently before) is not planned again.
    fresh = [
        a for a in planned if a.get("step_line") not in lines and (a["action"], canonical_json(a["args"])) not in known
    ]
    runnable = [a for a in fresh if a.get("approval") == "auto"]
    notes = [f"planned after an earlier action's result: {a['action']}" for a in runnable]
    notes += [f"{a['action']} needs approval and was not run after the earlier action; a human may run it" for a in fresh if a not in runnable]
    return runnable, notes


def verify(state: ResponderState, runtime: Runtime[AgentRuntime]) -> dict[str, Any]:
    rt = runtime.context
    runbook = _runbook(rt, state)
    changed = [a for a in state.get("plan", []) if a.get("status") in ("applied", "repeat") and a["action"] != "add_note"]
    if runbook is None or not changed or not state.get("acted_at"):
        return {"verification": {"status": "not_applicable", "reason": "nothing was changed, so nothing to verify",
                                 "findings": [], "attempts": 0}}
    attempts = int(state.get("verification", {}).get("attempts", 0)) + 1
    result = verify_fix(rt, runbook, state["incident"], datetime.fromisoformat(str(state["acted_at"])), attempts)
    update: dict[str, Any] = {"verification": result}
    if result["status"] != "pending" or attempts == 1:
        update["steps"] = [step_record("verify", "decision", "verify", rt, ok=result["status"] != "failed",
                                                        note=f"{result['status']}: {result['reason']}")]
    return update


def wait_for_data(state: ResponderState, runtime: Runtime[AgentRuntime]) -> dict[str, Any]:
    """Pause until more data has arrived; the loop (or ``selfheal investigate``) resumes the thread."""
    verification = state.get("verification", {})
    interrupt({
        "type": "wait_for_data",
        "incident_id": state["incident_id"],
        "check": verification.get("check"),
        "not_before": next_wake(verification, runtime.context).isoformat(),
        "deadline": verification.get("deadline"),
    })
    return {}


def decide_page(state: ResponderState, runtime: Runtime[AgentRuntime]) -> dict[str, Any]:
    rt = runtime.context
    decision = paging.decide_page(state, _runbook(rt, state))
    record = step_record("decide_page", "decision", "decide_page", rt, ok=True,
                         note=f"{'page' if decision['page'] else 'no page'} ({decision['rule']}): {decision['reason']}")
    return {"page_decision": decision, "steps": [record]}


def summarize(state: ResponderState, runtime: Runtime[AgentRuntime]) -> dict[str, Any]:
    rt = runtime.context
    url = incident_review_url(rt.config.public_url, state["incident_id"])
    text = paging.summary_markdown(state, _runbook(rt, state), state["page_decision"], url)
    return {"summary": text}


def notify(state: ResponderState, runtime: Runtime[AgentRuntime]) -> dict[str, Any]:
    rt = runtime.context
    decision = dict(state["page_decision"])
    incident_id = state["incident_id"]
    ctx = rt.tool_context(incident_id, reason=str(decision["reason"]))
    runbook = _runbook(rt, state)
    if decision["page"]:
        args = page_arguments(runbook, _scope(rt, state)) if runbook else None
        args = dict(args or {})
        args.setdefault("summary", f"{state['incident'].get('title')}: {decision['reason']}")
        args["severity"] = args.get("severity") or decision.get("severity", "high")
        args["details"] = {**(args.get("details") or {}), "page_rule": decision["rule"], "why": decision["reason"]}
        args["body"] = state.get("summary", "")
        result = call_tool("page", ctx, args).data
        decision.update(page_id=result.get("page_id"), sent=True)
        rt.side_effect("notify", "page")
    else:
        call_tool("add_note", ctx, {"text": f"No page sent ({decision['rule']}): {decision['reason']}"})
        rt.side_effect("notify", "no_page_note")
    verified = state.get("verification", {}).get("status") == "verified"
    changed = any(a.get("status") in ("applied", "repeat") and a["action"] != "add_note" for a in state.get("plan", []))
    if verified:
        outcome, status = "mitigated", "mitigated"
    elif decision["page"]:
        outcome, status = ("abstained" if state.get("diagnosis", {}).get("abstained") else "escalated"), "escalated"
    elif not changed:
        outcome, status = "no_action", "resolved"
    else:
        outcome, status = "unverified", "investigating"
    _set_status(rt, incident_id, status, str(decision["reason"]), acted_at=state.get("acted_at"))
    rt.side_effect("notify", f"status:{status}")
    return {"page_decision": decision, "outcome": outcome}


def report(state: ResponderState, runtime: Runtime[AgentRuntime]) -> dict[str, Any]:
    from agent.report import write_report  # the report pulls in chart code only when a report is written

    rt = runtime.context
    diagnosis = state.get("diagnosis", {})
    rt.incidents.annotate(state["incident_id"], root_cause=diagnosis.get("root_cause"), summary=state.get("summary"))
    paths = write_report(rt.store, rt.registry, state["incident_id"], dict(state), rt.reports_dir, now=rt.clock())
    rt.side_effect("report", "files")
    return {"report": {"markdown": str(paths.markdown), "html": str(paths.html)}}


__all__ = [
    "act",
    "approval",
    "decide_page",
    "diagnose",
    "investigate",
    "load_incident",
    "match_runbooks",
    "notify",
    "plan",
    "report",
    "request_approval",
    "summarize",
    "verify",
    "wait_for_data",
    "wait_for_labels",
]

