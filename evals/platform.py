"""What the harness needs of a running platform, and how it gets one without importing `selfheal`.

Imports point down (`selfheal -> evals -> agent`), so the harness cannot build `selfheal.app.Platform`
itself: the front door (the CLI, a test) passes a `PlatformFactory`, usually
``lambda home, clock: Platform(Workspace(home), clock=clock)``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Protocol

from evals.faults import PlatformLike
from store import Store, Workspace

__all__ = ["OpenPlatform", "PlatformFactory"]


class OpenPlatform(PlatformLike, Protocol):
    """An open platform over one workspace (scorer, registry, serving state, store); close it when done."""

    @property
    def store(self) -> Store: ...

    @property
    def workspace(self) -> Workspace: ...

    def close(self) -> None: ...


# (workspace folder, clock) -> an open platform on it whose every part reads that clock.
PlatformFactory = Callable[[Path, Callable[[], datetime]], OpenPlatform]
