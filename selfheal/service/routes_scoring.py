"""``POST /v1/score``: one transaction (a JSON object) or a batch (a JSON array of objects).

Answers, and why:

- **one transaction, valid**: 200 with score, decision, model version, serving-state version, latency;
- **one transaction, invalid** (parses as JSON but fails the scorer's validation): **422** with one
  `RowError` (``index``, ``transaction_id``, ``field``, ``reason``); the row is in ``dead_letters``;
- **a batch**: **200** with one result per input row, in input order; bad rows say ``dead_lettered`` with
  their field and reason. A batch is a unit of transport, not of validity: one bad row must not make the
  caller think the other 9,999 were not scored (they were, and were logged). The counts on top tell the
  caller at a glance whether to look (no 207: that is WebDAV's, and clients do not expect it);
- **not JSON at all**: 422 in FastAPI's own shape (``json_invalid``). There is no row to dead-letter: the
  bytes never were a transaction;
- a batch above ``max_request_rows``, or a body above ``max_request_bytes`` (read no further than that): 413;
  the scorer's queue full: 503 with ``Retry-After``;
- JSON nested too deeply for the parser: 422 like any body that is not usable JSON;
- a ``Content-Type`` other than ``application/json`` (or ``…+json``), or none: **415**, body unread. The
  route is open (no token), and a browser sends a form, ``text/plain`` or untyped body cross-site without
  asking first (a CORS "simple request"); requiring JSON's type means any web page a user visits cannot
  post transactions to a scorer on their machine.

The body is read as raw JSON, not through a pydantic model, on purpose: the scorer's validator is the one
definition of a valid transaction, and it records what it rejects. `TransactionIn` documents the shape.
"""

from __future__ import annotations

import json
import time
from typing import Any, Final

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from scorer.errors import ScorerError
from selfheal.service.engine import EngineOverloaded, EngineStopped, JobOutcome, RowOutcome
from selfheal.service.runtime import ServiceRuntime, runtime_of
from selfheal.service.schemas import BatchScoreOut, Problem, ScoreOut, ScoreRejected, transaction_schema
from store import StoreError

SCORE_PATH: Final = "/v1/score"

router = APIRouter(tags=["scoring"])


@router.post(
    SCORE_PATH,
    summary="Score one transaction (object) or a batch (array)",
    response_model=ScoreOut | BatchScoreOut,
    responses={
        422: {"model": ScoreRejected, "description": "a single transaction failed validation (dead-lettered)"},
        413: {"model": Problem, "description": "batch larger than the service accepts"},
        415: {"model": Problem, "description": "the body is not sent as JSON (Content-Type: application/json)"},
        503: {"model": Problem, "description": "the scorer is busy or stopping; retry"},
    },
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": transaction_schema()}}}},
)
async def score(request: Request) -> JSONResponse:
    """Score transactions with the champion (or the fallback rules); every row is scored or dead-lettered."""
    started = time.perf_counter()
    runtime = runtime_of(request)
    if not _is_json(request.headers.get("content-type", "")):
        return _answer(runtime, "invalid", 415, {"detail": "send the body as JSON, with Content-Type: application/json"})
    body = await _body_within(request, runtime.config.max_request_bytes)
    if body is None:
        limit = runtime.config.max_request_bytes
        return _answer(runtime, "invalid", 413, {"detail": f"request body larger than {limit:,} bytes"})
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError) as error:  # RecursionError: nesting deeper than the parser goes
        runtime.metrics.score_requests.inc(kind="invalid_json", status="422")
        return JSONResponse(status_code=422, content={"detail": [_json_error(error)]})
    batch = isinstance(payload, list)
    kind = "batch" if batch else "single"
    records: list[Any] = payload if batch else [payload]
    limit = runtime.config.max_request_rows
    if len(records) > limit:
        return _answer(runtime, kind, 413, {"detail": f"{len(records):,} rows in one request; at most {limit:,}"})
    if not records:
        return _answer(runtime, kind, 200, _batch_body(None, [], _ms(started)))
    try:
        future = runtime.engine.submit(records, source="api", single=not batch)
    except (EngineOverloaded, EngineStopped) as error:
        return _answer(runtime, kind, 503, {"detail": str(error)}, headers={"Retry-After": "1"})
    try:
        outcome = await future
    except (ScorerError, StoreError) as error:  # StoreError: LogWriterFull, the log cannot take more rows
        return _answer(runtime, kind, 503, {"detail": f"the scorer failed: {error}"}, headers={"Retry-After": "5"})
    latency_ms = _ms(started)
    runtime.metrics.score_latency.observe(latency_ms / 1000.0, kind=kind)
    if batch:
        return _answer(runtime, kind, 200, _batch_body(outcome, outcome.rows, latency_ms))
    row = outcome.rows[0]
    if not row.scored:
        return _answer(runtime, kind, 422, {"detail": [_row_error(row)], "dead_lettered": True})
    return _answer(runtime, kind, 200, _single_body(outcome, row, latency_ms))


