"""The chat with a model: the incident's record as context, the read tools, and ``request_action``.

The loop is the LLM planner's (`agent.planners.llm_planner`): send the conversation, run the read tools
the model calls and feed their output back wrapped as untrusted data, until the model answers in words or
a budget (turns, tokens, wall time, repeated identical calls) stops it. The record itself goes to the
model as untrusted data too: agent notes, reasons and transaction fields are text anyone upstream could
have written. The one way to change anything is ``request_action``, which `agent.chat.actions` checks
exactly as the responder's plan is checked, and audits.

When the endpoint fails (`LLMUnavailable`, `LLMRequestError`) or a budget ends the loop without an answer,
the deterministic router answers instead (mode ``llm_fallback``) and the answer says why.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from agent.chat.actions import request_action
from agent.chat.engine import routed  # the engine imports this module only when a model is given
from agent.chat.history import conversation
from agent.chat.parts import ChatParts
from agent.chat.record import IncidentRecord
from agent.chat.reply import ChatReply
from agent.chat.text import bullets, quote
from agent.chat.text import call as call_text
from agent.llm import LLMClient, LLMRequestError, LLMUnavailable
from agent.planners.llm_planner import canonical_arguments, prompt, read_tool_names, untrusted
from tools.audit import bounded_text, finite
from tools.errors import ToolError
from tools.registry import bounded_json, call_tool, openai_tool_schemas, registered_tools

REQUEST_ACTION = "request_action"
HISTORY_TURNS = 6  # earlier turns of this incident's conversation the model sees
CONTEXT_CHARS = 8_000
# A model's answer is stored in the conversation and shown whole: one of megabytes (an endpoint gone
# wrong, or one told to repeat the data) would be too. Longer answers are cut, visibly.
MAX_ANSWER_CHARS = 20_000


@dataclass(frozen=True)
class ChatBudget:
    """What one chat answer may cost the model."""

    max_turns: int = 6
    max_tokens: int = 40_000
    max_seconds: float = 120.0
    max_repeated_calls: int = 2


class ActionRequest(BaseModel):
    """The arguments of ``request_action``."""

    action: str = Field(description="the action tool, e.g. rollback_model")
    args: dict[str, Any] = Field(default_factory=dict, description="its arguments, as its schema says")
    why: str = Field("", description="one sentence: what the person asked for")


def request_action_schema() -> dict[str, Any]:
    schema = ActionRequest.model_json_schema()
    schema.pop("title", None)
    return {
        "type": "function",
        "function": {
            "name": REQUEST_ACTION,
            "description": (
                "Ask for a change the person requested. Code checks it against the incident's runbook "
                "(allowlist, schema, preconditions, approval policy), runs it only when allowed, audits "
                "it, and returns the outcome: applied, repeat, refused or pending_approval."
            ),
            "parameters": schema,
        },
    }


def context_message(record: IncidentRecord) -> str:
    """The incident's record as the model sees it: compact, bounded, and labelled as untrusted data."""
    book = record.runbook
    serving = record.serving[-1] if record.serving else None
    context = {
        "incident": record.incident.model_dump(mode="json", exclude={"summary"}),
        "investigation": {
            "thread": record.thread,
            "outcome": record.state.get("outcome"),
            "diagnosis": record.diagnosis,
            "plan": [
                {k: a.get(k) for k in ("action", "args", "status", "approval", "audit_id", "why")}
                for a in record.plan
            ],
            "verification": {k: v for k, v in record.verification.items() if k != "findings"},
            "page_decision": record.page_decision,
            "steps": [
                {k: s.get(k) for k in ("n", "node", "kind", "name", "ok", "note")} for s in record.steps
            ],
            "degraded": record.state.get("degraded"),
        },
        "runbook": None
        if book is None
        else {
            "id": book.id,
            "allows": dict(book.actions),
            "paging": book.paging,
            "verification": book.verification.model_dump(),
        },
        "audit": [
            {
                "audit_id": r.audit_id,
                "at": r.recorded_at.isoformat(),
                "actor": r.actor,
                "action": r.action,
                "args": r.args,
                "status": r.status,
            }
            for r in record.audit
        ],
        "pages": [
            {
                k: str(v)
                for k, v in p.items()
                if k in ("page_id", "recorded_at", "action", "channel", "status")
            }
            for p in record.pages
        ],
        "serving_now": None if serving is None else serving.model_dump(mode="json"),
        "report": record.report_paths(),
    }
    text, _ = bounded_json(finite(context), limit=CONTEXT_CHARS)
    return "The incident's record:\n\n" + untrusted("incident_record", text)


def _messages(parts: ChatParts, record: IncidentRecord, message: str) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": prompt("chat")},
        {"role": "user", "content": context_message(record)},
    ]
    earlier = [
        {"asked_by": t["actor"], "asked": t["message"], "answered": t["answer"]}
        for t in conversation(parts.store, record.incident_id)[-HISTORY_TURNS:]
    ]
    if earlier:
        # Data, not dialogue: earlier answers quote record text (agent notes, page summaries), and earlier
        # questions may be someone else's; as assistant/user turns the model would take them as its own.
        text, _ = bounded_json(earlier, limit=CONTEXT_CHARS)
        messages.append(
            {
                "role": "user",
                "content": "Earlier in this incident's conversation:\n\n" + untrusted("conversation", text),
            }
        )
    messages.append({"role": "user", "content": message})
    return messages


