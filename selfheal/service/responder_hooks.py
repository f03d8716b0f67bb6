"""The responder (agent/) wired into the service: approve / deny, steps, chat, and the hourly loop.

`responder_hooks(platform, ...)` builds the `ServiceHooks` that `selfheal serve` passes to the app:

- ``decide``: `Responder.approve` / `Responder.deny` on the incident's paused investigation, recorded as
  decided by the API caller (``api:<who>``); nothing pending is a refusal (409);
- ``steps``: the steps of every investigation of the incident, from ``agent_runs`` (oldest run first);
- ``investigate``: `Responder.investigate` (start, or carry on with the latest run; ``again`` for a new one);
- ``chat``: `agent.chat.reply` on the responder's own parts (its monitor, runbooks and locked scorer);
- ``jobs``: one `PeriodicJob` that, once an hour has closed (plus a grace period for late arrivals),
  flushes the scorer's log and runs `Autopilot.after_hour` for it: monitor, investigate what opened, wake
  runs waiting for data, release quarantines and resolve pages of what cleared. It checks every minute and
  catches up on the hours it missed (a service that was down), at most a day of them.

Threads: approve / deny and chat run in FastAPI's thread pool, the job in the scheduler thread.
One lock serialises every use of the responder: its graph and its SQLite checkpoint connection are not
meant for two invocations at once, and the order of effects stays readable. Nothing the graph does today
calls the scorer (actions change serving *state*, which the scorer reads on every batch), but the
runtime hands it to the tools; inside the service it is `ScorerUnderLock`, so any call takes the scoring
engine's lock (`ScoringEngine.exclusive`) and never races the scoring worker.
"""

from __future__ import annotations

import functools
import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pandas as pd

from agent.autopilot import Autopilot, AutopilotEvent
from agent.chat import ChatParts, reply
from agent.chat.requests import decide_request
from agent.responder import Responder, ResponderError, RunResult
from agent.run_records import agent_runs
from monitor.runner import Monitor
from scorer.score import Scorer
from scorer.serving import as_naive_utc
from selfheal.app import Platform
from selfheal.service import views
from selfheal.service.hooks import (
    ChatMessage,
    Decision,
    InvestigateRequest,
    PeriodicJob,
    ServiceHooks,
)
from tools.audit import finite
from tools.runbooks import RunbookLibrary
from tools.runbooks.watch import RunbookFolderWatch

if TYPE_CHECKING:
    from selfheal.service.engine import ScoringEngine
    from selfheal.service.runtime import ServiceRuntime

logger = logging.getLogger(__name__)

HOUR = timedelta(hours=1)
CHECK_EVERY_S = 60.0  # how often the loop asks "has an hour closed?" (one cheap query when none has)
GRACE = timedelta(minutes=2)  # transactions of an hour may arrive a little after it closes
MAX_CATCH_UP_HOURS = 24  # after downtime, evaluate at most this many missed hours (the latest ones)


class ScorerUnderLock:
    """The scorer as the responder's tools see it inside the service: every method call holds the scoring
    engine's lock, so it never runs while the scoring worker is in the middle of a batch.

    Plain attributes (``features``, ``serving``) are returned as they are: use methods.
    """

    def __init__(self, engine: ScoringEngine) -> None:
        self._engine = engine

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._engine.scorer, name)
        if not callable(attribute):
            return attribute

        @functools.wraps(attribute)
        def locked(*args: Any, **kwargs: Any) -> Any:
            with self._engine.exclusive():
                return attribute(*args, **kwargs)

        return locked


