"""Composition root: one workspace's store, serving state, registry and scorer, wired together.

Lower packages each take their own small config; this is the one place that builds them all. Commands
that own the workspace (score, train, demo, later serve) open a `Platform`; nothing else holds the
DuckDB file.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scorer.registry import ModelRegistry
from scorer.score import Scorer, ScorerConfig
from scorer.serving import ServingStateStore, utc_now
from store import Store, Workspace

if TYPE_CHECKING:
    from agent.llm import LLMClient, LLMConfig
    from agent.responder import Responder
    from monitor.runner import Monitor
    from tools.context import ToolContext, ToolLimits

# A workspace played in simulated time (the demo, evals) records where its clock stopped, so commands run
# on it later (approve, investigate, report) stamp their changes in the same timeline, not today's date.
SIMULATED_NOW_FILE = "simulated-now.json"


def save_simulated_now(workspace: Workspace, now: datetime) -> None:
    """Record the simulated clock of a workspace played in simulated time."""
    (workspace.home / SIMULATED_NOW_FILE).write_text(json.dumps({"now": now.isoformat()}))


def simulated_now(workspace: Workspace) -> datetime | None:
    """Where a simulated workspace's clock stopped, or None for a workspace that lives in real time."""
    path = workspace.home / SIMULATED_NOW_FILE
    if not path.exists():
        return None
    return datetime.fromisoformat(json.loads(path.read_text())["now"])


class Platform:
    """Everything that runs against one workspace."""

    def __init__(
        self,
        workspace: Workspace,
        *,
        clock: Callable[[], datetime] | None = None,
        scorer_config: ScorerConfig | None = None,
    ) -> None:
        self.workspace = workspace.ensure()
        if clock is None and (frozen := simulated_now(workspace)) is not None:
            clock = lambda: frozen  # noqa: E731 - the simulated instant the workspace stopped at
        # One "now" for every part (the store's timestamps are naive UTC); a test or a simulation passes its own.
        self.clock: Callable[[], datetime] = clock or utc_now
        self.store = Store.open(workspace)
        self.serving = ServingStateStore(self.store, clock=self.clock)
        self.registry = ModelRegistry(self.store, workspace.models_dir, self.serving)
        self.scorer = Scorer(self.store, self.serving, self.registry, config=scorer_config, clock=self.clock)

    @classmethod
    def open(cls, home: str | Path | None = None, *, create: bool = True, **kwargs: object) -> Platform:
        """The platform of the workspace at ``home`` (else $SELFHEAL_HOME, else ./.selfheal).

        Args:
            create: Make the workspace when there is none. Commands that only read or change an existing one
                pass False and get `WorkspaceNotFound` instead of an empty workspace where a path was mistyped.
        """
        workspace = Workspace.from_env(home)
        return cls(workspace if create else workspace.require(), **kwargs)  # type: ignore[arg-type]

    def responder(
        self,
        monitor: Monitor | None = None,
        *,
        planner: str | None = None,
        runbooks_dir: Path | None = None,
        extras: dict[str, Any] | None = None,
        pagers: list[Any] | None = None,
        after_side_effect: Callable[[str, str], None] | None = None,
        public_url: str | None = None,
    ) -> Responder:
        """The incident responder for this workspace (close it before the platform).

        The LLM planner is available when ``OPENAI_BASE_URL`` or ``OPENAI_API_KEY`` is set; pagers come
        from the environment (`tools.pagers.PagerConfig`) unless given.
        """
        from agent.context import AgentConfig, AgentRuntime
        from agent.llm.config import LLMConfig
        from agent.responder import Responder, checkpoints_path
        from monitor.runner import Monitor
        from tools.pagers import PagerConfig, build_pagers

        watched = monitor or Monitor(self.store, self.registry, self.serving, clock=self.clock)
        llm_config = LLMConfig.from_env()
        config = AgentConfig(planner=planner or "auto")  # type: ignore[arg-type]  # checked by Responder
        if public_url is not None:  # else $SELFHEAL_PUBLIC_URL or the service's default address
            config = config.model_copy(update={"public_url": public_url})
        runtime = AgentRuntime.for_platform(
            self,
            watched,
            config=config,
            runbooks_dir=runbooks_dir,
            llm=_llm_client(llm_config) if llm_config.configured else None,
            pagers=pagers if pagers is not None else build_pagers(PagerConfig.from_env(), self.store, clock=self.clock),
            extras=extras,
            after_side_effect=after_side_effect,
        )
        return Responder(runtime, checkpoints_path(self.workspace.home))

    def tool_context(
        self,
        *,
        actor: str,
        reason: str,
        incident_id: str | None = None,
        runbooks_dir: Path | None = None,
        limits: ToolLimits | None = None,
    ) -> ToolContext:
        """The action tools' context for a change a person makes (``approval`` human): through the admin API
        or `selfheal serving`. The responder builds its own (`AgentRuntime.tool_context`)."""
        from monitor.incidents import IncidentManager
        from tools.context import ToolContext, ToolLimits

        return ToolContext(
            store=self.store,
            registry=self.registry,
            serving=self.serving,
            incidents=IncidentManager(self.store, clock=self.clock),
            clock=self.clock,
            runbooks_dir=runbooks_dir,
            actor=actor,
            incident_id=incident_id,
            reason=reason,
            approval="human",
            limits=limits or ToolLimits(),
        )

    def close(self) -> None:
        try:
            self.scorer.close()  # a failing log write sets its rows aside in log-spill/, then raises
        finally:
            self.store.close()

    def __enter__(self) -> Platform:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _llm_client(config: LLMConfig) -> LLMClient:
    """The LLM client, imported only when an endpoint is configured (openai takes ~0.8 s to import)."""
    from agent.llm import LLMClient

    return LLMClient(config)
