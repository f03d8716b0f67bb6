"""One chat turn: a slash command, the LLM with the read tools, or the deterministic router; then persisted.

    reply(parts, "INC-3", "why did you roll back?", actor="cli:alice")          # router, from the record
    reply(parts, "INC-3", "/sql SELECT count(*) FROM audit_log", actor=...)    # a command
    reply(parts, "INC-3", "roll back to v1 please", actor=..., llm=client)     # the LLM may *ask* for it

Without an LLM the chat never acts: a request for a change is answered with how to make it. With one,
the model may ask for an action through ``request_action``, which code checks exactly as it checks the
responder's plan (`agent.chat.actions`).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from agent.chat import commands
from agent.chat.actions import record_not_run
from agent.chat.answers import Answer
from agent.chat.history import save_turn
from agent.chat.parts import ChatParts
from agent.chat.record import IncidentRecord
from agent.chat.reply import ChatReply, Mode
from agent.chat.router import capabilities, route
from agent.chat.text import bullets
from tools.audit import finite

if TYPE_CHECKING:
    from agent.llm import LLMClient

UNROUTED_REQUEST = "chat_request"  # the audit log's name for a change asked for in chat that nothing acted on
MAX_MESSAGE_CHARS = 2_000  # what the service accepts too (selfheal.service.schemas.MAX_TEXT)
# A message that starts by asking for a change ("roll back to v1", "please disable the fallback").
ACTION_REQUEST = re.compile(
    r"^\s*(please\s+|pls\s+)?((can|could|would) you\s+)?(please\s+)?"
    r"(roll\s*-?back|revert|undo|promote|quarantine|release|enable|disable|turn (on|off)|switch|set|lower|raise|"
    r"retrain|page|deploy|restore|apply|run|execute|ignore)\b",
    re.IGNORECASE,
)


def reply(
    parts: ChatParts, incident_id: str, message: str, *, actor: str, llm: LLMClient | None = None
) -> ChatReply:
    """Answer one message about one incident and persist the turn.

    Args:
        parts: The workspace's parts.
        incident_id: ``INC-7`` (or ``7``).
        message: The question, a slash command, or (with an LLM) a request to act.
        actor: Who asks, as the audit log records it (``cli:alice``, ``api:bob``).
        llm: A chat model; None answers from the record with the deterministic router.

    Raises:
        KeyError: There is no such incident.
        ValueError: The message is empty or too long.
    """
    text = message.strip()
    if not text:
        raise ValueError("the message is empty: ask a question, or /help")
    if len(text) > MAX_MESSAGE_CHARS:
        raise ValueError(f"the message is {len(text):,} characters; at most {MAX_MESSAGE_CHARS:,}")
    record = IncidentRecord.load(parts, incident_id)
    if text.startswith("/"):
        answer = _command(parts, record, text)
    elif llm is not None:
        from agent.chat.llm_chat import answer_with_llm

        answer = answer_with_llm(parts, record, text, actor=actor, llm=llm)
    else:
        answer = routed(record, text)
    _audit_unrouted_requests(parts, record, answer, actor)
    save_turn(parts.store, answer, actor=actor, at=parts.clock())
    return answer


def _audit_unrouted_requests(parts: ChatParts, record: IncidentRecord, answer: ChatReply, actor: str) -> None:
    """A request for a change the chat answered without acting on (no LLM to read it, or the LLM failed) is
    still a request someone made: it goes to the audit log as a refused ``chat_request``, like every refusal
    (`agent.chat.actions` audits the ones an LLM turned into an action)."""
    for action in answer.actions:
        if action.get("status") != "refused" or action.get("audit_id") or "request" not in action:
            continue
        recorded = record_not_run(
            parts, record.incident_id, UNROUTED_REQUEST, {"request": str(action["request"])}, actor,
            "asked in chat; not acted on", "refused", "n/a", str(action.get("message", "")),
        )  # fmt: skip
        action["audit_id"] = recorded["audit_id"]


def _chat_reply(
    record: IncidentRecord, message: str, answer: Answer, mode: Mode, intent: str | None
) -> ChatReply:
    return ChatReply(
        incident_id=record.incident_id,
        message=message,
        answer=answer.text,
        mode=mode,
        intent=intent,
        facts=finite(answer.facts),  # strict JSON for the service and the store: NaN metrics become null
        sources=answer.sources,
        actions=[],
    )


def _command(parts: ChatParts, record: IncidentRecord, message: str) -> ChatReply:
    name, argument = commands.split(message)
    if name == "/help":
        return _chat_reply(record, message, commands.help_answer(capabilities()), "command", "/help")
    found = commands.COMMANDS.get(name)
    if found is None:
        known = ", ".join([*commands.COMMANDS, "/help"])
        return _chat_reply(
            record,
            message,
            Answer(
                f"Unknown command `{name}`. Commands: {known}.",
                {"known_commands": [*commands.COMMANDS, "/help"]},
            ),
            "unknown",
            None,
        )
    command, _ = found
    return _chat_reply(record, message, command(parts, record, argument), "command", name)


def routed(record: IncidentRecord, message: str, *, mode: Mode = "router", preface: str = "") -> ChatReply:
    """The deterministic answer to a question (what the LLM path falls back to)."""
    if ACTION_REQUEST.match(message):
        answer = Answer(
            "This chat answers from the record and **did not change anything**: without a model it does not "
            "act on requests. Make the change with the audited commands (`selfheal models rollback`, "
            "`selfheal models promote`, `selfheal approve`), or configure an LLM endpoint (`OPENAI_BASE_URL`): "
            "an action asked for in chat is then checked against the runbook's allowlist and approval policy "
            "and audited.",
            {"acted": False},
        )
        reply_ = _chat_reply(record, message, answer, mode, "action_request")
        reply_.actions = [
            {"request": message[:200], "status": "refused", "message": "the chat without an LLM does not act"}
        ]
        return _prefaced(reply_, preface)
    intent = route(message)
    if intent is None:
        answer = Answer(
            "I cannot answer that from the incident's record. I can answer:\n\n"
            + bullets(capabilities())
            + "\n\nor run a command: `/help` lists them.",
            {"questions": capabilities()},
        )
        return _prefaced(
            _chat_reply(record, message, answer, "unknown" if not preface else mode, None), preface
        )
    return _prefaced(_chat_reply(record, message, intent.answer(record, message), mode, intent.name), preface)


def _prefaced(reply_: ChatReply, preface: str) -> ChatReply:
    if preface:
        reply_.answer = f"{preface}\n\n{reply_.answer}"
    return reply_