def answer_with_llm(
    parts: ChatParts,
    record: IncidentRecord,
    message: str,
    *,
    actor: str,
    llm: LLMClient,
    budget: ChatBudget | None = None,
) -> ChatReply:
    """The model's answer (mode ``llm``), or the router's when the model cannot give one (``llm_fallback``)."""
    budget = budget or ChatBudget()
    messages = _messages(parts, record, message)
    tools = [*openai_tool_schemas(read_tool_names()), request_action_schema()]
    ctx = parts.tool_context(record.incident_id, actor=actor, reason="chat", approval="not_required")
    outcomes: list[dict[str, Any]] = []
    called: list[str] = []
    seen: dict[str, int] = {}
    tokens = 0
    started = time.monotonic()
    out_of_time = f"time budget spent ({budget.max_seconds:.0f} s)"
    for _ in range(budget.max_turns):
        if tokens >= budget.max_tokens:
            return _fallback(
                record, message, f"token budget spent ({tokens} >= {budget.max_tokens})", outcomes
            )
        if time.monotonic() - started > budget.max_seconds:
            return _fallback(record, message, out_of_time, outcomes)
        try:
            reply = llm.complete(messages, tools)
        except (LLMUnavailable, LLMRequestError) as error:
            return _fallback(record, message, f"the LLM was unavailable: {error}", outcomes)
        tokens += reply.usage.total_tokens
        messages.append(reply.as_message())
        if not reply.tool_calls:
            text = (reply.content or "").strip() or "(the model gave an empty answer)"
            return _answered(record, message, text, called, outcomes, tokens)
        for call in reply.tool_calls:
            # Per call as well as per turn: one answer may hold any number of calls, and the service holds
            # the responder's lock while a chat answer is made.
            if time.monotonic() - started > budget.max_seconds:
                return _fallback(record, message, out_of_time, outcomes)
            name, raw = call.get("name", ""), call.get("arguments", "")
            key = f"{name}:{canonical_arguments(raw)}"  # the same call re-spaced or re-ordered is a repeat
            seen[key] = seen.get(key, 0) + 1
            if seen[key] > budget.max_repeated_calls:
                return _fallback(
                    record, message, f"the model repeated {name} with the same arguments", outcomes
                )
            called.append(name)
            if name == REQUEST_ACTION:
                content = json.dumps(_requested(parts, record, raw, actor, outcomes), default=str)
            else:
                content = _read(ctx, name, raw)
            messages.append({"role": "tool", "tool_call_id": call.get("id", ""), "content": content})
    return _fallback(record, message, f"the model gave no answer in {budget.max_turns} turns", outcomes)


def _requested(
    parts: ChatParts, record: IncidentRecord, raw: str, actor: str, outcomes: list[dict[str, Any]]
) -> dict[str, Any]:
    try:
        asked = ActionRequest.model_validate_json(raw or "{}")
    except ValidationError as error:
        return {
            "status": "not_understood",
            "message": f"request_action arguments do not fit: {str(error)[:300]}",
        }
    outcome = request_action(parts, record, asked.action, asked.args, asked.why, actor=actor)
    outcomes.append(outcome)
    return outcome


def _read(ctx: Any, name: str, raw: str) -> str:
    spec = registered_tools().get(name)
    if spec is None or spec.kind != "read":
        what = "an action: use request_action" if spec is not None else "not a tool"
        return f"{name!r} is {what}; read tools: {', '.join(read_tool_names())}"
    try:
        return untrusted(name, call_tool(name, ctx, raw).content)
    except ToolError as error:
        # A failure can quote the data (DuckDB's "Could not convert string '<a merchant name>'"): data too.
        return untrusted(name, f"{name} failed: {error}")


def _answered(
    record: IncidentRecord,
    message: str,
    text: str,
    called: list[str],
    outcomes: list[dict[str, Any]],
    tokens: int,
) -> ChatReply:
    sources = [f"tool:{name}" for name in dict.fromkeys(called) if name != REQUEST_ACTION]
    sources += [str(o["audit_id"]) for o in outcomes if o.get("audit_id")]
    if record.thread:
        sources.insert(0, f"agent_runs {record.thread}")
    return ChatReply(
        incident_id=record.incident_id,
        message=message,
        answer=bounded_text(text, MAX_ANSWER_CHARS) + outcomes_footer(outcomes),
        mode="llm",
        intent=None,
        facts={"tool_calls": called, "tokens": tokens},
        sources=sources,
        actions=outcomes,
    )


def outcomes_footer(outcomes: list[dict[str, Any]]) -> str:
    """What the actions asked for really came to, in code's words: the model's text may say otherwise."""
    if not outcomes:
        return ""
    lines = [
        f"{call_text(str(o.get('action')), o.get('args'))}: **{o.get('status')}**"
        + (f" (audit `{o['audit_id']}`)" if o.get("audit_id") else "")
        + (f": {quote(o['message'], 200)}" if o.get("message") else "")
        for o in outcomes
    ]
    return "\n\nActions asked for in this chat, as recorded:\n\n" + bullets(lines)


def _fallback(record: IncidentRecord, message: str, why: str, outcomes: list[dict[str, Any]]) -> ChatReply:
    preface = f"_The LLM could not answer ({why[:300]}); this answer comes from the deterministic router._"
    reply = routed(record, message, mode="llm_fallback", preface=preface)
    reply.facts = {**reply.facts, "llm_error": why}
    reply.actions = [*outcomes, *reply.actions]
    reply.answer += outcomes_footer(outcomes)  # actions asked for before the model failed still happened
    return reply
