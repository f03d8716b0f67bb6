"""Seams where the responder (agent/) plugs into the service, and the scheduler that runs periodic jobs.

The app does not import the agent itself: whoever builds the service passes a `ServiceHooks` (`selfheal
serve` passes the responder's, `selfheal.service.responder_hooks`; tests pass their own):

- ``decide``: called by ``POST /v1/incidents/{id}/approve`` and ``.../deny`` with a `Decision`;
- ``chat``: called by ``POST /v1/incidents/{id}/chat`` with a `ChatMessage`;
- ``steps``: called by ``GET /v1/incidents/{id}/steps``: the investigation's steps as JSON-able dicts;
- ``investigate``: called by ``POST /v1/incidents/{id}/investigate`` with an `InvestigateRequest`;
- ``jobs``: `PeriodicJob`s the `Scheduler` runs in a background thread, e.g. "every hour: run the monitor
  over the hour that closed, then the responder on every incident that opened";
- ``on_start`` / ``on_stop``: called with the `ServiceRuntime` when the app starts (before the scheduler),
  and without arguments when it stops (after the scheduler), to open and close what the hooks hold.

`selfheal.service.responder_hooks` builds the hooks with the responder (agent/) wired in.

**Until the responder is wired, every hook is None and its endpoint answers 503 "responder not
available"** (`ResponderUnavailable`): the routes, their auth and their request models are real; only
the function behind them is missing. A hook returns a JSON-able dict (or list, for ``steps``) that the
endpoint returns as is; it raises `KeyError` for an unknown incident (404) and `ValueError` for a request
it refuses (409 with the message).

Jobs receive the `ServiceRuntime` (``selfheal.service.runtime``): ``runtime.platform`` for the workspace,
``runtime.engine.flush()`` before reading scoring logs (the scorer buffers them), ``runtime.engine.exclusive()``
around anything that touches ``platform.scorer``, and ``runtime.metrics.agent_runs.inc(outcome=...)`` to
count responder runs on ``/metrics``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from selfheal.errors import error_text

if TYPE_CHECKING:
    from selfheal.service.runtime import ServiceRuntime

logger = logging.getLogger(__name__)

RESPONDER_UNAVAILABLE = "responder not available: this service was started without the responder (agent/)"


class ResponderUnavailable(Exception):
    """No responder is wired into this service (the endpoint answers 503)."""


def hook_error(error: Exception) -> tuple[int, str] | None:
    """The HTTP status and detail a hook's error stands for (see `ServiceHooks`), or None: a failure.

    A `KeyError` is a 404 (no such incident), a `ValueError` a 409 (nothing to decide, a bad state), and
    `ResponderUnavailable` a 503. The routes raise it as an `HTTPException`; the chat stream, whose 200 is
    already sent, sends it as an error event.
    """
    if isinstance(error, KeyError):
        return 404, error_text(error)
    if isinstance(error, ResponderUnavailable):
        return 503, str(error)
    if isinstance(error, ValueError):
        return 409, str(error)
    return None


@dataclass(frozen=True)
class Decision:
    """A person's approval or denial of what the responder proposed for an incident.

    Attributes:
        incident_id: Normalised incident id, e.g. ``INC-7``.
        decision: ``approve`` or ``deny``.
        actor: Who decided, as recorded in the audit log: ``api:<name>``.
        note: Why (free text, bounded by the request model).
        action: Which planned action (its index in the plan), or None for "the pending one".
        request: An action asked for in chat (its audit id) to decide on instead of a paused investigation.
    """

    incident_id: str
    decision: Literal["approve", "deny"]
    actor: str
    note: str
    action: int | None = None
    request: str | None = None


@dataclass(frozen=True)
class InvestigateRequest:
    """A person's request to investigate an incident now (``again``: even if an investigation finished)."""

    incident_id: str
    actor: str
    again: bool = False
    planner: str | None = None


@dataclass(frozen=True)
class ChatMessage:
    """A person's message about an incident (a question, or a request to act)."""

    incident_id: str
    actor: str
    message: str


DecideHook = Callable[[Decision], dict[str, Any]]
ChatHook = Callable[[ChatMessage], dict[str, Any]]
StepsHook = Callable[[str], list[dict[str, Any]]]
InvestigateHook = Callable[[InvestigateRequest], dict[str, Any]]
StartHook = Callable[["ServiceRuntime"], None]


@dataclass(frozen=True)
class PeriodicJob:
    """Something the service runs every ``every_s`` seconds in its scheduler thread.

    ``run`` gets the `ServiceRuntime`; an exception is logged and counted, and the job runs again at its
    next time (one failed hour must not stop monitoring).
    """

    name: str
    every_s: float
    run: Callable[[ServiceRuntime], object]


@dataclass
class ServiceHooks:
    """The responder's seams (all None/empty until the agent wires them; see the module docstring)."""

    decide: DecideHook | None = None
    chat: ChatHook | None = None
    steps: StepsHook | None = None
    investigate: InvestigateHook | None = None
    jobs: list[PeriodicJob] = field(default_factory=list)
    # Called once the app's scoring engine runs (the responder needs the engine's lock) and at shutdown.
    on_start: StartHook | None = None
    on_stop: Callable[[], None] | None = None

    def require_decide(self) -> DecideHook:
        if self.decide is None:
            raise ResponderUnavailable(RESPONDER_UNAVAILABLE)
        return self.decide

    def require_chat(self) -> ChatHook:
        if self.chat is None:
            raise ResponderUnavailable(RESPONDER_UNAVAILABLE)
        return self.chat

    def require_investigate(self) -> InvestigateHook:
        if self.investigate is None:
            raise ResponderUnavailable(RESPONDER_UNAVAILABLE)
        return self.investigate

    def require_steps(self) -> StepsHook:
        if self.steps is None:
            raise ResponderUnavailable(RESPONDER_UNAVAILABLE)
        return self.steps


class Scheduler:
    """Runs `PeriodicJob`s one at a time in one daemon thread, each at its own interval.

    One thread on purpose: the jobs (monitor, responder) write to the one DuckDB store and change serving
    state; running them one after another keeps their effects in a readable order.
    """

    def __init__(self, runtime: ServiceRuntime, jobs: list[PeriodicJob], *, tick_s: float = 1.0) -> None:
        self.runtime = runtime
        self.jobs = list(jobs)
        self.tick_s = tick_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_due: dict[str, float] = {}

    def start(self) -> None:
        if not self.jobs or self._thread is not None:
            return
        now = time.monotonic()
        self._next_due = {job.name: now + job.every_s for job in self.jobs}
        self._thread = threading.Thread(target=self._loop, name="selfheal-scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def run_due(self, now: float | None = None) -> list[str]:
        """Run every job whose time has come; returns their names (also what tests call directly)."""
        now = time.monotonic() if now is None else now
        ran = []
        for job in self.jobs:
            if now < self._next_due.get(job.name, 0.0):
                continue
            self.run_job(job)
            self._next_due[job.name] = now + job.every_s
            ran.append(job.name)
        return ran

    def run_job(self, job: PeriodicJob) -> bool:
        """Run one job now; True when it finished without raising."""
        try:
            job.run(self.runtime)
        except Exception:
            logger.exception("periodic job %s failed", job.name)
            self.runtime.metrics.job_runs.inc(job=job.name, outcome="error")
            return False
        self.runtime.metrics.job_runs.inc(job=job.name, outcome="ok")
        return True

    def _loop(self) -> None:
        while not self._stop.wait(self.tick_s):
            self.run_due()
