"""What the responder runs with: its configuration (checkpointed runs never store it) and its runtime parts.

`AgentConfig` holds the knobs, every field described. `AgentRuntime` is LangGraph's run context (the
graph's ``context_schema``): the platform parts the nodes use, injected per invocation, never global and
never checkpointed (state holds plain data only, DESIGN 4).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from monitor.incidents import IncidentManager
from monitor.runner import Monitor
from scorer.registry import ModelRegistry
from scorer.score import Scorer
from scorer.serving import ServingStateStore
from store import Store
from tools.context import ToolContext, ToolLimits
from tools.runbooks import RunbookLibrary

if TYPE_CHECKING:
    from agent.llm import LLMClient

PlannerChoice = Literal["deterministic", "llm", "auto"]

PUBLIC_URL_ENV = "SELFHEAL_PUBLIC_URL"
DEFAULT_PUBLIC_URL = "http://127.0.0.1:8765"  # `selfheal serve`'s default address (selfheal.service.config)


def incident_review_url(public_url: str, incident_id: str) -> str:
    """The incident's page in the web review (it links the report in every format)."""
    return f"{public_url.rstrip('/')}/ui/incidents/{incident_id}"


class AgentConfig(BaseModel):
    """How the responder investigates."""

    planner: PlannerChoice = Field(
        "auto", description="deterministic, llm, or auto (llm when an endpoint is configured, else deterministic)"
    )
    recursion_limit: int = Field(
        64, ge=10, description="LangGraph supersteps per invocation (the library default, 10007, is no limit)"
    )
    max_llm_steps: int = Field(12, ge=1, description="model turns per investigation")
    max_tokens: int = Field(60_000, ge=1000, description="total tokens per investigation")
    max_seconds: float = Field(180.0, gt=0, description="wall time for the model's investigation")
    max_repeated_calls: int = Field(2, ge=1, description="identical tool calls allowed before the loop is stopped")
    verify_min_hours: dict[str, int] = Field(
        # A daily check needs a whole day: a part of one has a different mix of hours (nights hold other
        # amounts and fraud rates), which reads as drift against the all-day reference.
        default_factory=lambda: {"hour": 2, "day": 24},
        description="hours of data after the action before an hourly / daily check can verify it",
    )
    public_url: str = Field(
        default_factory=lambda: os.environ.get(PUBLIC_URL_ENV) or DEFAULT_PUBLIC_URL,
        description="the incident review's address, linked from pages and summaries: $SELFHEAL_PUBLIC_URL, "
        "else `selfheal serve`'s default address (a running service passes its own address)",
    )


SideEffectHook = Callable[[str, str], None]


@dataclass
class AgentRuntime:
    """The platform parts one investigation uses (LangGraph's run context)."""

    store: Store
    registry: ModelRegistry
    serving: ServingStateStore
    incidents: IncidentManager
    monitor: Monitor
    runbooks: RunbookLibrary
    clock: Callable[[], datetime]
    reports_dir: Path
    runbooks_dir: Path | None = None  # where `runbooks` was loaded from (the read tools show the same files)
    config: AgentConfig = field(default_factory=AgentConfig)
    scorer: Scorer | None = None
    llm: LLMClient | None = None
    pagers: list[Any] = field(default_factory=list)
    limits: ToolLimits = field(default_factory=ToolLimits)
    extras: dict[str, Any] = field(default_factory=dict)  # e.g. training history for retrain_model
    # Called after every side effect a node makes, with (node, what). Production leaves it None; the
    # crash-safety tests kill the process from here, at the worst moment, to prove resumption is safe.
    after_side_effect: SideEffectHook | None = None

    @classmethod
    def for_platform(
        cls,
        platform: Any,
        monitor: Monitor,
        *,
        config: AgentConfig | None = None,
        runbooks_dir: Path | None = None,
        llm: LLMClient | None = None,
        pagers: list[Any] | None = None,
        extras: dict[str, Any] | None = None,
        after_side_effect: SideEffectHook | None = None,
    ) -> AgentRuntime:
        """The runtime for a platform (anything with ``store``, ``registry``, ``serving``, ``scorer`` and
        ``workspace``) watched by ``monitor``; the runbooks come from ``runbooks_dir`` or the default."""
        return cls(
            store=platform.store,
            registry=platform.registry,
            serving=platform.serving,
            incidents=monitor.incidents,
            monitor=monitor,
            runbooks=RunbookLibrary.load(runbooks_dir),
            clock=monitor.clock,
            reports_dir=platform.workspace.reports_dir,
            runbooks_dir=runbooks_dir,
            config=config or AgentConfig(),
            scorer=platform.scorer,
            llm=llm,
            pagers=list(pagers or []),
            extras=dict(extras or {}),
            after_side_effect=after_side_effect,
        )

    def tool_context(
        self, incident_id: str, *, actor: str = "agent", reason: str = "", approval: str = "auto"
    ) -> ToolContext:
        """A tool context acting for one incident."""
        return ToolContext.acting_for(
            self, incident_id, actor=actor, reason=reason, approval=approval,
            extras={**self.extras, "pagers": self.pagers},
        )  # fmt: skip

    def side_effect(self, node: str, what: str) -> None:
        if self.after_side_effect is not None:
            self.after_side_effect(node, what)

    def now_iso(self) -> str:
        return self.clock().isoformat(timespec="seconds")
