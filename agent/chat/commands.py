"""Slash commands: exact requests that need no interpretation (``/timeline``, ``/sql SELECT ...``, ...).

``/sql`` and ``/compare`` go through the registered read tools (`tools.sql.sql`: one sandboxed read-only
SELECT; `tools.read.diff_models`), never a connection of their own, so what the chat may read is exactly
what the agent may read.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from agent.chat import answers, state_answers
from agent.chat.answers import Answer
from agent.chat.history import conversation
from agent.chat.parts import ChatParts
from agent.chat.record import IncidentRecord
from agent.chat.text import bullets, number, quote, when
from tools.errors import ToolError
from tools.registry import call_tool

MAX_SQL_ROWS_SHOWN = 20
MAX_RUNBOOK_CHARS = 6_000
MAX_REPORT_CHARS = 4_000
MAX_HISTORY_SHOWN = 30

Command = Callable[[ChatParts, IncidentRecord, str], Answer]


def timeline(parts: ChatParts, record: IncidentRecord, argument: str) -> Answer:
    """Everything that happened, in time order: monitor events, status changes, notes, actions, pages."""
    entries: list[tuple[datetime, str, str]] = []
    for event in record.events:
        detail = event["detail"] if isinstance(event["detail"], dict) else {}
        what = str(event["event"])
        text = ""
        if what in ("opened", "breach", "reopened"):
            text = f"{detail.get('metric')} = {number(detail.get('value'))} (threshold {number(detail.get('threshold'))})"
        elif what == "cleared":
            text = f"value {number(detail.get('value'))} after {detail.get('after_windows')} clean window(s)"
        elif detail.get("note") or detail.get("text") or detail.get("summary"):
            text = quote(detail.get("note") or detail.get("text") or detail.get("summary"), 200)
        who = f" ({quote(detail['actor'], 40)})" if detail.get("actor") else ""
        entries.append((event["recorded_at"], f"{what}{who}", text))
    for row in record.audit:
        if row.action not in ("add_note", "page"):  # notes and pages are already incident events
            entries.append((row.recorded_at, f"action {row.action} {row.status}", f"`{row.audit_id}`"))
    entries.sort(key=lambda entry: entry[0])  # stable: same-time entries keep the record's order
    lines = [f"{when(at)}  **{what}**" + (f": {text}" if text else "") for at, what, text in entries]
    facts = {"entries": [{"at": at.isoformat(), "what": what, "text": text} for at, what, text in entries]}
    return Answer(bullets(lines) or "No event is recorded.", facts, ["incident_events", "audit_log"])


def runbook_text(parts: ChatParts, record: IncidentRecord, argument: str) -> Answer:
    """The followed runbook's summary and its text."""
    summary = answers.runbook(record, argument)
    book = record.runbook
    if book is None:
        return summary
    body = book.body.strip()
    cut = len(body) > MAX_RUNBOOK_CHARS
    text = summary.text.replace(" Use `/runbook` for its text.", "") + "\n\n" + body[:MAX_RUNBOOK_CHARS]
    if cut:
        text += f"\n\n[cut at {MAX_RUNBOOK_CHARS:,} characters of {len(body):,}]"
    return Answer(text, summary.facts, summary.sources)


def report_text(parts: ChatParts, record: IncidentRecord, argument: str) -> Answer:
    """Where the report is, and the summary the responder wrote."""
    found = state_answers.report(record, argument)
    summary = str(record.state.get("summary") or "").strip()
    if summary:
        shown = summary[:MAX_REPORT_CHARS]
        found = Answer(
            found.text + "\n\nSummary:\n\n" + shown + ("\n\n[cut]" if len(summary) > len(shown) else ""),
            {**found.facts, "summary": summary},
            found.sources,
        )
    return found


def sql(parts: ChatParts, record: IncidentRecord, argument: str) -> Answer:
    """One read-only SELECT through the sandboxed `sql` tool."""
    query = argument.strip()
    if not query:
        return Answer(
            "Usage: `/sql SELECT ...` (one read-only SELECT over the workspace tables).",
            {"refused": "no query"},
            [],
        )
    ctx = parts.tool_context(record.incident_id, actor="chat", reason="chat /sql", approval="not_required")
    try:
        data = call_tool("sql", ctx, {"query": query}).data
    except ToolError as error:
        return Answer(
            f"The query was refused: {quote(error, 500)}", {"query": query, "refused": str(error)}, ["sql"]
        )
    columns: list[str] = list(data.get("columns", []))
    rows: list[list[Any]] = list(data.get("rows", []))
    shown = rows[:MAX_SQL_ROWS_SHOWN]
    table = ["| " + " | ".join(quote(c, 40) for c in columns) + " |", "|" + "---|" * len(columns)]
    table += ["| " + " | ".join(quote(number(v), 60) for v in row) + " |" for row in shown]
    text = "\n".join(table) + f"\n\n{data.get('row_count', len(rows))} row(s)"
    if len(rows) > len(shown) or data.get("truncated"):
        text += f" (first {len(shown)} shown; aggregate or add LIMIT)"
    return Answer(
        text,
        {"query": query, "columns": columns, "rows": rows, "truncated": bool(data.get("truncated"))},
        ["sql", *[f"table {t}" for t in _tables(query, parts)]],
    )


