"""Incident rules: from per-window findings to few, deduplicated, explained incidents.

- **Persistence**: a (kind, subject) must breach in k of its last n evaluations before an incident opens
  (`IncidentRules.persistence`); data-quality faults open at once, latency needs a confirming hour.
- **One incident per dedup key** (model, kind, subject): later breaches update its evidence and timeline.
- **Hysteresis**: an incident clears only after its metric stays below ``hysteresis x threshold`` for
  ``clear_after`` evaluations, so a metric hovering at the threshold does not flap.
- **Cooldown**: a breach within ``cooldown`` of an incident closing reopens that incident instead of
  opening a new one, so a fault that comes and goes over three days is one incident, not dozens.
- **Folding**: drift explained by an open data-quality or model-integrity incident (the broken feature
  *causes* the drift, a fallback *causes* the score shift) is recorded on that incident, not raised again.
  A prediction drift that starts after that incident was mitigated is not its doing and opens its own.

Status moves ``open -> investigating -> mitigated | resolved | escalated``; the monitor itself only opens,
updates, reopens and resolves (when the condition clears); the agent sets the others.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel, Field

from monitor.findings import SEVERITY_RANK, Cadence, Finding
from store import Store

Status = Literal["open", "investigating", "mitigated", "resolved", "escalated"]
ACTIVE_STATUSES: tuple[str, ...] = ("open", "investigating", "mitigated", "escalated")
CAUSE_KINDS = ("data_quality", "model_integrity")
FOLDABLE_KINDS = ("data_drift", "prediction_drift")


class IncidentRules(BaseModel):
    """Persistence, hysteresis and cooldown, per incident kind."""

    persistence: dict[str, tuple[int, int]] = Field(
        default_factory=lambda: {"latency": (2, 3), "error_rate": (2, 3)},
        description="kind -> (k, n): breach in k of the last n evaluations to open; default (1, 1)",
    )
    clear_after: dict[str, int] = Field(
        default_factory=lambda: {"data_drift": 1, "prediction_drift": 2, "performance_decay": 1},
        description="kind -> evaluations below the hysteresis level to clear; default 3",
    )
    hysteresis: float = Field(0.8, gt=0, le=1, description="clear below this fraction of the threshold")
    cooldown: timedelta = Field(timedelta(hours=24), description="a breach this soon after closing reopens")

    def k_of_n(self, kind: str) -> tuple[int, int]:
        return self.persistence.get(kind, (1, 1))


class Incident(BaseModel):
    """An incident as stored."""

    incident_id: str
    number: int
    dedup_key: str
    model_version: int | None
    kind: str
    subject: str
    severity: str
    status: str
    title: str
    opened_at: datetime
    updated_at: datetime
    closed_at: datetime | None
    first_breach_at: datetime
    evidence: dict[str, Any]
    root_cause: str | None = None
    summary: str | None = None

    @property
    def active(self) -> bool:
        return self.status in ACTIVE_STATUSES

    @property
    def features(self) -> list[str]:
        return list(self.evidence.get("features", []))


class IncidentChange(BaseModel):
    """What processing a window did to one incident."""

    incident_id: str
    change: Literal["opened", "updated", "reopened", "resolved", "folded"]
    kind: str
    subject: str


class IncidentManager:
    """Applies the incident rules to findings and keeps incidents and their timelines in the store."""

    def __init__(self, store: Store, rules: IncidentRules | None = None, clock: Callable[[], datetime] | None = None) -> None:
        self.store = store
        self.rules = rules or IncidentRules()
        self.clock = clock or datetime.now
        self._recent_causes: builtins.list[Incident] = []

    # -- reading --------------------------------------------------------------------------------

    def list(self, status: str | None = None, *, active_only: bool = False) -> builtins.list[Incident]:
        sql, params = "SELECT * FROM incidents", []
        if status is not None:
            sql, params = sql + " WHERE status = ?", [status]
        elif active_only:
            sql += f" WHERE status IN ({', '.join(repr(s) for s in ACTIVE_STATUSES)})"
        return [_incident(row) for row in self.store.query(sql + " ORDER BY number", params).to_dict("records")]

    def get(self, incident_id: str) -> Incident:
        frame = self.store.query("SELECT * FROM incidents WHERE incident_id = ?", [_normalise_id(incident_id)])
        if frame.empty:
            raise KeyError(f"no incident {incident_id!r}")
        return _incident(frame.to_dict("records")[0])

    def events(self, incident_id: str) -> pd.DataFrame:
        return self.store.query(
            "SELECT recorded_at, event, detail FROM incident_events WHERE incident_id = ? ORDER BY recorded_at, rowid",
            [_normalise_id(incident_id)],
        )

    # -- writing --------------------------------------------------------------------------------

    def process(
        self, findings: builtins.list[Finding], *, window_start: datetime, window_end: datetime, cadence: Cadence, model_version: int | None
    ) -> builtins.list[IncidentChange]:
        """Record a window's findings and apply the incident rules; returns what changed."""
        self._record_findings(findings, window_start, window_end, cadence)
        changes: builtins.list[IncidentChange] = []
        active = {i.dedup_key: i for i in self.list(active_only=True)}
        # Causes that were active at any time during this window explain what the window shows, even if
        # they cleared before it closed (a six-hour feature outage still skews that day's distributions).
        self._recent_causes = [
            i for i in self.list() if i.kind in CAUSE_KINDS and (i.closed_at is None or i.closed_at >= window_start)
        ]
        # Two checks can watch one subject (the live alert rate and the decision policy): one that is calm
        # must not clear an incident the other breaches in the same window.
        breached_keys = {_dedup_key(model_version, f) for f in findings if f.breached}
        for finding in sorted(findings, key=lambda f: f.kind not in CAUSE_KINDS):  # causes first
            key = _dedup_key(model_version, finding)
            incident = active.get(key)
            if finding.breached:
                change = self._on_breach(finding, incident, key, active, window_start, window_end, cadence, model_version)
            elif incident is not None and key not in breached_keys:
                change = self._maybe_clear(finding, incident, window_end, cadence)
            else:
                change = None
            if change is not None:
                changes.append(change)
                if change.change in ("opened", "reopened"):
                    active[key] = self.get(change.incident_id)
                elif change.change == "resolved":
                    # Resolved once: a second calm check of the same subject must not resolve it again
                    # (two "cleared" events, and the resolve work after them done twice).
                    active.pop(key, None)
        return changes

    def set_status(self, incident_id: str, status: Status, *, actor: str, note: str, at: datetime | None = None) -> Incident:
        """Move an incident to a new status (the agent and humans use this), with a timeline event."""
        incident = self.get(incident_id)
        now = at or self.clock()
        # An active status clears an earlier resolve's `closed_at`: the fold window (`_recent_causes`) and
        # every reader take a set `closed_at` to mean "closed then", not "active again since".
        closed = now if status == "resolved" else None
        self.store.execute(
            "UPDATE incidents SET status = ?, updated_at = ?, closed_at = ? WHERE incident_id = ?",
            [status, now, closed, incident.incident_id],
        )
        self._event(incident.incident_id, now, f"status:{status}", {"actor": actor, "note": note})
        return self.get(incident.incident_id)

    def annotate(self, incident_id: str, *, root_cause: str | None = None, summary: str | None = None) -> None:
        self.store.execute(
            "UPDATE incidents SET root_cause = coalesce(?, root_cause), summary = coalesce(?, summary) WHERE incident_id = ?",
            [root_cause, summary, _normalise_id(incident_id)],
        )

    def add_event(self, incident_id: str, event: str, detail: dict[str, Any], at: datetime | None = None) -> None:
        self._event(_normalise_id(incident_id), at or self.clock(), event, detail)

    # -- rules ----------------------------------------------------------------------------------

    def _on_breach(
        self,
        finding: Finding,
        incident: Incident | None,
        key: str,
        active: dict[str, Incident],
        window_start: datetime,
        now: datetime,
        cadence: Cadence,
        model_version: int | None,
    ) -> IncidentChange | None:
        if incident is not None:
            self._update(incident, finding, now)
            return IncidentChange(incident_id=incident.incident_id, change="updated", kind=finding.kind, subject=finding.subject)
        cause = self._explaining_incident(finding, active, cadence, window_start)
        if cause is not None:
            self._event(cause.incident_id, now, "folded", {"finding": _finding_summary(finding), "why": _fold_reason(finding, cause)})
            return IncidentChange(incident_id=cause.incident_id, change="folded", kind=finding.kind, subject=finding.subject)
        if not self._persistent(finding, cadence):
            return None
        recent = self._recently_closed(key, now)
        if recent is not None:
            self.store.execute(
                "UPDATE incidents SET status = 'open', closed_at = NULL, updated_at = ?, evidence = ? WHERE incident_id = ?",
                [now, json.dumps(_evidence(finding), default=str), recent.incident_id],
            )
            self._event(recent.incident_id, now, "reopened", _finding_summary(finding))
            return IncidentChange(incident_id=recent.incident_id, change="reopened", kind=finding.kind, subject=finding.subject)
        return self._open(finding, key, now, model_version)

    def _persistent(self, finding: Finding, cadence: Cadence) -> bool:
        k, n = self.rules.k_of_n(finding.kind)
        if k <= 1:
            return True
        recent = self.store.query(
            "SELECT breached FROM monitor_findings WHERE kind = ? AND subject = ? AND cadence = ? "
            "ORDER BY window_end DESC LIMIT ?",
            [finding.kind, finding.subject, cadence, n],
        )
        return int(recent["breached"].sum()) >= k

    def _breached_in_previous_window(self, finding: Finding, cadence: Cadence) -> bool:
        """Whether `finding`'s (kind, subject) breached in the window before this one (already recorded)."""
        previous = self.store.query(
            "SELECT breached FROM monitor_findings WHERE check_name = ? AND kind = ? AND subject = ? AND cadence = ? "
            "ORDER BY window_end DESC LIMIT 1 OFFSET 1",
            [finding.check, finding.kind, finding.subject, cadence],
        )
        return bool(len(previous)) and bool(previous["breached"].iloc[0])

    def _mitigated_after(self, incident: Incident, moment: datetime) -> bool:
        """Whether `incident` was last marked mitigated after `moment` (it was unmitigated during part of it)."""
        mitigated_at = self.store.scalar(
            "SELECT max(recorded_at) FROM incident_events WHERE incident_id = ? AND event = 'status:mitigated'",
            [incident.incident_id],
        )
        return mitigated_at is None or pd.Timestamp(mitigated_at) > pd.Timestamp(moment)

    def _explaining_incident(
        self, finding: Finding, active: dict[str, Incident], cadence: Cadence, window_start: datetime
    ) -> Incident | None:
        if finding.kind not in FOLDABLE_KINDS:
            return None
        causes = [i for i in active.values() if i.kind in CAUSE_KINDS and i.status != "resolved"]
        causes += [i for i in self._recent_causes if i.incident_id not in {c.incident_id for c in causes}]
        if finding.kind == "prediction_drift":
            # Broken inputs or a fallback move the scores. Once the cause is mitigated (its fix applied and
            # verified), the scores are back to the model's, so a drift that *starts* afterwards is news (a
            # later threshold rollout, say) and must be raised on its own. One still running since before
            # the fix, or seen over a window that began before it (the day of the outage), is the cause's.
            if any(c.status == "mitigated" for c in causes) and not self._breached_in_previous_window(finding, cadence):
                causes = [c for c in causes if c.status != "mitigated" or self._mitigated_after(c, window_start)]
            return causes[0] if causes else None
        implicated = set(finding.features)
        for cause in causes:
            if cause.kind == "model_integrity" or implicated & set(cause.features) or not implicated:
                return cause
        return None

    def _recently_closed(self, key: str, now: datetime) -> Incident | None:
        frame = self.store.query(
            "SELECT * FROM incidents WHERE dedup_key = ? AND closed_at IS NOT NULL AND closed_at >= ? "
            "ORDER BY closed_at DESC LIMIT 1",
            [key, now - self.rules.cooldown],
        )
        return None if frame.empty else _incident(frame.to_dict("records")[0])

    def _open(self, finding: Finding, key: str, now: datetime, model_version: int | None) -> IncidentChange:
        number = int(self.store.scalar("SELECT coalesce(max(number), 0) + 1 FROM incidents"))
        incident_id = f"INC-{number}"
        self.store.append(
            "incidents",
            pd.DataFrame(
                {
                    "incident_id": [incident_id],
                    "number": [number],
                    "dedup_key": [key],
                    "model_version": pd.array([model_version], dtype="Int64"),
                    "kind": [finding.kind],
                    "subject": [finding.subject],
                    "severity": [finding.severity],
                    "status": ["open"],
                    "title": [_title(finding)],
                    "opened_at": [now],
                    "updated_at": [now],
                    "closed_at": pd.array([None], dtype="datetime64[ns]"),
                    "first_breach_at": [now],
                    "evidence": [json.dumps(_evidence(finding), default=str)],
                    "root_cause": [None],
                    "summary": [None],
                }
            ),
        )
        self._event(incident_id, now, "opened", _finding_summary(finding))
        return IncidentChange(incident_id=incident_id, change="opened", kind=finding.kind, subject=finding.subject)

    def _update(self, incident: Incident, finding: Finding, now: datetime) -> None:
        severity = max(incident.severity, finding.severity, key=lambda s: SEVERITY_RANK.get(s, 0))
        evidence = _evidence(finding)
        # Keep every feature ever implicated: the incident is about all of them.
        evidence["features"] = sorted(set(incident.features) | set(finding.features))
        evidence["peak_value"] = max(float(incident.evidence.get("peak_value", finding.value)), finding.value)
        self.store.execute(
            "UPDATE incidents SET updated_at = ?, severity = ?, evidence = ? WHERE incident_id = ?",
            [now, severity, json.dumps(evidence, default=str), incident.incident_id],
        )
        self._event(incident.incident_id, now, "breach", _finding_summary(finding))

    def _maybe_clear(self, finding: Finding, incident: Incident, now: datetime, cadence: Cadence) -> IncidentChange | None:
        needed = self.rules.clear_after.get(finding.kind, 3)
        recent = self.store.query(
            "SELECT value, threshold FROM monitor_findings WHERE check_name = ? AND kind = ? AND subject = ? "
            "AND cadence = ? ORDER BY window_end DESC LIMIT ?",
            [finding.check, finding.kind, finding.subject, cadence, needed],
        )
        if len(recent) < needed:
            return None
        calm = (recent["value"].fillna(0) <= self.rules.hysteresis * recent["threshold"].fillna(0)).all()
        if not calm:
            return None
        self.store.execute(
            "UPDATE incidents SET status = 'resolved', closed_at = ?, updated_at = ? WHERE incident_id = ?",
            [now, now, incident.incident_id],
        )
        self._event(incident.incident_id, now, "cleared", {"after_windows": needed, "value": finding.value, "threshold": finding.threshold})
        return IncidentChange(incident_id=incident.incident_id, change="resolved", kind=finding.kind, subject=finding.subject)

    # -- storage helpers ------------------------------------------------------------------------

    def _record_findings(self, findings: builtins.list[Finding], start: datetime, end: datetime, cadence: Cadence) -> None:
        if not findings:
            return
        self.store.append(
            "monitor_findings",
            pd.DataFrame(
                {
                    "window_start": start,
                    "window_end": end,
                    "cadence": cadence,
                    "check_name": [f.check for f in findings],
                    "kind": [f.kind for f in findings],
                    "subject": [f.subject for f in findings],
                    "breached": [f.breached for f in findings],
                    "metric": [f.metric for f in findings],
                    "value": [f.value for f in findings],
                    "threshold": [f.threshold for f in findings],
                    "evidence": [json.dumps(_evidence(f), default=str) for f in findings],
                }
            ),
        )

    def _event(self, incident_id: str, at: datetime, event: str, detail: dict[str, Any]) -> None:
        self.store.append(
            "incident_events",
            pd.DataFrame(
                {"incident_id": [incident_id], "recorded_at": [at], "event": [event], "detail": [json.dumps(detail, default=str)]}
            ),
        )


