"""`ServiceRuntime`: what a request handler or a periodic job may use while the service runs."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from fastapi import Request

from selfheal.app import Platform
from selfheal.service.config import ServiceConfig
from selfheal.service.engine import ScoringEngine
from selfheal.service.hooks import Scheduler, ServiceHooks
from selfheal.service.metrics import ServiceMetrics


@dataclass
class ServiceRuntime:
    """The service's parts (``request.app.state.runtime``; the argument of every `PeriodicJob`).

    Attributes:
        platform: The workspace (store, serving state, registry, scorer). Touch ``platform.scorer`` only
            inside ``engine.exclusive()``; call ``engine.flush()`` before reading scoring logs.
        config: The service's settings.
        hooks: The responder's seams.
        metrics: What ``/metrics`` exposes; the responder counts its runs in ``metrics.agent_runs``.
        engine: The worker (on the event loop) that owns the scorer.
        runbooks_dir: Where runbooks are read from (None: ``$SELFHEAL_RUNBOOKS`` or the shipped ones).
    """

    platform: Platform
    config: ServiceConfig
    hooks: ServiceHooks
    metrics: ServiceMetrics
    engine: ScoringEngine
    runbooks_dir: Path | None = None
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    pid: int = field(default_factory=os.getpid)
    scheduler: Scheduler | None = None


def runtime_of(request: Request) -> ServiceRuntime:
    """The runtime of the app serving ``request`` (a FastAPI dependency)."""
    runtime: ServiceRuntime = request.app.state.runtime
    return runtime
