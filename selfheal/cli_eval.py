"""`selfheal eval ...`: run the offline eval suite, list its scenarios, compare two runs (a thin layer
over `evals.suite`, `evals.scenario` and `evals.report`)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from selfheal.cli_common import fail, runbooks_failed
from selfheal.cli_tables import CliConsole, print_table

if TYPE_CHECKING:  # the harness (the platform, the responder, LangGraph) loads when a command runs
    from evals.platform import OpenPlatform
    from evals.scenario import Scenario
    from evals.scoring import CaseResult
    from evals.suite import SuiteOptions, SuiteResult
    from evals.worlds import Size

eval_app = typer.Typer(
    help="Offline evals: play scenario files through the real platform and score the responder.",
    no_args_is_help=True,
)
out = CliConsole()
err = CliConsole(stderr=True)

ScenariosOption = Annotated[
    Path | None,
    typer.Option("--scenarios", help="Folder of scenario files (*.yaml); default: the shipped suite."),
]


def open_platform(home: Path, clock: Callable[[], datetime]) -> OpenPlatform:
    """The harness's platform factory (module level, so worker processes can import it)."""
    from selfheal.app import Platform
    from store import Workspace

    return Platform(Workspace(home), clock=clock)


def _suite(folder: Path | None) -> list[Scenario]:
    from evals.scenario import ScenarioError, default_scenarios_dir, load_suite

    try:
        return load_suite(folder or default_scenarios_dir())
    except (ScenarioError, FileNotFoundError) as error:
        err.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from error


def _pick(scenarios: list[Scenario], only: list[str] | None) -> list[Scenario]:
    if not only:
        return scenarios
    unknown = sorted(set(only) - {s.id for s in scenarios})
    if unknown:
        err.print(f"[red]error:[/red] no scenario {', '.join(unknown)}; see `selfheal eval list`")
        raise typer.Exit(2)
    return [s for s in scenarios if s.id in only]


@eval_app.command("run")
def run(
    scenarios_dir: ScenariosOption = None,
    planner: Annotated[str, typer.Option(help="deterministic, or llm (needs an endpoint or --replay).")] = "deterministic",
    seeds: Annotated[int, typer.Option(min=1, help="Seeds per scenario (the file's seed, +1, ...); pass^k uses them.")] = 1,
    size: Annotated[str, typer.Option(help="small (capped world, quick training) or default (as the files say).")] = "default",
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the results (summary + cases) here.")] = None,
    record: Annotated[Path | None, typer.Option(help="Record every LLM exchange under this folder.")] = None,
    replay: Annotated[Path | None, typer.Option(help="Answer LLM requests from recordings here; a miss fails.")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Cases played at once (processes).")] = max(1, min(2, os.cpu_count() or 1)),
    only: Annotated[list[str] | None, typer.Option("--only", help="Run only this scenario id (repeatable).")] = None,
    cache_dir: Annotated[Path | None, typer.Option(help="Trained worlds cache (default $SELFHEAL_EVAL_CACHE or ~/.cache).")] = None,
    keep: Annotated[Path | None, typer.Option(help="Keep each case's workspace under this folder.")] = None,
    fail_on_regression: Annotated[bool, typer.Option(help="Exit 1 when any case fails a check.")] = False,
    runbooks: Annotated[Path | None, typer.Option("--runbooks", help="Runbooks folder the responder uses (default: $SELFHEAL_RUNBOOKS or the shipped ones); the results record it.")] = None,
) -> None:  # fmt: skip
    """Play every scenario with every seed through simulator, scorer, monitor and responder; score them.

    Prints one row per case (failing checks with why), the summary and a markdown leaderboard row.

    Example: selfheal eval run --seeds 3 --json eval.json
    Example: selfheal eval run --runbooks my-runbooks/ --json after.json   (then eval compare before.json after.json)
    Example: selfheal eval run --planner llm --record recordings/   (then --replay recordings/ offline)
    """
    from evals.report import print_results
    from evals.suite import SuiteOptions
    from tools.runbooks import RunbookError, RunbookLibrary, default_runbooks_dir

    if planner not in ("deterministic", "llm"):
        err.print(f"[red]error:[/red] unknown planner {planner!r}: deterministic or llm")
        raise typer.Exit(2)
    parsed_size = size_or_exit(size)
    if record is not None and replay is not None:
        err.print("[red]error:[/red] --record and --replay exclude each other")
        raise typer.Exit(2)
    if replay is not None and not replay.is_dir():
        err.print(f"[red]error:[/red] no recordings folder {replay}")
        raise typer.Exit(2)
    scenarios = _pick(_suite(scenarios_dir), only)
    # The folder is named in the results (two runs that differ only in it are a runbook edit's proof), and
    # loaded now: a broken one would otherwise fail every case after its world was built.
    runbooks_dir = (runbooks or default_runbooks_dir()).absolute()
    try:
        RunbookLibrary.load(runbooks_dir)
    except RunbookError as error:
        raise runbooks_failed(error, runbooks_dir) from error
    options = SuiteOptions(
        seeds=seeds, size=parsed_size, planner=planner, workers=workers, record=record,  # type: ignore[arg-type]
        replay=replay, cache_dir=cache_dir, work_dir=keep, runbooks_dir=runbooks_dir,
    )  # fmt: skip
    result = _run_with_progress(scenarios, options)
    data = result.to_json()
    print_results(data, out)
    out.print(f"{len(result.cases)} case(s) in {result.wall_seconds:.0f} s")
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(data, indent=2, default=str) + "\n")
        out.print(f"results written to {json_out}")
    if fail_on_regression and not all(c.passed for c in result.cases):
        raise typer.Exit(1)


