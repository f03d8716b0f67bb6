"""`selfheal serve`: run the service (FastAPI on uvicorn) that owns a workspace until Ctrl-C / SIGTERM."""

from __future__ import annotations

import gc
import os
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

from selfheal.cli_common import runbooks_failed
from selfheal.cli_tables import CliConsole
from selfheal.cli_warm import warn_if_short
from selfheal.service.config import DEFAULT_HOST, DEFAULT_PORT, ServiceConfig
from selfheal.service.discovery import read_record, remove_record, write_record
from selfheal.service.hooks import ServiceHooks
from store import LogWriteError, StoreError, Workspace

err = CliConsole(stderr=True)
PLANNERS = ("deterministic", "llm", "auto")


def serve(
    host: Annotated[
        str, typer.Option(help="Interface to bind. Anything but loopback exposes scoring and reads to the network.")
    ] = DEFAULT_HOST,
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port (0: any free port; see service.json).")] = (
        DEFAULT_PORT
    ),
    home: Annotated[
        Path | None, typer.Option("--home", help="Workspace folder (default: $SELFHEAL_HOME or ./.selfheal).")
    ] = None,
    flush_interval: Annotated[
        float,
        typer.Option(min=0.01, help="When traffic pauses, scoring logs staged longer than this are written."),
    ] = 0.5,
    log_level: Annotated[str, typer.Option(help="uvicorn log level: critical, error, warning, info, debug.")] = (
        "warning"
    ),
    runbooks: Annotated[
        Path | None,
        typer.Option("--runbooks", help="Runbooks folder the responder and /v1/runbooks use (default: "
                     "$SELFHEAL_RUNBOOKS or the shipped ones)."),
    ] = None,
    planner: Annotated[
        str, typer.Option(help="Responder planner: deterministic, llm or auto (llm when OPENAI_BASE_URL/OPENAI_API_KEY is set).")
    ] = "auto",
    autopilot: Annotated[
        bool,
        typer.Option(help="Every hour that closes: flush the logs, run the monitor, investigate what opened, "
                     "verify fixes. --no-autopilot leaves that to `selfheal monitor run` / `investigate`."),
    ] = True,
) -> None:
    """Serve the workspace over HTTP: scoring, the read API, admin actions, /healthz and /metrics.

    The service owns the workspace while it runs (one process holds the DuckDB file); other `selfheal`
    commands that read it talk to the service instead (it writes <workspace>/service.json). Scoring and
    reads are open; promote, rollback, approve, deny and chat need `Authorization: Bearer <token>`, where
    the token is $SELFHEAL_API_TOKEN or, if unset, the workspace's `service-token` file (created with mode
    0600 on first start; its path is printed, never the token). OpenAPI: /openapi.json. Incident review in
    a browser: the service's root URL.

    The responder runs inside: approve / deny / chat act on it, and (unless --no-autopilot) every hour
    that closes is monitored and what opens is investigated.

    Example: selfheal serve --port 8765

    Then: curl -s localhost:8765/v1/score -H 'Content-Type: application/json'
    -d '{"transaction_id": "t1", "timestamp": "2018-06-01T10:00:00", "customer_id": "c1",
    "terminal_id": "t9", "amount": 42.5}'
    """
    import uvicorn

    from agent.context import PUBLIC_URL_ENV
    from scorer.score import ScorerConfig
    from selfheal.app import Platform
    from selfheal.service.app import create_app
    from tools.runbooks import RunbookError

    if planner not in PLANNERS:
        err.print(f"[red]error:[/red] unknown planner {planner!r}: {', '.join(PLANNERS)}")
        raise typer.Exit(2)
    workspace = Workspace.from_env(home)
    running = read_record(workspace)
    if running is not None:
        err.print(f"[red]error:[/red] {workspace.home} is already served by pid {running.pid} at {running.url}")
        raise typer.Exit(1)
    try:
        config = ServiceConfig.for_workspace(workspace, host=host, port=port, flush_interval_s=flush_interval)
    except ValueError as error:
        err.print(f"[red]error:[/red] {error}")
        raise typer.Exit(1) from error
    listener = _listen(host, port)
    try:
        scorer_config = ScorerConfig(flush_rows=config.flush_rows, background_writes=config.background_writes)
        platform = Platform.open(workspace.home, scorer_config=scorer_config)
    except StoreError as error:
        listener.close()
        err.print(f"[red]error:[/red] {error}")
        raise typer.Exit(1) from error
    try:
        warmed = platform.scorer.warm_up()  # feature windows and recent ids from the logged and kept history
        # What exists now lives as long as the process (imports, the model, the feature windows): take it
        # out of the cyclic garbage collector. A full collection over it paused the event loop ~200 ms
        # under load (measured at 200 requests/s), which alone set the p99.
        gc.collect()
        gc.freeze()
        # The loop shares the GIL with the log writer thread; hand it over within 1 ms, not 5, so requests
        # are read promptly while a chunk is converted for DuckDB.
        sys.setswitchinterval(0.001)
        bound_port = listener.getsockname()[1]
        url = f"http://{f'[{host}]' if ':' in host else host}:{bound_port}"
        # Pages and summaries link the incident review: this service's, unless the operator named the address
        # people reach it by (a proxy, a DNS name) in SELFHEAL_PUBLIC_URL.
        public_url = os.environ.get(PUBLIC_URL_ENV) or _reachable(url, host, bound_port)
        try:
            hooks = build_hooks(
                platform, runbooks_dir=runbooks, planner=planner, autopilot=autopilot, public_url=public_url
            )
        except RunbookError as error:
            raise runbooks_failed(error, runbooks) from error
        app = create_app(platform, config, hooks=hooks, runbooks_dir=runbooks)
        server = _server(
            uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="on", timeout_graceful_shutdown=10),
            on_started=lambda: write_record(workspace, url, config.token_source),
        )
        err.print(f"serving {workspace.home} at {url} (pid {os.getpid()}); OpenAPI at {url}/openapi.json")
        err.print(
            f"feature state warmed with {warmed.logged:,} logged transactions and {warmed.observed:,} earlier ones"
        )
        warn_if_short(platform.scorer.history_coverage(), err)
        _warn_if_clock_stopped(workspace, err)
        err.print(f"mutating endpoints need the token in {config.token_source}")
        err.print(f"incident review: {url}/ui/")
        if not config.is_loopback:
            err.print(f"[yellow]warning:[/yellow] bound to {host}: scoring and reads are open to the network")
        # uvicorn shuts down gracefully on SIGTERM and then raises the signal again; with the default
        # handler that would kill the process before the `finally` below (discovery file, DuckDB close).
        signal.signal(signal.SIGTERM, _exit_quietly)
        server.run(sockets=[listener])
    finally:
        remove_record(workspace)
        listener.close()
        try:
            platform.close()
        except LogWriteError as error:  # its rows are set aside (or it says which are lost): no traceback
            err.print(f"[red]error:[/red] {error}")
            raise typer.Exit(1) from error