def _dedup_key(model_version: int | None, finding: Finding) -> str:
    return f"model:{model_version if model_version is not None else '-'}|{finding.kind}|{finding.subject}"


def _normalise_id(incident_id: str) -> str:
    text = incident_id.strip().upper()
    return text if text.startswith("INC-") else f"INC-{text}"


def _evidence(finding: Finding) -> dict[str, Any]:
    return {
        "check": finding.check,
        "metric": finding.metric,
        "value": finding.value,
        "threshold": finding.threshold,
        "features": finding.features,
        **finding.evidence,
    }


def _finding_summary(finding: Finding) -> dict[str, Any]:
    return {
        "check": finding.check,
        "kind": finding.kind,
        "subject": finding.subject,
        "metric": finding.metric,
        "value": finding.value,
        "threshold": finding.threshold,
        "features": finding.features,
    }


def _fold_reason(finding: Finding, cause: Incident) -> str:
    return f"{finding.kind} on {finding.subject} is explained by open {cause.kind} incident {cause.incident_id}"


def _title(finding: Finding) -> str:
    named = f" ({', '.join(finding.features[:3])}{'...' if len(finding.features) > 3 else ''})" if finding.features else ""
    return f"{finding.kind.replace('_', ' ')}: {finding.metric} {finding.value:.4g} > {finding.threshold:.4g} on {finding.subject}{named}"


def _incident(row: dict[str, Any]) -> Incident:
    data = dict(row)
    data["evidence"] = json.loads(data["evidence"]) if isinstance(data["evidence"], str) else data["evidence"]
    for key in ("closed_at", "root_cause", "summary", "model_version"):
        if key in data and pd.isna(data[key]):
            data[key] = None
    return Incident.model_validate(data)
