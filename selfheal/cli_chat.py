"""Incident review from the terminal: ``selfheal ask INC-7 "..."`` (one shot) and ``selfheal chat INC-7``.

Both talk to the service that owns the workspace when one runs (the service holds the DuckDB file, so
this process could not open it; the message goes to ``POST /v1/incidents/{id}/chat`` with the token from
``$SELFHEAL_API_TOKEN`` or the workspace's ``service-token`` file), and open the workspace themselves when
none runs. An LLM is used when ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY`` is set, unless ``--no-llm``.
"""

from __future__ import annotations

import getpass
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Protocol

import typer
from rich.markdown import Markdown

from selfheal.cli_common import runbooks_failed
from selfheal.cli_tables import CliConsole

if TYPE_CHECKING:  # the chat engine (and the LLM client) loads when a question is asked
    from agent.chat import ChatReply
    from selfheal.client import ServiceClient

console = CliConsole(stderr=True)
out = CliConsole()
QUIT = ("/quit", "/exit", "/q")

IncidentArgument = Annotated[str, typer.Argument(help="Incident id, e.g. INC-7 (or 7).")]
HomeOption = Annotated[
    Path | None, typer.Option("--home", help="Workspace folder (default: $SELFHEAL_HOME or ./.selfheal).")
]
RunbooksOption = Annotated[
    Path | None,
    typer.Option("--runbooks", help="Runbooks folder (default: $SELFHEAL_RUNBOOKS or the shipped ones)."),
]
WhoOption = Annotated[
    str | None,
    typer.Option("--as", help="Who is asking, as the audit log records it (default: your login name)."),
]
NoLLMOption = Annotated[
    bool,
    typer.Option("--no-llm", help="Answer from the record only, even when an LLM endpoint is configured."),
]


class ChatError(Exception):
    """A request the chat cannot serve (unknown incident, refused message, unreachable service)."""


class Session(Protocol):
    incident_id: str
    where: str

    def ask(self, message: str) -> ChatReply: ...


class LocalSession:
    """The chat engine on the workspace file (no service runs)."""

    def __init__(self, parts: Any, incident_id: str, actor: str, llm: Any) -> None:
        from agent.chat import reply

        self._reply = reply
        self.parts, self.actor, self.llm = parts, actor, llm
        try:
            self.incident_id = parts.incidents.get(incident_id).incident_id
        except KeyError as error:
            raise ChatError(
                f"no incident {incident_id!r} in this workspace (selfheal incidents list)"
            ) from error
        self.where = "workspace file" + (
            ", with an LLM" if llm is not None else ", no LLM (answers from the record)"
        )

    def ask(self, message: str) -> ChatReply:
        try:
            return self._reply(self.parts, self.incident_id, message, actor=self.actor, llm=self.llm)
        except ValueError as error:
            raise ChatError(str(error)) from error


class RemoteSession:
    """The running service's chat endpoint."""

    def __init__(self, client: ServiceClient, incident_id: str) -> None:
        from selfheal.client import ServiceError

        self._client, self._error = client, ServiceError
        try:
            self.incident_id = str(client.incident(incident_id)["incident_id"])
        except ServiceError as error:
            raise ChatError(_service_problem(error, incident_id)) from error
        self.where = f"service at {client.base_url}"

    def ask(self, message: str) -> ChatReply:
        from agent.chat import ChatReply

        try:
            return ChatReply.model_validate(self._client.chat(self.incident_id, message))
        except self._error as error:
            raise ChatError(_service_problem(error, self.incident_id)) from error


def _service_problem(error: Any, incident_id: str) -> str:
    if error.status_code == 404:
        return f"no incident {incident_id!r} (the service says: {error.detail})"
    if error.status_code == 401:
        return f"the service refused the token: set $SELFHEAL_API_TOKEN ({error.detail})"
    return f"the service answered {error.status_code}: {error.detail}"


def _who(name: str | None) -> str:
    if name:
        return name
    with suppress(Exception):  # no login name in some containers
        return getpass.getuser()
    return "unknown"


