"""Mutating endpoints: promote, roll back, serving changes, investigate, approve, deny, chat. Every one needs the token.

`TokenGuard` (the middleware) refuses a request without the token before its body is read; the
``Security(bearer_scheme)`` dependency here checks again (so these routes stay protected even if someone
mounts the router elsewhere) and documents the scheme in OpenAPI.

Model changes go through the same door as the agent's: ``tools.registry.call_tool`` with a `ToolContext`
whose actor is ``api:<who>`` (``<who>`` from the ``X-Selfheal-Actor`` header, default ``token``) and whose
approval is ``human`` (a person made the call). So they are validated, idempotent, rate-limited and in the
audit log exactly like the responder's actions.

A person's serving changes (``/v1/serving/fallback``, ``/quarantine``, ``/release``, ``/thresholds``) go
through the same action tools via `selfheal.serving_changes`, the functions ``selfheal serving`` calls on
the workspace file, so both doors record the same rows. Their actor is ``person:<by>`` from the body, not
the header: the audit log then names the person alike whichever door the change came through. Bad input
is a 400 (nothing audited), a refusal by the action a 409 (audited), and a change that changes nothing a
200 with ``changed: false``. The scorer reads the serving state (a shared cache the write invalidates)
before every batch, so the next scored row is served the new way.

Investigate, approve, deny and chat call the responder's hooks (`ServiceHooks`); until the responder is wired they
answer **503 "responder not available"** (the app turns `ResponderUnavailable` into 503 and
`views.NotFound`, e.g. an unknown incident, into 404: see `selfheal.service.app`).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Final

from fastapi import APIRouter, Body, Depends, Header, HTTPException, Security
from fastapi.security import HTTPAuthorizationCredentials

from scorer.labels import apply_labels
from selfheal import serving_changes
from selfheal.service import views
from selfheal.service.auth import bearer_scheme, token_matches
from selfheal.service.hooks import ChatMessage, Decision, InvestigateRequest, hook_error
from selfheal.service.runtime import ServiceRuntime, runtime_of
from selfheal.service.schemas import (
    ActionOut,
    ChatIn,
    DecisionIn,
    FallbackIn,
    FeatureIn,
    InvestigateIn,
    Problem,
    PromoteIn,
    QuarantineIn,
    RollbackIn,
    ServingChangeOut,
    ThresholdsIn,
)
from store.spill import load_spilled, spill_load_json
from tools import ToolContext, ToolRefused, ToolRetry, call_tool
from tools.audit import finite

_ACTOR: Final = re.compile(r"^[A-Za-z0-9_.@:-]{1,64}$")


def require_token(
    runtime: Annotated[ServiceRuntime, Depends(runtime_of)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)],
) -> None:
    """401 unless the request carries the service token."""
    header = f"{credentials.scheme} {credentials.credentials}" if credentials else None
    if not token_matches(header, runtime.config.token.get_secret_value()):
        raise HTTPException(status_code=401, detail="missing or wrong token", headers={"WWW-Authenticate": "Bearer"})


router = APIRouter(prefix="/v1", tags=["admin"], dependencies=[Depends(require_token)])
Runtime = Annotated[ServiceRuntime, Depends(runtime_of)]
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "no token, or the wrong one"},
    404: {"model": Problem},
    409: {"model": Problem, "description": "refused: a precondition or rate limit said no (audited)"},
}
RESPONDER_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    503: {"model": Problem, "description": "no responder wired into this service"},
}


def actor_of(x_selfheal_actor: Annotated[str | None, Header(description="who is acting (audit log)")] = None) -> str:
    """``api:<who>``: the name the caller gives in ``X-Selfheal-Actor`` (checked), else ``api:token``."""
    if x_selfheal_actor is None:
        return "api:token"
    if not _ACTOR.fullmatch(x_selfheal_actor):  # not match: "$" also matches before a final newline
        raise HTTPException(status_code=400, detail="X-Selfheal-Actor: 1-64 letters, digits or _.@:-")
    return f"api:{x_selfheal_actor}"


Actor = Annotated[str, Depends(actor_of)]


def _context(runtime: ServiceRuntime, actor: str, reason: str, incident_id: str | None) -> ToolContext:
    platform = runtime.platform
    incident = None if incident_id is None else views.existing_incident(platform, incident_id)
    return platform.tool_context(actor=actor, reason=reason, incident_id=incident, runbooks_dir=runtime.runbooks_dir)


def _run(name: str, ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    try:
        result = call_tool(name, ctx, args).data
    except ToolRefused as error:
        raise HTTPException(status_code=409, detail=str(error)) from error
    except ToolRetry as error:
        raise HTTPException(status_code=400, detail=str(error)) from error
    return finite(result)  # type: ignore[no-any-return]


@router.post("/models/{version}/promote", summary="Make a model version the champion", response_model=ActionOut,
             responses=ERRORS)
def promote(runtime: Runtime, actor: Actor, version: int, body: PromoteIn) -> dict[str, Any]:
    """Promote through the `promote_model` action (verified artifact, audited, undoable)."""
    ctx = _context(runtime, actor, body.reason, body.incident_id)
    # An unknown version is a 404, as GET /v1/models/{version} answers; a refusal of a real one is a 409.
    return _run("promote_model", ctx, {"version": views.existing_model(runtime.platform, version)})


@router.post("/models/rollback", summary="Roll the champion back", response_model=ActionOut, responses=ERRORS)
def rollback(runtime: Runtime, actor: Actor, body: RollbackIn) -> dict[str, Any]:
    """Roll back through the `rollback_model` action, to ``to_version`` or the ``previous`` alias."""
    ctx = _context(runtime, actor, body.reason, body.incident_id)
    target = body.to_version if body.to_version is not None else runtime.platform.registry.alias("previous")
    if target is None:
        raise HTTPException(status_code=409, detail="no previous model to roll back to: pass to_version")
    return _run("rollback_model", ctx, {"to_version": views.existing_model(runtime.platform, target)})


SERVING_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "a change that can never be made as asked (nothing audited)"},
    401: ERRORS[401],
    409: ERRORS[409],
}


def _serving_change(change: Any) -> dict[str, Any]:
    """Run a `serving_changes` function; its refusals become 400 (bad input) and 409 (the action said no)."""
    try:
        outcome: serving_changes.ServingChange = change()
    except serving_changes.InvalidChange as error:
        raise HTTPException(status_code=400, detail=str(error)) from error
    except serving_changes.ChangeRefused as error:
        raise HTTPException(status_code=409, detail=str(error)) from error
    return outcome.to_json()


@router.post("/serving/fallback", summary="Turn the fallback rules on or off (a person's change)",
             response_model=ServingChangeOut, responses=SERVING_ERRORS)
def serving_fallback(runtime: Runtime, body: FallbackIn) -> dict[str, Any]:
    """``on``: the deterministic rules score instead of the champion; off: the champion again (verified)."""
    platform = runtime.platform
    return _serving_change(lambda: serving_changes.set_fallback(platform, body.on, by=body.by, reason=body.reason))


@router.post("/serving/quarantine", summary="Quarantine a feature of the champion (a person's change)",
             response_model=ServingChangeOut, responses=SERVING_ERRORS)
def serving_quarantine(runtime: Runtime, body: QuarantineIn) -> dict[str, Any]:
    """Impute the feature as the agent's `quarantine_feature` does (reference surrogates, then its mean)."""
    platform = runtime.platform
    return _serving_change(
        lambda: serving_changes.quarantine(platform, body.feature, by=body.by, reason=body.reason, value=body.value)
    )


