"""`selfheal labels FILE`: labels that arrived after scoring (chargebacks, confirmed fraud) into a workspace.

Only `selfheal run` delivered labels (from the file it played); a team scoring with `selfheal score` or a
running service could not send theirs, so the terminals' fraud ratios stayed as training left them and
the monitor's performance checks never had matured labels. See `scorer.labels` for what a label is.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from selfheal.cli_common import fail, open_platform
from selfheal.cli_tables import CliConsole

out = CliConsole()

POST_CHUNK = 10_000  # labels per request to a running service (~1 MB of JSON; its body limit is 16 MB)


def labels(
    path: Annotated[Path, typer.Argument(help="Labels file (.csv, .parquet or .jsonl): transaction_id, is_fraud "
                                              "(0/1 or true/false), optionally label_time. Handbook names work.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the counts and refusals as JSON.")] = False,
    home: Annotated[
        Path | None, typer.Option("--home", help="Workspace folder (default: $SELFHEAL_HOME or ./.selfheal).")
    ] = None,
) -> None:
    """Add labels that arrived after scoring: they feed the terminals' fraud ratios and the monitor's
    performance checks (through the service when one runs). A row that is not a label is refused with its
    reason; exit 1 when nothing could be applied.

    Example: selfheal labels chargebacks-2018-08.csv
    """
    from scorer.data import DataFormatError
    from scorer.labels import apply_labels, read_label_file
    from selfheal.client import ServiceError, discover_service

    try:
        records = read_label_file(path)
    except (FileNotFoundError, DataFormatError) as error:
        raise fail(error) from error
    client = discover_service(home)
    try:
        if client is not None:
            with client:
                result = _post_in_chunks(client, records)
        else:
            platform = open_platform(home)
            try:
                result = apply_labels(platform.scorer, records).to_json()
            finally:
                platform.close()  # flushes the labels table
    except ServiceError as error:
        raise fail(str(error.detail)) from error
    _show(result, path, as_json)
    if result["applied"] == 0 and result["refused"] > 0:
        raise typer.Exit(1)


def _post_in_chunks(client: Any, records: list[dict[str, Any]]) -> dict[str, Any]:
    total: dict[str, Any] = {"received": 0, "applied": 0, "scored": 0, "refused": 0, "refusals": []}
    for start in range(0, len(records), POST_CHUNK):
        chunk = json.loads(json.dumps(records[start : start + POST_CHUNK], default=str))  # numpy, timestamps
        answer = client.post("/v1/labels", chunk)
        for key in ("received", "applied", "scored", "refused"):
            total[key] += int(answer[key])
        total["refusals"] += [{**r, "row": int(r["row"]) + start} for r in answer["refusals"]]
    return total


def _show(result: dict[str, Any], path: Path, as_json: bool) -> None:
    if as_json:
        out.print_json(json.dumps(result))
        return
    never = result["applied"] - result["scored"]
    line = f"applied {result['applied']:,} labels from {path}"
    if result["applied"]:
        line += f" ({result['scored']:,} for transactions this workspace scored"
        line += f", {never:,} for ids it never scored)" if never > 0 else ")"
    out.print(Text(line))
    if result["refused"]:
        reasons: dict[str, int] = {}
        for refusal in result["refusals"]:
            reasons[refusal["reason"]] = reasons.get(refusal["reason"], 0) + 1
        # The reasons name the line where the reader knows it (a ragged CSV record); rows are not numbered
        # here, because the reader hands broken records over after the good ones of their chunk.
        common = "; ".join(f"{reason} ({n})" for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1])[:3])
        out.print(Text(f"refused {result['refused']:,} rows: {common}"))


def register(app: typer.Typer) -> None:
    app.command("labels")(labels)
