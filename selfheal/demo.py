"""`selfheal demo`: the whole self-healing loop on the embedded default, in simulated time, no network,
no API key.

The story: simulate a history, train, register and profile a champion, then play live days hour by hour
through the real scorer while labels arrive a week late and scheduled faults strike (a feature pipeline
outage, a wrong decision threshold, a bad model deploy). Every hour the monitor checks and raises incidents; the
responder (the deterministic, runbook-driven planner: no API key) investigates each one as it opens, acts,
waits for data to verify the fix, pages a human only when it must and writes the incident report. The
run ends with a table: incident, root cause, action, verified, paged, time to mitigate, and the reports.
"""

from __future__ import annotations

import shlex
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
from rich.text import Text

from agent.autopilot import Autopilot
from evals.faults import Fault, make_fault
from evals.live import LiveRun, LiveWorld, SimClock
from monitor.reference import train_register_and_profile
from monitor.runner import Monitor
from scorer import columns as C
from scorer.simulate import Simulator, WorldConfig
from selfheal.app import Platform, save_simulated_now
from selfheal.cli_run import show_event
from store import Workspace

HOUR = timedelta(hours=1)
# Written into a folder the demo created. The demo starts by wiping its workspace, and only a folder holding
# this file (or an empty one) may be wiped: `--home .selfheal` or `--home .` must not delete real work.
DEMO_MARKER = ".selfheal-demo-workspace"


class DemoHomeError(ValueError):
    """The demo's --home names a folder the demo did not create."""


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
        # The 30-day count job ships nulls; its owners fix it after 6 hours. The platform must protect the
        # model meanwhile (a page: the upstream job needs a person) and say what it did.
        (1, 10, 6, "feature_nulls", {"features": ["terminal_tx_count_30d", "customer_tx_count_30d"], "rate": 1.0}),
        # A config rollout sets the decline threshold to 0.0035 (the 90th percentile of scores, where the
        # champion's is near the 99.5th): restored, verified, no page.
        (3, 9, None, "threshold_misconfig", {"threshold": 0.0035}),
        # The deploy pipeline promotes a model trained on flipped labels: rolled back, verified, no page.
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
    _fresh_home(config.home)
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
        # Kept in the workspace too: `selfheal serve` on it afterwards starts with full windows.
        platform.scorer.observe_history(history)
        monitor = Monitor(platform.store, platform.registry, platform.serving, clock=clock)
        # Pages go to the outbox (and on to PagerDuty/Slack only if configured); the demo prints them itself.
        responder = platform.responder(monitor, planner="deterministic", extras={"history": history}, pagers=[])
        try:
            played = _play(platform, simulator, clock, Autopilot(monitor, responder), faults, history, config, console)
            save_simulated_now(platform.workspace, clock())
            summary = _summarise(platform, played)
            incidents = monitor.incidents.list()
            runs = {r["incident_id"]: r for r in responder.runs()}
        finally:
            responder.close()
        summary["incidents"] = float(len(incidents))
        summary["wall_seconds"] = time.perf_counter() - started
        _print_summary(summary, config, console)
        outcomes = _print_incidents(incidents, runs, faults, console)
        summary.update(outcomes)
    _print_next_steps(config.home, [incident.incident_id for incident in incidents], console)
    return summary


def _fresh_home(home: Path) -> None:
    """Empty the demo's workspace, refusing any folder the demo did not create (see `DEMO_MARKER`)."""
    if home.is_symlink() or (home.exists() and not home.is_dir()):
        raise DemoHomeError(f"{home} is not a folder: give the demo a new or empty folder with --home")
    if home.exists() and any(home.iterdir()):
        if not (home / DEMO_MARKER).is_file():
            raise DemoHomeError(
                f"{home} is not empty and was not made by the demo (it has no {DEMO_MARKER} file). The demo "
                "wipes its workspace before it starts: give it a new or empty folder with --home, or, if it holds "
                f"nothing you need (a demo folder made before the marker existed, say), `rm -rf {home}` first"
            )
        shutil.rmtree(home)
    home.mkdir(parents=True, exist_ok=True)
    (home / DEMO_MARKER).write_text("made by `selfheal demo`, which wipes this folder when it runs again\n")


