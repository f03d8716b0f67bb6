"""The LLM planner: a chat model with the read tools investigates; code validates what it proposes.

The loop (one place, like smolagents): send the conversation, run the read tools the model calls, feed
their output back wrapped as untrusted data, until the model calls ``submit_diagnosis`` or a budget
(turns, tokens, wall time) or repeated identical calls stop it. A mistake by the model (bad JSON, an unknown
tool, an action tool it may not call, a diagnosis that does not validate) is told to the model and recorded
on the step; the loop goes on. If the endpoint is unreachable after retries (`LLMUnavailable`) or a budget
ends the loop without an answer, the deterministic planner takes over and the state says so (``degraded``),
which the page policy turns into a page.

What the model proposes is only a proposal: the root cause must be a known one and its runbook one of the
runbooks that matched the incident; each action must be allowed by that runbook, fit its schema, and gets
its approval policy from the runbook, never from the model. ``page`` is never the model's call.
"""

from __future__ import annotations

import json
import time
from importlib import resources
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from agent.context import AgentRuntime
from agent.planners import deterministic
from agent.runbook_steps import plan_from_runbook, proposal_problem, step_record
from agent.state import Diagnosis, PlannedAction, ResponderState, StepRecord
from monitor.findings import ROOT_CAUSES
from tools.errors import ToolError
from tools.registry import bounded_json, call_tool, openai_tool_schemas, registered_tools
from tools.runbooks import Runbook

SUBMIT = "submit_diagnosis"


class ProposedAction(BaseModel):
    action: str = Field(description="an action the chosen runbook allows")
    args: dict[str, Any] = Field(default_factory=dict, description="its arguments")
    why: str = Field("", description="one sentence")


class Proposal(BaseModel):
    """The model's final answer (the arguments of ``submit_diagnosis``)."""

    root_cause: str = Field(description="one of the known root causes, or none")
    runbook_id: str | None = Field(description="the candidate runbook followed, or null to abstain")
    confidence: float = Field(ge=0, le=1)
    evidence: list[str] = Field(default_factory=list, description="facts with numbers, each naming its source")
    reason: str = Field("", description="why this root cause, in one or two sentences")
    actions: list[ProposedAction] = Field(default_factory=list)


def prompt(name: str) -> str:
    """A prompt file shipped as package data (`agent/prompts/`)."""
    return resources.files("agent").joinpath("prompts", f"{name}.md").read_text(encoding="utf-8")


def submit_schema() -> dict[str, Any]:
    schema = Proposal.model_json_schema()
    schema.pop("title", None)
    schema["properties"]["root_cause"]["enum"] = list(ROOT_CAUSES)
    return {"type": "function", "function": {"name": SUBMIT, "description": "Submit the final diagnosis and proposed actions.", "parameters": schema}}


def read_tool_names() -> list[str]:
    return sorted(name for name, spec in registered_tools().items() if spec.kind == "read")


def _defuse(text: str) -> str:
    """Untrusted text cannot close its own wrapper (and so cannot pose as our instructions)."""
    return text.replace("</untrusted_data>", "</untrusted_data_>")


def untrusted(name: str, content: str) -> str:
    """Tool output as the model sees it: labelled as data that can never instruct."""
    return f'<untrusted_data source="tool:{name}">\n{_defuse(content)}\n</untrusted_data>'


