"""`create_app(platform, config)`: the FastAPI application of `selfheal serve`.

The service owns the workspace: it holds the `Platform` (the one DuckDB connection, DESIGN 4) for its
whole life. What runs inside, and in which thread:

- the event loop (uvicorn's main thread) parses requests and answers them;
- one worker coroutine on that loop (`ScoringEngine`) owns the scorer: scoring requests queue jobs for it
  (why on the loop and not in a thread: see `selfheal.service.engine`);
- read and admin handlers are plain functions run in FastAPI's thread pool; the store serialises their
  queries on its lock, and actions serialise on the audit log's lock (`tools.audit.run_action`);
- one scheduler thread runs the periodic jobs plugged in through `ServiceHooks` (none by default).

The caller opens and closes the platform; the app starts its threads on startup and, on shutdown, scores
what is queued, writes the scorer's log buffer and stops them.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from selfheal.app import Platform
from selfheal.service import views
from selfheal.service.auth import TokenGuard
from selfheal.service.config import TOKEN_ENV, TOKEN_FILE, ServiceConfig
from selfheal.service.engine import ScoringEngine
from selfheal.service.hooks import ResponderUnavailable, Scheduler, ServiceHooks
from selfheal.service.metrics import ServiceMetrics
from selfheal.service.routes_admin import router as admin_router
from selfheal.service.routes_health import router as health_router
from selfheal.service.routes_read import router as read_router
from selfheal.service.routes_scoring import SCORE_PATH
from selfheal.service.routes_scoring import router as scoring_router
from selfheal.service.runtime import ServiceRuntime
from selfheal.service.web import api_router as web_api_router
from selfheal.service.web import router as web_router

API_VERSION = "1"


def create_app(
    platform: Platform,
    config: ServiceConfig,
    *,
    hooks: ServiceHooks | None = None,
    runbooks_dir: Path | None = None,
) -> FastAPI:
    """The service's FastAPI app for an open platform.

    Args:
        platform: The workspace's platform; the app uses it and never closes it.
        config: Where to listen, the token, batching and flushing settings.
        hooks: The responder's seams (`ServiceHooks`); without them the responder endpoints answer 503.
        runbooks_dir: Runbook folder for ``/v1/runbooks`` (default ``$SELFHEAL_RUNBOOKS`` or the shipped ones).
    """
    metrics = ServiceMetrics()
    engine = ScoringEngine(
        platform.scorer,
        metrics,
        coalesce_max_rows=config.coalesce_max_rows,
        batch_path_min_rows=config.batch_path_min_rows,
        max_queued_rows=config.max_queued_rows,
        flush_interval_s=config.flush_interval_s,
    )
    runtime = ServiceRuntime(
        platform=platform,
        config=config,
        hooks=hooks or ServiceHooks(),
        metrics=metrics,
        engine=engine,
        runbooks_dir=runbooks_dir,
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        engine.start()
        if runtime.hooks.on_start is not None:
            runtime.hooks.on_start(runtime)
        runtime.scheduler = Scheduler(runtime, runtime.hooks.jobs)
        runtime.scheduler.start()
        try:
            yield
        finally:
            runtime.scheduler.stop()
            if runtime.hooks.on_stop is not None:
                runtime.hooks.on_stop()
            await engine.stop()  # scores what is queued, then writes the log buffer: nothing accepted is lost

    app = FastAPI(
        title="selfheal",
        version=API_VERSION,
        description=(
            "Card-fraud scoring with a self-healing loop. Scoring and reads are open; every other POST "
            "needs `Authorization: Bearer <token>` (the token is `$SELFHEAL_API_TOKEN` or the workspace's "
            "`service-token` file)."
        ),
        lifespan=lifespan,
        # The interactive docs pages load their JavaScript from a CDN, and nothing here may need the
        # network at run time; the OpenAPI document itself is served at /openapi.json.
        docs_url=None,
        redoc_url=None,
    )
    app.state.runtime = runtime
    # Every route answers these two the same way, so they are answered here and not in each handler.
    app.add_exception_handler(views.NotFound, _not_found)
    app.add_exception_handler(ResponderUnavailable, _responder_unavailable)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.include_router(scoring_router)
    app.include_router(read_router)
    app.include_router(admin_router)
    app.include_router(health_router)
    app.include_router(web_api_router)  # the chat stream the page reads (token-guarded like /chat)
    app.include_router(web_router)  # the incident review pages, /ui/
    app.add_middleware(
        TokenGuard,  # type: ignore[arg-type]
        token=config.token.get_secret_value(),
        open_paths=frozenset({SCORE_PATH}),
        hint=f"the token is ${TOKEN_ENV} or the workspace's {TOKEN_FILE} file",
    )
    return app


async def _not_found(_request: Request, error: Exception) -> JSONResponse:
    return JSONResponse(status_code=404, content={"detail": str(error)})


async def _responder_unavailable(_request: Request, error: Exception) -> JSONResponse:
    return JSONResponse(status_code=503, content={"detail": str(error)})


async def _invalid_request(_request: Request, error: Exception) -> JSONResponse:
    """FastAPI's 422, except that it can be written: its own handler echoes the invalid input, and a body
    holding NaN or Infinity (which Python's JSON parser accepts) made that echo raise, so a bad request
    got a 500 and a traceback in the log."""
    errors = error.errors() if isinstance(error, RequestValidationError) else []
    return JSONResponse(status_code=422, content={"detail": _finite(jsonable_encoder(errors))})


def _finite(value: object) -> object:
    """``value`` with every NaN or infinite float replaced by its name ("nan", "inf"), so JSON can hold it."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value
