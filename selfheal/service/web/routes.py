"""The incident review's routes: ``/ui/`` (incidents), ``/ui/incidents/{id}``, ``/ui/runbooks[/{id}]``.

The pages are GET only, and open like the read API: the pages show what ``/v1`` serves. What changes something
(approve, deny, chat) is done by the page's script against the token-guarded API
(``/v1/incidents/{id}/approve``, ``.../deny``, and ``.../chat/stream``, defined here: the chat's answer as
server-sent events, `selfheal.service.web.sse`). Every page is sent with a
Content-Security-Policy that allows only this origin's script and stylesheet: even text that escaped
escaping could not run or fetch anything.
"""

from __future__ import annotations

import logging
from importlib import resources
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from selfheal.app import Platform
from selfheal.service import views
from selfheal.service.hooks import ChatMessage
from selfheal.service.routes_admin import RESPONDER_ERRORS, Actor, require_token
from selfheal.service.runtime import ServiceRuntime, runtime_of
from selfheal.service.schemas import ChatIn
from selfheal.service.web import incident_page as incident_html
from selfheal.service.web import pages, sse
from selfheal.service.web.layout import error_page
from tools.runbooks import RunbookError

logger = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)
Runtime = Annotated[ServiceRuntime, Depends(runtime_of)]

SECURITY_HEADERS: Final = {
    # Scripts and styles from this origin only (no inline script at all); SVG charts are inline markup and
    # carry presentation attributes, which need 'unsafe-inline' for styles, not for scripts.
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
STATIC_FILES: Final = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8"}


def _html(document: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(document, status_code=status, headers=SECURITY_HEADERS)


@router.get("/")
def home() -> RedirectResponse:
    return RedirectResponse("/ui/", status_code=307)


@router.get("/favicon.ico")
def favicon() -> Response:
    return Response(status_code=204)  # no icon; answered so browsers do not log a 404 on every page


@router.get("/ui")
@router.get("/ui/")
def incident_list(runtime: Runtime) -> HTMLResponse:
    platform = runtime.platform
    incidents, latest = views.incident_list(platform), views.latest_investigations(platform)
    return _html(pages.incident_list(incidents, latest, views.status(platform, incidents=incidents, latest=latest)))


@router.get("/ui/incidents/{incident_id}")
def incident_page(runtime: Runtime, incident_id: str) -> HTMLResponse:
    platform = runtime.platform
    try:
        detail = views.incident_detail(platform, incident_id)
    except views.NotFound as error:
        return _html(error_page(404, str(error)), 404)
    key = detail["incident_id"]
    runs = views.investigations(platform, key)
    view = incident_html.IncidentView(
        detail=detail,
        runs=runs,
        pending=views.pending_of(runs),
        chat_requests=views.chat_requests(platform, key),
        actions=views.incident_actions(platform, key),
        pages=views.incident_pages(platform, key),
        reports=_reports(platform, key),
        chat_available=runtime.hooks.chat is not None,
        conversation=_conversation(platform, key),
    )
    _add_report_data(view, platform, key, runs[-1].get("state") if runs else None)
    return _html(incident_html.incident_page(view))


@router.get("/ui/runbooks")
def runbook_list(runtime: Runtime) -> HTMLResponse:
    try:
        listed = views.runbooks(runtime.runbooks_dir)
    except RunbookError as error:
        return _html(error_page(500, f"runbooks do not parse (run `selfheal runbooks lint`): {error}"), 500)
    return _html(pages.runbook_list(listed))


@router.get("/ui/runbooks/{runbook_id}")
def runbook_page(runtime: Runtime, runbook_id: str) -> HTMLResponse:
    try:
        runbook = views.runbook_detail(runtime.runbooks_dir, runbook_id)
    except views.NotFound as error:
        return _html(error_page(404, str(error)), 404)
    except RunbookError as error:
        return _html(error_page(500, f"runbooks do not parse: {error}"), 500)
    return _html(pages.runbook_page(runbook))


@router.get("/ui/static/{name}")
def static(name: str) -> Response:
    media = STATIC_FILES.get(name)
    if media is None:  # a fixed list: no path from the request ever reaches the file system
        return Response("not found", status_code=404, media_type="text/plain")
    body = resources.files("selfheal.service.web").joinpath("static", name).read_bytes()
    return Response(
        body, media_type=media, headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}
    )


# -- gathering ----------------------------------------------------------------------------------------


def _reports(platform: Platform, key: str) -> dict[str, str]:
    found = {}
    for fmt in ("html", "md"):
        try:
            views.report_path(platform.workspace.reports_dir, key, fmt)  # type: ignore[arg-type]
        except views.NotFound:
            continue
        found[fmt] = f"/v1/incidents/{key}/report?format={fmt}"
    return found


def _add_report_data(
    view: incident_html.IncidentView, platform: Platform, key: str, state: dict[str, Any] | None
) -> None:
    """The report's timeline and inline SVG charts (`agent.report`), drawn from the store now.

    Gathering reads monitor windows and reference profiles; if it fails the page still shows the record
    (events, actions, pages) and says why the charts are missing, instead of failing whole.
    """
    from agent.report import build_report_data
    from agent.report.document import Figure, sections

    try:
        data = build_report_data(platform.store, platform.registry, key, state, now=platform.clock())
        figures = [(b.chart, b.svg) for _, blocks in sections(data) for b in blocks if isinstance(b, Figure)]
    except Exception as error:  # the record must stay readable whatever the charts' data looks like
        logger.exception("report data for %s", key)
        view.charts_error = f"{type(error).__name__}: {error}"
        return
    view.figures = figures
    view.timeline = [
        {"at": t.at, "until": t.until, "count": t.count, "source": t.source, "event": t.event, "text": t.text}
        for t in data.timeline
    ]


def _conversation(platform: Platform, key: str) -> list[dict[str, Any]]:
    """Earlier chat turns on this incident (`agent.chat.conversation`), oldest first; none without it."""
    try:
        from agent.chat import conversation
    except ImportError:
        return []
    return conversation(platform.store, key)


# -- the chat stream (an API route: token-guarded, in the OpenAPI document) -------------------------------

api_router = APIRouter(prefix="/v1", tags=["admin"], dependencies=[Depends(require_token)])


@api_router.post(
    "/incidents/{incident_id}/chat/stream",
    summary="Ask about an incident; the answer streams back as server-sent events",
    response_class=StreamingResponse,
    responses={**RESPONDER_ERRORS, 200: {"content": {"text/event-stream": {}}}},
)
async def chat_stream(runtime: Runtime, actor: Actor, incident_id: str, body: ChatIn) -> StreamingResponse:
    """What ``/chat`` answers, as events: ``start``, ``delta`` pieces of the answer, then ``done`` with the
    whole reply (or ``error``): see `selfheal.service.web.sse`. 503 when no chat is wired in."""
    hook = runtime.hooks.require_chat()
    key = await run_in_threadpool(views.existing_incident, runtime.platform, incident_id)
    message = ChatMessage(incident_id=key, actor=actor, message=body.message)
    return StreamingResponse(
        sse.chat_events(hook, message),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
