"""A small HTTP client for a running `selfheal serve`, and how CLI commands find one.

DuckDB lets one process own the workspace file (DESIGN 4): while the service runs, a CLI command that
opened the file would fail. So commands that read the workspace first call `discover_service(home)`:

1. read ``<workspace>/service.json`` (written by ``selfheal serve`` once it listens, removed on exit);
2. skip it when its pid is gone (a killed service leaves the file behind);
3. ask ``/healthz`` (2 s timeout) and check the service owns *this* workspace (a reused pid, a copied
   folder);

and get a `ServiceClient`, or None: then they open the file themselves. Mutating calls send the token from
``$SELFHEAL_API_TOKEN`` or the workspace's ``service-token`` file, whichever exists.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx

from selfheal.service.config import TOKEN_ENV, read_token_file, token_path
from selfheal.service.discovery import read_record
from store import Workspace

__all__ = ["ServiceClient", "ServiceError", "discover_service"]

DISCOVERY_TIMEOUT_S = 2.0


class ServiceError(Exception):
    """The service answered with an error status; ``detail`` is its message, as a person reads it."""

    def __init__(self, status_code: int, detail: Any) -> None:
        readable = validation_text(detail)
        super().__init__(f"{status_code}: {readable}")
        self.status_code = status_code
        self.detail = readable


def validation_text(detail: Any) -> Any:
    """A 422's list of validation errors as one line ("reason: String should have at least 1 character"),
    as the CLI says it without a service; any other detail as it came."""
    if not isinstance(detail, list) or not all(isinstance(e, dict) and "msg" in e for e in detail):
        return detail
    parts = []
    for item in detail:
        where = ".".join(str(part) for part in item.get("loc", []) if part != "body")
        parts.append(f"{where}: {item['msg']}" if where else str(item["msg"]))
    return "; ".join(parts)


class ServiceClient:
    """Calls to one service. ``transport`` is injectable (``httpx.MockTransport`` in tests).

    Args:
        base_url: e.g. ``http://127.0.0.1:8765``.
        token: Sent as ``Authorization: Bearer`` on mutating calls (None: mutating calls get 401).
        actor: Recorded in the audit log as ``api:<actor>``.
        timeout: Seconds per request.
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        actor: str | None = None,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._actor = actor
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ServiceClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reads ------------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        return self._get("/healthz")  # type: ignore[no-any-return]

    def incidents(self, status: str | None = None) -> list[dict[str, Any]]:
        return self._get("/v1/incidents", params={"status": status} if status else None)  # type: ignore[no-any-return]

    def incident(self, incident_id: str) -> dict[str, Any]:
        return self._get(f"/v1/incidents/{incident_id}")  # type: ignore[no-any-return]

    def get(self, path: str, **params: Any) -> Any:
        """Any read endpoint, e.g. ``get("/v1/models")``."""
        return self._get(path, params={k: v for k, v in params.items() if v is not None} or None)

    # -- scoring and changes ----------------------------------------------------------------------

    def score(self, transactions: dict[str, Any] | list[dict[str, Any]]) -> dict[str, Any]:
        """Score one transaction (a dict) or a batch (a list); a rejected single transaction raises."""
        return self._post("/v1/score", transactions)  # type: ignore[no-any-return]

    def promote(self, version: int, reason: str) -> dict[str, Any]:
        return self._post(f"/v1/models/{version}/promote", {"reason": reason})  # type: ignore[no-any-return]

    def post(self, path: str, body: Any) -> Any:
        """Any mutating endpoint, with the token and the actor, e.g. ``post("/v1/incidents/INC-7/investigate", {})``."""
        return self._post(path, body)

    def decide(self, incident_id: str, decision: str, note: str = "", *, request: str | None = None) -> dict[str, Any]:
        """Approve or deny (``decision``) what an incident's paused investigation waits on, or, with
        ``request``, one action asked for in chat that waits for a person (its audit id)."""
        if decision not in ("approve", "deny"):
            raise ValueError(f"decision must be approve or deny, not {decision!r}")
        body: dict[str, Any] = {"note": note}
        if request is not None:
            body["request"] = request
        return self._post(f"/v1/incidents/{incident_id}/{decision}", body)  # type: ignore[no-any-return]

    def rollback(self, reason: str, to_version: int | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"reason": reason}
        if to_version is not None:
            body["to_version"] = to_version
        return self._post("/v1/models/rollback", body)  # type: ignore[no-any-return]

    def load_spills(self) -> list[dict[str, Any]]:
        """Load the workspace's set-aside log rows (`selfheal load-spills` through the service)."""
        return self._post("/v1/log-spills/load", {})  # type: ignore[no-any-return]

    def chat(self, incident_id: str, message: str) -> dict[str, Any]:
        """Ask about an incident (or, with an LLM behind the service, ask it to act): a `ChatReply` as JSON."""
        return self._post(f"/v1/incidents/{incident_id}/chat", {"message": message})  # type: ignore[no-any-return]

    # -- plumbing ---------------------------------------------------------------------------------

    def _get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return _decoded(self._http.get(path, params=params))

    def _post(self, path: str, body: Any) -> Any:
        headers = {}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        if self._actor:
            headers["X-Selfheal-Actor"] = self._actor
        return _decoded(self._http.post(path, json=body, headers=headers))


def _decoded(response: httpx.Response) -> Any:
    if response.is_success:
        return response.json()
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        detail = response.text
    raise ServiceError(response.status_code, detail)


def load_token(workspace: Workspace) -> str | None:
    """``$SELFHEAL_API_TOKEN``, else the workspace's token file if this user can read it, else None."""
    from_env = os.environ.get(TOKEN_ENV)
    if from_env and from_env.strip():
        return from_env.strip()
    try:
        return read_token_file(token_path(workspace)) or None
    except OSError:
        return None


def discover_service(home: str | Path | None = None, *, actor: str | None = None) -> ServiceClient | None:
    """A client for the service that owns this workspace, or None when none is running (see the module docstring)."""
    workspace = Workspace.from_env(home)
    record = read_record(workspace)
    if record is None:
        return None
    client = ServiceClient(record.url, token=load_token(workspace), actor=actor)
    try:
        # Through the client itself, with a shorter timeout: a second httpx client would cost its own
        # start-up (~0.1 s to load the CA bundle) on every CLI command that finds a service.
        health = _decoded(client._http.get("/healthz", timeout=DISCOVERY_TIMEOUT_S))
    except (httpx.HTTPError, ServiceError, ValueError):
        client.close()
        return None
    if Path(str(health.get("workspace", ""))).resolve() != workspace.home.resolve():
        client.close()
        return None
    return client
