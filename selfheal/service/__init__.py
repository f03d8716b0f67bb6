"""The service: `selfheal serve` (FastAPI + uvicorn, 127.0.0.1 by default) owning one workspace.

| endpoint | auth | what |
|---|---|---|
| ``POST /v1/score`` | open | one transaction (object) or a batch (array): score, decision, model version, latency |
| ``GET /v1/incidents[/{id}[/steps, /actions, /pages, /report]]`` | open | incidents and what was done |
| ``GET /v1/actions``, ``/v1/pages``, ``/v1/dead-letters``, ``/v1/runs`` | open | audit log, pager outbox, rejects, the responder's runs |
| ``GET /v1/models[/{v}]``, ``/v1/serving[/history]``, ``/v1/runbooks[/{id}]`` | open | registry, serving state, runbooks |
| ``POST /v1/models/{v}/promote``, ``POST /v1/models/rollback`` | token | through the agent's action tools |
| ``POST /v1/serving/fallback``, ``/quarantine``, ``/release``, ``/thresholds`` | token | a person's serving changes (`selfheal.serving_changes`) |
| ``POST /v1/incidents/{id}/approve``, ``/deny``, ``/chat``, ``/chat/stream`` | token | responder hooks (503 when not wired) |
| ``POST /v1/log-spills/load`` | token | load scoring-log rows set aside in ``log-spill/`` (`store.spill`) |
| ``GET /ui/``, ``/ui/incidents/{id}``, ``/ui/runbooks[/{id}]`` | open | the incident review in a browser (`web`) |
| ``GET /healthz``, ``GET /metrics``, ``GET /openapi.json`` | open | liveness, Prometheus text, the schema |

Modules: `config` (settings, the token), `discovery` (``service.json``), `engine` (the scoring worker),
`metrics` (Prometheus text), `hooks` (the responder's seams, the scheduler), `responder_hooks` (the
responder wired into them), `web` (the browser pages and the chat stream), `views` (read payloads, shared
with the CLI), `schemas` (request/response models), `auth` (the token guard), ``routes_*`` (one router
each), `app` (`create_app`). Importing this package does not import FastAPI; the names below load lazily,
so CLI commands that only read ``service.json`` stay fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["ServiceConfig", "ServiceHooks", "ServiceRuntime", "create_app"]

_WHERE = {
    "ServiceConfig": "selfheal.service.config",
    "ServiceHooks": "selfheal.service.hooks",
    "ServiceRuntime": "selfheal.service.runtime",
    "create_app": "selfheal.service.app",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'selfheal.service' has no attribute {name!r}")
