"""The typed context every tool receives: dependencies are injected, never global."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

from pydantic import BaseModel, Field

if TYPE_CHECKING:  # annotations only: importing the monitor here would load SciPy for every tool user
    from monitor.incidents import IncidentManager
    from monitor.runner import Monitor
    from scorer.registry import ModelRegistry
    from scorer.score import Scorer
    from scorer.serving import ServingStateStore
    from store import Store


# The SQL sandbox process's cap (RSS, and its data segment): DuckDB's own 512 MB buffer limit, the
# interpreter with DuckDB and pyarrow (~140 MB) and the copied tables fit under it.
DEFAULT_SQL_MEMORY_MB: Final = 1024


class ToolLimits(BaseModel):
    """Bounds on what tools may cost."""

    sql_max_rows: int = Field(200, ge=1, description="rows a SQL query may return")
    sql_timeout_s: float = Field(5.0, gt=0, description="wall time a SQL query may take")
    sql_memory_mb: int = Field(
        DEFAULT_SQL_MEMORY_MB, ge=256, description="memory (MiB) the process running a SQL query may use"
    )
    rollbacks_per_model_per_day: int = Field(2, ge=1)
    retrains_per_day: int = Field(2, ge=1)
    threshold_min: float = Field(0.01, ge=0, le=1)
    threshold_max: float = Field(0.99, ge=0, le=1)


class ToolParts(Protocol):
    """The workspace's parts a tool context is built from (the responder's runtime, the chat's parts)."""

    @property
    def store(self) -> Store: ...
    @property
    def registry(self) -> ModelRegistry: ...
    @property
    def serving(self) -> ServingStateStore: ...
    @property
    def incidents(self) -> IncidentManager: ...
    @property
    def clock(self) -> Callable[[], datetime]: ...
    @property
    def scorer(self) -> Scorer | None: ...
    @property
    def monitor(self) -> Monitor | None: ...
    @property
    def runbooks_dir(self) -> Path | None: ...
    @property
    def limits(self) -> ToolLimits: ...


@dataclass
class ToolContext:
    """What a tool may use: the workspace's parts, who is acting, and for which incident."""

    store: Store
    registry: ModelRegistry
    serving: ServingStateStore
    incidents: IncidentManager
    clock: Callable[[], datetime]
    scorer: Scorer | None = None
    monitor: Monitor | None = None
    runbooks_dir: Path | None = None
    actor: str = "agent"
    incident_id: str | None = None
    reason: str = ""
    approval: str = "not_required"
    limits: ToolLimits = field(default_factory=ToolLimits)
    extras: dict[str, Any] = field(default_factory=dict)  # e.g. the training history for retrain_model

    @classmethod
    def acting_for(
        cls,
        parts: ToolParts,
        incident_id: str,
        *,
        actor: str,
        reason: str,
        approval: str,
        extras: dict[str, Any] | None = None,
    ) -> ToolContext:
        """A context acting (or reading) for one incident on behalf of ``actor``, with ``parts``' workspace."""
        return cls(
            store=parts.store,
            registry=parts.registry,
            serving=parts.serving,
            incidents=parts.incidents,
            clock=parts.clock,
            scorer=parts.scorer,
            monitor=parts.monitor,
            runbooks_dir=parts.runbooks_dir,
            actor=actor,
            incident_id=incident_id,
            reason=reason,
            approval=approval,
            limits=parts.limits,
            extras=dict(extras or {}),
        )
