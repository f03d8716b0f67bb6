"""The `selfheal` command line: a thin layer over the library (every command's docstring is its --help)."""

from __future__ import annotations

import json
import math
import sys
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.table import Table
from rich.text import Text

from scorer.errors import ScorerError
from selfheal.cli_agent import register as register_agent_commands
from selfheal.cli_audit import register as register_audit_command
from selfheal.cli_chat import register as register_chat_commands
from selfheal.cli_common import fail, incident_filter, open_platform, read_workspace
from selfheal.cli_eval import eval_app
from selfheal.cli_files import FRAME_FORMATS, OutputPathError, check_output_path, write_frame
from selfheal.cli_labels import register as register_labels_command
from selfheal.cli_run import run as run_command
from selfheal.cli_runbooks import runbooks_app
from selfheal.cli_serve import register as register_serve_command
from selfheal.cli_serving import serving_app
from selfheal.cli_tables import CliConsole, print_table
from selfheal.cli_warm import warn_if_short
from selfheal.errors import error_text
from store import TIME_COLUMNS, LogWriteError, LogWriterFull, StoreError

if TYPE_CHECKING:
    import pandas as pd

    from selfheal.client import ServiceClient

T = TypeVar("T")


def _flags_show_no_value_type() -> None:
    """Typer 0.29 labels every flag ``<bool>`` in help, so ``--json <bool>`` reads as if it took a value (a
    user tried ``status --json true``). Flags take none: show no type for them. A no-op if Typer changes."""
    from typer.core import TyperOption

    original = getattr(TyperOption, "display_type_rich", None)
    if original is None or getattr(original, "flags_untyped", False):
        return

    def display_type_rich(self: Any, ctx: Any) -> str | None:
        return None if getattr(self, "is_flag", False) else original(self, ctx)  # type: ignore[no-any-return]

    display_type_rich.flags_untyped = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_flags_show_no_value_type()

