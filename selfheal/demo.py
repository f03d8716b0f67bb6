"""`selfheal demo`: the whole loop on the embedded default, in simulated time, no network, no API key.

Today it plays the scorer's part of the story: simulate a history, train and register a champion, then
score live days hour by hour while labels arrive a week late, and print what happened. The monitor and
the responder join this loop as they land (see the issues).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from scorer import columns as C
from scorer.pipeline import train_and_register
from scorer.simulate import Simulator, WorldConfig
from selfheal.app import Platform
from store import Workspace

# Share of live records the demo deliberately breaks, to show that bad input is dead-lettered, not lost.
MALFORMED_SHARE = 0.002


@dataclass(frozen=True)
class DemoConfig:
    home: Path = Path(".selfheal-demo")
    history_days: int = 60
    live_days: int = 7
    customers: int = 5000
    terminals: int = 10000
    seed: int = 0


class SimulatedClock:
    """The demo's notion of now: the end of the hour being scored."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


def run_demo(config: DemoConfig, console: Console) -> dict[str, float]:
    """Run the demo and print its story; returns the summary numbers (for tests)."""
    started = time.perf_counter()
    if config.home.exists():
        shutil.rmtree(config.home)
    simulator = Simulator(WorldConfig(seed=config.seed, customers=config.customers, terminals=config.terminals))
    clock = SimulatedClock(pd.Timestamp(simulator.config.start_date).to_pydatetime())

    console.rule("[bold]selfheal demo")
    console.print(
        f"world: {config.customers:,} customers, {config.terminals:,} terminals, seed {config.seed}; "
        f"{config.history_days} days of history, then {config.live_days} live days"
    )
    with console.status("simulating history"):
        history = simulator.generate(0, config.history_days)
    console.print(f"history: {len(history):,} transactions, {int(history[C.LABEL].sum()):,} frauds")

    live_start = pd.Timestamp(simulator.config.start_date) + pd.Timedelta(days=config.history_days)
    clock.now = live_start.to_pydatetime()
    platform = Platform(Workspace(config.home), clock=clock)
    try:
        with console.status("training the first champion"):
            run = train_and_register(
                platform.registry, history, split="recent", actor="demo", reason="initial champion from history"
            )
        report = run.report
        console.print(
            f"trained v{run.model.version} on {report.train_rows:,} rows: AUC {report.auc:.3f}, "
            f"AP {report.ap:.3f}, card precision@100 {report.cp100:.3f} on the test week -> champion"
        )
        platform.scorer.features.observe(history)  # the streaming features start from the history
        summary = _play_live_days(platform, simulator, clock, config, console)
    finally:
        platform.close()
    summary["wall_seconds"] = time.perf_counter() - started
    _print_summary(summary, config, console)
    return summary


