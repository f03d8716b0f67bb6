"""`selfheal runbooks ...`: list, show, create, lint and test runbooks (a thin layer over `tools.runbooks`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from monitor.findings import INCIDENT_KINDS, ROOT_CAUSES
from selfheal.cli_common import runbooks_failed
from selfheal.cli_tables import CliConsole, print_table

if TYPE_CHECKING:  # tools.runbooks loads the monitor's checks (its linter): only when a command runs
    from tools.runbooks import RunbookLibrary

runbooks_app = typer.Typer(
    help="List, show, create, lint and test runbooks (test: play one on a scenario).", no_args_is_help=True
)
out = CliConsole()
err = CliConsole(stderr=True)

DirOption = Annotated[
    Path | None,
    typer.Option("--dir", help="Runbook folder (default: $SELFHEAL_RUNBOOKS or the shipped runbooks/)."),
]


def _library(folder: Path | None) -> RunbookLibrary:
    from tools.runbooks import RunbookError, RunbookLibrary

    try:
        return RunbookLibrary.load(folder)
    except RunbookError as error:
        raise runbooks_failed(error, folder) from error


@runbooks_app.command("list")
def list_runbooks(
    folder: DirOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List runbooks: id, root cause, trigger kinds, severity, paging rule and allowed actions.

    Example: selfheal runbooks list
    """
    from tools.runbooks import default_runbooks_dir

    library = _library(folder)
    if as_json:
        typer.echo(json.dumps([r.front_matter() for r in library], indent=2))
        return
    table = Table(title=f"runbooks in {folder or default_runbooks_dir()}")
    table.add_column("id", no_wrap=True)
    for column in ("root cause", "triggers", "severity", "paging", "actions"):
        table.add_column(column)
    for runbook in library:
        actions = ", ".join(f"{name} ({policy})" for name, policy in runbook.actions.items())
        table.add_row(
            runbook.id,
            runbook.root_cause,
            ", ".join(runbook.triggers.kinds),
            runbook.severity,
            runbook.paging,
            actions,
        )
    print_table(out, table)


@runbooks_app.command("show")
def show_runbook(
    runbook_id: Annotated[str, typer.Argument(help="The runbook's id, e.g. feature_pipeline_break.")],
    folder: DirOption = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the parsed runbook (front matter and steps) as JSON.")
    ] = False,
) -> None:
    """Show one runbook: its front matter, then its body as written.

    Example: selfheal runbooks show corrupted_artifact
    """
    library = _library(folder)
    try:
        runbook = library.get(runbook_id)
    except KeyError as error:
        err.print(f"[red]error:[/red] {error.args[0]}")
        raise typer.Exit(1) from error
    if as_json:
        steps = [step.model_dump(mode="json") for step in runbook.steps]
        typer.echo(
            json.dumps({**runbook.front_matter(), "path": str(runbook.path), "steps": steps}, indent=2)
        )
        return
    typer.echo(f"{runbook.id}: {runbook.title}")
    typer.echo(f"  root cause   {runbook.root_cause}")
    checks = f" (checks: {', '.join(runbook.triggers.checks)})" if runbook.triggers.checks else ""
    typer.echo(f"  triggers     {', '.join(runbook.triggers.kinds)}{checks}")
    if runbook.triggers.when:
        typer.echo(f"  when         {runbook.triggers.when}")
    typer.echo(f"  severity     {runbook.severity}")
    typer.echo(f"  actions      {', '.join(f'{n} ({p})' for n, p in runbook.actions.items())}")
    under_rules = runbook.verification.while_fallback
    typer.echo(
        f"  verification {runbook.verification.check} under threshold within {runbook.verification.within}"
        + (f" ({under_rules} while the fallback rules serve)" if under_rules else "")
    )
    typer.echo(f"  paging       {runbook.paging}")
    typer.echo(f"  file         {runbook.path}")
    typer.echo(runbook.body)


