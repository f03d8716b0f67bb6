"""What the chat engine runs with: the platform parts it reads (and, for a chat action, acts through)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from agent.context import AgentRuntime
from monitor.incidents import IncidentManager
from monitor.runner import Monitor
from scorer.registry import ModelRegistry
from scorer.score import Scorer
from scorer.serving import ServingStateStore
from store import Store
from tools.context import ToolContext, ToolLimits
from tools.runbooks import RunbookLibrary


@dataclass
class ChatParts:
    """The parts one workspace's chat uses; build it with `for_platform` (agent/ never imports selfheal/).

    Attributes:
        store: The workspace database (conversations persist here, in ``chat_messages``).
        registry: The model registry.
        serving: The serving-state store.
        incidents: The incident manager (reads incidents and their timelines).
        clock: The platform's "now" (simulated time in a demo or eval workspace).
        reports_dir: Where incident reports are written.
        runbooks: The runbook library the responder used.
        runbooks_dir: Where `runbooks` came from (None: the shipped ones); the read tools show the same files.
        monitor: Given to tools that need it (the quarantine's imputation value, the read reports).
        scorer: Given to tools that need it (None when the caller does not score).
        limits: Bounds on tool cost (SQL rows and time, rate limits).
    """

    store: Store
    registry: ModelRegistry
    serving: ServingStateStore
    incidents: IncidentManager
    clock: Callable[[], datetime]
    reports_dir: Path
    runbooks: RunbookLibrary
    runbooks_dir: Path | None = None
    monitor: Monitor | None = None
    scorer: Scorer | None = None
    limits: ToolLimits = field(default_factory=ToolLimits)

    @classmethod
    def for_platform(cls, platform: Any, *, runbooks_dir: Path | None = None) -> ChatParts:
        """The parts of a platform (anything with ``store``, ``registry``, ``serving``, ``scorer`` and
        ``workspace``; its ``clock`` is used when it has one); runbooks from ``runbooks_dir`` or the default."""
        clock = getattr(platform, "clock", None) or platform.serving.clock
        monitor = Monitor(platform.store, platform.registry, platform.serving, clock=clock)
        return cls(
            store=platform.store,
            registry=platform.registry,
            serving=platform.serving,
            incidents=monitor.incidents,
            clock=clock,
            reports_dir=platform.workspace.reports_dir,
            runbooks=RunbookLibrary.load(runbooks_dir),
            runbooks_dir=runbooks_dir,
            monitor=monitor,
            scorer=getattr(platform, "scorer", None),
        )

    @classmethod
    def from_runtime(cls, runtime: AgentRuntime) -> ChatParts:
        """The responder's own parts (its monitor, runbooks and scorer): what a service's chat uses, so a
        question about an investigation is answered from the very objects that ran it."""
        return cls(
            store=runtime.store,
            registry=runtime.registry,
            serving=runtime.serving,
            incidents=runtime.incidents,
            clock=runtime.clock,
            reports_dir=runtime.reports_dir,
            runbooks=runtime.runbooks,
            runbooks_dir=runtime.runbooks_dir,
            monitor=runtime.monitor,
            scorer=runtime.scorer,
            limits=runtime.limits,
        )

    def tool_context(self, incident_id: str, *, actor: str, reason: str, approval: str) -> ToolContext:
        """A tool context acting (or reading) for one incident on behalf of ``actor``."""
        return ToolContext.acting_for(self, incident_id, actor=actor, reason=reason, approval=approval)
