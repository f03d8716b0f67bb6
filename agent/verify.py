"""Did the fix hold? Re-run the runbook's verification check on data that arrived after the action.

The check runs through `Monitor.evaluate_check` on the stored hours after the action (an hourly check on
each hour, a daily check on the hours added up). The answer is one of:

- ``verified``: enough hours after the action (``AgentConfig.verify_min_hours``) and the check is back under
  its threshold (for an hourly check: on each of the latest hours needed);
- ``failed``: the runbook's deadline (``verification.within``) passed without that, or, for a runbook that
  pages a human in any case (``paging: always``), the check had its hours of data and is still not clean
  (waiting for the deadline would only hold the page back);
- ``pending``: not enough data yet; the graph waits (`interrupt`) and the loop wakes it later.

A ``model_integrity`` check is never verified while the fallback rules serve: no load failures then only
means no model was loaded. What the model does not see does not count: problems in quarantined features (they are imputed) and,
while fallback rules serve, in any model feature, are left out of a ``feature_quality`` verdict. The
upstream fault itself stays visible to the monitor, so the incident stays open until it is really fixed.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pandas as pd

from agent.context import AgentRuntime
from agent.state import Verification
from monitor.checks import CHECKS
from monitor.findings import Finding
from scorer.serving import ServingState
from tools.runbooks import Runbook

HOUR = timedelta(hours=1)


def verify_fix(
    runtime: AgentRuntime, runbook: Runbook, incident: dict[str, Any], acted_at: datetime, attempts: int
) -> Verification:
    """Evaluate the runbook's verification check after ``acted_at`` (see the module docstring)."""
    serving = runtime.serving.current()
    # The monitor does not judge live scores while the rules serve (their alert rate is not the model's);
    # a runbook whose check reads them names another to verify with then.
    name = runbook.verification.check_for(serving.fallback)
    now = runtime.clock()
    deadline = acted_at + runbook.verification.deadline
    since = pd.Timestamp(acted_at).ceil("h").to_pydatetime()
    until = pd.Timestamp(now).floor("h").to_pydatetime()
    base: Verification = {
        "check": name,
        "since": since.isoformat(),
        "until": until.isoformat(),
        "deadline": deadline.isoformat(),
        "attempts": attempts,
    }
    if name not in CHECKS:
        return {**base, "status": "failed", "findings": [], "reason": f"unknown verification check {name!r}"}
    cadence = CHECKS[name].cadence
    need = max(1, runtime.config.verify_min_hours.get(cadence, 2))
    findings = runtime.monitor.evaluate_check(name, since, until) if until > since else []
    findings = [_as_model_sees_it(f, serving) for f in _relevant(findings, incident)]
    hours = int((until - since) / HOUR) if until > since else 0
    rows = [_finding_row(f) for f in findings]
    if cadence == "hour":
        latest = findings[-need:]
        clean = len(latest) >= need and not any(f.breached for f in latest)
        evidence = f"{len(findings)} hourly evaluations after the action, latest {need} clean"
    else:
        clean = hours >= need and bool(findings) and not any(f.breached for f in findings)
        evidence = f"{hours} hours after the action evaluated together"
    if clean:
        return {**base, "status": "verified", "findings": rows, "reason": f"{name} back under its threshold: {evidence}"}
    enough = len(findings) >= need if cadence == "hour" else hours >= need
    if runbook.paging == "always" and enough and now < deadline:
        # The runbook pages a human whatever happens: once the check has had its data and is still not
        # clean, holding the page until the deadline (a day for some) only delays the person who must act.
        return {**base, "status": "failed", "findings": rows,
                "reason": f"{name} not clean after the action ({evidence}); the runbook pages at once rather than wait for {deadline:%Y-%m-%d %H:%M}"}  # fmt: skip
    if now >= deadline:
        breached = [r for r in rows if r["breached"]]
        why = (
            f"{name} still breached on {len(breached)} of {len(rows)} evaluations"
            if breached
            else f"not enough data after the action ({hours} h; {name} needs {need})"
        )
        return {**base, "status": "failed", "findings": rows, "reason": f"{why} by the deadline {deadline:%Y-%m-%d %H:%M}"}
    waiting = "breached so far" if any(f.breached for f in findings) else f"{hours} h of {need} h needed"
    return {**base, "status": "pending", "findings": rows, "reason": f"waiting for data after the action ({waiting})"}


def next_wake(verification: Verification, runtime: AgentRuntime) -> datetime:
    """When another evaluation can change the answer: the next hour, capped at the deadline."""
    deadline = datetime.fromisoformat(verification["deadline"])
    following = pd.Timestamp(runtime.clock()).floor("h").to_pydatetime() + HOUR
    return min(following, max(deadline, runtime.clock()))


def _relevant(findings: list[Finding], incident: dict[str, Any]) -> list[Finding]:
    """A check with one subject per feature (drift) is judged on the incident's own subject when it has one."""
    own = [f for f in findings if f.subject == incident.get("subject")]
    return own or findings


def _as_model_sees_it(finding: Finding, serving: ServingState) -> Finding:
    """A finding as it bears on the model, given what serves: quarantined features (and, under the fallback
    rules, all features) do not reach it; and no load failures while the rules serve prove nothing about
    the artifact, since nobody tried to load it."""
    if finding.check == "model_integrity" and serving.fallback:
        return replace(
            finding,
            breached=True,
            evidence={**finding.evidence, "unproven": "fallback rules serve, so no model was loaded to prove its integrity"},
        )
    if finding.check != "feature_quality":
        return finding
    problems = dict(finding.evidence.get("problems", {}))
    ignored = set(serving.quarantined_features)
    if serving.fallback:
        ignored |= {name for name in problems if name != "score"}
    remaining = {name: p for name, p in problems.items() if name not in ignored}
    if len(remaining) == len(problems):
        return finding
    return replace(
        finding,
        breached=bool(remaining),
        value=float(len(remaining)),
        features=[f for f in finding.features if f not in ignored],
        evidence={**finding.evidence, "problems": remaining, "ignored_not_seen_by_model": sorted(ignored & set(problems))},
    )


def _finding_row(finding: Finding) -> dict[str, Any]:
    return {
        "subject": finding.subject,
        "metric": finding.metric,
        "value": round(float(finding.value), 6),
        "threshold": round(float(finding.threshold), 6),
        "breached": bool(finding.breached),
    }