@runbooks_app.command("new")
def new_runbook(
    runbook_id: Annotated[
        str, typer.Argument(help="The new runbook's id (lower_snake_case); also its file name.")
    ],
    folder: Annotated[
        Path | None,
        typer.Option(
            "--dir",
            help="Folder to write it to (default: the current folder, not the library the responder loads: "
            "a half-written runbook there would stop every investigation until it lints clean).",
        ),
    ] = None,
    kind: Annotated[
        str, typer.Option(help=f"Incident kind it triggers on: {', '.join(INCIDENT_KINDS)}.")
    ] = "data_quality",
    root_cause: Annotated[
        str, typer.Option(help=f"Root cause it handles: {', '.join(ROOT_CAUSES)}.")
    ] = "none",
    force: Annotated[bool, typer.Option(help="Overwrite an existing file.")] = False,
) -> None:
    """Write a runbook template to fill in; it lints clean once every <FILL IN ...> is replaced.

    It is written to the current folder unless --dir says where: the responder loads every runbook of its
    library, and one that does not lint stops them all.

    Example: selfheal runbooks new card_testing_burst --kind data_drift --root-cause new_fraud_pattern
    """
    from tools.runbooks import default_runbooks_dir, runbook_template

    target_dir = folder or Path(".")
    path = target_dir / f"{runbook_id}.md"
    if root_cause not in ROOT_CAUSES:
        err.print(f"[red]error:[/red] unknown root cause {root_cause!r}; known: {', '.join(ROOT_CAUSES)}")
        raise typer.Exit(2)
    try:
        text = runbook_template(runbook_id, kind=kind, root_cause=root_cause)
    except ValueError as error:
        err.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from error
    if path.exists() and not force:
        err.print(f"[red]error:[/red] {path} exists; pass --force to overwrite it")
        raise typer.Exit(1)
    target_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    typer.echo(f"wrote {path}: fill in every <FILL IN ...>, then run `selfheal runbooks lint {path}`")
    library = default_runbooks_dir().resolve()
    if target_dir.resolve() != library:
        typer.echo(f"once it lints clean, move it into {library} (or the folder $SELFHEAL_RUNBOOKS names) to use it")


@runbooks_app.command("lint")
def lint_runbooks(
    paths: Annotated[
        list[Path] | None, typer.Argument(help="Runbook files or folders (default: the runbook folder).")
    ] = None,
) -> None:
    """Check runbooks against the real tool schemas, monitor checks and incident evidence.

    Prints one `file:line: message \\[code]` line per problem and exits 1 if there is any.

    Example: selfheal runbooks lint runbooks/
    """
    from tools.runbooks import default_runbooks_dir, lint_paths, runbook_files

    targets = paths or [default_runbooks_dir()]
    missing = [p for p in targets if not p.exists()]
    if missing:
        err.print(f"[red]error:[/red] no such file or folder: {', '.join(map(str, missing))}")
        raise typer.Exit(2)
    if not runbook_files(targets):
        err.print(f"[red]error:[/red] no runbooks (*.md files) in {', '.join(map(str, targets))}")
        raise typer.Exit(1)
    problems = lint_paths(targets)
    for problem in problems:
        typer.echo(str(problem))
    if problems:
        files = len({p.path for p in problems})
        err.print(f"{len(problems)} problem(s) in {files} file(s)")
        raise typer.Exit(1)
    err.print("all runbooks lint clean")


@runbooks_app.command("test")
def test_runbook(
    runbook_id: Annotated[str, typer.Argument(help="The runbook's id, e.g. bad_model_deploy.")],
    scenario: Annotated[Path, typer.Option("--scenario", help="A scenario file (evals/scenarios/*.yaml).")],
    folder: DirOption = None,
    size: Annotated[
        str, typer.Option(help="small (quick) or default (the world as the file says).")
    ] = "small",
    as_json: Annotated[bool, typer.Option("--json", help="Print the case result as JSON.")] = False,
) -> None:
    """Play one scenario with only this runbook installed and score it like the eval harness does.

    The deterministic planner can use no other runbook, so what happens is this runbook's doing (or its
    absence: an incident it does not match is abstained on and paged). Exits 1 when a check fails.

    Example: selfheal runbooks test bad_model_deploy --scenario evals/scenarios/bad-deploy-inverted-labels.yaml
    """
    import shutil
    import tempfile

    from evals.scenario import ScenarioError, load_scenario
    from evals.suite import SuiteOptions, run_suite
    from selfheal.cli_eval import open_platform, size_or_exit

    library = _library(folder)
    if runbook_id not in library:
        err.print(f"[red]error:[/red] no runbook {runbook_id!r}; known: {', '.join(library.ids())}")
        raise typer.Exit(1)
    parsed_size = size_or_exit(size)
    try:
        loaded = load_scenario(scenario)
    except ScenarioError as error:
        err.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from error
    only = Path(tempfile.mkdtemp(prefix="selfheal-runbook-test-"))
    try:
        source = library.get(runbook_id).path
        if source is None:
            raise typer.Exit(1)
        shutil.copy(source, only)
        options = SuiteOptions(size=parsed_size, runbooks_dir=only)
        with err.status(
            f"playing {loaded.id} ({loaded.world.live_days} live days) with runbook {runbook_id}"
        ):
            result = run_suite([loaded], options, open_platform)
    finally:
        shutil.rmtree(only, ignore_errors=True)
    case = result.cases[0]
    if as_json:
        typer.echo(json.dumps(case.to_json(), indent=2, default=str))
    else:
        table = Table(title=f"runbook {runbook_id} on {loaded.id} (seed {case.seed})")
        for column in ("check", "result", "why"):
            table.add_column(column, overflow="fold")
        for check in case.checks:
            table.add_row(check.name, "[green]pass[/green]" if check.passed else "[red]FAIL[/red]", check.why)
        print_table(out, table)
    if not case.passed:
        raise typer.Exit(1)
