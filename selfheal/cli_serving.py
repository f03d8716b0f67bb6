"""`selfheal serving ...`: what serves, its history, and a person's changes to it (fallback, quarantine,
thresholds). A thin layer over `selfheal.serving_changes`, or over the service's admin API while a
service owns the workspace (it holds the DuckDB file; the running scorer then serves the change at once).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from selfheal.cli_common import fail, open_platform, read_workspace
from selfheal.cli_tables import CliConsole, print_table

if TYPE_CHECKING:
    from selfheal.app import Platform
    from selfheal.serving_changes import ServingChange

serving_app = typer.Typer(
    help="What serves (the champion or the fallback rules, thresholds, quarantined features), its history, and "
    "a person's changes to it. Each change is audited as person:NAME; a change that changes nothing says so, "
    "writes nothing and exits with 0; a change that cannot be made exits with 1.",
    no_args_is_help=True,
)
console = CliConsole(stderr=True)
out = CliConsole()

HomeOption = Annotated[
    Path | None, typer.Option("--home", help="Workspace folder (default: $SELFHEAL_HOME or ./.selfheal).")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
ByOption = Annotated[
    str, typer.Option("--by", help="Who makes the change (recorded as person:NAME in the audit log).")
]
ReasonOption = Annotated[
    str, typer.Option("--reason", help="Why (recorded in the audit log and the serving history).")
]


class Switch(StrEnum):
    on = "on"
    off = "off"


# -- reads --------------------------------------------------------------------------------------------


@serving_app.command("show")
def show(as_json: JsonOption = False, home: HomeOption = None) -> None:
    """What serves now: the champion model, or the fallback rules and why; the thresholds; quarantined
    features and how they are imputed; who made the serving state and why (via the service when one runs).

    Example: selfheal serving show
    """
    from selfheal.service import views

    payload = read_workspace(
        home,
        from_service=lambda client: client.get("/v1/serving"),
        from_file=lambda platform: views.serving(platform, platform.scorer.status()),
    )
    if as_json:
        out.print_json(json.dumps(payload))
        return
    state = payload["state"]
    serves = (
        Text.assemble(("the fallback rules", "bold red"), f": {payload['fallback_reason']}")
        if payload["fallback"]
        else Text(f"model v{payload['model_version']}")
    )
    out.print(Text.assemble("serving     ", serves))
    out.print(
        Text(f"thresholds  review >= {payload['review_threshold']:g}, decline >= {payload['threshold']:g}")
    )
    quarantined = payload["quarantined_features"]
    surrogates = state["quarantine_surrogates"]
    if not quarantined:
        out.print("quarantined none")
    for feature, value in sorted(quarantined.items()):
        source = (
            f"estimated from {surrogates[feature][0]['source']} where live, else "
            if surrogates.get(feature)
            else ""
        )
        out.print(Text(f"quarantined {feature}: {source}{value:g}"))
    changed = str(state["changed_at"])[:16].replace("T", " ")
    out.print(Text(f"state       v{state['version']}, {changed} by {state['changed_by']}: {state['reason']}"))
    if payload["fallback"] and state.get("champion_version") is not None:  # with no champion, off is refused
        out.print("when the cause is fixed: selfheal serving fallback off --by NAME --reason TEXT")


@serving_app.command("history")
def history(
    limit: Annotated[
        int, typer.Option(min=1, max=1000, help="At most this many versions, newest first.")
    ] = 20,
    as_json: JsonOption = False,
    home: HomeOption = None,
) -> None:
    """Serving-state versions, newest first: who changed what, when and why (via the service when one runs).

    Example: selfheal serving history --limit 5
    """
    from selfheal.service import views

    rows: list[dict[str, Any]] = read_workspace(
        home,
        from_service=lambda client: client.get("/v1/serving/history", limit=limit),
        from_file=lambda platform: views.serving_history(platform, limit),
    )
    if as_json:
        out.print_json(json.dumps(rows))
        return
    table = Table(title="serving state, newest first")
    for column in ("version", "changed", "by", "serves", "review", "decline", "quarantined", "reason"):
        table.add_column(column)
    for row in rows:
        serves = "fallback rules" if row["fallback"] else f"model v{row['champion_version']}"
        table.add_row(  # actors, features and reasons are data: text, never markup
            str(row["version"]), str(row["changed_at"])[:16].replace("T", " "), Text(row["changed_by"]), serves,
            f"{row['review_threshold']:g}", f"{row['threshold']:g}", Text(", ".join(sorted(row["quarantined_features"]))),
            Text(row["reason"]),
        )  # fmt: skip
    print_table(out, table)


# -- changes ------------------------------------------------------------------------------------------


@serving_app.command("fallback")
def fallback(
    switch: Annotated[
        Switch,
        typer.Argument(help="on: the fallback rules score instead of the champion; off: the champion again."),
    ],
    by: ByOption,
    reason: ReasonOption,
    as_json: JsonOption = False,
    home: HomeOption = None,
) -> None:
    """Turn the deterministic fallback rules on or off. Off is refused (exit 1) when there is no champion or
    its artifact fails its integrity check; already on or off changes nothing (exit 0).

    Example: selfheal serving fallback off --by alice --reason "feature job fixed, INC-4"
    """
    from selfheal import serving_changes

    on = switch is Switch.on
    _change(
        home, by, as_json, "/v1/serving/fallback", {"on": on, "by": by, "reason": reason},
        lambda platform: serving_changes.set_fallback(platform, on, by=by, reason=reason),
    )  # fmt: skip


@serving_app.command("quarantine")
def quarantine(
    feature: Annotated[str, typer.Argument(help="A feature of the champion model, e.g. terminal_risk_7d.")],
    by: ByOption,
    reason: ReasonOption,
    value: Annotated[
        float | None,
        typer.Option(
            help="Impute this constant for every row instead of the champion's reference "
            "(its surrogate features, then its mean: what the agent does)."
        ),
    ] = None,
    as_json: JsonOption = False,
    home: HomeOption = None,
) -> None:
    """Stop using a feature's live values: impute it as the agent's quarantine does. A name that is not a
    feature of the champion exits with 1; an already quarantined feature changes nothing (exit 0).

    Example: selfheal serving quarantine terminal_risk_7d --by alice --reason "terminal job late"
    """
    from selfheal import serving_changes

    body: dict[str, Any] = {"feature": feature, "by": by, "reason": reason, "value": value}
    _change(
        home, by, as_json, "/v1/serving/quarantine", body,
        lambda platform: serving_changes.quarantine(platform, feature, by=by, reason=reason, value=value),
    )  # fmt: skip


@serving_app.command("release")
def release(
    feature: Annotated[str, typer.Argument(help="The quarantined feature.")],
    by: ByOption,
    reason: ReasonOption,
    as_json: JsonOption = False,
    home: HomeOption = None,
) -> None:
    """Use a quarantined feature's live values again. A name that is not a feature of the champion exits
    with 1; a feature that is not quarantined changes nothing (exit 0).

    Example: selfheal serving release terminal_risk_7d --by alice --reason "terminal job fixed"
    """
    from selfheal import serving_changes

    _change(
        home, by, as_json, "/v1/serving/release", {"feature": feature, "by": by, "reason": reason},
        lambda platform: serving_changes.release(platform, feature, by=by, reason=reason),
    )  # fmt: skip


@serving_app.command("thresholds")
def thresholds(
    decline: Annotated[float, typer.Option(help="Decline when the score is at or above this (0-1).")],
    review: Annotated[
        float, typer.Option(help="Review from this score up to --decline (0-1, at most --decline).")
    ],
    by: ByOption,
    reason: ReasonOption,
    as_json: JsonOption = False,
    home: HomeOption = None,
) -> None:
    """Set both decision thresholds. Values outside [0, 1] or --review above --decline exit with 1; the
    thresholds in force already change nothing (exit 0).

    Example: selfheal serving thresholds --decline 0.6 --review 0.25 --by alice --reason "review queue too long"
    """
    from selfheal import serving_changes

    try:  # before looking for a service: a bad value is refused the same way either way
        serving_changes.check_thresholds(decline, review)
    except serving_changes.InvalidChange as error:
        raise fail(error) from error
    _change(
        home, by, as_json, "/v1/serving/thresholds", {"decline": decline, "review": review, "by": by, "reason": reason},
        lambda platform: serving_changes.set_thresholds(platform, decline=decline, review=review, by=by, reason=reason),
    )  # fmt: skip


# -- plumbing -----------------------------------------------------------------------------------------


def _change(
    home: Path | None,
    by: str,
    as_json: bool,
    path: str,
    body: dict[str, Any],
    on_file: Callable[[Platform], ServingChange],
) -> None:
    """Make a change through the service's admin API when one owns the workspace, else on the file; print
    what it did. Bad input and refusals exit with 1; "nothing to change" exits with 0."""
    from selfheal import serving_changes
    from selfheal.client import ServiceError, discover_service

    try:
        serving_changes.person_actor(by)  # a bad name is refused before anything is asked of anyone
    except serving_changes.InvalidChange as error:
        raise fail(error) from error
    client = discover_service(home, actor=by)
    if client is not None:
        with client:
            try:
                outcome: dict[str, Any] = client.post(path, body)
            except ServiceError as error:
                raise fail(str(error.detail)) from error
    else:
        platform = open_platform(home)
        try:
            outcome = on_file(platform).to_json()
        except (serving_changes.InvalidChange, serving_changes.ChangeRefused) as error:
            raise fail(error) from error
        finally:
            platform.close()
    _print_outcome(outcome, as_json)


def _print_outcome(outcome: dict[str, Any], as_json: bool) -> None:
    if as_json:
        out.print_json(json.dumps(outcome))
        return
    state = outcome["state"]
    if outcome["changed"]:
        out.print(
            Text(f"{outcome['message']} (serving state v{state['version']}, audit {outcome['audit_id']})")
        )
    else:
        out.print(Text(outcome["message"]))
