"""A feature outage played live through the real scorer and monitor, for tests that need a real incident.

A copy of the small world's trained workspace is played hour by hour from the day after its history, the
monitor running after every hour, while one feature's job ships only nulls for a stretch of live hours.
The caller drives the hours (and may act between them) and closes the platform.
"""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from evals.live import LiveWorld, SimClock
from monitor.runner import Monitor
from selfheal.app import Platform
from store import Workspace
from tests.conftest import HISTORY_DAYS, SmallWorld

HOUR = timedelta(hours=1)


@dataclass
class FeatureOutage:
    platform: Platform
    monitor: Monitor
    clock: SimClock
    live_start: datetime
    live: LiveWorld

    def play(self, hours: int) -> Iterator[int]:
        """Play `hours` live hours (the monitor has run on each), yielding each hour's number from 1."""
        for number, _ in enumerate(itertools.islice(self.live.hours(), hours), start=1):
            yield number


def feature_outage(
    small_world: SmallWorld, home: Path, *, feature: str, outage: tuple[int, int], days: int
) -> FeatureOutage:
    """Copy the template to `home` and set up `days` live days where `feature` is null in live hours `outage`."""
    shutil.copytree(small_world.template, home)
    start = small_world.live_start
    clock = SimClock(start)
    platform = Platform(Workspace(home), clock=clock)
    platform.scorer.features.observe(small_world.history)
    monitor = Monitor(platform.store, platform.registry, platform.serving, clock=clock)
    fault = small_world.fault("feature_nulls", {"features": [feature], "rate": 1.0}, 0, outage[0], outage[1] - outage[0])
    live = LiveWorld(
        platform, small_world.simulator, clock=clock, start_day=HISTORY_DAYS, days=days, faults=[fault],
        history=small_world.history, on_hour=lambda end, _report: monitor.run_hour(end - HOUR),
    )
    return FeatureOutage(platform, monitor, clock, start, live)
