"""`selfheal demo`: the loop on the embedded default, in simulated time, no network, no API key.

The story so far: simulate a history, train, register and profile a champion, then play live days hour by
hour through the real scorer while labels arrive a week late and a few scheduled faults strike; the
monitor checks every hour (and every day) and raises incidents. The summary shows what was scored, what
was dead-lettered, and which incidents opened, how fast. (Investigating and repairing them is the
responder's job, which joins this loop when it lands.)
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from evals.faults import Fault, make_fault
from evals.live import LiveRun, LiveWorld, SimClock
from monitor.reference import train_register_and_profile
from monitor.runner import Monitor
from scorer import columns as C
from scorer.simulate import Simulator, WorldConfig
from selfheal.app import Platform
from store import Workspace

HOUR = timedelta(hours=1)


@dataclass(frozen=True)
class DemoConfig:
    home: Path = Path(".selfheal-demo")
    history_days: int = 60
    live_days: int = 7
    customers: int = 5000
    terminals: int = 10000
    seed: int = 0


def demo_faults(live_start: datetime, live_days: int) -> list[Fault]:
    """The demo's schedule: what goes wrong, and when (offsets into the live period)."""
    schedule: list[tuple[int, int, int | None, str, dict[str, Any]]] = [
        (1, 10, 6, "feature_nulls", {"features": ["terminal_risk_7d", "terminal_risk_30d"], "rate": 1.0}),
        (3, 9, 1, "schema_change", {"drop": ["customer_id"], "rename": {}}),
        (5, 12, None, "bad_deploy", {"mode": "inverted_labels"}),
    ]
    faults = []
    for day, hour, hours, kind, params in schedule:
        if day >= live_days:
            continue
        start = live_start + timedelta(days=day, hours=hour)
        end = None if hours is None else start + timedelta(hours=hours)
        faults.append(make_fault(kind, params, start, end))
    return faults


def run_demo(config: DemoConfig, console: Console) -> dict[str, float]:
    """Run the demo and print its story; returns the summary numbers (for tests)."""
    started = time.perf_counter()
    if config.home.exists():
        shutil.rmtree(config.home)
    simulator = Simulator(WorldConfig(seed=config.seed, customers=config.customers, terminals=config.terminals))
    live_start = (pd.Timestamp(simulator.config.start_date) + pd.Timedelta(days=config.history_days)).to_pydatetime()
    clock = SimClock(live_start)

    console.rule("[bold]selfheal demo")
    console.print(
        f"world: {config.customers:,} customers, {config.terminals:,} terminals, seed {config.seed}; "
        f"{config.history_days} days of history, then {config.live_days} live days"
    )
    with console.status("simulating history"):
        history = simulator.generate(0, config.history_days)
    console.print(f"history: {len(history):,} transactions, {int(history[C.LABEL].sum()):,} frauds")

    with Platform(Workspace(config.home), clock=clock) as platform:
        with console.status("training, registering and profiling the first champion"):
            run, _ = train_register_and_profile(
                platform.registry, history, actor="demo", reason="initial champion from history"
            )
        report = run.report
        console.print(
            f"trained v{run.model.version} on {report.train_rows:,} rows: AUC {report.auc:.3f}, "
            f"AP {report.ap:.3f}, card precision@100 {report.cp100:.3f} on its test week -> champion"
        )
        faults = demo_faults(live_start, config.live_days)
        for fault in faults:
            ends = "until fixed" if fault.end is None else f"until {fault.end:%a %H:%M}"
            console.print(f"scheduled fault: {fault.kind} at {fault.start:%a %Y-%m-%d %H:%M} {ends}")
        platform.scorer.features.observe(history)
        monitor = Monitor(platform.store, platform.registry, platform.serving, clock=clock)
        played = _play(platform, simulator, clock, monitor, faults, history, config, console)
        summary = _summarise(platform, played)
        incidents = monitor.incidents.list()
        summary["incidents"] = float(len(incidents))
        summary["wall_seconds"] = time.perf_counter() - started
        _print_summary(summary, config, console)
        _print_incidents(incidents, faults, console)
    return summary


