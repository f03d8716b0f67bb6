"""The read API: incidents (with steps, actions, pages, reports), models, serving state, runbooks, dead letters.

Open without a token (the service binds to loopback by default). Each route is a thin wrapper over a
function in `selfheal.service.views`, which the CLI also uses when no service runs. Handlers are plain
functions: FastAPI runs them in its thread pool, and the store serialises their queries. The app answers
`views.NotFound` with 404 and `ResponderUnavailable` with 503 (`selfheal.service.app`), so handlers let
those propagate.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import FileResponse

from monitor.incidents import Status
from selfheal.errors import error_text
from selfheal.service import views
from selfheal.service.runtime import ServiceRuntime, runtime_of
from selfheal.service.schemas import Problem
from tools.runbooks import RunbookError

router = APIRouter(prefix="/v1", tags=["read"])
Runtime = Annotated[ServiceRuntime, Depends(runtime_of)]
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": Problem}}


@router.get("/incidents", summary="List incidents, oldest first (without evidence)")
def list_incidents(
    runtime: Runtime,
    status: Annotated[Status | None, Query(description="only incidents with this status")] = None,
    active: Annotated[bool, Query(description="only incidents not yet resolved")] = False,
) -> list[dict[str, Any]]:
    return views.incident_list(runtime.platform, status, active_only=active)


@router.get("/incidents/{incident_id}", summary="One incident: evidence and timeline", responses=NOT_FOUND)
def get_incident(runtime: Runtime, incident_id: str) -> dict[str, Any]:
    return views.incident_detail(runtime.platform, incident_id)


@router.get(
    "/incidents/{incident_id}/steps",
    summary="The responder's investigation steps",
    responses={**NOT_FOUND, 503: {"model": Problem, "description": "no responder wired into this service"}},
)
def get_steps(runtime: Runtime, incident_id: str) -> list[dict[str, Any]]:
    key = views.normalise_incident_id(incident_id)
    steps = runtime.hooks.require_steps()
    try:
        return steps(key)
    except KeyError as error:  # the hook's "no such incident" (see `ServiceHooks`)
        raise HTTPException(status_code=404, detail=error_text(error)) from error


@router.get("/runs", summary="The responder's investigations (status, root cause, verified, paged), oldest first",
            responses=NOT_FOUND)
def list_runs(
    runtime: Runtime, incident_id: Annotated[str | None, Query(description="only this incident's")] = None
) -> list[dict[str, Any]]:
    return views.runs(runtime.platform, incident_id)


@router.get("/incidents/{incident_id}/actions", summary="Actions taken or refused for an incident", responses=NOT_FOUND)
def get_incident_actions(runtime: Runtime, incident_id: str) -> list[dict[str, Any]]:
    return views.incident_actions(runtime.platform, incident_id)


@router.get("/incidents/{incident_id}/pages", summary="Pages sent for an incident, with deliveries", responses=NOT_FOUND)
def get_incident_pages(runtime: Runtime, incident_id: str) -> list[dict[str, Any]]:
    return views.incident_pages(runtime.platform, incident_id)


@router.get(
    "/incidents/{incident_id}/report",
    summary="The incident report (markdown, or HTML with format=html), once written",
    response_class=FileResponse,
    responses={**NOT_FOUND, 200: {"content": {"text/markdown": {}, "text/html": {}}}},
)
def get_report(
    runtime: Runtime,
    incident_id: str,
    format: Annotated[views.ReportFormat, Query(description="md or html")] = "md",
) -> FileResponse:
    path = views.report_path(runtime.platform.workspace.reports_dir, incident_id, format)
    media = "text/html; charset=utf-8" if format == "html" else "text/markdown; charset=utf-8"
    return FileResponse(path, media_type=media)


@router.get("/actions", summary="The action audit log")
def list_actions(
    runtime: Runtime,
    incident_id: Annotated[str | None, Query()] = None,
    action: Annotated[str | None, Query(description="e.g. rollback_model")] = None,
    actor: Annotated[str | None, Query(description="e.g. agent, person:ana, autopilot")] = None,
) -> list[dict[str, Any]]:
    # An unknown incident is a 404, as for /runs (an empty list would read as "nothing was done").
    key = views.existing_incident(runtime.platform, incident_id) if incident_id is not None else None
    return views.actions(runtime.platform, incident_id=key, action=action, actor=actor)


@router.get("/pages", summary="The pager outbox: every page and delivery result")
def list_pages(
    runtime: Runtime,
    incident_id: Annotated[str | None, Query(description="only this incident's")] = None,
    failed: Annotated[bool, Query(description="only deliveries that failed and never succeeded since")] = False,
) -> list[dict[str, Any]]:
    key = views.existing_incident(runtime.platform, incident_id) if incident_id is not None else None
    return views.pages(runtime.platform, incident_id=key, failed=failed)


@router.get("/models", summary="Registered models, newest first, with aliases")
def list_models(runtime: Runtime) -> dict[str, Any]:
    return views.models(runtime.platform)


@router.get("/models/{version}", summary="One model's metadata and integrity check", responses=NOT_FOUND)
def get_model(runtime: Runtime, version: int) -> dict[str, Any]:
    return views.model_detail(runtime.platform, version)


@router.get("/serving", summary="What serves now: champion or fallback, thresholds, quarantined features; "
            "the serving-state version it read (who, when, why)")
def get_serving(runtime: Runtime) -> dict[str, Any]:
    return views.serving(runtime.platform, runtime.engine.status())


@router.get("/status", summary="One look: what serves, the models, the last day's traffic, what needs a person")
def get_status(runtime: Runtime) -> dict[str, Any]:
    runtime.engine.flush()  # the scorer buffers its log rows: count what has been received so far
    return views.status(runtime.platform)


@router.get("/serving/history", summary="Serving-state versions, newest first: who changed what and why")
def get_serving_history(
    runtime: Runtime, limit: Annotated[int, Query(ge=1, le=1000)] = 50
) -> list[dict[str, Any]]:
    return views.serving_history(runtime.platform, limit)


@router.get("/runbooks", summary="Every runbook's front matter", responses={500: {"model": Problem}})
def list_runbooks(runtime: Runtime) -> list[dict[str, Any]]:
    try:
        return views.runbooks(runtime.runbooks_dir)
    except RunbookError as error:
        raise HTTPException(status_code=500, detail=f"runbooks do not parse (run `selfheal runbooks lint`): {error}") from error


@router.get("/runbooks/{runbook_id}", summary="One runbook: front matter and body", responses=NOT_FOUND)
def get_runbook(runtime: Runtime, runbook_id: str) -> dict[str, Any]:
    try:
        return views.runbook_detail(runtime.runbooks_dir, runbook_id)
    except RunbookError as error:
        raise HTTPException(status_code=500, detail=f"runbooks do not parse: {error}") from error


@router.get("/dead-letters", summary="The most recent dead letters, newest first")
def list_dead_letters(runtime: Runtime, limit: Annotated[int, Query(ge=1, le=10_000)] = 100) -> list[dict[str, Any]]:
    runtime.engine.flush()  # the scorer buffers its log rows; show what has been received so far
    return views.dead_letters(runtime.platform, limit)
