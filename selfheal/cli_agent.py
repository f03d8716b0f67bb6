"""Responder commands: ``investigate``, ``approve``, ``deny``, ``runs``, ``report`` (thin layers over `agent`)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
from rich.console import Console
from rich.table import Table

from selfheal.cli_common import fail, open_platform, read_workspace, runbooks_failed
from selfheal.cli_tables import CliConsole, print_table

if TYPE_CHECKING:  # the responder (LangGraph, the monitor, SciPy) loads when a command needs it
    from agent.responder import Responder, RunResult
    from selfheal.client import ServiceClient

console = CliConsole(stderr=True)
out = CliConsole()

HomeOption = Annotated[
    Path | None, typer.Option("--home", help="Workspace folder (default: $SELFHEAL_HOME or ./.selfheal).")
]
RunbooksOption = Annotated[
    Path | None, typer.Option("--runbooks", help="Runbooks folder (default: $SELFHEAL_RUNBOOKS or the shipped ones).")
]
RequestOption = Annotated[
    str | None,
    typer.Option(
        "--request",
        help="Decide on an action asked for in chat (its audit id, from the chat's reply) instead of a paused "
        "investigation.",
    ),
]


@contextmanager
def _responder(home: Path | None, runbooks: Path | None, planner: str | None = None) -> Iterator[Responder]:
    """The workspace's responder for one command; a missing incident or a refused request exits with 1."""
    from agent.responder import ResponderError
    from tools.runbooks import RunbookError

    platform = open_platform(home)
    try:
        responder = platform.responder(planner=planner, runbooks_dir=runbooks)
    except RunbookError as error:
        platform.close()
        raise runbooks_failed(error, runbooks) from error
    try:
        yield responder
    except (KeyError, ResponderError) as error:
        raise fail(error) from error
    finally:
        responder.close()
        platform.close()


def show_run(run: RunResult, console: Console = out) -> None:
    """Print where a run stands and, when finished, its summary (the CLI and the demo both use this)."""
    state = run.state
    console.print(f"[bold]{run.thread_id}[/bold]: {run.status}" + (f" ({run.outcome})" if run.outcome else ""))
    diagnosis = state.get("diagnosis") or {}
    if diagnosis:
        console.print(f"  root cause {diagnosis.get('root_cause')} via runbook {diagnosis.get('runbook_id')} "
                  f"(confidence {float(diagnosis.get('confidence', 0)):.2f}, {diagnosis.get('planner')})")
    for action in state.get("plan", []):
        console.print(f"  action {action['action']} {json.dumps(action.get('args', {}))[:120]}: {action.get('status')}"
                  + (f" [audit {action['audit_id']}]" if action.get("audit_id") else ""))
    if run.waiting:
        if run.waiting.get("type") == "approval":
            console.print(f"  waiting for approval: selfheal approve {run.incident_id} --by NAME  (or deny)")
        elif run.waiting.get("check") == "labels":
            console.print(f"  waiting for labels until {run.waiting.get('not_before')}: {run.waiting.get('reason')}")
        else:
            console.print(f"  waiting for data after the action until {run.waiting.get('not_before')} "
                      f"(check {run.waiting.get('check')}, deadline {run.waiting.get('deadline')})")
    verification = state.get("verification") or {}
    if verification:
        console.print(f"  verification: {verification.get('status')}: {verification.get('reason')}")
    page = state.get("page_decision") or {}
    if page:
        console.print(f"  page: {'sent' if page.get('sent') else 'not sent'} ({page.get('rule')}): {page.get('reason')}")
    report = state.get("report") or {}
    if report:
        console.print(f"  report: {report.get('markdown')} | {report.get('html')}")