def _play_live_days(
    platform: Platform, simulator: Simulator, clock: SimulatedClock, config: DemoConfig, console: Console
) -> dict[str, float]:
    rng = np.random.default_rng(config.seed)
    totals = {"rows_in": 0.0, "scored": 0.0, "dead_lettered": 0.0, "labels": 0.0, "latency_ms_sum": 0.0}
    decisions: dict[str, int] = {"approve": 0, "review": 0, "decline": 0}
    scored_frames: list[pd.DataFrame] = []
    hours = config.live_days * 24
    progress = Progress(
        TextColumn("live"), BarColumn(), TextColumn("{task.completed}/{task.total} h"), TimeElapsedColumn(),
        console=console, transient=True,
    )
    with progress:
        task = progress.add_task("live", total=hours)
        for batch in simulator.stream_hours(config.history_days, config.live_days):
            clock.now = (batch.start + pd.Timedelta(hours=1)).to_pydatetime()
            records = _with_some_malformed(batch.transactions, rng)
            result = platform.scorer.score_batch(records, source="simulator")
            totals["labels"] += platform.scorer.add_labels(batch.labels)
            totals["rows_in"] += result.rows_in
            totals["scored"] += result.scored
            totals["dead_lettered"] += result.dead_lettered
            totals["latency_ms_sum"] += float(result.predictions["latency_ms"].sum())
            for decision, count in result.predictions["decision"].value_counts().items():
                decisions[str(decision)] += int(count)
            scored_frames.append(result.predictions[[C.TRANSACTION_ID, "decision"]])
            progress.advance(task)
    summary: dict[str, float] = dict(totals)
    summary.update({f"decisions_{k}": float(v) for k, v in decisions.items()})
    summary["db_predictions"] = float(platform.store.count("predictions"))
    summary["db_dead_letters"] = float(platform.store.count("dead_letters"))
    if scored_frames:
        # Ground truth straight from the simulator (the live labels themselves arrive only after the demo).
        truth = simulator.generate(config.history_days, config.live_days)[[C.TRANSACTION_ID, C.LABEL]]
        truth = truth.astype({C.TRANSACTION_ID: str})
        scored = pd.concat(scored_frames).merge(truth, on=C.TRANSACTION_ID)
        flagged = scored["decision"] != "approve"
        fraud = scored[C.LABEL] == 1
        summary["frauds"] = float(fraud.sum())
        summary["flagged_precision"] = float((flagged & fraud).sum() / max(flagged.sum(), 1))
        summary["fraud_recall"] = float((flagged & fraud).sum() / max(fraud.sum(), 1))
    return summary


def _with_some_malformed(transactions: pd.DataFrame, rng: np.random.Generator) -> list[dict[str, object]]:
    """The hour's transactions as JSON-like records, a few of them deliberately broken."""
    records = transactions.drop(columns=[C.LABEL, C.FRAUD_SCENARIO], errors="ignore").to_dict("records")
    for index in np.flatnonzero(rng.random(len(records)) < MALFORMED_SHARE):
        record = records[index]
        defect = rng.integers(3)
        if defect == 0:
            record[C.AMOUNT] = -abs(float(record[C.AMOUNT]))
        elif defect == 1:
            record.pop(C.CUSTOMER_ID)
        else:
            record[C.TIMESTAMP] = "not a time"
    return records


def _print_summary(summary: dict[str, float], config: DemoConfig, console: Console) -> None:
    table = Table(title=f"{config.live_days} live days")
    table.add_column("what")
    table.add_column("value", justify="right")
    rows_in, scored, dead = summary["rows_in"], summary["scored"], summary["dead_lettered"]
    table.add_row("transactions in", f"{rows_in:,.0f}")
    table.add_row("scored", f"{scored:,.0f}")
    table.add_row("dead-lettered (malformed on purpose)", f"{dead:,.0f}")
    table.add_row("conservation (in = scored + dead)", "holds" if rows_in == scored + dead else "BROKEN")
    table.add_row("decisions approve / review / decline", " / ".join(
        f"{summary[f'decisions_{k}']:,.0f}" for k in ("approve", "review", "decline")
    ))
    if "frauds" in summary:
        table.add_row("frauds in live traffic", f"{summary['frauds']:,.0f}")
        table.add_row("flagged (review+decline) that were fraud", f"{summary['flagged_precision']:.1%}")
        table.add_row("frauds flagged", f"{summary['fraud_recall']:.1%}")
    table.add_row("labels received (a week late)", f"{summary['labels']:,.0f}")
    table.add_row("mean scoring latency per transaction", f"{summary['latency_ms_sum'] / max(scored, 1):.3f} ms")
    table.add_row("rows logged to DuckDB (predictions, dead letters)", f"{summary['db_predictions']:,.0f}, {summary['db_dead_letters']:,.0f}")
    table.add_row("wall time", f"{summary['wall_seconds']:.1f} s")
    console.print(table)
    console.print(f"workspace: {config.home}/ (inspect it with `selfheal models list --home {config.home}`)")
