"""The self-healing loop, one hour at a time: monitor -> responder -> verification -> resolve pages.

`Autopilot.after_hour(end)` is what a live loop (``selfheal run``, the demo, the eval harness, the service's
scheduler) calls once the hour's transactions are scored and logged:

1. the monitor evaluates the hour (and the day at midnight) and opens, updates or resolves incidents;
2. every incident that opened or reopened gets an investigation (a new run of the responder graph);
3. runs waiting for data after an action are woken when their time has come, and re-check the fix;
4. an incident the monitor has resolved gets its quarantined features released (the raw feature is
   healthy again), if the platform paged for it, a PagerDuty ``resolve``, and its report written again
   (it shows the incident closed and the release);
5. pages that never reached a channel are sent to it again (`tools.pagers.redelivery`: hourly, for a day).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from agent.responder import Responder, RunResult
from monitor.runner import Monitor
from tools.audit import ActionLog
from tools.pagers import OutboxPager, Page, dispatch
from tools.pagers.redelivery import redeliver
from tools.registry import call_tool

HOUR = timedelta(hours=1)


@dataclass
class AutopilotEvent:
    """Something the loop did, for progress output: ``what`` is opened/resolved/investigated/woken/resolve_sent/
    released/redelivered."""

    at: datetime
    what: str
    incident_id: str
    detail: str = ""
    run: RunResult | None = None


@dataclass
class Autopilot:
    """Couples the monitor and the responder (see the module docstring)."""

    monitor: Monitor
    responder: Responder

    def after_hour(self, end: datetime) -> list[AutopilotEvent]:
        """Run the loop for the hour ending at ``end``; returns what happened."""
        happened: list[AutopilotEvent] = []
        report = self.monitor.run_hour(end - HOUR)
        to_investigate: list[str] = []
        for change in report.changes:
            if change.change in ("opened", "reopened"):
                incident = self.monitor.incidents.get(change.incident_id)
                happened.append(AutopilotEvent(end, change.change, change.incident_id, incident.title))
                to_investigate.append(change.incident_id)
            elif change.change == "resolved":
                happened.append(AutopilotEvent(end, "resolved", change.incident_id, "condition cleared"))
                for released in self._release_quarantines(change.incident_id):
                    happened.append(AutopilotEvent(end, "released", change.incident_id, released))
                sent = self._send_resolve(change.incident_id)
                if sent:
                    happened.append(AutopilotEvent(end, "resolve_sent", change.incident_id, sent))
                self.responder.refresh_report(change.incident_id)  # the report shows it closed
        for incident_id in to_investigate:
            again = self.responder.latest_thread(incident_id) is not None  # reopened: a new run
            run = self.responder.investigate(incident_id, again=again)
            happened.append(AutopilotEvent(end, "investigated", incident_id, run.status, run))
        for run in self.responder.wake_due(end):
            happened.append(AutopilotEvent(end, "woken", run.incident_id, run.status, run))
        rt = self.responder.runtime
        for resent in redeliver(OutboxPager(rt.store, clock=rt.clock), rt.pagers, now=end):
            if resent.delivery is not None:
                outcome = "ok" if resent.delivery.ok else resent.delivery.error
                happened.append(AutopilotEvent(end, "redelivered", resent.incident_id, f"{resent.channel}: {outcome}"))
        return happened

    def _release_quarantines(self, incident_id: str) -> list[str]:
        """Features this incident's investigation quarantined, released once the monitor sees them healthy.

        The monitor resolves a feature-quality incident only after the raw feature (which it keeps
        watching under quarantine) has looked like its reference for several hours: the upstream job is
        fixed. Leaving the imputation on would then skew scores for no reason.
        """
        rt = self.responder.runtime
        released = []
        for feature in self._quarantined_by(incident_id):
            if feature in rt.serving.current().quarantined_features:
                ctx = rt.tool_context(incident_id, reason=f"upstream recovered: {incident_id} resolved by the monitor")
                call_tool("release_feature", ctx, {"feature": feature})
                released.append(feature)
        return released

    def _quarantined_by(self, incident_id: str) -> list[str]:
        rows = ActionLog(self.responder.runtime.store, self.responder.runtime.clock).rows(
            incident_id=incident_id, action="quarantine_feature"
        )
        return sorted({str(r.args.get("feature")) for r in rows if r.status == "applied"})

    def _send_resolve(self, incident_id: str) -> str | None:
        """A resolve event for a paged incident, once (the outbox remembers)."""
        rt = self.responder.runtime
        outbox = OutboxPager(rt.store, clock=rt.clock)
        rows = outbox.rows(incident_id=incident_id)
        if not any(r.action == "trigger" for r in rows) or any(r.action == "resolve" for r in rows):
            return None
        incident = rt.incidents.get(incident_id)
        page = Page.from_incident(
            incident, action="resolve", summary=f"resolved: {incident.title}", timestamp=rt.clock()
        )
        deliveries = dispatch(page, [outbox, *[p for p in rt.pagers if not isinstance(p, OutboxPager)]])
        return ", ".join(f"{d.channel}:{'ok' if d.ok else d.error}" for d in deliveries)
