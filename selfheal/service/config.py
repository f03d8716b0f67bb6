"""How `selfheal serve` runs: where it listens, how it authenticates changes, how it batches and flushes.

The token that guards mutating endpoints comes from, in order:

1. ``$SELFHEAL_API_TOKEN`` (deployments that manage secrets themselves; nothing is written to disk);
2. ``<workspace>/service-token`` if it exists (so the token survives restarts and local CLIs can read it);
3. a new random token (32 bytes, URL-safe) written to ``<workspace>/service-token`` with mode 0600.

The token itself is never printed or logged: `selfheal serve` prints *where* it is (the file, or the
environment variable). Anyone who can read the workspace can already open the database, so a 0600 file in
it grants nothing new; printing it would put a secret in terminal scroll-back and log collectors.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from pydantic import BaseModel, Field, SecretStr

from store import Workspace

TOKEN_ENV: Final = "SELFHEAL_API_TOKEN"
TOKEN_FILE: Final = "service-token"
DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 8765
LOOPBACK_HOSTS: Final = frozenset({"127.0.0.1", "::1", "localhost"})


class ServiceConfig(BaseModel):
    """Settings of one service process (every field has a safe default)."""

    host: str = Field(DEFAULT_HOST, description="interface to bind; loopback unless told otherwise")
    port: int = Field(DEFAULT_PORT, ge=0, le=65535, description="TCP port; 0 picks a free one")
    token: SecretStr = Field(description="bearer token every mutating endpoint requires")
    token_source: str = Field("", description="where the token came from (printed instead of the token)")
    max_request_rows: int = Field(10_000, ge=1, description="largest batch one request may carry (else 413)")
    max_request_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="largest scoring request body (else 413); 10,000 rows take ~3 MB"
    )
    coalesce_max_rows: int = Field(
        256, ge=1, description="requests waiting while a batch scores are scored together, up to this many rows"
    )
    batch_path_min_rows: int = Field(
        32, ge=1, description="this many waiting single transactions are scored as one batch, fewer one by one"
    )
    max_queued_rows: int = Field(100_000, ge=1, description="rows waiting to be scored before answering 503")
    flush_interval_s: float = Field(
        0.5, gt=0, description="when traffic pauses, log rows staged longer than this are written (and at the "
        "latest after 60 intervals under unbroken traffic, and on shutdown)"
    )
    flush_rows: int = Field(
        256, ge=1, description="the scorer writes a chunk of log rows once this many are staged"
    )
    background_writes: bool = Field(
        True, description="write log chunks on the scorer's writer thread, so scoring goes on meanwhile"
    )

    @property
    def is_loopback(self) -> bool:
        return self.host in LOOPBACK_HOSTS

    @classmethod
    def for_workspace(cls, workspace: Workspace, **settings: object) -> ServiceConfig:
        """Settings for serving ``workspace``, with its token resolved (see the module docstring)."""
        token = resolve_token(workspace)
        return cls.model_validate({**settings, "token": token.value, "token_source": token.source})


@dataclass(frozen=True)
class ResolvedToken:
    """The token and a description of where it lives (safe to print)."""

    value: str
    source: str
    kind: Literal["env", "file", "generated"]


def token_path(workspace: Workspace) -> Path:
    return workspace.home / TOKEN_FILE


def resolve_token(workspace: Workspace, environ: dict[str, str] | None = None) -> ResolvedToken:
    """The service token: ``$SELFHEAL_API_TOKEN``, else the workspace's token file, else a new one.

    Raises:
        ValueError: The environment variable or the file holds an empty token.
    """
    env = os.environ if environ is None else environ
    from_env = env.get(TOKEN_ENV)
    if from_env is not None:
        if not from_env.strip():
            raise ValueError(f"${TOKEN_ENV} is set but empty")
        return ResolvedToken(from_env.strip(), f"${TOKEN_ENV}", "env")
    path = token_path(workspace)
    if path.exists():
        existing = read_token_file(path)
        if not existing:
            raise ValueError(f"{path} is empty: delete it to have a new token generated")
        return ResolvedToken(existing, str(path), "file")
    value = secrets.token_urlsafe(32)
    workspace.ensure()
    # O_EXCL + 0600 from the start: the token is never readable by others, not even for a moment.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    return ResolvedToken(value, str(path), "generated")


def read_token_file(path: Path) -> str:
    return path.read_text().strip()
