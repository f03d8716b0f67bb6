"""Conversations persist per incident in ``chat_messages`` (store migration 6): one row per turn."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from agent.chat.reply import ChatReply
from monitor.incidents import IncidentManager
from scorer.serving import as_naive_utc
from store import Store
from tools.audit import canonical_json

_JSON_COLUMNS = ("facts", "sources", "actions")


def save_turn(store: Store, reply: ChatReply, *, actor: str, at: datetime) -> int:
    """Append a question and its answer to the incident's conversation; returns the turn number (1-based)."""
    # One statement numbers and inserts the turn, so two answers written at once cannot take the same number.
    rows = store.execute(
        "INSERT INTO chat_messages (incident_id, turn, asked_at, actor, message, answer, mode, intent, facts, "
        "sources, actions) SELECT ?, coalesce(max(turn), 0) + 1, ?, ?, ?, ?, ?, ?, ?, ?, ? FROM chat_messages "
        "WHERE incident_id = ? RETURNING turn",
        [
            reply.incident_id,
            as_naive_utc(at),
            actor,
            reply.message,
            reply.answer,
            reply.mode,
            reply.intent,
            canonical_json(reply.facts),
            canonical_json(reply.sources),
            canonical_json(reply.actions),
            reply.incident_id,
        ],
    )
    return int(rows[0][0])


def conversation(store: Store, incident_id: str) -> list[dict[str, Any]]:
    """The persisted turns of an incident's conversation, oldest first.

    Each turn: ``turn``, ``asked_at`` (ISO), ``actor``, ``message``, ``answer``, ``mode``, ``intent``,
    ``facts``, ``sources``, ``actions``.

    Raises:
        KeyError: There is no such incident.
    """
    key = IncidentManager(store).get(incident_id).incident_id
    frame = store.query(
        "SELECT turn, asked_at, actor, message, answer, mode, intent, facts, sources, actions FROM chat_messages "
        "WHERE incident_id = ? ORDER BY turn",
        [key],
    )
    turns = []
    for row in frame.to_dict("records"):
        turn = {**row, "incident_id": key, "turn": int(row["turn"]), "asked_at": row["asked_at"].isoformat()}
        if not isinstance(turn["intent"], str):
            turn["intent"] = None
        for column in _JSON_COLUMNS:
            turn[column] = json.loads(row[column])
        turns.append(turn)
    return turns
