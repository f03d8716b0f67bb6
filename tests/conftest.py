"""Shared fixtures: a small simulated world and a workspace with a trained champion."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pytest

from evals.faults import Fault, make_fault
from evals.live import LiveWorld, SimClock
from evals.worlds import QUICK_PARAMS, SMALL_CAP
from monitor.incidents import Incident
from monitor.reference import train_register_and_profile
from monitor.runner import Monitor
from scorer.simulate import Simulator, WorldConfig
from selfheal.app import Platform
from store import Workspace

if TYPE_CHECKING:
    from tests.fake_openai import FakeOpenAI

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "handbook"
SMALL_WORLD = WorldConfig(seed=11, customers=500, terminals=1000)
HISTORY_DAYS = SMALL_CAP["history_days"]
FAST_PARAMS = QUICK_PARAMS
HOUR = timedelta(hours=1)


# The monitor's and the responder's tests world: big enough that every fault is detected within its deadline.
MEDIUM_WORLD = WorldConfig(seed=5, customers=SMALL_CAP["customers"], terminals=SMALL_CAP["terminals"])


@dataclass
class SmallWorld:
    simulator: Simulator
    history: pd.DataFrame  # HISTORY_DAYS days; the live period starts the day after
    template: Path  # a workspace with v1 trained and promoted; copy it, never write to it

    @property
    def live_start(self) -> datetime:
        return (
            pd.Timestamp(self.simulator.config.start_date) + pd.Timedelta(days=HISTORY_DAYS)
        ).to_pydatetime()

    def at(self, day: int, hour: int) -> datetime:
        """An instant as an offset into the live period."""
        return self.live_start + timedelta(days=day, hours=hour)

    def fault(
        self, kind: str, params: dict[str, Any], day: int, hour: int, hours: int | None = None
    ) -> Fault:
        """A fault starting at live ``day`` ``hour``, lasting ``hours`` (None: until remediated)."""
        start = self.at(day, hour)
        return make_fault(kind, params, start, None if hours is None else start + timedelta(hours=hours))


# The tests' pages and summaries link the default incident-review address (the page snapshot holds it):
# an operator's SELFHEAL_PUBLIC_URL in the shell running the tests must not change them.
os.environ.pop("SELFHEAL_PUBLIC_URL", None)


def build_world(config: WorldConfig, template: Path, *, simulated_time: bool = False) -> SmallWorld:
    """Simulate HISTORY_DAYS of ``config``'s world and train, register and profile v1 into ``template``.

    With ``simulated_time`` v1 is registered at the end of the history, as in the story, instead of at
    the wall-clock time of the test run: what the workspace records is then the same on every run.
    """
    simulator = Simulator(config)
    world = SmallWorld(simulator, simulator.generate(0, HISTORY_DAYS), template)
    train_template(world, simulated_time=simulated_time)
    return world


def train_template(world: SmallWorld, *, simulated_time: bool = False) -> None:
    """Train, register and profile v1 on the world's history into its template workspace."""
    clock = (lambda: world.live_start) if simulated_time else None
    with Platform(Workspace(world.template), clock=clock) as platform:
        train_register_and_profile(
            platform.registry, world.history, params=FAST_PARAMS, actor="test", reason="fixture"
        )


@pytest.fixture(scope="session")
def small_world(tmp_path_factory: pytest.TempPathFactory) -> SmallWorld:
    return build_world(SMALL_WORLD, tmp_path_factory.mktemp("template-workspace"))


@pytest.fixture(scope="session")
def medium_world(tmp_path_factory: pytest.TempPathFactory) -> SmallWorld:
    """The world the monitor and responder tests play faults in (trained once per test run)."""
    simulator = Simulator(MEDIUM_WORLD)
    history = simulator.generate(0, HISTORY_DAYS)  # the same on every worker (seeded): only training is shared
    template = built_once(
        tmp_path_factory,
        "medium-world",
        lambda folder: train_template(SmallWorld(simulator, history, folder), simulated_time=True),
    )
    return SmallWorld(simulator, history, template)


