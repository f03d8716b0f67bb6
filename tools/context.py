"""The typed context every tool receives: dependencies are injected, never global."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from monitor.incidents import IncidentManager
from monitor.runner import Monitor
from scorer.registry import ModelRegistry
from scorer.score import Scorer
from scorer.serving import ServingStateStore
from store import Store


class ToolLimits(BaseModel):
    """Bounds on what tools may cost."""

    sql_max_rows: int = Field(200, ge=1, description="rows a SQL query may return")
    sql_timeout_s: float = Field(5.0, gt=0, description="wall time a SQL query may take")
    rollbacks_per_model_per_day: int = Field(2, ge=1)
    retrains_per_day: int = Field(2, ge=1)
    threshold_min: float = Field(0.01, ge=0, le=1)
    threshold_max: float = Field(0.99, ge=0, le=1)


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
