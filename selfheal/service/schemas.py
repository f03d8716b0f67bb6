"""Request and response models of the HTTP API (they are also its OpenAPI schema).

`TransactionIn` documents what ``POST /v1/score`` takes, but the route does **not** validate bodies with
it: a transaction that fails validation must still reach the scorer, which dead-letters it with a reason
(nothing is dropped), and the scorer's validator is the one definition of "valid" (DESIGN 3).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from selfheal.serving_changes import PERSON_NAME

MAX_TEXT = 2_000  # notes, reasons and chat messages: stored and shown to people and LLMs, so bounded


class TransactionIn(BaseModel):
    """One card transaction (DESIGN 5b). Unknown fields are ignored."""

    model_config = ConfigDict(extra="allow")

    transaction_id: str | int = Field(description="unique id; integers are accepted and stored in decimal")
    timestamp: datetime | str | float = Field(description="ISO 8601 (UTC if no zone) or epoch seconds")
    customer_id: str | int
    terminal_id: str | int
    amount: float = Field(ge=0, description="in currency units")
    channel: Literal["card_present", "online"] | None = None
    merchant_name: str | None = None
    mcc: str | None = None
    country: str | None = None


class ScoreOut(BaseModel):
    """The decision on one transaction."""

    transaction_id: str
    score: float = Field(description="fraud probability from the model, or the fallback rules' score")
    decision: Literal["approve", "review", "decline"]
    model_version: int | None = Field(description="None when the fallback rules served")
    serving_state_version: int
    used_fallback: bool
    fallback_reason: str | None = None
    latency_ms: float = Field(description="server time for this request: body received to answer ready")


class RowError(BaseModel):
    """Why one row was dead-lettered (it is in the ``dead_letters`` table with its payload)."""

    index: int = Field(description="position of the row in the request (0 for a single transaction)")
    transaction_id: str | None
    field: str | None = Field(description="the field that failed; None when the record as a whole did")
    reason: str
    # FastAPI-style keys, so clients that read FastAPI's own 422 bodies read these too.
    loc: list[str | int]
    msg: str
    type: Literal["dead_letter"] = "dead_letter"


class ScoreRejected(BaseModel):
    """422 body for a single transaction that failed validation."""

    detail: list[RowError]
    dead_lettered: Literal[True] = True


class BatchRowOut(BaseModel):
    """One row of a batch answer: scored, or dead-lettered with its reason."""

    index: int
    transaction_id: str | None
    status: Literal["scored", "dead_lettered"]
    score: float | None = None
    decision: Literal["approve", "review", "decline"] | None = None
    field: str | None = None
    reason: str | None = None


class BatchScoreOut(BaseModel):
    """The answer to a batch: one row per input row, in input order (200 even when some rows failed)."""

    rows_in: int
    scored: int
    dead_lettered: int
    model_version: int | None
    serving_state_version: int | None = Field(description="None only for an empty batch (nothing was scored)")
    used_fallback: bool | None
    fallback_reason: str | None = None
    latency_ms: float
    results: list[BatchRowOut]


class PromoteIn(BaseModel):
    """Why a model is promoted (recorded in the audit log and the serving-state history)."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=MAX_TEXT)
    incident_id: str | None = Field(None, description="the incident this change is for, if any")


class RollbackIn(BaseModel):
    """Roll the champion back (to ``to_version``, default the ``previous`` alias)."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=MAX_TEXT)
    to_version: int | None = Field(None, ge=1)
    incident_id: str | None = None


class DecisionIn(BaseModel):
    """Approve or deny what the responder proposed for an incident."""

    model_config = ConfigDict(extra="forbid")

    note: str = Field("", max_length=MAX_TEXT)
    action: int | None = Field(None, ge=0, description="index of the planned action; default the pending one")
    request: str | None = Field(
        None,
        max_length=200,
        description="decide on this action asked for in chat (its audit id) instead of a paused investigation",
    )


class InvestigateIn(BaseModel):
    """Start (or carry on with) the responder's investigation of an incident."""

    model_config = ConfigDict(extra="forbid")

    again: bool = Field(False, description="start a new investigation even if one finished")
    planner: Literal["deterministic", "llm", "auto"] | None = Field(
        None, description="default: the planner the service was started with"
    )


class ChatIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: str = Field(min_length=1, max_length=MAX_TEXT)


class ActionOut(BaseModel):
    """What an action did, as the audit log recorded it (``status`` applied; ``repeat`` for a retry)."""

    model_config = ConfigDict(extra="allow")

    status: str
    audit_id: str
    repeat: bool


class ServingChangeIn(BaseModel):
    """Who changes the serving state by hand, and why (the audit log records ``person:<by>``)."""

    model_config = ConfigDict(extra="forbid")

    by: str = Field(pattern=PERSON_NAME, description="the person acting: 1-64 letters, digits or _.@-")
    reason: str = Field(min_length=1, max_length=MAX_TEXT)


class FallbackIn(ServingChangeIn):
    """Turn the deterministic fallback rules on (they score instead of the champion) or off."""

    on: bool


class FeatureIn(ServingChangeIn):
    """A feature of the champion model to quarantine or release."""

    feature: str = Field(min_length=1, max_length=200)


class QuarantineIn(FeatureIn):
    """Quarantine a feature; ``value`` imputes a constant instead of the champion's reference."""

    value: float | None = Field(None, description="omit to impute as the agent does: surrogates, then the mean")


class ThresholdsIn(ServingChangeIn):
    """Both decision thresholds: decline at or above ``decline``, review from ``review`` up to it."""

    decline: float = Field(ge=0, le=1)
    review: float = Field(ge=0, le=1)


class ServingChangeOut(BaseModel):
    """What a serving change did: ``changed`` false means nothing needed changing and nothing was written."""

    changed: bool
    message: str
    audit_id: str | None = Field(description="the audit-log row of the change (None when nothing changed)")
    state: dict[str, Any] = Field(description="the serving state now (the new version when changed)")


class Problem(BaseModel):
    """An error answer: ``detail`` says what went wrong and, where it can, how to fix it."""

    detail: str


class LogHealth(BaseModel):
    write_failures: int = Field(description="failed writes of the scoring log since start")
    unwritten_chunks: int = Field(description="chunks of log rows kept in memory for the next write")
    unwritten_rows: int = Field(description="rows in those chunks")
    spilled_files: int = Field(
        description="chunks set aside as JSON lines in log-spill/ since start (`selfheal load-spills`, or "
        "POST /v1/log-spills/load, loads them)"
    )
    last_error: str | None


class Health(BaseModel):
    status: Literal["ok", "degraded"] = Field(
        description="degraded: scoring-log rows wait in memory for a write that keeps failing"
    )
    workspace: str
    pid: int
    started_at: datetime
    model_version: int | None
    fallback: bool
    serving_state_version: int
    queued_rows: int
    responder: bool = Field(description="whether a responder is wired into this service")
    log: LogHealth


def transaction_schema() -> dict[str, Any]:
    """The OpenAPI schema of a score request: one transaction, or an array of them."""
    one = TransactionIn.model_json_schema()
    return {"oneOf": [one, {"type": "array", "items": one, "title": "a batch"}]}