def _exit_quietly(signum: int, _frame: object) -> None:
    raise SystemExit(0)  # a requested, graceful stop: the rows accepted are written, the file closed


def _warn_if_clock_stopped(workspace: Workspace, console: Console) -> None:
    """A workspace last played in data time (`selfheal run`, the demo) keeps that instant as its clock: the
    service then stamps rows with it and its hourly monitor never sees an hour close. Fine for looking at
    a demo; not for live traffic, and nothing else would tell."""
    from selfheal.app import SIMULATED_NOW_FILE, simulated_now

    stopped = simulated_now(workspace)
    if stopped is None:
        return
    message = (
        f"this workspace's clock stands at {stopped:%Y-%m-%d %H:%M} (it was last played in data time by "
        "`selfheal run` or the demo): rows are stamped with that instant and the hourly monitor closes no new "
        f"hour. For live traffic, stop the service, delete {workspace.home / SIMULATED_NOW_FILE} and start it again."
    )
    console.print(Text.assemble(("warning:", "yellow"), " ", message))  # the path is text, never markup


def _reachable(url: str, host: str, port: int) -> str:
    """The address pages link to: ``url``, unless it names every interface (0.0.0.0, ::), which nobody can
    open; then this machine's name (warned: SELFHEAL_PUBLIC_URL says it for sure)."""
    if host not in ("0.0.0.0", "::", ""):
        return url
    name = socket.getfqdn()
    err.print(f"[yellow]warning:[/yellow] pages will link http://{name}:{port}/ui/: set SELFHEAL_PUBLIC_URL to the "
              "address people open")  # fmt: skip
    return f"http://{name}:{port}"


def build_hooks(
    platform: Any,
    *,
    runbooks_dir: Path | None = None,
    planner: str = "auto",
    autopilot: bool = True,
    public_url: str | None = None,
) -> ServiceHooks:
    """The responder's seams for this service (`selfheal.service.responder_hooks`)."""
    from selfheal.service.responder_hooks import responder_hooks

    return responder_hooks(
        platform, planner=planner, runbooks_dir=runbooks_dir, autopilot=autopilot, public_url=public_url
    )


def _listen(host: str, port: int) -> socket.socket:
    """Bind and listen before the app starts, so the real port (for ``--port 0``) is known up front."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must say TCP: asyncio sets TCP_NODELAY only on sockets whose proto is IPPROTO_TCP, and without
    # it every response (headers and body are two writes) waits ~40 ms for the client's delayed ACK.
    listener = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as error:
        listener.close()
        err.print(f"[red]error:[/red] cannot listen on {host}:{port}: {error.strerror}")
        raise typer.Exit(1) from error
    listener.listen(2048)
    return listener


def _server(config: Any, on_started: Callable[[], object]) -> Any:
    """uvicorn's server, calling ``on_started`` once it accepts connections (then service.json is written).

    uvicorn is imported here, not at the top: every `selfheal` command imports this module to register
    ``serve``, and only ``serve`` needs uvicorn.
    """
    import uvicorn

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if self.started:
                on_started()

    return Server(config)


def register(app: typer.Typer) -> None:
    """Add ``selfheal serve`` to the main CLI."""
    app.command()(serve)
