"""Responder commands: ``investigate``, ``approve``, ``deny``, ``runs``, ``report`` (thin layers over `agent`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from agent.responder import ResponderError, RunResult

console = Console(stderr=True)
out = Console()

HomeOption = Annotated[
    Path | None, typer.Option("--home", help="Workspace folder (default: $SELFHEAL_HOME or ./.selfheal).")
]
RunbooksOption = Annotated[
    Path | None, typer.Option("--runbooks", help="Runbooks folder (default: $SELFHEAL_RUNBOOKS or the shipped ones).")
]


def _open(home: Path | None, runbooks: Path | None, planner: str | None = None) -> tuple[Any, Any]:
    from selfheal.app import Platform
    from store import StoreError

    try:
        platform = Platform.open(home)
    except StoreError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(1) from error
    return platform, platform.responder(planner=planner, runbooks_dir=runbooks)


def show_run(run: RunResult) -> None:
    """Print where a run stands and, when finished, its summary."""
    state = run.state
    out.print(f"[bold]{run.thread_id}[/bold]: {run.status}" + (f" ({run.outcome})" if run.outcome else ""))
    diagnosis = state.get("diagnosis") or {}
    if diagnosis:
        out.print(f"  root cause {diagnosis.get('root_cause')} via runbook {diagnosis.get('runbook_id')} "
                  f"(confidence {float(diagnosis.get('confidence', 0)):.2f}, {diagnosis.get('planner')})")
    for action in state.get("plan", []):
        out.print(f"  action {action['action']} {json.dumps(action.get('args', {}))[:120]}: {action.get('status')}"
                  + (f" [audit {action['audit_id']}]" if action.get("audit_id") else ""))
    if run.waiting:
        if run.waiting.get("type") == "approval":
            out.print(f"  waiting for approval: selfheal approve {run.incident_id} --by NAME  (or deny)")
        else:
            out.print(f"  waiting for data after the action until {run.waiting.get('not_before')} "
                      f"(check {run.waiting.get('check')}, deadline {run.waiting.get('deadline')})")
    verification = state.get("verification") or {}
    if verification:
        out.print(f"  verification: {verification.get('status')}: {verification.get('reason')}")
    page = state.get("page_decision") or {}
    if page:
        out.print(f"  page: {'sent' if page.get('sent') else 'not sent'} ({page.get('rule')}): {page.get('reason')}")
    report = state.get("report") or {}
    if report:
        out.print(f"  report: {report.get('markdown')} | {report.get('html')}")


def investigate(
    incident_id: Annotated[str, typer.Argument(help="Incident id, e.g. INC-7.")],
    planner: Annotated[str, typer.Option(help="deterministic, llm or auto (llm when OPENAI_BASE_URL/OPENAI_API_KEY is set).")] = "auto",
    again: Annotated[bool, typer.Option("--again", help="Start a new investigation even if one finished.")] = False,
    home: HomeOption = None,
    runbooks: RunbooksOption = None,
) -> None:
    """Investigate an incident, or resume its investigation (after a crash, or when data has arrived).

    Example: selfheal investigate INC-7
    """
    platform, responder = _open(home, runbooks, planner)
    try:
        show_run(responder.investigate(incident_id, planner=planner, again=again))
    except (KeyError, ResponderError) as error:
        console.print(f"[red]error:[/red] {str(error).strip(chr(39))}")
        raise typer.Exit(1) from error
    finally:
        responder.close()
        platform.close()


def _decide(incident_id: str, by: str, note: str, home: Path | None, runbooks: Path | None, approve: bool) -> None:
    platform, responder = _open(home, runbooks)
    try:
        run = responder.approve(incident_id, by=by, note=note) if approve else responder.deny(incident_id, by=by, note=note)
        show_run(run)
    except (KeyError, ResponderError) as error:
        console.print(f"[red]error:[/red] {str(error).strip(chr(39))}")
        raise typer.Exit(1) from error
    finally:
        responder.close()
        platform.close()


def approve(
    incident_id: Annotated[str, typer.Argument(help="Incident whose investigation waits for approval.")],
    by: Annotated[str, typer.Option("--by", help="Who approves (recorded in the audit log).")],
    note: Annotated[str, typer.Option(help="Why.")] = "",
    home: HomeOption = None,
    runbooks: RunbooksOption = None,
) -> None:
    """Approve the actions a paused investigation waits on; it resumes and runs them.

    Example: selfheal approve INC-7 --by alice --note "checked the challenger's metrics"
    """
    _decide(incident_id, by, note, home, runbooks, approve=True)


def deny(
    incident_id: Annotated[str, typer.Argument(help="Incident whose investigation waits for approval.")],
    by: Annotated[str, typer.Option("--by", help="Who denies (recorded).")],
    note: Annotated[str, typer.Option(help="Why.")] = "",
    home: HomeOption = None,
    runbooks: RunbooksOption = None,
) -> None:
    """Deny the actions a paused investigation waits on; it resumes without them and pages.

    Example: selfheal deny INC-7 --by alice --note "retrain after the holiday, not now"
    """
    _decide(incident_id, by, note, home, runbooks, approve=False)


def runs(
    incident_id: Annotated[str | None, typer.Argument(help="Only this incident's runs.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    home: HomeOption = None,
) -> None:
    """List the responder's investigations: status, root cause, verified, paged.

    Example: selfheal runs INC-7
    """
    platform, responder = _open(home, None, "deterministic")
    try:
        rows = responder.runs(incident_id=incident_id)
    finally:
        responder.close()
        platform.close()
    if as_json:
        out.print_json(json.dumps([{k: v for k, v in r.items() if k != "state"} for r in rows], default=str))
        return
    table = Table(title="investigations")
    for column in ("run", "planner", "status", "outcome", "root cause", "runbook", "verified", "paged"):
        table.add_column(column)
    for r in rows:
        table.add_row(r["thread_id"], r["planner"], r["status"], str(r["outcome"]), str(r["root_cause"]),
                      str(r["runbook_id"]), str(r["verified"]), str(r["paged"]))
    out.print(table)


def register(app: typer.Typer) -> None:
    """Add the responder commands to the main CLI."""
    for command in (investigate, approve, deny, runs):
        app.command()(command)