app = typer.Typer(
    name="selfheal",
    help="A self-healing MLOps platform for card-fraud detection.\n\nExample: selfheal demo",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
models_app = typer.Typer(help="List, inspect, promote and roll back registered models.", no_args_is_help=True)
app.add_typer(models_app, name="models")
monitor_app = typer.Typer(help="Run the drift and health monitor over logged traffic.", no_args_is_help=True)
app.add_typer(monitor_app, name="monitor")
incidents_app = typer.Typer(help="List and inspect incidents raised by the monitor.", no_args_is_help=True)
app.add_typer(incidents_app, name="incidents")
pages_app = typer.Typer(help="The pager outbox: pages sent to people, and which channels never got them.", no_args_is_help=True)
app.add_typer(pages_app, name="pages")
app.add_typer(runbooks_app, name="runbooks")
app.add_typer(eval_app, name="eval")
app.add_typer(serving_app, name="serving")
register_serve_command(app)
register_agent_commands(app)
register_audit_command(app)
register_labels_command(app)


def _show_version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            out.print(f"selfheal {version('selfheal')}")
        except PackageNotFoundError:  # run from a checkout that was never installed
            out.print("selfheal (not installed: no version recorded)")
        raise typer.Exit()


@app.callback()
def _everywhere(
    ctx: typer.Context,
    home: Annotated[
        Path | None,
        typer.Option("--home", help="Workspace folder for the command that follows (as its own --home; default: "
                     "$SELFHEAL_HOME or ./.selfheal).", show_default=False),
    ] = None,
    show_version: Annotated[
        bool, typer.Option("--version", help="Print the version and exit.", is_eager=True, callback=_show_version)
    ] = False,
) -> None:
    """A self-healing MLOps platform for card-fraud detection.

    Example: selfheal demo
    """
    if home is not None:
        # The command's own --home default, through Click's default map: nothing global is set, so an
        # in-process caller (a test's CliRunner) never leaks a workspace into the next command.
        ctx.default_map = _defaults_for_every_command(ctx.command, {"home": str(home)})


def _defaults_for_every_command(command: Any, defaults: dict[str, str]) -> dict[str, Any]:
    """Click's default map giving every (nested) command ``defaults``; options a command lacks are ignored.
    (A group is told by its ``commands``: Typer carries its own copy of Click, so no isinstance check.)"""
    commands = getattr(command, "commands", None)
    if isinstance(commands, dict):
        return {name: _defaults_for_every_command(sub, defaults) for name, sub in commands.items()}
    return dict(defaults)
register_chat_commands(app)
app.command(name="run")(run_command)

console = CliConsole(stderr=True)
out = CliConsole()

HomeOption = Annotated[
    Path | None, typer.Option("--home", help="Workspace folder (default: $SELFHEAL_HOME or ./.selfheal).")
]


class ParamsPreset(StrEnum):
    default = "default"
    tuned = "tuned"
    handbook = "handbook"


class SplitChoice(StrEnum):
    handbook = "handbook"
    recent = "recent"


@app.command()
def simulate(
    out_path: Annotated[Path, typer.Option("--out", help="Output file (.parquet, .csv or .jsonl).")],
    days: Annotated[int, typer.Option(min=1, help="Days to generate.")] = 60,
    start_day: Annotated[int, typer.Option(min=0, help="First day (offset from the world's start date).")] = 0,
    customers: Annotated[int, typer.Option(min=1)] = 5000,
    terminals: Annotated[int, typer.Option(min=1)] = 10000,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Generate simulated card transactions (with labels) to a file.

    Example: selfheal simulate --days 60 --out history.parquet
    """
    from rich.progress import Progress

    from scorer.simulate import Simulator, WorldConfig

    _check_output(out_path)
    simulator = Simulator(WorldConfig(seed=seed, customers=customers, terminals=terminals))
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("simulating", total=days)
        frame = simulator.generate(start_day, days, progress=lambda done: progress.update(task, completed=done))
    write_frame(frame, out_path)
    out.print(f"wrote {len(frame):,} transactions ({int(frame['is_fraud'].sum()):,} frauds) to {out_path}")


def _check_output(path: Path, formats: tuple[str, ...] = FRAME_FORMATS) -> None:
    try:
        check_output_path(path, formats)
    except OutputPathError as error:
        raise fail(str(error)) from error


@app.command()
def train(
    data: Annotated[
        Path | None, typer.Option(help="Transactions file (canonical or handbook format). Default: simulate.")
    ] = None,
    split: Annotated[SplitChoice, typer.Option(help="handbook: the handbook's dates; recent: the latest data.")] = (
        SplitChoice.recent
    ),
    params: Annotated[ParamsPreset, typer.Option(help="Hyper-parameter preset.")] = ParamsPreset.default,
    simulate_days: Annotated[int, typer.Option(min=22, help="Days to simulate when no --data is given.")] = 60,
    register: Annotated[bool, typer.Option(help="Register the model in the workspace.")] = True,
    promote: Annotated[bool, typer.Option(help="Make the registered model the champion.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object (metrics) and nothing else.")] = False,
    home: HomeOption = None,
) -> None:
    """Train an XGBoost model with a time-based train / delay / test split and report its metrics.

    With --register (the default) the data's last 38 days are also kept in the workspace as the history the
    feature windows of the next scoring start from.

    Example: selfheal train --data ../shared/data/handbook/transactions.parquet --split handbook --json
    """
    from monitor.reference import train_register_and_profile
    from scorer.data import DataFormatError, load_transactions
    from scorer.simulate import Simulator, WorldConfig
    from scorer.train import TrainParams, load_for_training, run_training

    preset = {
        ParamsPreset.default: TrainParams(),
        ParamsPreset.tuned: TrainParams.tuned(),
        ParamsPreset.handbook: TrainParams.handbook_default(),
    }[params]
    try:
        if data is None:
            transactions = Simulator(WorldConfig()).generate(0, simulate_days)
        elif split is SplitChoice.handbook:
            transactions = load_for_training(data)
        else:
            transactions = load_transactions(data)
    except (DataFormatError, OSError, ValueError) as error:  # ValueError: Arrow's and the decoder's errors
        raise fail(f"cannot read {data}: {error_text(error)}") from error
    try:
        with console.status("training"):
            if register:
                platform = open_platform(home, create=True)
                try:
                    run, _ = train_register_and_profile(
                        platform.registry, transactions, split=split.value, params=preset, promote=promote
                    )
                    # The training data is the history live traffic follows: kept, so the first `score`,
                    # `run` or `serve` starts with full feature windows instead of empty ones.
                    platform.scorer.keep_history(transactions)
                finally:
                    platform.close()
                report, version = run.report, run.model.version
            else:
                report, version = run_training(transactions, split.value, params=preset).report, None
    except ValueError as error:  # e.g. an empty split: too few days of data for the windows
        days = transactions["timestamp"].dt.normalize().nunique() if len(transactions) else 0
        raise fail(
            f"cannot train on {days} day(s) of data: {error}. The split needs a 7-day train, delay and test "
            "window each (--split recent: 22 days or more; --split handbook: the handbook's dates)"
        ) from error
    summary = {
        "auc": report.auc,
        "ap": report.ap,
        "cp100": report.cp100,
        "train_rows": report.train_rows,
        "test_rows": report.test_rows,
        "best_iteration": report.best_iteration,
        "train_window": [report.train_window.start.isoformat(), report.train_window.end.isoformat()],
        "test_window": [report.test_window.start.isoformat(), report.test_window.end.isoformat()],
        "model_version": version,
    }
    if as_json:
        out.print_json(json.dumps(summary))
        return
    table = Table(title="training report")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in ("auc", "ap", "cp100", "train_rows", "test_rows", "best_iteration", "model_version"):
        value = summary[key]
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    print_table(out, table)
    if version is None:
        out.print("not registered (--no-register)")
    else:
        out.print(f"registered as v{version}" + (" and promoted to champion" if promote else " (not promoted)"))


@app.command()
def score(
    source: Annotated[str, typer.Argument(help="A .csv, .parquet or .jsonl file, or - for JSONL on stdin.")],
    batch_size: Annotated[int, typer.Option(min=1, help="Rows per scoring batch.")] = 10_000,
    out_path: Annotated[Path | None, typer.Option("--out", help="Also write the predictions here.")] = None,
    home: HomeOption = None,
) -> None:
    """Score transactions with the champion model (or the fallback rules) and log them to the workspace.

    Every row is either scored or dead-lettered with a reason; the most common reasons are printed, and
    `selfheal export dead_letters` has every row with its raw payload. Exits with 1 when rows came in and
    none could be scored.

    Example: selfheal score live.parquet --out decisions.parquet
    """
    import pandas as pd

    from scorer.data import DataFormatError
    from scorer.sources import read_records

    if out_path is not None:
        _check_output(out_path)  # before scoring: scored rows are logged, so a late failure would lose them
    try:
        batches = read_records(source, batch_size=batch_size, stdin=sys.stdin)
    except (DataFormatError, OSError) as error:
        raise fail(error_text(error)) from error
    platform = open_platform(home, create=True)
    totals = {"rows_in": 0, "scored": 0, "dead_lettered": 0}
    decisions: dict[str, int] = {}
    reasons: dict[str, int] = {}
    written: list[pd.DataFrame] = []
    failure: str | None = None
    log_failure: str | None = None
    status_info: dict[str, Any] | None = None
    try:
        platform.scorer.warm_up()
        warn_if_short(platform.scorer.history_coverage(), console)
        with console.status("scoring") as status:
            for batch in batches:
                result = platform.scorer.score_batch(batch, source=f"file:{source}")
                totals["rows_in"] += result.rows_in
                totals["scored"] += result.scored
                totals["dead_lettered"] += result.dead_lettered
                for decision, count in result.predictions["decision"].value_counts().items():
                    decisions[str(decision)] = decisions.get(str(decision), 0) + int(count)
                for reason, count in result.dead_letters["reason"].value_counts().items():
                    reasons[str(reason)] = reasons.get(str(reason), 0) + int(count)
                if out_path is not None:
                    written.append(result.predictions)
                status.update(f"scoring: {totals['rows_in']:,} rows")
        status_info = platform.scorer.status()
    except (DataFormatError, ScorerError, LogWriterFull, OSError) as error:
        # The batches before the failure are scored and logged: keep their decisions and say so.
        failure = error_text(error)
    finally:
        try:
            platform.close()
        except LogWriteError as error:  # the rows it could not write are set aside: say where
            log_failure = str(error)
    if out_path is not None and (written or (failure is None and log_failure is None)):
        write_frame(pd.concat(written, ignore_index=True) if written else pd.DataFrame(), out_path)
    served = "" if status_info is None else (
        " with fallback rules" if status_info["fallback"] else f" with model v{status_info['model_version']}"
    )
    decided = ", ".join(f"{decision} {count:,}" for decision, count in sorted(decisions.items()))
    out.print(
        f"{totals['rows_in']:,} rows in: {totals['scored']:,} scored{served}"
        + (f" ({decided})" if decided else "")
        + f", {totals['dead_lettered']:,} dead-lettered"
    )
    _print_reasons(reasons)
    if failure is not None:
        kept = f" (their decisions are in {out_path})" if out_path is not None and written else ""
        logged = f"; the scoring log could not be written either: {log_failure}" if log_failure else ""
        raise fail(f"{failure}; stopped after the {totals['rows_in']:,} rows above{kept}{logged}")
    if log_failure is not None:
        raise fail(f"every row was scored, but the scoring log could not be written: {log_failure}")
    if totals["rows_in"] and not totals["scored"]:
        raise fail("no row could be scored: every one was dead-lettered, for the reasons above")


def _print_reasons(reasons: dict[str, int], shown: int = 5) -> None:
    """The commonest dead-letter reasons (their text may quote the input: printed as text)."""
    ranked = sorted(reasons.items(), key=lambda item: (-item[1], item[0]))
    for reason, count in ranked[:shown]:
        out.print(Text(f"  {count:,} dead-lettered: {reason}"))
    if len(ranked) > shown:
        others = sum(count for _, count in ranked[shown:])
        out.print(f"  {others:,} more, for {len(ranked) - shown} other reasons (selfheal export dead_letters)")


@app.command()
def export(
    table: Annotated[str, typer.Argument(help=f"One of: {', '.join(TIME_COLUMNS)}.")],
    out_path: Annotated[Path, typer.Option("--out", help="Parquet file to write (a folder with --by-day).")],
    since: Annotated[datetime | None, typer.Option(help="Only rows at or after this time.")] = None,
    until: Annotated[datetime | None, typer.Option(help="Only rows before this time.")] = None,
    by_day: Annotated[
        bool, typer.Option("--by-day", help="Write Hive partitions day=YYYY-MM-DD/ into the --out folder, "
                           "whole days (--since/--until widened to midnight); a day exported again replaces "
                           "its partition.")
    ] = False,
    home: HomeOption = None,
) -> None:
    """Export a workspace table (optionally a time range of it) to Parquet: one file, or a folder
    partitioned by day that DuckDB, Spark or Trino read as one table.

    Example: selfheal export predictions --since 2018-06-01 --until 2018-06-08 --out week.parquet

    Daily, into a lake folder: selfheal export predictions --since 2018-06-07 --until 2018-06-08 --by-day
    --out lake/predictions
    """
    if since is not None and until is not None and until <= since:
        raise fail(f"--until ({until}) must be after --since ({since})")
    if by_day:
        if out_path.exists() and not out_path.is_dir():
            raise fail(f"--by-day writes a folder of partitions: {out_path} is a file")
    else:
        _check_output(out_path, (".parquet",))
    platform = open_platform(home)
    try:
        rows = platform.store.export(table, out_path, since=since, until=until, by_day=by_day)
    except (StoreError, ValueError, OSError) as error:
        raise fail(error_text(error)) from error
    finally:
        platform.close()
    out.print(f"wrote {rows:,} rows of {table} to {out_path}")


@app.command("load-spills")
def load_spills(
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list (one object per file), no table.")] = False,
    home: HomeOption = None,
) -> None:
    """Load scoring-log rows that were set aside in <workspace>/log-spill/ back into the database.

    Rows are set aside when their log chunk failed three writes, or could not be written when the scorer
    closed (a full disk, a value the database cannot hold). Fix the cause first. Each file loads in one
    transaction and at most once (its sha256 is recorded); loaded files move to log-spill/loaded/. A file
    that still fails stays, with its error shown; the command then exits with 1. While a service owns the
    workspace, the service loads them (it needs the token, as every change does).

    Example: selfheal load-spills
    """
    from store.spill import load_spilled, spill_load_json

    loads: list[dict[str, Any]] = read_workspace(
        home, from_service=lambda client: client.load_spills(),
        from_file=lambda platform: [spill_load_json(x) for x in load_spilled(platform.store)],
    )  # fmt: skip
    if as_json:
        out.print_json(json.dumps(loads))
    elif not loads:
        out.print("no set-aside log rows to load")
    else:
        table = Table(title="set-aside log chunks")
        for column in ("file", "status", "rows", "error"):
            table.add_column(column)
        for load in loads:
            rows = ", ".join(f"{name} {count:,}" for name, count in load["rows"].items())
            table.add_row(load["file"], load["status"], rows, Text(load["error"] or ""))
        print_table(out, table)
    if any(load["status"] == "failed" for load in loads):
        raise typer.Exit(1)


@models_app.command("list")
def models_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (models newest first, and the aliases).")] = False,
    home: HomeOption = None,
) -> None:
    """List registered models with their aliases and metrics (via the service when one runs).

    Example: selfheal models list
    """
    from selfheal.service import views

    listing: dict[str, Any] = read_workspace(
        home, from_service=lambda client: client.get("/v1/models"), from_file=views.models
    )
    if as_json:
        out.print_json(json.dumps(listing))
        return
    table = Table(title="models")
    for column in ("version", "aliases", "created", "auc", "ap", "cp100", "features"):
        table.add_column(column)
    for model in sorted(listing["models"], key=lambda m: m["version"]):
        metrics = model["metrics"]
        table.add_row(
            str(model["version"]),
            ", ".join(model["aliases"]),
            model["created_at"][:16].replace("T", " "),
            *(_metric(metrics.get(k)) for k in ("auc", "ap", "cp100")),
            str(model["features"]),
        )
    print_table(out, table)


def _metric(value: Any) -> str:
    """A model metric, or "-" where it was not measured (a NaN, which JSON carries as null)."""
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


@models_app.command("show")
def models_show(version: Annotated[int, typer.Argument(help="Model version.")], home: HomeOption = None) -> None:
    """Show one model's metadata and whether its artifact verifies (via the service when one runs).

    Example: selfheal models show 1
    """
    from selfheal.service import views

    payload = read_workspace(
        home, from_service=lambda client: client.get(f"/v1/models/{version}"),
        from_file=lambda platform: views.model_detail(platform, version),
    )  # fmt: skip
    out.print_json(json.dumps(payload, default=str))


@models_app.command("profile")
def models_profile(
    version: Annotated[int, typer.Argument(help="Model version to profile again.")],
    data: Annotated[Path, typer.Option(help="Labelled transactions covering the model's test window "
                                           "(the data it was trained on).")],
    home: HomeOption = None,
) -> None:
    """Build a model's reference profile again from its data, with what this version of selfheal adds
    (e.g. the score calibration that estimates recall before labels: models profiled by an older version
    have none). The monitor judges the model's traffic by the new profile from its next run.

    Example: selfheal models profile 1 --data history.parquet
    """
    from monitor.reference import profile_model, test_window_start
    from scorer.data import DataFormatError, load_transactions

    try:
        transactions = load_transactions(data)
    except (DataFormatError, OSError, ValueError) as error:
        raise fail(f"cannot read {data}: {error_text(error)}") from error
    platform = open_platform(home)
    try:
        metadata = platform.registry.get(version).metadata
        start = test_window_start(metadata, metadata.label_delay_days)  # what profile_model reads from
        if len(transactions) == 0 or transactions["timestamp"].max() < start:
            raise fail(f"{data} ends before model v{version}'s test window (from {start:%Y-%m-%d}): give the data it "
                        "was trained on, through its test week")  # fmt: skip
        profile = profile_model(platform.registry, version, transactions, label_delay_days=metadata.label_delay_days)
    except ScorerError as error:
        raise fail(str(error)) from error
    finally:
        platform.close()
    estimated = profile.performance.get("estimated_recall_at_review")
    calibrated = "no calibration (too few labelled frauds)" if profile.calibration is None else (
        f"calibrated on {profile.calibration.reference_frauds:,} frauds, estimated recall {estimated:.3f}"
    )  # fmt: skip
    out.print(f"model v{version} profiled on {profile.rows:,} rows from {profile.window_start:%Y-%m-%d} "
              f"(format {profile.format}): {calibrated}")  # fmt: skip


@models_app.command("promote")
def models_promote(
    version: Annotated[int, typer.Argument(help="Model version to make champion.")],
    reason: Annotated[str, typer.Option(help="Why (recorded in the history).")] = "manual promotion",
    home: HomeOption = None,
) -> None:
    """Make a model the champion (the current champion becomes `previous`). Promoting the champion again
    changes nothing: it says so (and whether the fallback rules serve instead of it) and exits with 0.

    While a service owns the workspace, the promotion goes through its API (it needs the token, as every
    change does) and is audited there.

    Example: selfheal models promote 2 --reason "beats v1 on last week"
    """
    from selfheal.client import discover_service

    client = discover_service(home)
    if client is not None:
        with client:
            _promote_through(client, version, reason)
        return
    platform = open_platform(home)
    try:
        before = platform.serving.current()
        if before.champion_version == version and platform.registry.alias("champion") == version:
            _say_already_champion(before)
            return
        state = platform.registry.promote(version, actor="cli", reason=reason)
    except ScorerError as error:
        raise fail(str(error)) from error
    finally:
        platform.close()
    out.print(f"champion is now v{state.champion_version} (serving state v{state.version})")


def _promote_through(client: ServiceClient, version: int, reason: str) -> None:
    """`models promote` through a running service: the same no-op check, then its promote route."""
    from scorer.serving import ServingState
    from selfheal.client import ServiceError

    try:
        state = ServingState.model_validate(client.get("/v1/serving")["state"])
        if state.champion_version == version and client.get("/v1/models")["aliases"].get("champion") == version:
            _say_already_champion(state)
            return
        done = client.promote(version, reason)
    except ServiceError as error:
        raise fail(str(error.detail)) from error
    _say_champion_through_service(done)


def _say_champion_through_service(done: dict[str, Any]) -> None:
    """What the service's promote or rollback route did (the `promote_model` / `rollback_model` result)."""
    out.print(f"champion is now v{done['to_version']} (serving state v{done['serving_state_version']}, "
              f"through the service; audit {done['audit_id']})")  # fmt: skip


def _say_already_champion(state: Any) -> None:
    """Promoting the champion writes nothing; if the fallback rules serve, promoting will not change that."""
    out.print(f"v{state.champion_version} is already the champion; nothing changed")
    if state.fallback:
        out.print(Text(f"the fallback rules serve instead of it (serving state v{state.version}): {state.fallback_reason}"))
        out.print("when the cause is fixed: selfheal serving fallback off --by NAME --reason TEXT")


@models_app.command("rollback")
def models_rollback(
    to: Annotated[int | None, typer.Option("--to", help="Version to roll back to (default: previous).")] = None,
    reason: Annotated[str, typer.Option(help="Why (recorded in the history).")] = "manual rollback",
    home: HomeOption = None,
) -> None:
    """Roll the champion back to the previous model (or to --to VERSION).

    While a service owns the workspace, the rollback goes through its API (it needs the token) and is
    audited there.

    Example: selfheal models rollback --reason "v3 declines too much"
    """
    from selfheal.client import ServiceError, discover_service

    client = discover_service(home)
    if client is not None:
        with client:
            try:
                done = client.rollback(reason, to_version=to)
            except ServiceError as error:
                raise fail(str(error.detail)) from error
        _say_champion_through_service(done)
        return
    platform = open_platform(home)
    try:
        state = platform.registry.rollback(to_version=to, actor="cli", reason=reason)
    except ScorerError as error:
        raise fail(str(error)) from error
    finally:
        platform.close()
    out.print(f"champion is now v{state.champion_version} (serving state v{state.version})")


@monitor_app.command("run")
def monitor_run(
    since: Annotated[datetime, typer.Option(help="First hour to evaluate (rounded up to the hour).")],
    until: Annotated[datetime, typer.Option(help="End of the span (whole hours before it are evaluated).")],
    home: HomeOption = None,
) -> None:
    """Evaluate every hour (and every day that closes) of a span of logged traffic; raise incidents.

    Example: selfheal monitor run --since 2018-06-01 --until 2018-06-08
    """
    from monitor.runner import Monitor

    if until <= since:
        raise fail(f"--until ({until}) must be after --since ({since})")
    platform = open_platform(home)
    try:
        monitor = Monitor(platform.store, platform.registry, platform.serving)
        with console.status("monitoring"):
            report = monitor.run(since, until)
    finally:
        platform.close()
    out.print(
        f"{report.hours} hours and {report.days} days evaluated: {report.findings} findings, "
        f"{report.breaches} breaches"
    )
    for change in report.changes:
        if change.change != "updated":
            out.print(Text(f"  {change.incident_id} {change.change}: {change.kind} on {change.subject}"))


@app.command("status")
def status_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    check: Annotated[
        bool, typer.Option("--check", help="Exit with 2 when something needs a person (for cron or a probe).")
    ] = False,
    home: HomeOption = None,
) -> None:
    """What serves, the models, the last day's traffic, and what needs a person (via the service when one runs).

    Example: selfheal status --check
    """
    from selfheal.service import views

    def from_service(client: ServiceClient) -> dict[str, Any]:
        payload: dict[str, Any] = client.get("/v1/status")
        health = client.health()
        payload["service"] = {"url": client.base_url, **health}
        if health.get("status") == "degraded":  # the service's own state, which the store does not hold
            chunks = health.get("log", {}).get("unwritten_chunks")
            payload["attention"].append(f"the service's scoring log cannot be written: {chunks} chunk(s) wait in memory")
        return payload

    payload = read_workspace(home, from_service=from_service, from_file=views.status)
    if as_json:
        out.print_json(json.dumps(payload, default=str))
    else:
        _print_status(payload)
    if check and payload["attention"]:
        raise typer.Exit(2)


def _print_status(payload: dict[str, Any]) -> None:
    """The status in a few lines. Reasons, feature names and ids are data: printed as `Text`, so neither
    Rich markup nor emoji codes in them are interpreted."""
    service = payload.get("service")
    where = (
        f"served by {service['url']} (pid {service['pid']}, {service['status']})"
        if service
        else "no service running: read from the workspace file"
    )
    out.print(Text.assemble((payload["workspace"], "bold"), "  ", where))
    serving = payload["serving"]
    models = payload["models"]
    scorer = ("the fallback rules", "bold red") if serving["fallback"] else (f"model v{serving['champion_version']}", "")
    out.print(
        Text.assemble(
            "serving    ", scorer,
            f"; review >= {serving['review_threshold']:g}, decline >= {serving['threshold']:g}"
            f" (serving state v{serving['version']})",
        )
    )  # fmt: skip
    reason = serving["reason"] if len(serving["reason"]) <= 90 else serving["reason"][:89] + "…"
    changed = serving["changed_at"][:16].replace("T", " ")
    out.print(Text(f"           changed {changed} by {serving['changed_by']}: {reason}"))
    if serving["quarantined_features"]:
        out.print(Text(f"           quarantined: {', '.join(serving['quarantined_features'])}"))
    aliases = ", ".join(f"{alias} v{models[alias]}" for alias in ("champion", "previous", "challenger") if models.get(alias))
    out.print(Text(f"models     {models['registered']} registered" + (f"; {aliases}" if aliases else "")))
    day = payload["last_day"]
    last = payload["last_scored_at"]
    out.print(
        Text(
            f"last 24 h  {day['scored']:,} scored ({day['scored_by_fallback']:,} by the fallback rules), "
            f"{day['dead_letters']:,} dead-lettered; last scored {str(last)[:16] if last else 'never'}"
        )
    )
    incidents = payload["incidents"]
    counts = ", ".join(f"{n} {status}" for status, n in sorted(incidents["by_status"].items()))
    waiting_data = incidents["waiting_data"]
    out.print(
        Text(
            f"incidents  {incidents['active']} active" + (f" ({counts})" if counts else "")
            + (f"; waiting for labels: {', '.join(waiting_data)}" if waiting_data else "")
        )
    )  # fmt: skip
    if payload["attention"]:
        out.print(Text("needs a person:", "bold"))
        for line in payload["attention"]:
            out.print(Text(f"  - {line}"))
    else:
        out.print(Text("nothing needs a person"))


@incidents_app.command("list")
def incidents_list(
    status: Annotated[str | None, typer.Option(help="Only incidents with this status.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    home: HomeOption = None,
) -> None:
    """List incidents, newest last (from the running service if there is one, else the workspace file).

    Example: selfheal incidents list --status open
    """
    from typing import get_args

    from monitor.incidents import Status
    from selfheal.service import views

    if status is not None and status not in get_args(Status):
        raise fail(f"unknown status {status!r}: one of {', '.join(get_args(Status))}")
    incidents, runs = read_workspace(
        home, from_service=lambda client: (client.incidents(status), client.get("/v1/runs")),
        from_file=lambda platform: (views.incident_list(platform, status), views.runs(platform)),
    )
    if as_json:
        out.print_json(json.dumps(incidents))
        return
    latest = {run["incident_id"]: run for run in runs}  # oldest first: the latest run of each wins
    table = Table(title="incidents")
    for column in ("id", "status", "severity", "kind", "subject", "opened", "investigation"):
        table.add_column(column, no_wrap=column == "id")
    table.add_column("title")
    for i in incidents:
        opened = str(i["opened_at"]).replace("T", " ")[:16]
        table.add_row(  # titles and subjects can carry field names from the data: text, never markup
            i["incident_id"], i["status"], i["severity"], i["kind"], Text(i["subject"]), opened,
            views.investigation_text(latest.get(i["incident_id"])), Text(i["title"]),
        )
    print_table(out, table)
    waiting = views.incidents_whose_run(incidents, latest, "waiting_approval")
    if waiting:  # what the web list shows first, said here too
        out.print(
            f"[bold]Waiting for your approval:[/] {', '.join(waiting)}. "
            "See `selfheal incidents show ID`, then `selfheal approve ID --by NAME` or `selfheal deny ID --by NAME`."
        )
    unpaged = [i["incident_id"] for i in incidents if i.get("unreached_pages")]
    if unpaged:  # after a day of failed redeliveries, this list is the only place that says so
        out.print(
            f"[bold red]A page reached no one[/] for {', '.join(unpaged)}: no paging channel delivered it. "
            "See `selfheal pages list --failed`."
        )


@incidents_app.command("show")
def incidents_show(
    incident_id: Annotated[str, typer.Argument(help="Incident id, e.g. INC-7 (or 7).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (evidence and timeline).")] = False,
    home: HomeOption = None,
) -> None:
    """Show one incident: its evidence in numbers and its timeline (via the service when one runs).

    Example: selfheal incidents show INC-7 --json
    """
    from selfheal.service import views

    payload = read_workspace(
        home, from_service=lambda client: client.incident(incident_id),
        from_file=lambda platform: views.incident_detail(platform, incident_id),
    )
    if as_json:
        out.print_json(json.dumps(payload, default=str))
        return
    out.print(Text.assemble((payload["incident_id"], "bold"), " ", payload["title"]))  # data: never markup
    out.print(Text(f"status {payload['status']}, severity {payload['severity']}, opened {payload['opened_at']}"))
    out.print_json(json.dumps(payload["evidence"], default=str))
    for item in payload["timeline"]:
        out.print(Text(f"  {item['at']}  {item['event']}"))


@app.command()
def report(
    incident_id: Annotated[str, typer.Argument(help="Incident id, e.g. INC-7 (or 7).")],
    html: Annotated[bool, typer.Option("--html", help="The HTML report (with charts) instead of markdown.")] = False,
    out_path: Annotated[Path | None, typer.Option("--out", help="Copy the report to this file.")] = None,
    home: HomeOption = None,
) -> None:
    """Print an incident's report (markdown), or copy it with --out; the responder writes it when its
    investigation ends, and again when the monitor resolves the incident. Reads the workspace's reports
    folder, so it works while the service runs.

    Example: selfheal report INC-7 --html --out inc-7.html
    """
    from selfheal.service import views
    from store import Workspace

    workspace = Workspace.from_env(home)
    fmt: views.ReportFormat = "html" if html else "md"
    try:
        path = views.report_path(workspace.reports_dir, incident_id, fmt)
    except views.NotFound as error:
        hint = "" if "ids look like" in str(error) else (
            f" (the responder writes it when an investigation ends: `selfheal investigate {incident_id}`)"
        )
        raise fail(f"{error}{hint}") from error
    if out_path is None:
        sys.stdout.write(path.read_text(encoding="utf-8"))  # as written: Rich would read [brackets] as markup
        return
    try:
        out_path.parent.mkdir(parents=True, exist_ok=True)  # as `score --out` and `export --out` do
        out_path.write_bytes(path.read_bytes())
    except OSError as error:
        raise fail(f"cannot write {out_path}: {error_text(error)}") from error
    out.print(f"wrote the {fmt} report of {views.normalise_incident_id(incident_id)} to {out_path}")


@pages_app.command("list")
def pages_list(
    incident_id: Annotated[str | None, typer.Option("--incident", help="Only this incident's pages.")] = None,
    failed: Annotated[
        bool, typer.Option("--failed", help="Only deliveries that failed and never succeeded since.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    home: HomeOption = None,
) -> None:
    """List pages and their deliveries, oldest first (via the service when one runs).

    The hourly loop sends a failed delivery again for a day (tools/pagers/redelivery.py); what --failed
    still lists after that reached nobody on that channel.

    Example: selfheal pages list --failed
    """
    from selfheal.service import views

    key = incident_filter(incident_id)
    rows = read_workspace(
        home, from_service=lambda client: client.get("/v1/pages", incident_id=key, failed=failed or None),
        # An unknown incident exits with 1, as the service's 404 does (an empty list reads "never paged").
        from_file=lambda platform: views.pages(
            platform, incident_id=views.existing_incident(platform, key) if key else None, failed=failed
        ),
    )  # fmt: skip
    if as_json:
        out.print_json(json.dumps(rows, default=str))
        return
    table = Table(title="failed deliveries" if failed else "pages")
    for column in ("recorded", "page", "incident", "action", "channel", "status", "attempts", "summary / error"):
        table.add_column(column)
    for r in rows:
        detail = r["error"] if r["status"] == "failed" else r["summary"]
        table.add_row(str(r["recorded_at"]).replace("T", " ")[:19], r["page_id"], r["incident_id"], r["action"],
                      r["channel"], r["status"], str(r["attempts"]), Text(str(detail or "")[:100]))  # fmt: skip
    print_table(out, table)
    if failed and rows:
        out.print(f"{len(rows)} deliveries never got through; the hourly loop retries them for a day after the page.")


@app.command()
def demo(
    home: Annotated[
        Path, typer.Option("--home", help="Demo workspace: wiped first, so only a new, empty or earlier demo folder.")
    ] = Path(".selfheal-demo"),
    history_days: Annotated[int, typer.Option(min=22, help="Simulated history before going live.")] = 60,
    live_days: Annotated[int, typer.Option(min=1, help="Live days scored hour by hour.")] = 7,
    customers: Annotated[int, typer.Option(min=10)] = 5000,
    terminals: Annotated[int, typer.Option(min=10)] = 10000,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Run the whole story on the embedded default: simulate, train, register, score live traffic.

    No network and no API key. Example: selfheal demo --live-days 3
    """
    from selfheal.demo import DemoConfig, DemoHomeError, run_demo

    try:
        run_demo(
            DemoConfig(
                home=home,
                history_days=history_days,
                live_days=live_days,
                customers=customers,
                terminals=terminals,
                seed=seed,
            ),
            console=out,
        )
    except DemoHomeError as error:
        raise fail(str(error)) from error


def main() -> None:
    from agent.llm.config import LLMConfigError  # pydantic only: no openai import

    try:
        app()
    except LLMConfigError as error:
        # Read by every command that may ask a model (ask, chat, investigate, serve, run): a mistyped
        # OPENAI_BASE_URL is a sentence naming the variable, not pydantic's traceback.
        raise SystemExit(fail(error).exit_code) from None


if __name__ == "__main__":
    main()
