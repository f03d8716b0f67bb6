"""Play one scenario for one seed through the real simulator, scorer, monitor and responder; observe it.

`play_case` copies the scenario world's trained template, plays the live days hour by hour with the faults
(`evals.live.LiveWorld`), and after every hour runs the self-healing loop (`agent.autopilot.Autopilot`:
monitor, investigations, wake-ups, quarantine releases). Then it reads what happened out of the workspace
into a `CaseObservation`: plain data that `evals.scoring` turns into checks. Nothing here judges.

The fraud-metric baseline (`baseline_flags`) is the same world played with no fault and nobody responding:
scorer only, cached per world and live days, so a case's "did fraud metrics recover" compares like with
like (same days, same hours, same champion).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from agent.autopilot import Autopilot
from agent.context import AgentConfig, AgentRuntime
from agent.responder import Responder, checkpoints_path
from agent.run_records import agent_runs
from evals.live import LiveWorld, SimClock
from evals.platform import OpenPlatform, PlatformFactory
from evals.scenario import Scenario
from evals.worlds import TrainedWorld
from monitor.runner import Monitor, MonitorConfig
from scorer import columns as C
from tools.audit import ActionLog
from tools.pagers import OutboxPager

if TYPE_CHECKING:
    from agent.llm import LLMClient

__all__ = ["CaseObservation", "baseline_flags", "play_case"]

FLAGGED = ("decline", "review")  # decisions that stop or hold a transaction for a look


@dataclass
class CaseObservation:
    """Everything a played case left behind that the scoring reads (times are simulated, naive UTC)."""

    scenario_id: str
    seed: int
    planner: str
    live_start: datetime
    live_end: datetime
    fault_windows: list[tuple[datetime, datetime | None]]  # as played (an end set by remediation included)
    before_fault: dict[str, Any]  # the serving state just before the first fault
    incidents: list[dict[str, Any]]
    runs: list[dict[str, Any]]  # agent_runs rows (state decoded)
    actions: list[dict[str, Any]]  # audit rows: action, incident_id, at, status, actor, args
    pages: list[dict[str, Any]]  # outbox trigger rows: incident_id, at
    serving_history: list[dict[str, Any]]  # oldest first
    flags: pd.DataFrame  # per played transaction: timestamp, is_fraud, scored, flagged
    wall_seconds: float = 0.0


def _responder(
    platform: OpenPlatform,
    monitor: Monitor,
    planner: str,
    history: pd.DataFrame,
    llm: LLMClient | None,
    runbooks_dir: Path | None,
) -> Responder:
    """The responder as `selfheal.app.Platform.responder` builds it, with our own LLM client (or none)."""
    runtime = AgentRuntime.for_platform(
        platform,
        monitor,
        config=AgentConfig(planner=planner),  # type: ignore[arg-type]  # deterministic | llm
        runbooks_dir=runbooks_dir,
        llm=llm,
        pagers=[],  # pages land in the outbox only: an eval never reaches PagerDuty
        extras={"history": history},
    )
    return Responder(runtime, checkpoints_path(platform.workspace.home))


def play_case(
    scenario: Scenario,
    world: TrainedWorld,
    home: Path,
    open_platform: PlatformFactory,
    *,
    planner: str = "deterministic",
    llm: LLMClient | None = None,
    runbooks_dir: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> CaseObservation:
    """Play ``scenario`` in ``world`` (a fresh copy of its template at ``home``) and observe the outcome.

    Args:
        scenario: What to play.
        world: The trained world (already sized and seeded).
        home: Where the case's workspace goes (must not exist).
        open_platform: Opens a platform on a workspace folder with a clock (see `evals.platform`).
        planner: ``deterministic`` or ``llm`` (then ``llm`` must be given).
        llm: The LLM client (with a Recorder or Replayer attached for record/replay).
        runbooks_dir: Runbooks to use instead of the shipped ones (``selfheal runbooks test``).
        progress: Called after each hour with (hours done, hours in the run).
    """
    started = time.perf_counter()
    shutil.copytree(world.template, home)
    history = world.history()
    clock = SimClock(world.live_start)
    faults = [spec.build(world.live_start) for spec in scenario.faults]
    platform = open_platform(home, clock)
    try:
        # In memory only (not `observe_history`): a case never restarts its scorer, and storing the
        # history would cost every case a write of ~a month of rows.
        platform.scorer.features.observe(history)
        monitor = Monitor(
            platform.store,
            platform.registry,
            platform.serving,
            config=MonitorConfig(label_delay_days=max(1, world.spec.label_delay_days)),
            clock=clock,
        )
        responder = _responder(platform, monitor, planner, history, llm, runbooks_dir)
        try:
            pilot = Autopilot(monitor, responder)

            def on_hour(end: datetime, _report: object) -> None:
                pilot.after_hour(end)

            live = LiveWorld(
                platform, world.simulator, clock=clock, start_day=world.spec.history_days,
                days=scenario.world.live_days, faults=faults, history=history, on_hour=on_hour,
                progress=progress,
            )  # fmt: skip
            live.run()
            platform.scorer.flush()
            truth = live.truth()
            played_faults = live.faults
        finally:
            responder.close()
        observation = CaseObservation(
            scenario_id=scenario.id,
            seed=world.spec.seed,
            planner=planner,
            live_start=world.live_start,
            live_end=clock(),
            fault_windows=[(f.start, f.end) for f in played_faults],
            before_fault=_serving_at(platform, min((f.start for f in faults), default=world.live_start)),
            incidents=[i.model_dump() for i in monitor.incidents.list()],
            runs=agent_runs(platform.store),
            actions=_actions(platform),
            pages=_pages(platform),
            serving_history=[s.model_dump() for s in reversed(platform.serving.history())],
            flags=_flags(platform, truth),
        )
    finally:
        platform.close()
    observation.wall_seconds = time.perf_counter() - started
    return observation


def _serving_at(platform: OpenPlatform, moment: datetime) -> dict[str, Any]:
    """The serving state in force just before ``moment`` (a fault's start).

    A fault at the very start of the live period finds the template's first state, stamped at that same
    instant; a serving fault's own change at ``moment`` is not "before" it.
    """
    history = platform.serving.history()
    states = [s for s in history if s.changed_at < moment] or [min(history, key=lambda s: s.version)]
    return max(states, key=lambda s: s.version).model_dump()


def _actions(platform: OpenPlatform) -> list[dict[str, Any]]:
    rows = ActionLog(platform.store, platform.scorer.clock).rows()
    return [
        {
            "action": r.action,
            "incident_id": r.incident_id,
            "at": r.recorded_at,
            "status": r.status,
            "actor": r.actor,
            "args": r.args,
        }
        for r in rows
    ]


def _pages(platform: OpenPlatform) -> list[dict[str, Any]]:
    rows = OutboxPager(platform.store).rows()
    return [
        {"incident_id": r.incident_id, "at": r.recorded_at, "action": r.action}
        for r in rows
        if r.channel == "outbox" and r.action == "trigger"
    ]


def _flags(platform: OpenPlatform, truth: pd.DataFrame) -> pd.DataFrame:
    """Per played transaction: when, whether it was fraud, whether it was scored, whether it was flagged."""
    decisions = platform.store.query("SELECT transaction_id, decision FROM predictions")
    if truth.empty:
        return pd.DataFrame({"timestamp": [], "is_fraud": [], "scored": [], "flagged": []})
    frame = pd.DataFrame({
        "transaction_id": truth[C.TRANSACTION_ID].astype(str).to_numpy(),
        "timestamp": truth[C.TIMESTAMP].to_numpy(),
        "is_fraud": truth[C.LABEL].astype(int).to_numpy(),
    })  # fmt: skip
    decided = dict(zip(decisions["transaction_id"].astype(str), decisions["decision"], strict=True))
    decision = frame["transaction_id"].map(decided)
    frame["scored"] = decision.notna()
    frame["flagged"] = decision.isin(FLAGGED)
    return frame.drop(columns=["transaction_id"])


def baseline_flags(
    world: TrainedWorld, live_days: int, cache: Path, open_platform: PlatformFactory
) -> pd.DataFrame:
    """The fault-free world's flags (see `_flags`) for ``live_days``, scorer only; cached as Parquet."""
    path = cache / f"baseline-{world.template.parent.name}-{live_days}d.parquet"
    if path.exists():
        return pd.read_parquet(path)
    home = cache / f".baseline-{world.template.parent.name}-{live_days}d-{time.time_ns()}"
    shutil.copytree(world.template, home)
    try:
        history = world.history()
        clock = SimClock(world.live_start)
        platform = open_platform(home, clock)
        try:
            # In memory only, as in `play_case`: the baseline never restarts.
            platform.scorer.features.observe(history)
            live = LiveWorld(
                platform, world.simulator, clock=clock, start_day=world.spec.history_days, days=live_days,
                history=history,
            )  # fmt: skip
            live.run()
            platform.scorer.flush()
            flags = _flags(platform, live.truth())
        finally:
            platform.close()
        partial = path.with_suffix(f".{time.time_ns()}.part")
        flags.to_parquet(partial, index=False)
        partial.replace(path)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return flags
