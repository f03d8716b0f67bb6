"""What the command modules share: how an error is said, how a workspace is opened, and how a read goes
through the service that owns the workspace.

Each of `cli`, `cli_agent` and `cli_serving` used to carry its own copy of these three (an error printer,
a "open the platform, fail on StoreError", a "service if one runs, else the file"), and the copies had
drifted: one read converted the service's errors, another left them to every caller.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer
from rich.text import Text

from selfheal.cli_tables import CliConsole
from selfheal.errors import error_text

if TYPE_CHECKING:  # the platform (pandas, DuckDB) and the HTTP client load when a command needs them
    from selfheal.app import Platform
    from selfheal.client import ServiceClient
    from tools.runbooks import RunbookError

T = TypeVar("T")

err = CliConsole(stderr=True)


def fail(error: BaseException | str, code: int = 1) -> typer.Exit:
    """Print an error on stderr and return the exit to raise. The text may quote data (a title, a server's
    answer): it is printed as text, never as Rich markup."""
    err.print(Text.assemble(("error:", "red"), " ", error if isinstance(error, str) else error_text(error)))
    return typer.Exit(code)


def runbooks_failed(error: RunbookError, folder: Path | None) -> typer.Exit:
    """Print why a runbook folder does not load (each problem as ``file:line: message [code]``) and return
    the exit to raise. Whatever runs the responder loads the whole folder, and one broken file stops it."""
    from tools.runbooks import default_runbooks_dir

    for problem in error.problems:
        err.print(Text(str(problem)), soft_wrap=True)  # one line per problem, as `runbooks lint` prints it
    where = folder or default_runbooks_dir()
    return fail(f"cannot load the runbooks in {where}; `selfheal runbooks lint {where}` tells more")


def open_platform(home: Path | None, *, create: bool = False) -> Platform:
    """The workspace's platform; one that cannot be opened (missing, busy, damaged) exits with 1. Only the
    commands that make a workspace (train, score) pass ``create``: the others refuse a path where there is
    none rather than leave an empty workspace there."""
    from selfheal.app import Platform
    from store import StoreError

    try:
        return Platform.open(home, create=create)
    except StoreError as error:
        raise fail(error) from error


def incident_filter(incident_id: str | None) -> str | None:
    """An ``--incident`` filter as the store names it (``7`` -> ``INC-7``); text that is not an incident id
    exits with 1 (it used to end `pages list` in a traceback)."""
    if incident_id is None:
        return None
    from selfheal.service.views import NotFound, normalise_incident_id

    try:
        return normalise_incident_id(incident_id)
    except NotFound as error:
        raise fail(error) from error


def read_workspace(
    home: Path | None, *, from_service: Callable[[ServiceClient], T], from_file: Callable[[Any], T]
) -> T:
    """A read command's data: asked of the service that owns the workspace if one runs (it holds the DuckDB
    file, which this process then cannot open), else read from the file; both give the same JSON. What
    either side refuses (the service's 4xx, `views.NotFound` from the file) exits with 1."""
    from selfheal.client import ServiceError, discover_service
    from selfheal.service.views import NotFound

    client = discover_service(home)
    try:
        if client is not None:
            with client:
                return from_service(client)
        platform = open_platform(home)
        try:
            return from_file(platform)
        finally:
            platform.close()
    except ServiceError as error:
        raise fail(str(error.detail)) from error
    except NotFound as error:
        raise fail(error) from error
