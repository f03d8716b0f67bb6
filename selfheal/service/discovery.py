"""How a CLI finds the service that owns a workspace: ``<workspace>/service.json``.

`selfheal serve` writes the file (atomically, mode 0600) once its socket listens, and removes it on exit.
It holds the URL, the pid and the workspace path. A reader trusts it only if that pid is alive; the
client then asks ``/healthz`` which workspace the service owns, so a stale file left by a killed process
(or a reused pid) never sends a command to the wrong place. No fastapi import here: the CLI reads this.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from pydantic import BaseModel, ValidationError

from store import Workspace

SERVICE_FILE: Final = "service.json"


class ServiceRecord(BaseModel):
    """What ``service.json`` says about the running service."""

    url: str
    pid: int
    workspace: str
    started_at: datetime
    token_source: str


def service_file(workspace: Workspace) -> Path:
    return workspace.home / SERVICE_FILE


def write_record(workspace: Workspace, url: str, token_source: str) -> ServiceRecord:
    """Write ``service.json`` for this process (replacing any stale one)."""
    record = ServiceRecord(
        url=url,
        pid=os.getpid(),
        workspace=str(workspace.home),
        started_at=datetime.now(UTC),
        token_source=token_source,
    )
    path = service_file(workspace)
    partial = path.with_name(f".{SERVICE_FILE}.{os.getpid()}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(record.model_dump_json(indent=2) + "\n")
    os.replace(partial, path)  # readers see the old file or the new one, never half of one
    return record


def read_record(workspace: Workspace) -> ServiceRecord | None:
    """The record of a live service process, or None (no file, unreadable, or its process is gone)."""
    path = service_file(workspace)
    try:
        record = ServiceRecord.model_validate(json.loads(path.read_text()))
    except (OSError, ValueError, ValidationError):
        return None
    return record if pid_alive(record.pid) else None


def remove_record(workspace: Workspace) -> None:
    """Remove ``service.json`` if this process wrote it (never another live service's file)."""
    path = service_file(workspace)
    try:
        record = ServiceRecord.model_validate(json.loads(path.read_text()))
    except (OSError, ValueError, ValidationError):
        return
    if record.pid == os.getpid():
        path.unlink(missing_ok=True)


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True
