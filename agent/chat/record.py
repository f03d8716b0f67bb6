"""One incident's record, read once per chat turn: what every answer is built from.

The latest investigation comes from ``agent_runs`` (`agent.run_records.agent_runs`: readers need no
responder), the actions from the audit log (authoritative: a plan entry is what was intended, the audit row
is what happened), pages from the pager outbox, changes from the serving-state history. Nothing here
writes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from agent.chat.parts import ChatParts
from agent.run_records import agent_runs
from monitor.incidents import Incident
from scorer.serving import CHANGEABLE_FIELDS, ServingState, as_naive_utc
from tools.audit import ActionLog, AuditRecord
from tools.pagers import OutboxPager
from tools.runbooks import Runbook

# Serving changes before the first breach that "what changed" looks at: the runbooks look back 10 days
# for a deploy (bad_model_deploy) and 2 days for a threshold change (threshold_misconfig).
CHANGES_LOOKBACK = timedelta(days=10)
# What an answer shows of an outbox row (the payload repeats the summary as the provider's JSON).
PAGE_FIELDS = frozenset({"page_id", "recorded_at", "action", "severity", "summary", "channel", "status", "attempts", "error"})


@dataclass(frozen=True)
class IncidentRecord:
    """What the store says about one incident (see the module docstring)."""

    incident: Incident
    run: dict[str, Any] | None  # the latest agent_runs row, without its state
    state: dict[str, Any]  # that run's final graph state ({} when never investigated)
    audit: list[AuditRecord]  # every audit row for the incident, in order
    pages: list[dict[str, Any]]  # pager outbox rows, in order
    events: list[dict[str, Any]]  # incident_events rows, in order (detail decoded)
    serving: list[ServingState]  # every written serving state, oldest first
    runbook: Runbook | None  # the runbook the latest run followed
    reports_dir: Path

    @classmethod
    def load(cls, parts: ChatParts, incident_id: str) -> IncidentRecord:
        """Read an incident's record.

        Raises:
            KeyError: There is no such incident.
        """
        incident = parts.incidents.get(incident_id)
        key = incident.incident_id
        runs = agent_runs(parts.store, incident_id=key)
        latest = runs[-1] if runs else None
        state = dict((latest or {}).get("state") or {})
        runbook_id = (state.get("diagnosis") or {}).get("runbook_id") or (latest or {}).get("runbook_id")
        runbook = parts.runbooks.get(runbook_id) if runbook_id and runbook_id in parts.runbooks else None
        pages = [page.model_dump(include=set(PAGE_FIELDS)) for page in OutboxPager(parts.store).rows(incident_id=key)]
        events = parts.incidents.events(key).to_dict("records")
        for event in events:
            event["detail"] = _json(event.get("detail"))
        return cls(
            incident=incident,
            run=None if latest is None else {k: v for k, v in latest.items() if k != "state"},
            state=state,
            audit=ActionLog(parts.store, parts.clock).rows(incident_id=key),
            pages=pages,
            events=[_plain(e) for e in events],
            serving=list(reversed(parts.serving.history())),
            runbook=runbook,
            reports_dir=parts.reports_dir,
        )

    # -- views the answers share ------------------------------------------------------------------

    @property
    def incident_id(self) -> str:
        return self.incident.incident_id

    @property
    def thread(self) -> str | None:
        return None if self.run is None else str(self.run["thread_id"])

    @property
    def diagnosis(self) -> dict[str, Any]:
        return dict(self.state.get("diagnosis") or {})

    @property
    def plan(self) -> list[dict[str, Any]]:
        return [dict(a) for a in self.state.get("plan") or []]

    @property
    def verification(self) -> dict[str, Any]:
        return dict(self.state.get("verification") or {})

    @property
    def page_decision(self) -> dict[str, Any]:
        return dict(self.state.get("page_decision") or {})

    @property
    def steps(self) -> list[dict[str, Any]]:
        return [dict(s) for s in self.state.get("steps") or []]

    def changes(self) -> list[AuditRecord]:
        """Applied audit rows that changed something (notes and pages are history, not changes)."""
        return [r for r in self.audit if r.status == "applied" and r.action not in ("add_note", "page")]

    def serving_at(self, moment: datetime) -> ServingState | None:
        """The serving state in force up to ``moment`` (the last one written before it): a change stamped at
        the very instant an incident opened is the responder's answer to it, not what the monitor saw."""
        moment = as_naive_utc(moment)
        before = [s for s in self.serving if s.changed_at < moment]
        return before[-1] if before else None

    def serving_changes(self, since: datetime, until: datetime) -> list[dict[str, Any]]:
        """Serving-state changes written in ``[since, until]``: who, when, why, and each field's from/to."""
        changes = []
        for older, newer in zip([None, *self.serving[:-1]], self.serving, strict=True):
            if not since <= newer.changed_at <= until:
                continue
            changed = {
                name: {
                    "from": getattr(older, name) if older is not None else None,
                    "to": getattr(newer, name),
                }
                for name in CHANGEABLE_FIELDS
                if older is None or getattr(older, name) != getattr(newer, name)
            }
            changes.append(
                {
                    "version": newer.version,
                    "changed_at": newer.changed_at,
                    "changed_by": newer.changed_by,
                    "reason": newer.reason,
                    "changed": changed,
                }
            )
        return changes

    def report_paths(self) -> dict[str, str]:
        """The report files: the ones the run recorded, else the usual names in the reports folder.

        Reports are always written into the workspace's reports folder, so a recorded path is read there by
        its file name: a run recorded before workspace paths were absolute holds a path relative to the
        folder it ran in, and a copied workspace holds the original's.
        """
        recorded = dict(self.state.get("report") or {})
        if recorded:
            return {k: str(self.reports_dir / Path(str(v)).name) for k, v in recorded.items()}
        return {
            "markdown": str(self.reports_dir / f"{self.incident_id}.md"),
            "html": str(self.reports_dir / f"{self.incident_id}.html"),
        }


def _json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    """A row with pandas timestamps as datetimes and missing values as None."""
    plain: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, pd.Timestamp):
            plain[key] = value.to_pydatetime()
        elif not isinstance(value, (dict, list, str)) and pd.isna(value):
            plain[key] = None
        else:
            plain[key] = value
    return plain
