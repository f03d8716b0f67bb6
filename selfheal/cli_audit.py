"""`selfheal audit`: the action audit log, read from the CLI.

Every action (the responder's, a person's through `selfheal serving` or the API, the hourly loop's
releases and redeliveries) writes one row of ``audit_log`` whether it was applied, refused or left for
approval. `GET /v1/actions` served it; no command printed it, so a person checking what was done to
production had to export the table or open the web page of each incident.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from selfheal.cli_common import incident_filter, read_workspace
from selfheal.cli_tables import CliConsole, print_table

out = CliConsole()

DETAIL_CHARS = 120  # arguments, a reason or a refusal, cut; --json has all of it


def audit(
    incident_id: Annotated[str | None, typer.Option("--incident", help="Only this incident's actions (INC-7 or 7).")] = None,
    action: Annotated[str | None, typer.Option("--action", help="Only this action, e.g. rollback_model.")] = None,
    actor: Annotated[
        str | None, typer.Option("--actor", help="Only this actor: agent, autopilot, person:NAME, ...")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the rows as JSON (arguments, results, inverses).")] = False,
    home: Annotated[
        Path | None, typer.Option("--home", help="Workspace folder (default: $SELFHEAL_HOME or ./.selfheal).")
    ] = None,
) -> None:
    """The action audit log, oldest first: who did what to serving, when, under which approval, with what
    result (via the service when one runs).

    Every action is written here whether it was applied, refused, or left waiting for a person's approval.

    Example: selfheal audit --incident INC-3
    """
    from selfheal.service import views
    from tools.audit import bounded_text  # the cut the audit log itself uses, marked " …[cut]"

    key = incident_filter(incident_id)
    rows = read_workspace(
        home,
        from_service=lambda client: client.get("/v1/actions", incident_id=key, action=action, actor=actor),
        from_file=lambda platform: views.actions(
            platform, incident_id=views.existing_incident(platform, key) if key else None, action=action, actor=actor
        ),
    )
    if as_json:
        out.print_json(json.dumps(rows, default=str))
        return
    if not rows:
        out.print("no actions recorded" + (" for these filters" if key or action or actor else ""))
        return
    table = Table(title="audit log")
    for column in ("recorded", "incident", "actor", "action", "arguments", "approval", "status", "reason / result"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            str(row["recorded_at"]).replace("T", " ")[:19],
            row["incident_id"] or "-",
            Text(row["actor"]),  # data: never markup
            row["action"],
            Text(bounded_text(_arguments(row["args"]), DETAIL_CHARS)),
            row["approval"] or "-",
            str(row["result"].get("status", "")),
            Text(bounded_text(_detail(row), DETAIL_CHARS)),
        )
    print_table(out, table)


def _arguments(args: dict[str, Any]) -> str:
    return ", ".join(f"{name}={json.dumps(value, default=str)}" for name, value in sorted(args.items()))


def _detail(row: dict[str, Any]) -> str:
    """The reason it was taken and, when it was not applied, what the action said back (uncut)."""
    reason = row.get("reason") or ""
    result = row["result"]
    said = result.get("message") or result.get("error") if result.get("status") != "applied" else None
    return f"{reason} -> {said}" if said else reason


def register(app: typer.Typer) -> None:
    app.command("audit")(audit)