def _messages(state: ResponderState, rt: AgentRuntime) -> list[dict[str, Any]]:
    candidates = []
    for match in state.get("matches", [])[:3]:
        runbook = rt.runbooks.get(match["runbook_id"])
        allowed = ", ".join(f"{a} ({p})" for a, p in runbook.actions.items())
        candidates.append(f"### runbook `{runbook.id}` (root cause {runbook.root_cause}; allows: {allowed})\n\n{runbook.body.strip()}")
    incident_json, _ = bounded_json(state.get("incident", {}), limit=4000)
    system = prompt("system").replace("{root_causes}", ", ".join(ROOT_CAUSES))
    user = prompt("incident").replace("{incident}", _defuse(incident_json))
    user = user.replace("{runbooks}", "\n\n".join(candidates) or "(no runbook matched this incident)")
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def investigate(state: ResponderState, rt: AgentRuntime) -> dict[str, Any]:
    """Run the model's investigation loop; on unavailability or budget, the deterministic one."""
    from agent.llm import LLMRequestError, LLMUnavailable

    config = rt.config
    records: list[StepRecord] = []
    usage = dict(state.get("usage", {}))
    if rt.llm is None:
        return _fallback(state, rt, records, usage, "no LLM endpoint configured")
    messages = _messages(state, rt)
    tools = [*openai_tool_schemas(read_tool_names()), submit_schema()]
    ctx = rt.tool_context(state["incident_id"], reason="LLM investigation")
    seen: dict[str, int] = {}
    started = time.monotonic()
    out_of_time = f"time budget spent ({config.max_seconds:.0f} s)"
    for turn in range(1, config.max_llm_steps + 1):
        if usage.get("total_tokens", 0) >= config.max_tokens:
            return _fallback(state, rt, records, usage, f"token budget spent ({int(usage['total_tokens'])} >= {config.max_tokens})")
        if time.monotonic() - started > config.max_seconds:
            return _fallback(state, rt, records, usage, out_of_time)
        try:
            reply = rt.llm.complete(messages, tools)
        except (LLMUnavailable, LLMRequestError) as error:
            records.append(step_record("investigate", "error", "llm", rt, ok=False, error=str(error)))
            return _fallback(state, rt, records, usage, f"LLM planner unavailable: {error}")
        _add_usage(usage, reply)
        calls = reply.message.get("tool_calls") or []
        records.append(step_record("investigate", "llm", f"turn {turn}", rt, ok=True, tokens=reply.usage.model_dump(),
                                   note=(reply.message.get("content") or "")[:300] or f"{len(calls)} tool call(s)"))
        messages.append(reply.as_message())
        if not calls:
            messages.append({"role": "user", "content": f"Call a read tool or `{SUBMIT}`; plain text is not an answer."})
            continue
        for call in calls:
            # Checked per call, not only per turn: one answer may hold any number of calls (60 SQL queries
            # at their 5 s limit each kept an investigation going 5 minutes past a 2-minute budget).
            if time.monotonic() - started > config.max_seconds:
                return _fallback(state, rt, records, usage, out_of_time)
            name, raw = call.get("name", ""), call.get("arguments", "")
            key = f"{name}:{canonical_arguments(raw)}"
            seen[key] = seen.get(key, 0) + 1
            if seen[key] > config.max_repeated_calls:
                records.append(step_record("investigate", "error", name, rt, ok=False,
                                           error=f"the same call was repeated {seen[key]} times: loop stopped"))
                return _fallback(state, rt, records, usage, f"repeated tool call {name} stopped by the loop guard")
            if name == SUBMIT:
                proposal, problem = _parse_proposal(raw)
                if proposal is not None:
                    records.append(step_record("investigate", "decision", SUBMIT, rt, ok=True, args=proposal))
                    return {"steps": records, "proposal": proposal, "usage": usage}
                content = f"submit_diagnosis was not accepted: {problem}. Fix it and call it again."
                records.append(step_record("investigate", "error", SUBMIT, rt, ok=False, error=problem))
            else:
                content, ok = _run_read_tool(ctx, name, raw)
                records.append(step_record("investigate", "tool", name, rt, args=_as_dict(raw), ok=ok,
                                           output=content[:2000], **({} if ok else {"error": content[:500]})))
                content = untrusted(name, content) if ok else content
            messages.append({"role": "tool", "tool_call_id": call.get("id", ""), "content": content})
    return _fallback(state, rt, records, usage, f"step budget spent ({config.max_llm_steps} model turns) without a diagnosis")


def _run_read_tool(ctx: Any, name: str, raw: Any) -> tuple[str, bool]:
    spec = registered_tools().get(name)
    if spec is None:
        return f"unknown tool {name!r}; read tools: {', '.join(read_tool_names())}", False
    if spec.kind != "read":
        return f"{name} is an action: propose it in {SUBMIT}; code decides whether it runs", False
    try:
        return call_tool(name, ctx, raw).content, True
    except ToolError as error:
        # Wrapped like output: a failure can quote the data (DuckDB's "Could not convert string '<a
        # merchant name>'"), and unwrapped it reached the model as if it were our own words.
        return untrusted(name, f"{name} failed: {error}"), False


def _parse_proposal(raw: Any) -> tuple[dict[str, Any] | None, str]:
    try:
        data = json.loads(raw) if isinstance(raw, str) else dict(raw or {})
        proposal = Proposal.model_validate(data)
    except (json.JSONDecodeError, TypeError, ValueError, ValidationError) as error:
        return None, f"arguments do not fit the schema: {str(error)[:400]}"
    if proposal.root_cause not in ROOT_CAUSES:
        return None, f"unknown root cause {proposal.root_cause!r}; known: {', '.join(ROOT_CAUSES)}"
    return proposal.model_dump(), ""


def _fallback(state: ResponderState, rt: AgentRuntime, records: list[StepRecord], usage: dict[str, Any], why: str) -> dict[str, Any]:
    """The deterministic planner's investigation, with the reason recorded as a degradation."""
    note = f"{why}; the deterministic planner took over"
    records.append(step_record("investigate", "decision", "fallback", rt, ok=True, note=note))
    steps, results = deterministic.investigate(state, rt)
    return {
        "steps": records + steps,
        "degraded": [*state.get("degraded", []), note],
        "usage": usage,
        "results": results,
        "proposal": {},
    }