def investigate(
    incident_id: Annotated[str, typer.Argument(help="Incident id, e.g. INC-7.")],
    planner: Annotated[str, typer.Option(help="deterministic, llm or auto (llm when OPENAI_BASE_URL/OPENAI_API_KEY is set).")] = "auto",
    again: Annotated[bool, typer.Option("--again", help="Start a new investigation even if one finished.")] = False,
    home: HomeOption = None,
    runbooks: RunbooksOption = None,
) -> None:
    """Investigate an incident, or resume its investigation (after a crash, or when data has arrived).

    Through the running service when there is one (it owns the workspace), else on the workspace file.

    Example: selfheal investigate INC-7
    """
    client = _service(home, runbooks)
    if client is not None:
        body = {"again": again, "planner": None if planner == "auto" else planner}
        show_run(_run_from_answer(_post(client, f"/v1/incidents/{incident_id}/investigate", body)))
        return
    with _responder(home, runbooks, planner) as responder:
        show_run(responder.investigate(incident_id, planner=planner, again=again))


def approve(
    incident_id: Annotated[str, typer.Argument(help="Incident whose investigation waits for approval.")],
    by: Annotated[str, typer.Option("--by", help="Who approves (recorded in the audit log).")],
    note: Annotated[str, typer.Option(help="Why.")] = "",
    request: RequestOption = None,
    home: HomeOption = None,
    runbooks: RunbooksOption = None,
) -> None:
    """Approve the actions a paused investigation waits on; it resumes and runs them.

    With --request, approve an action asked for in chat that waits for a person instead: it runs now, as you.
    Through the running service when there is one (it owns the workspace), else on the workspace file.

    Example: selfheal approve INC-7 --by alice --note "checked the challenger's metrics"
    """
    if request is not None:
        _decide_request("approve", incident_id, request, by=by, note=note, home=home, runbooks=runbooks)
        return
    if _decided_by_service("approve", incident_id, by=by, note=note, home=home, runbooks=runbooks):
        return
    with _responder(home, runbooks) as responder:
        show_run(responder.approve(incident_id, by=by, note=note))


def deny(
    incident_id: Annotated[str, typer.Argument(help="Incident whose investigation waits for approval.")],
    by: Annotated[str, typer.Option("--by", help="Who denies (recorded).")],
    note: Annotated[str, typer.Option(help="Why.")] = "",
    request: RequestOption = None,
    home: HomeOption = None,
    runbooks: RunbooksOption = None,
) -> None:
    """Deny the actions a paused investigation waits on; it resumes without them and pages.

    With --request, deny an action asked for in chat that waits for a person instead: it is never run.
    Through the running service when there is one (it owns the workspace), else on the workspace file.

    Example: selfheal deny INC-7 --by alice --note "retrain after the holiday, not now"
    """
    if request is not None:
        _decide_request("deny", incident_id, request, by=by, note=note, home=home, runbooks=runbooks)
        return
    if _decided_by_service("deny", incident_id, by=by, note=note, home=home, runbooks=runbooks):
        return
    with _responder(home, runbooks) as responder:
        show_run(responder.deny(incident_id, by=by, note=note))


def _decided_by_service(
    decision: str, incident_id: str, *, by: str, note: str, home: Path | None, runbooks: Path | None
) -> bool:
    """Approve or deny through the running service, if one owns the workspace (it holds the DuckDB file
    and the responder); False when none runs and the caller opens the workspace itself.

    The audit log then records the decision as ``api:<by>``: it came through the API.
    """
    client = _service(home, runbooks, actor=by)
    if client is None:
        return False
    show_run(_run_from_answer(_refused_exits(lambda: client.decide(incident_id, decision, note), client)))
    return True


def _decide_request(
    decision: Literal["approve", "deny"],
    incident_id: str,
    request: str,
    *,
    by: str,
    note: str,
    home: Path | None,
    runbooks: Path | None,
) -> None:
    """Approve or deny one action asked for in chat (`agent.chat.requests`), through the service if one runs."""
    client = _service(home, runbooks, actor=by)
    if client is not None:
        outcome = _refused_exits(lambda: client.decide(incident_id, decision, note, request=request), client)
    else:
        from agent.chat import ChatParts
        from agent.chat.requests import decide_request

        platform = open_platform(home)
        try:
            parts = ChatParts.for_platform(platform, runbooks_dir=runbooks)
            outcome = decide_request(parts, incident_id, decision, request, by=by, note=note)
        except (KeyError, ValueError) as error:
            raise fail(error) from error
        finally:
            platform.close()
    show_request_outcome(outcome)


