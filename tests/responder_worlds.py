"""A driver that plays a trained world through scorer, monitor and responder (for the agent tests)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from agent.autopilot import Autopilot, AutopilotEvent
from evals.faults import Fault
from evals.live import LiveWorld, SimClock
from monitor.runner import Monitor
from selfheal.app import Platform, save_simulated_now
from store import Workspace
from tests.conftest import HISTORY_DAYS, SmallWorld


@dataclass
class Played:
    home: Path
    events: list[AutopilotEvent] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)
    stopped_at: datetime | None = None

    def run_for(self, incident_id: str) -> dict[str, Any]:
        return next(r for r in self.runs if r["incident_id"] == incident_id)


def play(
    world: SmallWorld,
    home: Path,
    faults: list[Fault],
    *,
    days: int = 2,
    start_day: int = 0,
    runbooks_dir: Path | None = None,
    stop: Callable[[list[AutopilotEvent]], bool] | None = None,
    after_side_effect: Callable[[str, str], None] | None = None,
    resume: str | None = None,
    respond: bool = True,
) -> Played:
    """Play live days from a copy of the template (or, with ``start_day`` > 0, go on in ``home``).

    ``stop`` ends the play after the hour where it first returns True. ``resume`` names an incident whose
    investigation is resumed before the first hour (what a restarted loop does after a crash). With
    ``respond=False`` only the monitor runs: incidents open and wait for a test to investigate them.
    """
    if start_day == 0:
        shutil.copytree(world.template, home)
    clock = SimClock(world.at(start_day, 0))
    played = Played(home)
    with Platform(Workspace(home), clock=clock) as platform:
        warm = world.history if start_day == 0 else world.simulator.generate(0, HISTORY_DAYS + start_day)
        platform.scorer.features.observe(warm)
        monitor = Monitor(platform.store, platform.registry, platform.serving, clock=clock)
        responder = platform.responder(
            monitor, planner="deterministic", runbooks_dir=runbooks_dir, extras={"history": world.history},
            pagers=[], after_side_effect=after_side_effect,
        )
        try:
            if resume is not None:
                responder.investigate(resume)
            pilot = Autopilot(monitor, responder)
            live = LiveWorld(platform, world.simulator, clock=clock, start_day=HISTORY_DAYS + start_day, days=days,
                             faults=faults, history=world.history,
                             on_hour=lambda end, _report: played.events.extend(
                                 pilot.after_hour(end) if respond else _monitor_only(monitor, end)))
            for _ in live.hours():
                if stop is not None and stop(played.events):
                    break
            platform.scorer.flush()
            played.stopped_at = clock()
            save_simulated_now(platform.workspace, clock())
            played.runs = responder.runs()
        finally:
            responder.close()
    return played


def _monitor_only(monitor: Monitor, end: datetime) -> list[AutopilotEvent]:
    report = monitor.run_hour(end - timedelta(hours=1))
    return [AutopilotEvent(end, c.change, c.incident_id) for c in report.changes]
