"""What matured labels say about an incident, and when waiting for them is better than paging now; and
what calibrated scores say before any label is in (`estimate_evidence`).

An hourly alert-rate rise with no threshold, model or feature change to explain it is ambiguous: a new
fraud pattern the model half-catches raises it, and so does a harmless change in who shops. Only labels
tell the two apart: if the alert policy's recall on the traffic of the rise fell, fraud got past the model.
So the responder may **wait for evidence** (`awaits_labels`): when no runbook claims such an incident and
the labels of the day of traffic around its first breach will be in within `MAX_LABEL_WAIT`, it holds the
investigation until then (an interrupt the hourly loop wakes, like verification's wait for data), and
matches the runbooks again with the ``labels`` root filled in (`label_evidence`). If nothing claims it
then, it abstains and pages as before; where labels take longer than that (a 7-day chargeback feed), it
pages at once: a person should not wait a week to hear about it.

The cohort is the 24 hours from 12 hours before the first breach, so it holds the traffic of the rise
whether the anomaly began a little before the hour that breached or after it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pandas as pd

from monitor.checks import cohort_recall
from monitor.estimated import window_estimate
from monitor.incidents import Incident
from monitor.runner import Monitor
from tools.runbooks.scope import LABEL_FIELDS

MAX_LABEL_WAIT = timedelta(days=3)  # from the first breach until the cohort's labels are in
COHORT_BEFORE_BREACH = timedelta(hours=12)
COHORT_LENGTH = timedelta(days=1)


def cohort_of(incident: Incident) -> tuple[datetime, datetime]:
    """The day of traffic around the incident's first breach: [first breach - 12 h, + 24 h)."""
    start = incident.first_breach_at - COHORT_BEFORE_BREACH
    return start, start + COHORT_LENGTH


def label_evidence(monitor: Monitor, incident: Incident, now: datetime) -> dict[str, Any]:
    """The ``labels`` root of runbook expressions for ``incident`` at ``now`` (fields: `LABEL_FIELDS`)."""
    start, end = cohort_of(incident)
    matures_at = end + timedelta(days=monitor.config.label_delay_days)
    found: dict[str, Any] = {
        **dict.fromkeys(LABEL_FIELDS),
        "matured": now >= matures_at,
        "matures_at": matures_at.isoformat(),
        "cohort_start": start.isoformat(),
        "cohort_end": end.isoformat(),
    }
    if not found["matured"]:
        return found
    profile = monitor.profile(incident.model_version)
    cohort = None if profile is None else cohort_recall(monitor.store, profile, start, end)
    if cohort is not None:
        found.update({name: cohort[name] for name in ("frauds", "recall", "reference_recall", "drop", "z")})
    return found


def estimate_evidence(monitor: Monitor, incident: Incident, now: datetime) -> dict[str, Any]:
    """The ``estimated`` root: recall estimated from calibrated scores on the 24 h before the first breach
    (`monitor.estimated`); empty when it cannot be made (fields: `ESTIMATE_FIELDS`, None when absent)."""
    profile = monitor.profile(incident.model_version)
    if profile is None:
        return {}
    end = min(incident.first_breach_at, now)
    found = window_estimate(monitor.store, profile, incident.model_version, end - COHORT_LENGTH, end)
    if found is None:
        return {}
    # Rounded: runbooks write these into notes and pages, where 0.5686359... reads worse than 0.5686.
    # (window_estimate gives exactly ESTIMATE_FIELDS, all finite: no fraud expected is None, not NaN.)
    return {name: round(v, 4) if isinstance(v, float) else v for name, v in found.items()}


def awaits_labels(incident: Incident, labels: dict[str, Any]) -> str | None:
    """Why the responder should wait for the cohort's labels before giving up on ``incident``, or None.

    Only for a *rise* of the alert rate (a fall may be fraud going through: a person hears at once), whose
    labels are not in yet and will be within `MAX_LABEL_WAIT` of the first breach.
    """
    evidence = incident.evidence
    if incident.kind != "prediction_drift" or evidence.get("check") != "alert_rate" or labels.get("matured"):
        return None
    rate, reference = evidence.get("alert_rate"), evidence.get("reference_alert_rate")
    if not isinstance(rate, (int, float)) or not isinstance(reference, (int, float)) or rate <= reference:
        return None
    matures_at = datetime.fromisoformat(str(labels["matures_at"]))
    if matures_at - incident.first_breach_at > MAX_LABEL_WAIT:
        return None
    return (
        f"alert rate {rate:.4f} vs reference {reference:.4f} with no change to explain it: waiting until "
        f"{pd.Timestamp(matures_at):%Y-%m-%d %H:%M} for the labels of {labels['cohort_start']} .. "
        f"{labels['cohort_end']} to tell a new fraud pattern (recall fell) from a harmless shift"
    )