@contextmanager
def _session(
    incident_id: str, home: Path | None, runbooks: Path | None, who: str, no_llm: bool
) -> Iterator[Session]:
    """A chat session through the service when one owns the workspace, else on the file itself."""
    from selfheal.client import discover_service

    client = discover_service(home, actor=who)
    if client is not None:
        with client:
            yield RemoteSession(client, incident_id)
        return
    from agent.chat import ChatParts
    from agent.llm.config import LLMConfig  # the client (and openai) only when an endpoint is configured
    from selfheal.app import Platform
    from store import StoreError
    from tools.runbooks import RunbookError

    # --no-llm never reads the settings: a broken OPENAI_BASE_URL must not stop an answer from the record.
    config = None if no_llm else LLMConfig.from_env()
    try:
        platform = Platform.open(home, create=False)
    except StoreError as error:
        raise ChatError(str(error)) from error
    try:
        parts = ChatParts.for_platform(platform, runbooks_dir=runbooks)
    except RunbookError as error:
        platform.close()
        raise runbooks_failed(error, runbooks) from error
    llm = None
    if config is not None and config.configured:
        from agent.llm import LLMClient

        llm = LLMClient(config)
    try:
        yield LocalSession(parts, incident_id, f"cli:{who}", llm)
    finally:
        if llm is not None:
            llm.close()
        platform.close()


def _show(reply: ChatReply, as_json: bool) -> None:
    if as_json:
        out.print_json(reply.model_dump_json())
        return
    if out.is_terminal:
        out.print(Markdown(reply.answer))
        if reply.sources:
            out.print(f"[dim]sources: {', '.join(reply.sources)}[/dim]")
    else:  # piped: the markdown as it is, for scripts
        print(reply.answer)
        if reply.sources:
            print(f"\nsources: {', '.join(reply.sources)}")
    for action in reply.actions:
        out.print(
            f"[bold]action[/bold] {action.get('action') or action.get('request')}: {action.get('status')}"
            + (f" [audit {action['audit_id']}]" if action.get("audit_id") else "")
        )


def ask(
    incident_id: IncidentArgument,
    message: Annotated[str, typer.Argument(help="The question, or a slash command such as /timeline.")],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the whole reply (answer, facts, sources) as JSON.")
    ] = False,
    who: WhoOption = None,
    no_llm: NoLLMOption = False,
    home: HomeOption = None,
    runbooks: RunbooksOption = None,
) -> None:
    """Ask one question about an incident and print the answer (from the record, or with an LLM).

    A slash command that is unknown or refused (a /sql that is not one read-only SELECT, say) prints why
    and exits with 1, so a script notices.

    Example: selfheal ask INC-7 "why did you roll back?"
    """
    try:
        with _session(incident_id, home, runbooks, _who(who), no_llm) as session:
            reply = session.ask(message)
    except ChatError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(1) from error
    _show(reply, as_json)
    if message.lstrip().startswith("/") and (reply.mode == "unknown" or reply.facts.get("refused")):
        raise typer.Exit(1)


def chat(
    incident_id: IncidentArgument,
    who: WhoOption = None,
    no_llm: NoLLMOption = False,
    home: HomeOption = None,
    runbooks: RunbooksOption = None,
) -> None:
    """Review an incident in a conversation: one question per line, until end of input or /quit.

    The conversation is kept with the incident; /help lists the commands. Reads piped input too.

    Example: selfheal chat INC-7
    """
    interactive = sys.stdin.isatty()
    try:
        with _session(incident_id, home, runbooks, _who(who), no_llm) as session:
            console.print(
                f"[bold]{session.incident_id}[/bold] ({session.where}). Ask a question; /help for "
                "commands, /quit to leave."
            )
            while True:
                if interactive:
                    out.print("[bold]you>[/bold] ", end="")
                line = sys.stdin.readline()
                if not line:
                    break
                message = line.strip()
                if not message:
                    continue
                if message.lower() in QUIT:
                    break
                try:
                    _show(session.ask(message), as_json=False)
                except ChatError as error:  # one bad message does not end the conversation
                    console.print(f"[red]error:[/red] {error}")
                print()
    except ChatError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(1) from error


def register(app: typer.Typer) -> None:
    """Add ``ask`` and ``chat`` to the main CLI."""
    app.command()(ask)
    app.command()(chat)


__all__ = ["ask", "chat", "register"]