def _play(
    platform: Platform,
    simulator: Simulator,
    clock: SimClock,
    pilot: Autopilot,
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
        for event in pilot.after_hour(end):
            show_event(event, progress.console)

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


def _print_incidents(
    incidents: list[Any], runs: dict[str, dict[str, Any]], faults: list[Fault], console: Console
) -> dict[str, float]:
    table = Table(title="incidents and what the platform did")
    for column in ("incident", "kind", "root cause", "action", "verified", "paged", "detected after", "mitigated after"):
        table.add_column(column)
    counts = {"verified": 0.0, "paged": 0.0, "not_paged": 0.0}
    for incident in incidents:
        before = [f for f in faults if f.start <= incident.opened_at]
        fault_start = max(before, key=lambda f: f.start).start if before else None
        run = runs.get(incident.incident_id) or {}
        state = run.get("state") or {}
        actions = [a["action"] for a in state.get("plan", []) if a["action"] != "add_note" and a.get("status") in ("applied", "repeat")]
        acted_at = state.get("acted_at")
        verified = (state.get("verification") or {}).get("status") == "verified"
        paged = bool((state.get("page_decision") or {}).get("sent"))
        counts["verified"] += verified
        counts["paged"] += paged
        counts["not_paged"] += bool(state.get("page_decision")) and not paged
        table.add_row(
            incident.incident_id, incident.kind, str(run.get("root_cause") or "-"), ", ".join(actions) or "none",
            "yes" if verified else (state.get("verification") or {}).get("status", "-"),
            "yes" if paged else "no",
            _hours(incident.opened_at - fault_start) if fault_start else "-",
            _hours(datetime.fromisoformat(acted_at) - fault_start) if fault_start and acted_at else "-",
        )
    # A log or a pipe reports 80 columns and Rich would cut "feature_pipeline_break" to "featur…": the story's
    # last table is what people read, so off a terminal it gets the width it needs (print(width=) can only
    # narrow, so the console itself is widened; only plain lines follow).
    if not console.is_terminal and console.width < 150:
        console.width = 150
    console.print(table)
    for incident in incidents:
        state = (runs.get(incident.incident_id) or {}).get("state") or {}
        page = state.get("page_decision") or {}
        why = f"{'page' if page.get('sent') else 'no page'}: {page.get('reason')}" if page else "not investigated"
        console.print(f"  {incident.incident_id}: {why}")
        if state.get("report"):
            console.print(f"      report {state['report'].get('markdown')}  {state['report'].get('html')}")
    return counts


def _print_next_steps(home: Path, incident_ids: list[str], console: Console) -> None:
    """Where to look next. The demo has a workspace of its own and every command defaults to ./.selfheal,
    so without this a newcomer's first `selfheal incidents list` shows an empty workspace."""
    example = incident_ids[0] if incident_ids else "INC-1"
    console.print()
    console.print(f"The demo's workspace is {home}. Every command reads ./.selfheal unless told, so first:")
    lines = [
        (f"export SELFHEAL_HOME={shlex.quote(str(home))}", ""),
        ("selfheal status", "what serves, what needs a person"),
        ("selfheal incidents list", ""),
        (f"selfheal report {example}", "the incident report"),
        ("selfheal audit", "every action the platform took, and why"),
        (f"selfheal ask {example} 'why did you page?'", ""),
        ("selfheal serve", "then open the incident review it prints"),
    ]
    width = max(len(command) for command, _ in lines) + 2
    for command, comment in lines:
        console.print(Text(f"  {command.ljust(width)}# {comment}" if comment else f"  {command}"))


def _hours(delta: timedelta) -> str:
    return f"{delta.total_seconds() / 3600:.0f} h"