@router.post("/serving/release", summary="Release a quarantined feature (a person's change)",
             response_model=ServingChangeOut, responses=SERVING_ERRORS)
def serving_release(runtime: Runtime, body: FeatureIn) -> dict[str, Any]:
    """Use the feature's live values again."""
    platform = runtime.platform
    return _serving_change(lambda: serving_changes.release(platform, body.feature, by=body.by, reason=body.reason))


@router.post("/serving/thresholds", summary="Set both decision thresholds (a person's change)",
             response_model=ServingChangeOut, responses=SERVING_ERRORS)
def serving_thresholds(runtime: Runtime, body: ThresholdsIn) -> dict[str, Any]:
    """Decline at or above ``decline``, review from ``review`` up to it (review <= decline, both in [0, 1])."""
    platform = runtime.platform
    return _serving_change(
        lambda: serving_changes.set_thresholds(
            platform, decline=body.decline, review=body.review, by=body.by, reason=body.reason
        )
    )


def _decide(runtime: ServiceRuntime, actor: str, incident_id: str, body: DecisionIn, decision: str) -> dict[str, Any]:
    hook = runtime.hooks.require_decide()
    key = views.existing_incident(runtime.platform, incident_id)
    request = Decision(incident_id=key, decision="approve" if decision == "approve" else "deny", actor=actor,
                       note=body.note, action=body.action, request=body.request)
    return _call_hook(lambda: hook(request))


