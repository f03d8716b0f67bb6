"""``GET /healthz`` (liveness plus what serves) and ``GET /metrics`` (Prometheus text)."""

from __future__ import annotations

from collections import Counter
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import PlainTextResponse, Response

from monitor.incidents import ACTIVE_STATUSES, IncidentManager
from selfheal.service.metrics import CONTENT_TYPE
from selfheal.service.runtime import ServiceRuntime, runtime_of
from selfheal.service.schemas import Health
from tools.pagers.outbox import OutboxPager

router = APIRouter(tags=["operations"])
Runtime = Annotated[ServiceRuntime, Depends(runtime_of)]


@router.head("/healthz", include_in_schema=False)
def healthz_head() -> Response:
    """Load balancers and uptime probes often ask with HEAD: alive, no body."""
    return Response(status_code=200)


@router.get("/healthz", response_model=Health, summary="Liveness, the workspace served and what scores")
def healthz(runtime: Runtime) -> dict[str, Any]:
    # The serving state is cached in memory; no scorer lock, so a long batch never makes this slow.
    state = runtime.platform.serving.current()
    log = runtime.engine.log_health()
    return {
        # Scoring still answers while the log cannot be written, but its rows wait in memory: say so.
        "status": "degraded" if log["unwritten_chunks"] else "ok",
        "workspace": str(runtime.platform.workspace.home),
        "pid": runtime.pid,
        "started_at": runtime.started_at,
        "model_version": None if state.fallback else state.champion_version,
        "fallback": state.fallback or state.champion_version is None,
        "serving_state_version": state.version,
        "queued_rows": runtime.engine.queued_rows,
        "responder": runtime.hooks.decide is not None,
        "log": log,
    }


@router.get("/metrics", response_class=PlainTextResponse, summary="Prometheus text exposition")
def metrics(runtime: Runtime) -> PlainTextResponse:
    """Counters since start (latency, decisions, dead letters, agent runs) and gauges read now."""
    status = runtime.engine.status()
    m = runtime.metrics
    m.fallback.set(1.0 if status["fallback"] else 0.0)
    if status["model_version"] is None:
        m.champion.replace([])
    else:
        m.champion.set(float(status["model_version"]))
    m.serving_state.set(float(status["serving_state_version"]))
    log = runtime.engine.log_health()
    m.log_write_failures.set(float(log["write_failures"]))
    m.log_unwritten_chunks.set(float(log["unwritten_chunks"]))
    m.log_spilled_files.set(float(log["spilled_files"]))
    counts = Counter(i.status for i in IncidentManager(runtime.platform.store).list(active_only=True))
    m.open_incidents.replace([({"status": s}, float(counts.get(s, 0))) for s in ACTIVE_STATUSES])
    # Worth an alert rule (> 0): after a day of failed redeliveries nothing else tells anyone.
    m.pages_unreached.set(float(sum(OutboxPager(runtime.platform.store).unreached_pages().values())))
    return PlainTextResponse(m.render(), media_type=CONTENT_TYPE)