@dataclass
class ResponderHooks:
    """The responder inside one service process (see the module docstring); `hooks()` are its seams."""

    platform: Platform
    monitor: Monitor
    responder: Responder
    runbooks_dir: Path | None = None
    check_every_s: float = CHECK_EVERY_S
    runtime: ServiceRuntime | None = None

    def __post_init__(self) -> None:
        self._lock = threading.RLock()
        self._runbooks_watch = RunbookFolderWatch.start(self.runbooks_dir)

    @classmethod
    def for_platform(
        cls,
        platform: Platform,
        *,
        planner: str = "auto",
        runbooks_dir: Path | None = None,
        pagers: list[Any] | None = None,
        public_url: str | None = None,
    ) -> ResponderHooks:
        """The responder for the service's platform (pagers from the environment unless given; pages link the
        incident review at ``public_url``, see `agent.context.AgentConfig.public_url`)."""
        monitor = Monitor(platform.store, platform.registry, platform.serving, clock=platform.clock)
        responder = platform.responder(
            monitor, planner=planner, runbooks_dir=runbooks_dir, pagers=pagers, public_url=public_url
        )
        return cls(platform, monitor, responder, runbooks_dir=runbooks_dir)

    def hooks(self, *, autopilot: bool = True) -> ServiceHooks:
        jobs = (
            [PeriodicJob("monitor_and_respond", self.check_every_s, self.after_closed_hours)]
            if autopilot
            else []
        )
        return ServiceHooks(
            decide=self.decide,
            chat=self.chat,
            steps=self.steps,
            investigate=self.investigate,
            jobs=jobs,
            on_start=self.start,
            on_stop=self.close,
        )

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self, runtime: ServiceRuntime) -> None:
        """Called by the app once its scoring engine runs: tools reach the scorer through its lock."""
        self.runtime = runtime
        self.responder.runtime.scorer = cast(Scorer, ScorerUnderLock(runtime.engine))

    def close(self) -> None:
        with self._lock:
            self.responder.close()

    # -- approve / deny ---------------------------------------------------------------------------

    def decide(self, decision: Decision) -> dict[str, Any]:
        """Approve or deny what the incident's paused investigation waits on; it resumes at once. With
        ``request``: approve (run) or deny one action asked for in chat instead (`agent.chat.requests`).

        Raises:
            KeyError: No such incident.
            ValueError: Nothing waits for approval, or ``action`` / ``request`` names something that does not wait.
        """
        with self._lock:
            self.monitor.incidents.get(decision.incident_id)  # KeyError: 404
            self._current_runbooks()
            if decision.request is not None:
                if decision.action is not None:
                    raise ValueError("give either action (of a paused investigation) or request (from chat), not both")
                self._flush()  # the action's preconditions read what was scored up to now
                parts = ChatParts.from_runtime(self.responder.runtime)
                return decide_request(
                    parts, decision.incident_id, decision.decision, decision.request,
                    by=decision.actor, note=decision.note,
                )
            self._check_action(decision)
            self._flush()  # the actions and their verification read what was scored up to now
            try:
                if decision.decision == "approve":
                    run = self.responder.approve(decision.incident_id, by=decision.actor, note=decision.note)
                else:
                    run = self.responder.deny(decision.incident_id, by=decision.actor, note=decision.note)
            except ResponderError as error:
                raise ValueError(str(error)) from error
            self._count(run)
            return run_summary(run)

    def _check_action(self, decision: Decision) -> None:
        """The responder decides on everything a paused run waits on together: ``action`` may only name
        the one pending action (the request model documents it as "default the pending one")."""
        pending = views.pending_approval(self.platform, decision.incident_id)
        if pending is None:
            raise ValueError(f"{decision.incident_id} has no investigation waiting for approval")
        if decision.action is None:
            return
        waiting = [a["index"] for a in pending["actions"]]
        if decision.action not in waiting:
            raise ValueError(
                f"action {decision.action} of the plan is not waiting for approval (waiting: {waiting})"
            )
        if len(waiting) > 1:
            raise ValueError(
                f"{len(waiting)} actions wait for approval together ({waiting}): leave out `action` to decide on all"
            )

    # -- investigate ------------------------------------------------------------------------------

    def investigate(self, request: InvestigateRequest) -> dict[str, Any]:
        """`Responder.investigate`: start an investigation, or carry on with the latest one.

        Raises:
            KeyError: No such incident.
            ValueError: The planner cannot be used (e.g. ``llm`` without an endpoint).
        """
        with self._lock:
            self.monitor.incidents.get(request.incident_id)
            self._current_runbooks()
            self._flush()
            try:
                run = self.responder.investigate(
                    request.incident_id, planner=request.planner, again=request.again
                )
            except ResponderError as error:
                raise ValueError(str(error)) from error
            self._count(run)
            return run_summary(run)

    # -- steps ------------------------------------------------------------------------------------

    def steps(self, incident_id: str) -> list[dict[str, Any]]:
        """Every step of every investigation of the incident, oldest run first, each with its run's thread.

        Raises:
            KeyError: No such incident.
        """
        self.monitor.incidents.get(incident_id)
        out: list[dict[str, Any]] = []
        for run in agent_runs(self.platform.store, incident_id=incident_id):
            for step in (run.get("state") or {}).get("steps") or []:
                out.append({"thread_id": run["thread_id"], **step})
        return finite(out)  # type: ignore[no-any-return]

    # -- chat -------------------------------------------------------------------------------------

    def chat(self, message: ChatMessage) -> dict[str, Any]:
        """`agent.chat.reply` for one message (its `ChatReply` as JSON), on the responder's own parts.

        Under the responder's lock, like approve / deny and the hourly job: an action asked for in chat
        changes serving state in the same order of effects as everything else the responder does.
        """
        self._flush()
        with self._lock:
            self._current_runbooks()
            runtime = self.responder.runtime
            # The responder's model, when one is configured (None: the chat answers from the record alone).
            parts = ChatParts.from_runtime(runtime)
            answer = reply(parts, message.incident_id, message.message, actor=message.actor, llm=runtime.llm)
        return answer.model_dump(mode="json")  # type: ignore[no-any-return]

    # -- the hourly loop --------------------------------------------------------------------------

    def after_closed_hours(self, runtime: ServiceRuntime) -> list[AutopilotEvent]:
        """The scheduled job: the loop for every hour that closed since the monitor last looked."""
        ends = hours_to_evaluate(self.platform.clock(), self._last_evaluated())
        if not ends:
            return []
        runtime.engine.flush()  # the hour's scored rows are in the store before the monitor counts them
        happened: list[AutopilotEvent] = []
        with self._lock:
            self._current_runbooks()
            pilot = Autopilot(self.monitor, self.responder)
            for end in ends:
                events = pilot.after_hour(end)
                for event in events:
                    if event.run is not None:
                        self._count(event.run)
                    logger.info("%s %s %s %s", end, event.incident_id, event.what, event.detail)
                happened.extend(events)
        return happened

    def _last_evaluated(self) -> datetime | None:
        value = self.platform.store.scalar(
            "SELECT max(window_end) FROM monitor_windows WHERE cadence = 'hour'"
        )
        return None if value is None or pd.isna(value) else pd.Timestamp(value).to_pydatetime()

    # -- plumbing ---------------------------------------------------------------------------------

    def _current_runbooks(self) -> None:
        """Act on the runbooks as the folder holds them now (an edit made while the service runs), read
        between two things the responder does, under its lock. A folder that no longer loads keeps the last
        library that did, with a warning naming each problem (`tools.runbooks.watch`)."""
        found = self._runbooks_watch.check()
        if isinstance(found, RunbookLibrary):
            self.responder.runtime.runbooks = found
            logger.warning("runbooks changed in %s: the responder now acts on the %d runbooks there",
                           self._runbooks_watch.folder, len(found))  # fmt: skip
        elif found is not None:
            logger.warning(
                "runbooks in %s changed but do not load; the responder keeps acting on the ones it had "
                "(run `selfheal runbooks lint`):\n%s",
                self._runbooks_watch.folder, "\n".join(f"  {problem}" for problem in found.problems),
            )  # fmt: skip

    def _flush(self) -> None:
        if self.runtime is not None:
            self.runtime.engine.flush()

    def _count(self, run: RunResult) -> None:
        if self.runtime is not None:
            self.runtime.metrics.agent_runs.inc(outcome=run.outcome or run.status)