def built_once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], object]) -> Path:
    """A private copy of a folder that ``build`` fills once per test run, whichever worker gets there first.

    Each xdist worker used to build the session's trained worlds and the demo itself (the demo ~55 s
    on each of the two workers). The first worker builds under a lock in the run's shared temporary
    folder; the others wait for it and copy. Nobody opens the shared folder, so each worker's copy is
    as private as its own build was. Without xdist it builds in place.
    """
    mine = tmp_path_factory.mktemp(name) / "built"
    if "PYTEST_XDIST_WORKER" not in os.environ:
        build(mine)
        return mine
    shared = tmp_path_factory.getbasetemp().parent / f"shared-{name}"  # the run's folder, above gw0, gw1
    shared.mkdir(exist_ok=True)
    with (shared / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not (shared / "done").exists():
            shutil.rmtree(shared / "built", ignore_errors=True)  # a worker that failed mid-build
            build(shared / "built")
            (shared / "done").touch()
    shutil.copytree(shared / "built", mine)
    return mine


# `make demo`'s story (three faults) on a smaller world: still three incidents, each fixed and verified.
SMALL_DEMO = {"customers": 1500, "terminals": 3000, "history_days": 40, "live_days": 7, "seed": 0}


@dataclass(frozen=True)
class DemoRun:
    home: Path  # the finished demo workspace; copy it (`demo_home`) before changing anything
    summary: dict[str, float]
    output: str  # what the demo printed


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    """The demo played once per test run (~55 s) for the tests of what people do with its incidents."""

    def play(folder: Path) -> None:
        from rich.console import Console

        from selfheal.demo import DemoConfig, run_demo

        console = Console(record=True, width=160, force_terminal=False)
        summary = run_demo(DemoConfig(home=folder / "workspace", **SMALL_DEMO), console)
        (folder / "summary.json").write_text(json.dumps(summary))
        (folder / "output.txt").write_text(console.export_text(), encoding="utf-8")

    folder = built_once(tmp_path_factory, "demo", play)
    summary = json.loads((folder / "summary.json").read_text())
    return DemoRun(folder / "workspace", summary, (folder / "output.txt").read_text(encoding="utf-8"))


@pytest.fixture
def demo_home(demo_run: DemoRun, tmp_path: Path) -> Path:
    """A private copy of the demo workspace, free to change."""
    home = tmp_path / "demo-workspace"
    shutil.copytree(demo_run.home, home)
    return home


@pytest.fixture
def platform(small_world: SmallWorld, tmp_path: Path) -> Iterator[Platform]:
    """A fresh copy of the trained workspace, its feature state warmed with the history."""
    home = tmp_path / "workspace"
    shutil.copytree(small_world.template, home)
    with Platform(Workspace(home)) as opened:
        opened.scorer.features.observe(small_world.history)
        yield opened


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    """A scripted OpenAI-compatible server on 127.0.0.1 (tests/fake_openai.py); call `.script(...)` first.

    Teardown raises if a request went unscripted or a scripted turn was never requested.
    """
    from tests.fake_openai import FakeOpenAI  # imports the openai SDK (~1 s): only for tests that use it

    with FakeOpenAI() as server:
        yield server


class FullDisk:
    """Makes a store's appends fail as a full disk does while ``full`` is True (undone after the test)."""

    def __init__(self, store: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        self.full = True
        write = store.append

        def append(table: str, frame: Any) -> int:
            if self.full:
                raise OSError("disk full")
            return int(write(table, frame))

        monkeypatch.setattr(store, "append", append)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Modules holding a `slow` test first, the rest in their usual order.

    `make test` hands whole modules to the workers (``--dist loadfile --no-loadscope-reorder``) in
    collection order. xdist's own order (modules with the most tests first) handed the few-but-long ones
    out last, and one worker ran them for minutes after the other had finished. Started first, the long
    modules overlap the many short ones.
    """
    slow_modules = {item.module.__name__ for item in items if item.get_closest_marker("slow") and item.module}
    items.sort(key=lambda item: item.module is None or item.module.__name__ not in slow_modules)


# -- the monitor's tests: live hours through the real scorer, the monitor run after each hour ---------


@pytest.fixture(scope="module")
def world(medium_world: SmallWorld) -> SmallWorld:
    """The world `play` plays in unless told otherwise."""
    return medium_world


@dataclass
class Played:
    """A played run: its platform (open until the test ends), the monitor that ran, and the live world."""

    platform: Platform
    monitor: Monitor
    live: LiveWorld

    def incidents(self) -> list[Incident]:
        return self.monitor.incidents.list()


@pytest.fixture
def play(world: SmallWorld, tmp_path: Path) -> Iterator[Any]:
    """``play(faults, days, target=None) -> Played``: a copy of the world's workspace played live for
    ``days`` with ``faults``, the monitor run after each hour exactly as the live loop does."""
    opened: list[Platform] = []

    def run(faults: list[Any], days: int, target: SmallWorld | None = None) -> Played:
        chosen = target or world
        home = tmp_path / f"ws{len(opened)}"
        shutil.copytree(chosen.template, home)
        clock = SimClock(chosen.live_start)
        platform = Platform(Workspace(home), clock=clock)
        opened.append(platform)
        platform.scorer.features.observe(chosen.history)
        monitor = Monitor(platform.store, platform.registry, platform.serving, clock=clock)

        def monitor_hour(end: datetime, report: object) -> None:
            monitor.run_hour(end - HOUR)

        live = LiveWorld(
            platform,
            chosen.simulator,
            clock=clock,
            start_day=HISTORY_DAYS,
            days=days,
            faults=faults,
            history=chosen.history,
            on_hour=monitor_hour,
        )
        live.run()
        return Played(platform, monitor, live)

    yield run
    for platform in opened:
        platform.close()