def show_request_outcome(outcome: dict[str, Any], console: Console = out) -> None:
    """Print what deciding on a chat request did."""
    audit = f" [audit {outcome['audit_id']}]" if outcome.get("audit_id") else ""
    console.print(
        f"[bold]{outcome['request']}[/bold]: {outcome['decision']} -> {outcome['action']} "
        f"{json.dumps(outcome.get('args', {}))[:120]}: {outcome['status']}{audit}"
    )
    console.print(f"  {outcome['message']}")


def _service(home: Path | None, runbooks: Path | None, *, actor: str | None = None) -> ServiceClient | None:
    """A client for the service that owns the workspace, or None; says so if --runbooks cannot apply."""
    from selfheal.client import discover_service

    client = discover_service(home, actor=actor)
    if client is not None and runbooks is not None:
        console.print(
            f"[yellow]note:[/yellow] the service at {client.base_url} uses the runbooks it was started "
            "with; --runbooks is ignored"
        )
    return client


def _post(client: ServiceClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """A mutating call to the service; its refusal (401, 404, 409, 503) exits with 1 and its message."""
    return _refused_exits(lambda: client.post(path, body), client)


def _refused_exits(call: Callable[[], Any], client: ServiceClient) -> Any:
    """``call()`` on the open ``client``; a refusal by the service exits with 1 and its message."""
    from selfheal.client import ServiceError

    with client:
        try:
            return call()
        except ServiceError as error:
            raise fail(str(error.detail)) from error


def _run_from_answer(answer: dict[str, Any]) -> RunResult:
    """A `RunResult` from the service's summary of a run (what `show_run` prints)."""
    from agent.responder import RunResult

    keys = ("diagnosis", "plan", "verification", "page_decision", "report", "outcome")
    state = {k: answer[k] for k in keys if answer.get(k) is not None}
    return RunResult(answer["thread_id"], answer["incident_id"], answer["status"], state, answer.get("waiting"))


def runs(
    incident_id: Annotated[str | None, typer.Argument(help="Only this incident's runs.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    home: HomeOption = None,
) -> None:
    """List the responder's investigations: status, root cause, verified, paged (via the service when one runs).

    Example: selfheal runs INC-7
    """
    rows = _runs(home, incident_id)
    if as_json:
        out.print_json(json.dumps([{k: v for k, v in r.items() if k != "state"} for r in rows], default=str))
        return
    table = Table(title="investigations")
    for column in ("run", "planner", "status", "outcome", "root cause", "runbook", "verified", "paged"):
        table.add_column(column)
    for r in rows:
        table.add_row(r["thread_id"], r["planner"], r["status"], str(r["outcome"]), str(r["root_cause"]),
                      str(r["runbook_id"]), str(r["verified"]), str(r["paged"]))
    print_table(out, table)


def _runs(home: Path | None, incident_id: str | None) -> list[dict[str, Any]]:
    """The runs, from the running service if one owns the workspace (it holds the file), else the file (the
    table alone: no responder, so neither LangGraph nor the monitor is loaded)."""
    from selfheal.service import views

    rows: list[dict[str, Any]] = read_workspace(
        home, from_service=lambda client: client.get("/v1/runs", incident_id=incident_id),
        from_file=lambda platform: views.runs(platform, incident_id),
    )  # fmt: skip
    return rows


def register(app: typer.Typer) -> None:
    """Add the responder commands to the main CLI."""
    for command in (investigate, approve, deny, runs):
        app.command()(command)
