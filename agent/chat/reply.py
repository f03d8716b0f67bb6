"""What one chat turn answers: `ChatReply`, the shape the CLI prints and the web service returns."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

Mode = Literal["command", "router", "llm", "llm_fallback", "unknown"]


class ChatReply(BaseModel):
    """One answer about one incident, with the record values it was built from.

    ``mode`` says who answered: a slash ``command``, the deterministic ``router``, the ``llm``, the router
    after the LLM failed (``llm_fallback``, said in the answer), or nobody (``unknown``: the question is
    not one the chat can answer from the record, and the answer lists what it can).
    """

    incident_id: str
    message: str = Field(description="what the person asked")
    answer: str = Field(description="markdown text")
    mode: Mode
    intent: str | None = Field(description='e.g. "why_action", "/timeline"')
    facts: dict[str, Any] = Field(
        default_factory=dict, description="the record values the answer is built from"
    )
    sources: list[str] = Field(
        default_factory=list, description="what it cites: audit ids, step numbers, report path, tables"
    )
    actions: list[dict[str, Any]] = Field(
        default_factory=list,
        description="actions asked for in chat and their outcome (refused / pending approval / applied)",
    )
