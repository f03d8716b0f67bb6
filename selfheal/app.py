"""Composition root: one workspace's store, serving state, registry and scorer, wired together.

Lower packages each take their own small config; this is the one place that builds them all. Commands
that own the workspace (score, train, demo, later serve) open a `Platform`; nothing else holds the
DuckDB file.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from scorer.registry import ModelRegistry
from scorer.score import Scorer, ScorerConfig
from scorer.serving import ServingStateStore
from store import Store, Workspace


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
        self.store = Store.open(workspace)
        self.serving = ServingStateStore(self.store, clock=clock)
        self.registry = ModelRegistry(self.store, workspace.models_dir, self.serving)
        self.scorer = Scorer(self.store, self.serving, self.registry, config=scorer_config, clock=clock)

    @classmethod
    def open(cls, home: str | Path | None = None, **kwargs: object) -> Platform:
        return cls(Workspace.from_env(home), **kwargs)  # type: ignore[arg-type]

    def close(self) -> None:
        self.scorer.close()
        self.store.close()

    def __enter__(self) -> Platform:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