def size_or_exit(text: str) -> Size:
    """The --size option as a `Size`; an unknown one is a usage error (exit 2) naming the sizes."""
    from evals.worlds import parse_size

    try:
        return parse_size(text)
    except ValueError as error:
        err.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from error


def _run_with_progress(scenarios: list[Scenario], options: SuiteOptions) -> SuiteResult:
    from agent.llm import ReplayMiss
    from evals.suite import SuiteError, run_suite

    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=err, transient=True,
    )  # fmt: skip
    with progress:
        worlds = progress.add_task("worlds", total=None)
        cases = progress.add_task("cases", total=len(scenarios) * options.seeds)

        def on_world(what: str) -> None:
            progress.update(worlds, description=f"world: {what}")

        def on_case(case: CaseResult, done: int, total: int) -> None:
            verdict = "[green]pass[/green]" if case.passed else "[red]FAIL[/red]"
            progress.console.print(f"{case.id} seed {case.seed}: {verdict} ({case.wall_seconds:.0f} s)")
            progress.update(cases, completed=done, total=total)

        try:
            return run_suite(scenarios, options, open_platform, on_world=on_world, on_case=on_case)
        except (ReplayMiss, SuiteError) as error:  # what the user can fix; anything else is our bug
            err.print(f"[red]error:[/red] {error}")
            raise typer.Exit(1) from error


@eval_app.command("list")
def list_scenarios(scenarios_dir: ScenariosOption = None) -> None:
    """List the scenarios of a suite: id, faults, expected incident kinds, root cause, page.

    Example: selfheal eval list --scenarios evals/scenarios
    """
    from evals.scenario import default_scenarios_dir

    scenarios = _suite(scenarios_dir)
    table = Table(title=f"{len(scenarios)} scenarios in {scenarios_dir or default_scenarios_dir()}")
    for column in ("id", "live days", "faults", "expected", "page"):
        table.add_column(column, overflow="fold")
    for scenario in scenarios:
        faults = ", ".join(f.kind for f in scenario.faults) or "none"
        expected = "; ".join(
            f"{'/'.join(e.kinds)} -> {e.root_cause}" if e.incident else "no incident" for e in scenario.expect
        )
        pages = ", ".join("-" if e.page is None else ("yes" if e.page else "no") for e in scenario.expect)
        table.add_row(scenario.id, str(scenario.world.live_days), faults, expected, pages)
    print_table(out, table)


@eval_app.command("compare")
def compare(
    before: Annotated[
        Path, typer.Argument(help="Results JSON of the baseline run (selfheal eval run --json).")
    ],
    after: Annotated[Path, typer.Argument(help="Results JSON of the candidate run.")],
) -> None:
    """Compare two results files: summary numbers side by side (better green, worse red), then every case
    whose checks changed (which ones now fail or pass) and the cases only one run played.

    Runs made with different options (size, planner, seeds, runbooks) are named first: their difference is
    not the responder's alone.

    Example: selfheal eval compare main.json my-change.json
    """
    from evals.report import compare_table, load_results, option_differences

    try:
        a, b = load_results(before), load_results(after)
    except ValueError as error:
        raise fail(error, 2) from error
    for difference in option_differences(a, b):
        err.print(Text.assemble(("note:", "yellow"), f" the runs differ in {difference}"))
    print_table(out, compare_table(a, b, (before.name, after.name)))