def validated_diagnosis(state: ResponderState, rt: AgentRuntime) -> tuple[Diagnosis, list[str]]:
    """The model's diagnosis if code accepts it, else the deterministic one (with why)."""
    proposal = state.get("proposal") or {}
    matches = {m["runbook_id"]: m for m in state.get("matches", [])}
    runbook_id = proposal.get("runbook_id")
    problem = None
    if runbook_id is not None and runbook_id not in matches:
        problem = f"the model chose runbook {runbook_id!r}, which does not match this incident ({', '.join(matches) or 'none match'})"
    elif runbook_id is not None and matches[runbook_id]["root_cause"] != proposal.get("root_cause"):
        problem = f"root cause {proposal.get('root_cause')!r} disagrees with runbook {runbook_id}'s {matches[runbook_id]['root_cause']!r}"
    if problem:
        fallback = deterministic.diagnose(state["incident"], state.get("matches", []), state.get("steps", []))
        return fallback, [f"LLM diagnosis rejected: {problem}; the deterministic diagnosis was used"]
    return {
        "root_cause": str(proposal.get("root_cause")),
        "runbook_id": runbook_id,
        "confidence": float(proposal.get("confidence", 0.0)),
        "evidence": [str(e)[:300] for e in proposal.get("evidence", [])][:12],
        "abstained": runbook_id is None,
        "reason": str(proposal.get("reason", ""))[:500] or f"model chose {runbook_id}",
        "planner": "llm",
    }, []


def validated_plan(
    state: ResponderState, rt: AgentRuntime, runbook: Runbook, scope: dict[str, Any]
) -> tuple[list[PlannedAction], list[str]]:
    """The model's actions that pass the allowlist and schema and that the runbook itself would take now
    (see `off_runbook_problem`); approval comes from the runbook."""
    planned: list[PlannedAction] = []
    notes: list[str] = []
    rendered, _ = plan_from_runbook(runbook, scope)
    for item in (state.get("proposal") or {}).get("actions", []):
        action, args = str(item.get("action")), dict(item.get("args") or {})
        problem = proposal_problem(runbook, action, args) or off_runbook_problem(runbook, action, args, rendered)
        if problem:
            notes.append(f"proposed {action} rejected: {problem}")
            continue
        planned.append({"action": action, "args": args, "approval": runbook.approval(action), "status": "planned",
                        "why": f"proposed by the model: {str(item.get('why', ''))[:200]}"})
    return planned, notes


def off_runbook_problem(
    runbook: Runbook, action: str, args: dict[str, Any], rendered: list[PlannedAction]
) -> str | None:
    """Why the model's arguments for an action are not ones the runbook's own steps give it now, or None.

    The allowlist says *which* actions a runbook may take; its steps say *with what*. A model that read
    hostile text (a merchant name, a log line) could otherwise quarantine a healthy feature or set any
    threshold within the tool's limits under a runbook that allows the action. The model chooses among
    the runbook's steps (a subset of them, say); it does not write new ones. Actions that change nothing
    that serves (``add_note``, risk ``none``) take free text.
    """
    spec = registered_tools().get(action)
    if spec is None or spec.risk == "none":
        return None
    offered = [a["args"] for a in rendered if a["action"] == action]
    if _normalised(action, args) in [_normalised(action, a) for a in offered]:
        return None
    if not offered:
        return f"runbook {runbook.id} takes no {action} step now (its steps' conditions do not hold)"
    shown = "; ".join(json.dumps(a, sort_keys=True, default=str) for a in offered[:5])
    return f"runbook {runbook.id} takes {action} only with its steps' arguments now: {shown}"


def _normalised(action: str, args: dict[str, Any]) -> str:
    """Arguments as the tool's schema reads them (defaults filled), as one text."""
    spec = registered_tools()[action]
    try:
        return json.dumps(spec.arguments.model_validate(args).model_dump(mode="json"), sort_keys=True)
    except ValueError:
        return json.dumps(args, sort_keys=True, default=str)


def _add_usage(usage: dict[str, Any], reply: Any) -> None:
    usage["llm_calls"] = usage.get("llm_calls", 0) + 1
    for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
        usage[key] = usage.get(key, 0) + int(getattr(reply.usage, key, 0))
    usage["cost_usd"] = round(float(usage.get("cost_usd", 0.0)) + float(reply.cost_usd), 6)


def canonical_arguments(raw: Any) -> str:
    """A tool call's arguments as one text whatever their key order or spacing (for repeat guards)."""
    try:
        return json.dumps(json.loads(raw) if isinstance(raw, str) else raw, sort_keys=True)
    except (json.JSONDecodeError, TypeError):
        return str(raw)


def _as_dict(raw: Any) -> dict[str, Any]:
    try:
        value = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError:
        return {"raw": str(raw)[:300]}
    return value if isinstance(value, dict) else {"raw": str(value)[:300]}
