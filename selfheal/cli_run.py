"""`selfheal run`: consume a transaction source hour by hour -- score, labels, monitor, responder."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, get_args

import typer
from rich.console import Console
from rich.table import Table

from selfheal.cli_common import runbooks_failed
from selfheal.cli_tables import CliConsole, print_table

if TYPE_CHECKING:  # the responder (LangGraph, the monitor, SciPy) loads when a run starts
    import pandas as pd

    from agent.autopilot import AutopilotEvent
    from agent.responder import RunResult
    from scorer.sources import Batch
    from selfheal.live_loop import LoopTotals

err = CliConsole(stderr=True)
out = CliConsole()
EPOCH = datetime(1970, 1, 1)


def show_event(event: AutopilotEvent, console: Console) -> None:
    """One line (or a run's summary) per thing the live loop did; `selfheal run` and the demo share it."""
    from selfheal.cli_agent import show_run

    when = f"{event.at:%a %Y-%m-%d %H:%M}"
    if event.what in ("opened", "reopened"):
        console.print(f"{when}  [bold]{event.incident_id}[/bold] {event.what}: {event.detail}")
    elif event.what == "resolved":
        console.print(f"{when}  {event.incident_id} resolved by the monitor (condition cleared)")
    elif event.what == "released":
        console.print(
            f"{when}  {event.incident_id} quarantine of {event.detail} released (upstream healthy again)"
        )
    elif event.what == "resolve_sent":
        console.print(f"{when}  {event.incident_id} page resolved ({event.detail})")
    elif event.what == "redelivered":
        console.print(f"{when}  {event.incident_id} page that had failed sent again: {event.detail}")
    elif event.run is not None and not _still_waiting(event.run):
        console.print(f"{when}  {event.incident_id} responder:")
        show_run(event.run, console)
    elif event.run is None:
        console.print(f"{when}  {event.incident_id} {event.what}: {event.detail}")


def _still_waiting(run: RunResult) -> bool:
    """A run re-checked and still waiting for data: nothing new to say."""
    return run.status == "waiting_data" and run.state.get("verification", {}).get("attempts", 0) > 1


def run(
    source: Annotated[
        str,
        typer.Argument(
            help="A .csv, .parquet or .jsonl file of transactions, - for JSONL on stdin, or `simulator` for "
            "days of the simulated world (--days, --start-day, --seed, --customers, --terminals)."
        ),
    ],
    home: Annotated[
        Path | None, typer.Option("--home", help="Workspace folder (default: $SELFHEAL_HOME or ./.selfheal).")
    ] = None,
    planner: Annotated[
        str,
        typer.Option(
            help="Who investigates incidents: auto (the LLM when OPENAI_BASE_URL/OPENAI_API_KEY is set, else the "
            "deterministic planner), deterministic, llm, or none (monitor only, no responder)."
        ),
    ] = "auto",
    runbooks: Annotated[
        Path | None,
        typer.Option("--runbooks", help="Runbooks folder (default: $SELFHEAL_RUNBOOKS or the shipped ones)."),
    ] = None,
    warm_from: Annotated[
        Path | None,
        typer.Option(
            "--warm-from",
            help="Transactions (with labels) that came before the source, to warm the feature windows (they "
            "reach 37 days back). Kept in the workspace, so later runs and `selfheal serve` start warm; not "
            "needed when the workspace already holds them.",
        ),
    ] = None,
    label_delay_days: Annotated[
        float,
        typer.Option(min=0, help="When a row's label (is_fraud / TX_FRAUD) arrives if it has no label_time."),
    ] = 7.0,
    batch_size: Annotated[int, typer.Option(min=1, help="Rows read from the source at a time.")] = 10_000,
    days: Annotated[int, typer.Option(min=1, help="simulator: days to play.")] = 1,
    start_day: Annotated[
        int,
        typer.Option(
            min=0, help="simulator: first day (offset from the world's start; 60 follows `simulate`)."
        ),
    ] = 60,
    seed: Annotated[int, typer.Option(help="simulator: the world's seed.")] = 0,
    customers: Annotated[int, typer.Option(min=1, help="simulator: customers in the world.")] = 5000,
    terminals: Annotated[int, typer.Option(min=1, help="simulator: terminals in the world.")] = 10000,
) -> None:
    """Consume a source hour by hour: score, deliver labels, run the monitor and the responder.

    Time is the data's time: each hour of transactions is scored, its due labels delivered, and the
    closed hour goes to the monitor; incidents it opens are investigated (and fixed, verified, paged as
    the runbooks say). Every row is scored or dead-lettered with a reason. Progress and what the platform
    did are printed as they happen; a summary table ends the run.

    Labels ride with the transactions: a row's is_fraud / TX_FRAUD arrives at its label_time column, else
    --label-delay-days after its timestamp. Those not due when the source ends are kept in the workspace
    and delivered by the next run as they come due (play a month, then the next).

    `simulator` plays days of the same simulated world `selfheal simulate` writes (train on its first 60
    days, then run from day 60); when the workspace holds no traffic or history yet, the 38 days before
    the first one warm the feature windows.

    Example: selfheal simulate --days 3 --start-day 60 --out live.parquet && selfheal run live.parquet
    """
    from agent.context import PlannerChoice
    from scorer.data import DataFormatError
    from scorer.errors import ScorerError
    from scorer.sources import read_records
    from store import StoreError
    from tools.runbooks import RunbookError

    choices = (*get_args(PlannerChoice), "none")
    if planner not in choices:
        err.print(f"[red]error:[/red] --planner must be one of {', '.join(choices)}, not {planner!r}")
        raise typer.Exit(2)
    batches: Iterable[Batch]
    warm_if_cold: WarmIfCold | None = None
    try:
        warm_batches = read_records(warm_from, batch_size=100_000) if warm_from is not None else None
        if source == "simulator":
            batches, warm_if_cold = _simulated(days, start_day, seed, customers, terminals)
        else:
            batches = read_records(source, batch_size=batch_size, stdin=sys.stdin)
    except (DataFormatError, FileNotFoundError) as error:
        err.print(f"[red]error:[/red] {error}")
        raise typer.Exit(1) from error
    try:
        totals = _run(
            source,
            batches,
            warm_batches,
            warm_if_cold,
            home,
            planner,
            runbooks,
            timedelta(days=label_delay_days),
        )
    except RunbookError as error:  # a ValueError too: said with every problem's line and the lint hint
        raise runbooks_failed(error, runbooks) from error
    except (DataFormatError, ScorerError, StoreError, ValueError) as error:  # StoreError: the log (set aside)
        err.print(f"[red]error:[/red] {error}")
        raise typer.Exit(1) from error
    table = Table(title=f"selfheal run {source}")
    table.add_column("what")
    table.add_column("value", justify="right")
    for name, value in (
        ("hours played", totals.hours),
        ("transactions in", totals.rows_in),
        ("scored", totals.scored),
        ("dead-lettered (with a reason each)", totals.dead_lettered),
        ("labels delivered", totals.labels),
        ("labels not due yet (delivered by the next run)", totals.labels_pending),
        ("incidents opened or reopened", len(totals.opened)),
    ):
        table.add_row(name, f"{value:,}")
    print_table(out, table)
    if totals.rows_in != totals.scored + totals.dead_lettered:  # the scorer's own invariant; say so loudly
        err.print("[red]error:[/red] rows in != scored + dead-lettered")
        raise typer.Exit(1)


def _simulated(
    days: int, start_day: int, seed: int, customers: int, terminals: int
) -> tuple[Iterator[Batch], WarmIfCold]:
    """Day frames of the simulated world (with labels), and the weeks before them the feature windows reach
    (built only if asked) with the time the first day starts."""
    import pandas as pd

    from scorer.features import FeatureConfig
    from scorer.simulate import Simulator, WorldConfig

    simulator = Simulator(WorldConfig(seed=seed, customers=customers, terminals=terminals))
    live = (simulator.day(day) for day in range(start_day, start_day + days))
    before = FeatureConfig().kept_days  # what the scorer's windows reach back
    first_live = pd.Timestamp(simulator.config.start_date) + pd.Timedelta(days=start_day)
    return live, WarmIfCold(lambda: simulator.generate(max(0, start_day - before), min(before, start_day)), first_live)


@dataclass(frozen=True)
class WarmIfCold:
    """The transactions before a simulated run, to observe when the workspace holds none that lead up to it."""

    build: Callable[[], pd.DataFrame]
    first_live: pd.Timestamp

    def needed(self, newest_held_ms: int | None) -> bool:
        """Nothing held, or what is held ends more than a day before the first live transaction (history
        `selfheal train` kept from other days, say): the windows would start starved."""
        import pandas as pd

        if newest_held_ms is None:
            return True
        return pd.Timestamp(newest_held_ms, unit="ms") < self.first_live - pd.Timedelta(days=1)


def _run(
    source: str,
    batches: Iterable[Batch],
    warm_batches: Iterable[Batch] | None,
    warm_if_cold: WarmIfCold | None,
    home: Path | None,
    planner: str,
    runbooks: Path | None,
    label_delay: timedelta,
) -> LoopTotals:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from agent.autopilot import Autopilot
    from agent.responder import ResponderError
    from evals.live import SimClock
    from monitor.runner import Monitor
    from selfheal.app import Platform, save_simulated_now, simulated_now
    from selfheal.cli_warm import warn_if_short
    from selfheal.live_loop import LiveLoop, load_pending_labels, save_pending_labels
    from store import StoreError, Workspace

    workspace = Workspace.from_env(home)
    clock = SimClock(simulated_now(workspace) or EPOCH)
    try:
        platform = Platform(workspace.require(), clock=clock)  # it needs a champion: never a new workspace
    except StoreError as error:
        raise ValueError(str(error)) from error
    responder = None
    try:
        if platform.registry.alias("champion") is None:
            raise ValueError(
                f"{workspace.home} has no champion model: run `selfheal train --data FILE` first"
            )
        # What earlier runs logged and kept comes back first; --warm-from adds to it (rows already held
        # are taken once) and is kept in the workspace for the next start.
        platform.scorer.warm_up()
        if warm_batches is None and warm_if_cold is not None and warm_if_cold.needed(platform.scorer.features.newest_ms):
            warm_batches = [warm_if_cold.build()]  # the simulated weeks before warm the windows (held rows: once)
        if warm_batches is not None:
            read = taken = 0
            for batch in warm_batches:
                read += len(batch)
                taken += platform.scorer.observe_history(batch)
            held = f" ({read - taken:,} already held)" if read > taken else ""
            err.print(f"feature windows warmed with {taken:,} earlier transactions{held}")
        warn_if_short(platform.scorer.history_coverage(), err)
        monitor = Monitor(platform.store, platform.registry, platform.serving, clock=clock)
        autopilot = None
        if planner != "none":
            responder = platform.responder(monitor, planner=planner, runbooks_dir=runbooks)
            try:
                responder.planner()  # an unusable planner fails now, not at the first incident hours in
            except ResponderError as error:
                raise ValueError(str(error)) from error
            autopilot = Autopilot(monitor, responder)
        loop = LiveLoop(platform, clock, monitor=monitor, autopilot=autopilot, label_delay=label_delay,
                        source=f"file:{source}", pending_labels=load_pending_labels(workspace.home))  # fmt: skip
        progress = Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=err,
                            transient=True)  # fmt: skip
        with progress:
            task = progress.add_task("starting", total=None)
            for hour in loop.play(batches):
                for event in hour.events:
                    show_event(event, progress.console)
                totals = loop.totals
                progress.update(
                    task,
                    description=f"{hour.end:%Y-%m-%d %H:%M}: {totals.hours:,} h, {totals.rows_in:,} rows, "
                    f"{totals.dead_lettered:,} dead-lettered, {len(totals.opened)} incidents",
                )
        save_simulated_now(workspace, clock())
        save_pending_labels(workspace.home, loop.pending_labels)
        loop.totals.labels_pending = len(loop.pending_labels)
        return loop.totals
    finally:
        if responder is not None:
            responder.close()
        platform.close()
