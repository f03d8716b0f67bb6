"""Errors raised by the scorer: the model registry, serving state and (later) input validation.

    ScorerError
    ├── ModelRegistryError             the registry refuses a request
    │   ├── UnknownModelVersionError   no model with that version is registered
    │   ├── NoRollbackTargetError      rollback asked for, but there is no previous champion
    │   └── ModelIntegrityError        an artifact is missing or its sha256 differs: it never serves
    └── ServingStateError              an invalid serving-state change, or an unknown state version

Every message names what was refused and why (the version, the expected and actual hash, the bound that
was broken), because these messages end up in incident reports and in front of the agent.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "ModelIntegrityError",
    "ModelRegistryError",
    "NoRollbackTargetError",
    "ScorerError",
    "ServingStateError",
    "UnknownModelVersionError",
]


class ScorerError(Exception):
    """Base class for scorer errors."""


class ModelRegistryError(ScorerError):
    """The model registry refuses a request (unknown version or alias, nothing to roll back to, ...)."""


class UnknownModelVersionError(ModelRegistryError, LookupError):
    """No model with that version is registered."""


class NoRollbackTargetError(ModelRegistryError):
    """A rollback was asked for but there is no previous champion to return to."""


class ModelIntegrityError(ModelRegistryError):
    """A model artifact is missing, unreadable or does not match its recorded sha256.

    Attributes:
        version: The model version whose artifact failed.
        reason: What is wrong, e.g. ``"artifact missing: /path/model.ubj"``.
        path: The artifact's path.
        expected_sha256: The hash recorded at registration.
        actual_sha256: The hash of the file on disk (None when it could not be read).
    """

    def __init__(
        self,
        version: int,
        reason: str,
        *,
        path: Path | None = None,
        expected_sha256: str | None = None,
        actual_sha256: str | None = None,
    ) -> None:
        super().__init__(f"model v{version} failed its integrity check and will not be served: {reason}")
        self.version = version
        self.reason = reason
        self.path = path
        self.expected_sha256 = expected_sha256
        self.actual_sha256 = actual_sha256


class ServingStateError(ScorerError):
    """An invalid serving-state change (thresholds out of order, unknown field, ...) or unknown version."""
