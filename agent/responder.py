"""The responder's front door: start, resume, approve, deny and wake investigations, durably.

One LangGraph thread per investigation (``INC-7/1``; a reopened incident gets ``INC-7/2``), checkpointed
to SQLite in the workspace with ``durability="sync"`` so a hard kill loses no finished step. Any process
that opens the same workspace can resume a thread: a crashed run continues from its last checkpoint (the
side-effecting nodes are idempotent, see `agent.nodes`), a run paused for approval continues with the
human's answer, a run waiting for data continues when its ``not_before`` time has come.

``agent_runs`` in DuckDB mirrors each thread (status, outcome, what it waits for, final state) for the
CLI, the service and the evals; the checkpoint stays the source of truth for resuming.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.types import Command

from agent.context import AgentRuntime
from agent.graph import build_graph
from agent.run_records import agent_runs
from agent.state import Planner
from scorer.serving import as_naive_utc
from tools.audit import canonical_json

RunStatus = Literal["done", "waiting_approval", "waiting_data", "running"]
CHECKPOINTS_FILE = "agent-checkpoints.sqlite"


class ResponderError(RuntimeError):
    """A request the responder cannot carry out (no such run, nothing to approve, ...)."""


@dataclass(frozen=True)
class RunResult:
    """Where one investigation stands after an invocation."""

    thread_id: str
    incident_id: str
    status: RunStatus
    state: dict[str, Any]
    waiting: dict[str, Any] | None = None

    @property
    def outcome(self) -> str | None:
        return self.state.get("outcome")


class Responder:
    """Runs the responder graph for incidents of one workspace.

    Args:
        runtime: The platform parts the nodes use.
        checkpoints: The SQLite file for LangGraph checkpoints (created if missing).
    """

    def __init__(self, runtime: AgentRuntime, checkpoints: Path) -> None:
        self.runtime = runtime
        checkpoints.parent.mkdir(parents=True, exist_ok=True)
        self._connection = sqlite3.connect(str(checkpoints), check_same_thread=False)
        self.saver = SqliteSaver(self._connection)
        self.graph = build_graph(self.saver)

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> Responder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- planners --------------------------------------------------------------------------------

    def planner(self, choice: str | None = None) -> Planner:
        chosen = choice or self.runtime.config.planner
        if chosen == "auto":
            return "llm" if self.runtime.llm is not None else "deterministic"
        if chosen == "llm" and self.runtime.llm is None:
            raise ResponderError("the llm planner needs an endpoint: set OPENAI_BASE_URL / OPENAI_API_KEY")
        if chosen not in ("deterministic", "llm"):
            raise ResponderError(f"unknown planner {chosen!r}: deterministic, llm or auto")
        return chosen  # type: ignore[return-value]

    # -- running ---------------------------------------------------------------------------------

    def investigate(self, incident_id: str, *, planner: str | None = None, again: bool = False) -> RunResult:
        """Start an investigation of an incident, or carry on with its latest one.

        The latest run is resumed when it crashed or waits for data; one paused for approval is returned
        as is (approve or deny it); a finished one is returned unless ``again`` starts a new run.
        """
        incident = self.runtime.incidents.get(incident_id)
        latest = self.latest_thread(incident.incident_id)
        if latest is not None and not again:
            snapshot = self.graph.get_state(self._config(latest))
            if _unfinished(snapshot):
                waiting = _waiting(snapshot)
                if waiting is None:  # interrupted by a crash: carry on from the last checkpoint
                    return self._invoke(latest, incident.incident_id, None)
                if waiting.get("type") == "wait_for_data":
                    return self.wake(latest)
                return self._result(latest, incident.incident_id)
            if snapshot.values:
                return self._result(latest, incident.incident_id)
        attempt = self._attempts(incident.incident_id) + 1
        thread = f"{incident.incident_id}/{attempt}"
        chosen = self.planner(planner)
        self._record(thread, incident.incident_id, attempt, chosen, "running", {}, None)
        return self._invoke(
            thread, incident.incident_id, {"incident_id": incident.incident_id, "planner": chosen}
        )

    def approve(self, incident_id: str, *, by: str, note: str = "") -> RunResult:
        """Approve the actions a paused run waits on, and let it continue."""
        return self._answer(incident_id, {"decision": "approve", "by": by, "note": note})

    def deny(self, incident_id: str, *, by: str, note: str = "") -> RunResult:
        """Deny the actions a paused run waits on; it continues without them (and pages)."""
        return self._answer(incident_id, {"decision": "deny", "by": by, "note": note})

    def wake(self, thread_id: str) -> RunResult:
        """Resume a run waiting for data (it re-checks and waits again if it is still too early)."""
        snapshot = self.graph.get_state(self._config(thread_id))
        waiting = _waiting(snapshot)
        if waiting is None or waiting.get("type") != "wait_for_data":
            raise ResponderError(f"{thread_id} is not waiting for data")
        return self._invoke(
            thread_id, snapshot.values["incident_id"], Command(resume={"now": self.runtime.now_iso()})
        )

    def wake_due(self, now: datetime | None = None) -> list[RunResult]:
        """Resume every run waiting for data whose ``not_before`` time has come."""
        moment = as_naive_utc(now or self.runtime.clock())
        results = []
        # Only what the wake-up needs: this runs every hour, and the state column holds whole runs.
        waiting = self.runtime.store.execute(
            "SELECT thread_id, json_extract_string(waiting, '$.not_before') FROM agent_runs "
            "WHERE status = 'waiting_data' ORDER BY started_at, attempt"
        )
        for thread_id, not_before in waiting:
            if not_before is None or datetime.fromisoformat(not_before) <= moment:
                results.append(self.wake(thread_id))
        return results

    def refresh_report(self, incident_id: str) -> Path | None:
        """Write the incident's report again from its latest finished run; returns the markdown's path.

        A run writes the report when it ends; what happens after (the monitor resolving the incident, the
        quarantines released) would otherwise be missing from it, and the report would still say
        "mitigated" days after the incident closed. None when no finished run has written a report (a run
        that still waits writes its own when it ends).
        """
        from agent.report import write_report  # chart code, only when a report is written

        thread = self.latest_thread(incident_id)
        if thread is None:
            return None
        snapshot = self.graph.get_state(self._config(thread))
        if _unfinished(snapshot) or not snapshot.values.get("report"):
            return None
        rt = self.runtime
        paths = write_report(rt.store, rt.registry, incident_id, dict(snapshot.values), rt.reports_dir, now=rt.clock())
        return paths.markdown

    # -- reading ---------------------------------------------------------------------------------

    def latest_thread(self, incident_id: str) -> str | None:
        value = self.runtime.store.scalar(
            "SELECT thread_id FROM agent_runs WHERE incident_id = ? ORDER BY attempt DESC LIMIT 1",
            [incident_id],
        )
        return None if value is None else str(value)

    def runs(self, *, incident_id: str | None = None, status: str | None = None) -> list[dict[str, Any]]:
        """Rows of ``agent_runs`` (JSON columns decoded), oldest first."""
        return agent_runs(self.runtime.store, incident_id=incident_id, status=status)

    def state(self, thread_id: str) -> dict[str, Any]:
        return dict(self.graph.get_state(self._config(thread_id)).values)

    # -- internals -------------------------------------------------------------------------------

    def _answer(self, incident_id: str, answer: dict[str, Any]) -> RunResult:
        thread = self.latest_thread(self.runtime.incidents.get(incident_id).incident_id)
        if thread is None:
            raise ResponderError(f"{incident_id} has no investigation")
        snapshot = self.graph.get_state(self._config(thread))
        waiting = _waiting(snapshot)
        if waiting is None or waiting.get("type") != "approval":
            raise ResponderError(f"{thread} is not waiting for approval")
        return self._invoke(thread, snapshot.values["incident_id"], Command(resume=answer))

    def _config(self, thread_id: str) -> RunnableConfig:
        return {
            "configurable": {"thread_id": thread_id},
            "recursion_limit": self.runtime.config.recursion_limit,
        }

    def _invoke(self, thread_id: str, incident_id: str, payload: Any) -> RunResult:
        self.graph.invoke(payload, self._config(thread_id), context=self.runtime, durability="sync")  # type: ignore[call-overload]
        return self._result(thread_id, incident_id)

    def _result(self, thread_id: str, incident_id: str) -> RunResult:
        snapshot = self.graph.get_state(self._config(thread_id))
        waiting = _waiting(snapshot)
        if waiting is not None:
            status: RunStatus = "waiting_approval" if waiting.get("type") == "approval" else "waiting_data"
        else:
            status = "running" if _unfinished(snapshot) else "done"
        values = dict(snapshot.values)
        attempt = int(thread_id.rsplit("/", 1)[-1])
        self._record(
            thread_id,
            incident_id,
            attempt,
            str(values.get("planner", "deterministic")),
            status,
            values,
            waiting,
        )
        return RunResult(thread_id, incident_id, status, values, waiting)

    def _attempts(self, incident_id: str) -> int:
        return int(
            self.runtime.store.scalar("SELECT count(*) FROM agent_runs WHERE incident_id = ?", [incident_id])
            or 0
        )

    def _record(
        self,
        thread_id: str,
        incident_id: str,
        attempt: int,
        planner: str,
        status: str,
        values: dict[str, Any],
        waiting: dict[str, Any] | None,
    ) -> None:
        now = as_naive_utc(self.runtime.clock())
        diagnosis = values.get("diagnosis") or {}
        verification = values.get("verification") or {}
        page = values.get("page_decision") or {}
        self.runtime.store.execute(
            "INSERT INTO agent_runs (thread_id, incident_id, attempt, planner, status, started_at, updated_at, outcome, "
            "root_cause, runbook_id, verified, paged, waiting, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (thread_id) DO UPDATE SET status = excluded.status, updated_at = excluded.updated_at, "
            "outcome = excluded.outcome, root_cause = excluded.root_cause, runbook_id = excluded.runbook_id, "
            "verified = excluded.verified, paged = excluded.paged, waiting = excluded.waiting, state = excluded.state",
            [
                thread_id,
                incident_id,
                attempt,
                planner,
                status,
                now,
                now,
                values.get("outcome"),
                diagnosis.get("root_cause"),
                diagnosis.get("runbook_id"),
                None if not verification else verification.get("status") == "verified",
                bool(page.get("sent")) if page else None,
                None if waiting is None else canonical_json(waiting),
                canonical_json(values) if values else None,
            ],
        )


def _unfinished(snapshot: Any) -> bool:
    """Whether a thread has steps left to run (a crashed, paused or waiting run), not just a finished one.

    ``snapshot.next`` alone is not enough: it leaves out the tasks whose writes are saved, so a process
    killed between a step's saved writes and the checkpoint after them (``durability="sync"`` saves the
    two one after the other) leaves a thread with no ``next`` that never ran its later nodes: it read as
    done, and `investigate` reported it so without diagnosing, acting or paging. Those tasks are still in
    ``snapshot.tasks``; resuming applies their saved writes without running them again.
    """
    return bool(snapshot.next or snapshot.tasks)


def _waiting(snapshot: Any) -> dict[str, Any] | None:
    """The payload of the interrupt a thread is paused on, if any."""
    for interrupt in getattr(snapshot, "interrupts", ()) or ():
        value = getattr(interrupt, "value", None)
        if isinstance(value, dict):
            return value
    return None


def checkpoints_path(home: Path) -> Path:
    """Where a workspace keeps the responder's checkpoints."""
    return Path(home) / CHECKPOINTS_FILE