def _play(
    platform: Platform,
    simulator: Simulator,
    clock: SimClock,
    monitor: Monitor,
    faults: list[Fault],
    history: pd.DataFrame,
    config: DemoConfig,
    console: Console,
) -> LiveRun:
    progress = Progress(
        TextColumn("live"), BarColumn(), TextColumn("{task.completed}/{task.total} h"), TimeElapsedColumn(),
        console=console, transient=True,
    )

    def on_hour(end: datetime, _report: object) -> None:
        for change in monitor.run_hour(end - HOUR).changes:
            if change.change in ("opened", "reopened", "resolved"):
                incident = monitor.incidents.get(change.incident_id)
                progress.console.print(f"{end:%a %H:%M}  {change.incident_id} {change.change}: {incident.title}")

    with progress:
        task = progress.add_task("live", total=config.live_days * 24)
        world = LiveWorld(
            platform,
            simulator,
            clock=clock,
            start_day=config.history_days,
            days=config.live_days,
            faults=faults,
            history=history,
            on_hour=on_hour,
            progress=lambda done, _total: progress.update(task, completed=done),
        )
        return world.run()


def _summarise(platform: Platform, played: LiveRun) -> dict[str, float]:
    decisions = platform.store.query("SELECT decision, count(*) AS n FROM predictions GROUP BY ALL")
    counts = dict(zip(decisions["decision"], decisions["n"], strict=True))
    latency = platform.store.scalar("SELECT avg(latency_ms) FROM predictions")
    return {
        "rows_in": float(played.total("rows_in")),
        "scored": float(played.total("scored")),
        "dead_lettered": float(played.total("dead_lettered")),
        "labels": float(played.total("labels_delivered")),
        "fallback_rows": float(played.total("fallback_rows")),
        "db_predictions": float(platform.store.count("predictions")),
        "db_dead_letters": float(platform.store.count("dead_letters")),
        "mean_latency_ms": float(latency or 0.0),
        **{f"decisions_{k}": float(counts.get(k, 0)) for k in ("approve", "review", "decline")},
    }


def _print_summary(summary: dict[str, float], config: DemoConfig, console: Console) -> None:
    table = Table(title=f"{config.live_days} live days")
    table.add_column("what")
    table.add_column("value", justify="right")
    rows_in, scored, dead = summary["rows_in"], summary["scored"], summary["dead_lettered"]
    table.add_row("transactions in", f"{rows_in:,.0f}")
    table.add_row("scored", f"{scored:,.0f}")
    table.add_row("dead-lettered (with a reason each)", f"{dead:,.0f}")
    table.add_row("conservation (in = scored + dead-lettered)", "holds" if rows_in == scored + dead else "BROKEN")
    table.add_row(
        "decisions approve / review / decline",
        " / ".join(f"{summary[f'decisions_{k}']:,.0f}" for k in ("approve", "review", "decline")),
    )
    table.add_row("labels received (a week late)", f"{summary['labels']:,.0f}")
    table.add_row("mean scoring latency per transaction", f"{summary['mean_latency_ms']:.3f} ms")
    table.add_row("rows in DuckDB (predictions, dead letters)", f"{summary['db_predictions']:,.0f}, {summary['db_dead_letters']:,.0f}")
    table.add_row("incidents raised", f"{summary['incidents']:.0f}")
    table.add_row("wall time", f"{summary['wall_seconds']:.1f} s")
    console.print(table)


def _print_incidents(incidents: list[Any], faults: list[Fault], console: Console) -> None:
    table = Table(title="incidents (the automatic responder is not built yet: they await a human)")
    for column in ("id", "kind", "status", "opened", "detected after"):
        table.add_column(column)
    for incident in incidents:
        before = [f for f in faults if f.start <= incident.opened_at]
        lag = incident.opened_at - max(before, key=lambda f: f.start).start if before else None
        table.add_row(
            incident.incident_id, incident.kind, incident.status, f"{incident.opened_at:%a %H:%M}",
            "-" if lag is None else f"{lag.total_seconds() / 3600:.0f} h",
        )
    console.print(table)
    for incident in incidents:
        console.print(f"  {incident.incident_id}: {incident.title}")