@router.post("/incidents/{incident_id}/approve", summary="Approve what the responder proposed",
             responses=RESPONDER_ERRORS)
def approve(runtime: Runtime, actor: Actor, incident_id: str, body: DecisionIn) -> dict[str, Any]:
    """Approve the responder's pending action (503 until the responder is wired: `ServiceHooks.decide`)."""
    return _decide(runtime, actor, incident_id, body, "approve")


@router.post("/incidents/{incident_id}/deny", summary="Deny what the responder proposed", responses=RESPONDER_ERRORS)
def deny(runtime: Runtime, actor: Actor, incident_id: str, body: DecisionIn) -> dict[str, Any]:
    """Deny the responder's pending action (503 until the responder is wired: `ServiceHooks.decide`)."""
    return _decide(runtime, actor, incident_id, body, "deny")


@router.post("/incidents/{incident_id}/investigate", summary="Investigate an incident now (or carry on)",
             responses=RESPONDER_ERRORS)
def investigate(runtime: Runtime, actor: Actor, incident_id: str, body: InvestigateIn) -> dict[str, Any]:
    """Start the responder on an incident, or resume its latest run (503 without a responder)."""
    hook = runtime.hooks.require_investigate()
    key = views.existing_incident(runtime.platform, incident_id)
    request = InvestigateRequest(incident_id=key, actor=actor, again=body.again, planner=body.planner)
    return _call_hook(lambda: hook(request))


@router.post("/incidents/{incident_id}/chat", summary="Ask the responder about an incident, or ask it to act",
             responses=RESPONDER_ERRORS)
def chat(runtime: Runtime, actor: Actor, incident_id: str, body: ChatIn) -> dict[str, Any]:
    """Send a chat message (503 until the responder is wired: `ServiceHooks.chat`)."""
    hook = runtime.hooks.require_chat()
    key = views.existing_incident(runtime.platform, incident_id)
    message = ChatMessage(incident_id=key, actor=actor, message=body.message)
    return _call_hook(lambda: hook(message))


@router.post("/log-spills/load", summary="Load scoring-log rows that were set aside in log-spill/",
             responses={401: ERRORS[401]})
def load_spills(runtime: Runtime, actor: Actor) -> list[dict[str, Any]]:
    """`selfheal load-spills` while the service owns the workspace: each spill file in one transaction,
    at most once (`store.spill`); a file that still fails stays, with its error."""
    del actor  # token-guarded like every change; the files' sha256 in loaded_log_spills are the record
    return [spill_load_json(load) for load in load_spilled(runtime.platform.store)]


@router.post("/labels", summary="Labels that arrived (chargebacks, confirmed fraud), for scored transactions",
             responses={401: ERRORS[401]})
def post_labels(
    runtime: Runtime, actor: Actor, labels: Annotated[list[Any], Body(description=(
        "objects with transaction_id, is_fraud (0/1 or true/false) and, optionally, label_time"))],
) -> dict[str, Any]:
    """What `selfheal labels FILE` sends while the service owns the workspace: each row is applied (the
    ``labels`` table, the terminals' fraud ratios) or refused with its reason; 200 either way, with the
    counts (`scorer.labels.apply_labels`). Token-guarded: labels move what the model sees."""
    del actor  # the labels table records when each arrived; who sent them is the token's holder
    with runtime.engine.exclusive() as scorer:  # the feature state changes: never beside a scoring batch
        return apply_labels(scorer, labels).to_json()


def _call_hook(call: Any) -> dict[str, Any]:
    """Run a responder hook; its errors become their HTTP status (`hook_error`: 404, 409)."""
    try:
        result: dict[str, Any] = call()
    except (KeyError, ValueError) as error:
        status, detail = hook_error(error) or (500, str(error))
        raise HTTPException(status_code=status, detail=detail) from error
    return result