def hours_to_evaluate(now: datetime, last_end: datetime | None) -> list[datetime]:
    """Ends of the hours that have closed (``GRACE`` ago) since ``last_end``, oldest first, at most
    ``MAX_CATCH_UP_HOURS``; only the latest closed hour when the monitor never ran."""
    latest = pd.Timestamp(as_naive_utc(now) - GRACE).floor("h").to_pydatetime()
    if last_end is None:
        return [latest]
    ends = []
    end = max(
        pd.Timestamp(last_end).floor("h").to_pydatetime() + HOUR, latest - (MAX_CATCH_UP_HOURS - 1) * HOUR
    )
    while end <= latest:
        ends.append(end)
        end += HOUR
    return ends


def run_summary(run: RunResult) -> dict[str, Any]:
    """What an approve / deny answers: where the investigation stands now, and what its plan did."""
    state = run.state
    plan = [
        {k: action.get(k) for k in ("action", "args", "approval", "status", "audit_id", "decided_by", "why")}
        for action in state.get("plan") or []
    ]
    return finite(
        {
            "thread_id": run.thread_id,
            "incident_id": run.incident_id,
            "status": run.status,
            "outcome": run.outcome,
            "waiting": run.waiting,
            "diagnosis": state.get("diagnosis"),
            "plan": plan,
            "verification": state.get("verification"),
            "page_decision": state.get("page_decision"),
            "report": state.get("report"),
        }
    )  # type: ignore[no-any-return]


def responder_hooks(
    platform: Platform,
    *,
    planner: str = "auto",
    runbooks_dir: Path | None = None,
    autopilot: bool = True,
    pagers: list[Any] | None = None,
    public_url: str | None = None,
) -> ServiceHooks:
    """`ServiceHooks` with the responder wired in (what `selfheal serve` passes to `create_app`)."""
    return ResponderHooks.for_platform(
        platform, planner=planner, runbooks_dir=runbooks_dir, pagers=pagers, public_url=public_url
    ).hooks(autopilot=autopilot)