def _tables(query: str, parts: ChatParts) -> list[str]:
    words = set(re.findall(r"[a-z_]+", query.lower()))
    return [t for t in parts.store.tables() if t in words]


def compare(parts: ChatParts, record: IncidentRecord, argument: str) -> Answer:
    """Two model versions side by side through the `diff_models` tool: ``/compare v3 v2``."""
    versions = [int(v) for v in re.findall(r"\bv?(\d+)\b", argument)]
    if len(versions) != 2:
        return Answer("Usage: `/compare v3 v2` (two model versions).", {"refused": "need two versions"}, [])
    a, b = versions
    ctx = parts.tool_context(
        record.incident_id, actor="chat", reason="chat /compare", approval="not_required"
    )
    try:
        diff = call_tool("diff_models", ctx, {"a": a, "b": b}).data
    except (ToolError, KeyError, ValueError) as error:
        return Answer(
            f"Cannot compare v{a} and v{b}: {quote(error, 300)}", {"refused": str(error)}, ["models"]
        )
    lines = [
        f"{name}: v{a} {number(v.get('a'))}, v{b} {number(v.get('b'))}"
        + (f" (v{b} - v{a} = {number(v['b_minus_a'])})" if v.get("b_minus_a") is not None else "")
        for name, v in diff.get("metrics", {}).items()
    ]
    lines += [
        f"param {name}: v{a} {number(v.get('a'))}, v{b} {number(v.get('b'))}"
        for name, v in diff.get("params", {}).items()
    ]
    lines += [
        f"{name}: v{a} {quote(json.dumps(v.get('a'), default=str), 120)}, v{b} "
        f"{quote(json.dumps(v.get('b'), default=str), 120)}"
        for name, v in diff.get("other_differences", {}).items()
    ]
    if diff.get("features_only_in_a") or diff.get("features_only_in_b"):
        lines.append(
            f"features only in v{a}: {diff.get('features_only_in_a')}; only in v{b}: {diff.get('features_only_in_b')}"
        )
    return Answer(
        f"**v{a} vs v{b}**\n\n" + bullets(lines), {"a": a, "b": b, "diff": diff}, ["models", "model_aliases"]
    )


def history(parts: ChatParts, record: IncidentRecord, argument: str) -> Answer:
    """The conversation so far about this incident (it persists: every `ask` and `chat` adds to it)."""
    turns = conversation(parts.store, record.incident_id)
    shown = turns[-MAX_HISTORY_SHOWN:]
    lines = [
        f"{t['turn']}. {quote(t['actor'], 40)} ({t['intent'] or t['mode']}): {quote(t['message'], 160)}"
        for t in shown
    ]
    head = f"{len(turns)} earlier turn(s)" + (
        f", the last {len(shown)} shown" if len(shown) < len(turns) else ""
    )
    return Answer(
        head + (":\n\n" + "\n".join(lines) if lines else "."), {"turns": len(turns)}, ["chat_messages"]
    )


def _answer_command(function: Callable[[IncidentRecord, str], Answer]) -> Command:
    return lambda parts, record, argument: function(record, argument)


COMMANDS: dict[str, tuple[Command, str]] = {
    "/timeline": (timeline, "monitor events, status changes, notes, actions and pages in time order"),
    "/evidence": (
        _answer_command(state_answers.evidence),
        "the monitor's numbers and what the diagnosis cited",
    ),
    "/actions": (_answer_command(answers.actions), "every audit-log row for the incident"),
    "/steps": (_answer_command(answers.steps), "the investigation's steps and tool calls"),
    "/runbook": (runbook_text, "the runbook followed, its policy and text"),
    "/report": (report_text, "where the report is, and the summary"),
    "/history": (history, "the conversation so far about this incident"),
    "/sql": (sql, "`/sql SELECT ...`: one read-only query (sandboxed; no writes, no files)"),
    "/compare": (compare, "`/compare v3 v2`: two model versions side by side"),
}


def help_answer(capabilities: list[str]) -> Answer:
    lines = [f"`{name}`: {text}" for name, (_, text) in COMMANDS.items()]
    text = (
        "Commands:\n\n"
        + bullets([*lines, "`/help`: this list"])
        + "\n\nQuestions answered from the record:\n\n"
        + bullets(capabilities)
    )
    return Answer(text, {"commands": [*COMMANDS, "/help"], "questions": capabilities}, [])


def split(message: str) -> tuple[str, str]:
    """``("/sql", "SELECT 1")`` from ``"/sql SELECT 1"``."""
    head, _, rest = message.strip().partition(" ")
    return head.lower(), rest.strip()