def _is_json(content_type: str) -> bool:
    """Whether a Content-Type header names JSON: ``application/json`` or ``application/<x>+json``, any params."""
    media_type = content_type.partition(";")[0].strip().lower()
    kind, _, subtype = media_type.partition("/")
    return kind == "application" and (subtype == "json" or subtype.endswith("+json"))


async def _body_within(request: Request, limit: int) -> bytes | None:
    """The body, or None as soon as it is known to exceed ``limit`` bytes (the rest is never read)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    parts: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        parts.append(chunk)
    return b"".join(parts)


def _answer(
    runtime: ServiceRuntime, kind: str, status: int, content: dict[str, Any], headers: dict[str, str] | None = None
) -> JSONResponse:
    runtime.metrics.score_requests.inc(kind=kind, status=str(status))
    return JSONResponse(status_code=status, content=content, headers=headers)


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000.0, 3)


def _single_body(outcome: JobOutcome, row: RowOutcome, latency_ms: float) -> dict[str, Any]:
    return {
        "transaction_id": row.transaction_id,
        "score": row.score,
        "decision": row.decision,
        "model_version": outcome.model_version,
        "serving_state_version": outcome.serving_state_version,
        "used_fallback": outcome.used_fallback,
        "fallback_reason": outcome.fallback_reason,
        "latency_ms": latency_ms,
    }


def _batch_body(outcome: JobOutcome | None, rows: list[RowOutcome], latency_ms: float) -> dict[str, Any]:
    scored = sum(r.scored for r in rows)
    results = [
        {"index": r.index, "transaction_id": r.transaction_id, "status": "scored", "score": r.score,
         "decision": r.decision}
        if r.scored
        else {"index": r.index, "transaction_id": r.transaction_id, "status": "dead_lettered", "field": r.field,
              "reason": r.reason}
        for r in rows
    ]
    return {
        "rows_in": len(rows),
        "scored": scored,
        "dead_lettered": len(rows) - scored,
        "model_version": outcome.model_version if outcome else None,
        "serving_state_version": outcome.serving_state_version if outcome else None,
        "used_fallback": outcome.used_fallback if outcome else None,
        "fallback_reason": outcome.fallback_reason if outcome else None,
        "latency_ms": latency_ms,
        "results": results,
    }


def _row_error(row: RowOutcome) -> dict[str, Any]:
    return {
        "index": row.index,
        "transaction_id": row.transaction_id,
        "field": row.field,
        "reason": row.reason,
        "loc": ["body", row.field] if row.field else ["body"],
        "msg": row.reason,
        "type": "dead_letter",
    }


def _json_error(error: ValueError | RecursionError) -> dict[str, Any]:
    position = getattr(error, "pos", None)
    message = "nested too deeply" if isinstance(error, RecursionError) else getattr(error, "msg", str(error))
    return {"loc": ["body", position] if position is not None else ["body"], "msg": f"JSON decode error: {message}",
            "type": "json_invalid"}
