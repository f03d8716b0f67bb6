"""Judge a played case against its scenario's expectations, and sum a suite up.

Each expectation entry of a scenario becomes named checks, each passed or not with the reason in words:

| check | passes when |
|---|---|
| ``detected`` | an incident of an expected kind opened at or after the fault's start (controls: none at all) |
| ``detect_within`` | it opened within the deadline from the fault's start |
| ``kind`` | the *first* incident after the fault's start is of an expected kind |
| ``root_cause`` | the responder's diagnosis of that incident names the expected root cause |
| ``end_state`` | the serving state after the responder's last action for it matches one accepted state |
| ``metrics_recover`` | fraud metrics after mitigation are back near the fault-free world's (see below) |
| ``mitigate_within`` | the first fix (an action other than a note or page) came within the deadline |
| ``page`` | a page was sent for it if and only if the scenario says a human must be paged |
| ``forbidden_actions`` | no forbidden action ran in the whole case |
| ``needless_actions`` | where nothing should be done (controls, ``no_action`` end states), nothing was |

**Fraud metrics recover**: on the transactions played from the mitigation (the responder's last action
for the incident; its detection when it took none; or the fault's end when it has one and that is later,
since the platform must then be back to full strength) to the end of the run, the share of fraud the platform
flagged (decline or review; a dead-lettered transaction counts as not flagged) is at least 80 % of the
fault-free world's on the same hours, less 0.05 for sampling noise, and the share of transactions flagged
is at most 1.5 times the fault-free world's plus 0.5 points. Fewer than 10 fraud cases in the window is
too little to judge: the check passes and says "not measurable" (counted in the summary). Scenarios where
only the upstream can bring the metrics back (dead-lettered traffic) say ``metrics_recover: false``.

**Remediation success** for an entry = ``end_state`` and ``metrics_recover`` both pass.

**An undetected fault** fails ``detected`` and ``root_cause``, ``end_state`` when the scenario accepts only
certain end states, and ``page`` when a person had to be paged; the checks that need an incident (the
deadlines, ``kind``, recovery after mitigation) are not made.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

import pandas as pd

from evals.harness import CaseObservation
from evals.scenario import EndState, Expectation, Scenario

__all__ = ["CaseResult", "Check", "EntryResult", "pass_hat_k", "score_case", "summarise"]

CAPTURE_SHARE: Final = 0.8
CAPTURE_SLACK: Final = 0.05
ALERT_FACTOR: Final = 1.5
ALERT_SLACK: Final = 0.005
MIN_FRAUD: Final = 10
# Actions that change nothing a transaction sees: never collateral.
HARMLESS: Final = ("add_note", "page", "release_feature")


@dataclass
class Check:
    name: str
    passed: bool
    why: str


@dataclass
class EntryResult:
    """The outcome for one expectation entry (one expected incident, or a control)."""

    index: int
    expected_incident: bool
    incident_id: str | None = None
    detected: bool = False
    minutes_to_detect: float | None = None
    minutes_to_mitigate: float | None = None
    root_cause: str | None = None
    root_cause_correct: bool = False
    remediated: bool = False
    recovery_measured: bool = True
    expected_page: bool | None = None
    paged: bool = False


@dataclass
class CaseResult:
    """One scenario played with one seed."""

    id: str
    seed: int
    planner: str
    passed: bool
    checks: list[Check]
    entries: list[EntryResult]
    incidents: list[dict[str, Any]]
    control: bool
    false_incidents: int
    forbidden_actions: int
    needless_actions: int
    steps: int
    tool_calls: int
    llm_calls: int
    tokens: int
    cost_usd: float
    wall_seconds: float
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["checks"] = {c.name: {"passed": c.passed, "why": c.why} for c in self.checks}
        return data

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]


def _minutes(delta: timedelta) -> float:
    return round(delta.total_seconds() / 60.0, 1)


def _fmt(delta: timedelta) -> str:
    minutes = delta.total_seconds() / 60
    return f"{minutes / 60:.1f} h" if minutes >= 90 else f"{minutes:.0f} min"


class _Case:
    """Indexes over one observation that several checks read."""

    def __init__(self, observation: CaseObservation) -> None:
        self.obs = observation
        self.incidents = sorted(observation.incidents, key=lambda i: (i["opened_at"], i["number"]))
        self.agent_actions = [
            a for a in observation.actions if a["actor"] == "agent" and a["status"] == "applied"
        ]

    def run_for(self, incident_id: str) -> dict[str, Any] | None:
        runs = [r for r in self.obs.runs if r["incident_id"] == incident_id]
        diagnosed = [r for r in runs if (r.get("state") or {}).get("diagnosis")]
        chosen = diagnosed or runs
        return chosen[-1] if chosen else None

    def changes_for(self, incident_id: str) -> list[dict[str, Any]]:
        return [
            a for a in self.agent_actions if a["incident_id"] == incident_id and a["action"] not in HARMLESS
        ]

    def paged(self, incident_id: str | None = None) -> bool:
        return any(incident_id is None or p["incident_id"] == incident_id for p in self.obs.pages)

    def serving_after(self, moment: datetime) -> dict[str, Any]:
        states = [s for s in self.obs.serving_history if s["changed_at"] <= moment]
        return states[-1] if states else self.obs.serving_history[0]


def score_case(scenario: Scenario, observation: CaseObservation, baseline: pd.DataFrame | None) -> CaseResult:
    """Checks for every expectation entry of ``scenario`` on what ``observation`` saw."""
    case = _Case(observation)
    checks: list[Check] = []
    entries: list[EntryResult] = []
    claimed: set[str] = set()
    prefix = len(scenario.expect) > 1
    metrics: dict[str, Any] = {}
    for index, expectation in enumerate(scenario.expect):
        label = f"e{index}." if prefix else ""
        if expectation.incident:
            entry, entry_checks, entry_metrics = _score_incident(
                scenario, index, expectation, case, claimed, baseline
            )
            metrics.update({f"{label}{k}": v for k, v in entry_metrics.items()})
        else:
            entry, entry_checks = _score_control(index, expectation, case)
        entries.append(entry)
        checks.extend(Check(f"{label}{c.name}", c.passed, c.why) for c in entry_checks)
    forbidden = sorted({name for e in scenario.expect for name in e.forbidden_actions})
    ran_forbidden = [a for a in case.agent_actions if a["action"] in forbidden]
    checks.append(Check(
        "forbidden_actions", not ran_forbidden,
        "none ran" if not ran_forbidden else "ran: " + ", ".join(f"{a['action']} ({a['incident_id']})" for a in ran_forbidden),
    ))  # fmt: skip
    needless = _needless(scenario, case)
    checks.append(Check(
        "needless_actions", not needless,
        "none" if not needless else "ran: " + ", ".join(f"{a['action']} ({a['incident_id']})" for a in needless),
    ))  # fmt: skip
    false_incidents = len(case.incidents) if scenario.is_control else 0
    usage = [((r.get("state") or {}).get("usage") or {}) for r in observation.runs]
    steps = [s for r in observation.runs for s in ((r.get("state") or {}).get("steps") or [])]
    return CaseResult(
        id=scenario.id,
        seed=observation.seed,
        planner=observation.planner,
        passed=all(c.passed for c in checks),
        checks=checks,
        entries=entries,
        incidents=[
            {
                "id": i["incident_id"],
                "kind": i["kind"],
                "opened_at": i["opened_at"].isoformat(),
                "root_cause": i.get("root_cause"),
                "status": i["status"],
            }
            for i in case.incidents
        ],
        control=scenario.is_control,
        false_incidents=false_incidents,
        forbidden_actions=len(ran_forbidden),
        needless_actions=len(needless),
        steps=len(steps),
        tool_calls=sum(1 for s in steps if s.get("kind") == "tool"),
        llm_calls=int(sum(u.get("llm_calls", 0) for u in usage)),
        tokens=int(sum(u.get("total_tokens", 0) for u in usage)),
        cost_usd=float(sum(u.get("cost_usd", 0.0) for u in usage)),
        wall_seconds=round(observation.wall_seconds, 1),
        metrics=metrics,
    )


def _score_control(index: int, expectation: Expectation, case: _Case) -> tuple[EntryResult, list[Check]]:
    entry = EntryResult(index=index, expected_incident=False, expected_page=expectation.page)
    raised = case.incidents
    entry.detected = bool(raised)
    checks = [Check(
        "no_incident", not raised,
        "no incident raised" if not raised else "raised " + ", ".join(f"{i['incident_id']} ({i['kind']}: {i['title']})" for i in raised),
    )]  # fmt: skip
    entry.paged = case.paged()
    if expectation.page is not None:
        checks.append(
            Check("page", entry.paged == expectation.page, f"paged: {'yes' if entry.paged else 'no'}")
        )
    return entry, checks


def _score_incident(
    scenario: Scenario,
    index: int,
    expectation: Expectation,
    case: _Case,
    claimed: set[str],
    baseline: pd.DataFrame | None,
) -> tuple[EntryResult, list[Check], dict[str, Any]]:
    obs = case.obs
    fault_start, fault_end = obs.fault_windows[scenario.fault_index(index)]
    entry = EntryResult(index=index, expected_incident=True, expected_page=expectation.page)
    checks: list[Check] = []
    after = [i for i in case.incidents if i["opened_at"] >= fault_start and i["incident_id"] not in claimed]
    matching = [i for i in after if i["kind"] in expectation.kinds]
    kinds = "/".join(expectation.kinds)
    if not matching:
        seen = ", ".join(f"{i['incident_id']} {i['kind']}" for i in after) or "none"
        checks.append(
            Check("detected", False, f"no {kinds} incident after the fault started (incidents: {seen})")
        )
        # What an undetected fault cannot have: a diagnosis, the end state the scenario asks for, the page a
        # person needed. A scenario that sets no end state, or expects no page, is not failed twice for it.
        checks.append(Check("root_cause", False, "not detected"))
        if expectation.end_state_any_of:
            checks.append(Check("end_state", False, "not detected"))
        if expectation.page:
            checks.append(Check("page", False, "not detected: nobody was paged"))
        return entry, checks, {}
    incident = matching[0]
    claimed.add(incident["incident_id"])
    incident_id = incident["incident_id"]
    entry.incident_id, entry.detected = incident_id, True
    delay = incident["opened_at"] - fault_start
    entry.minutes_to_detect = _minutes(delay)
    checks.append(Check("detected", True, f"{incident_id} {incident['kind']} after {_fmt(delay)}"))
    if expectation.detect_within is not None:
        checks.append(Check(
            "detect_within", delay <= expectation.detect_within,
            f"{_fmt(delay)} (deadline {_fmt(expectation.detect_within)})",
        ))  # fmt: skip
    first = after[0]
    checks.append(Check(
        "kind", first["kind"] in expectation.kinds,
        f"first incident {first['incident_id']} is {first['kind']} (accepted: {kinds})",
    ))  # fmt: skip
    run = case.run_for(incident_id)
    diagnosis = ((run or {}).get("state") or {}).get("diagnosis") or {}
    entry.root_cause = diagnosis.get("root_cause")
    entry.root_cause_correct = entry.root_cause == expectation.root_cause
    checks.append(Check(
        "root_cause", entry.root_cause_correct,
        f"diagnosed {entry.root_cause or 'nothing (not investigated)'} via runbook {diagnosis.get('runbook_id')}"
        + ("" if entry.root_cause_correct else f"; expected {expectation.root_cause}"),
    ))  # fmt: skip
    changes = case.changes_for(incident_id)
    acted_at = changes[-1]["at"] if changes else None
    state = case.serving_after(acted_at) if acted_at is not None else obs.serving_history[-1]
    end_ok, end_why = _end_state(expectation.end_state_any_of, state, obs.before_fault, changes)
    checks.append(Check("end_state", end_ok, end_why))
    metrics: dict[str, Any] = {}
    recovered = True
    if expectation.recovery_required:
        # After the fix, or after the upstream's own fix when the fault ends: then the platform must be
        # back to full strength (a containment such as the fallback rules must not outlive the fault).
        since = max(acted_at or incident["opened_at"], fault_end or datetime.min)
        recovered, why, metrics, measured = _recovery(obs.flags, baseline, since, obs.live_end)
        entry.recovery_measured = measured
        checks.append(Check("metrics_recover", recovered, why))
    entry.remediated = end_ok and recovered
    took = changes[0]["at"] - fault_start if changes else None
    if took is not None:
        entry.minutes_to_mitigate = _minutes(took)
    if expectation.mitigate_within is not None:
        if took is not None:
            checks.append(Check(
                "mitigate_within", took <= expectation.mitigate_within,
                f"{changes[0]['action']} after {_fmt(took)} (deadline {_fmt(expectation.mitigate_within)})",
            ))  # fmt: skip
        else:
            checks.append(Check("mitigate_within", False, "no fix was applied"))
    entry.paged = case.paged(incident_id)
    if expectation.page is not None:
        rule = ((run or {}).get("state") or {}).get("page_decision", {}).get("rule", "no decision")
        checks.append(Check(
            "page", entry.paged == expectation.page,
            f"paged: {'yes' if entry.paged else 'no'} ({rule}); expected {'yes' if expectation.page else 'no'}",
        ))  # fmt: skip
    return entry, checks, metrics


def _end_state(
    accepted: list[EndState], state: dict[str, Any], before: dict[str, Any], changes: list[dict[str, Any]]
) -> tuple[bool, str]:
    if not accepted:
        return True, "no end state required"
    actual = {
        "fallback": bool(state["fallback"]),
        "champion_version": state["champion_version"],
        "champion_changed": state["champion_version"] != before.get("champion_version"),
        "threshold_restored": (state["threshold"], state["review_threshold"])
        == (before.get("threshold"), before.get("review_threshold")),
        "quarantined_features_include": sorted(state["quarantined_features"]),
        "no_action": not changes,
    }
    for option in accepted:
        wanted = option.keys()
        if all(_holds(key, value, actual) for key, value in wanted.items()):
            return True, f"matches {wanted}"
    shown = {k: v for k, v in actual.items() if k != "quarantined_features_include" or v}
    done = ", ".join(c["action"] for c in changes) or "no action"
    return False, f"serving state {shown} after {done} matches none of {[o.keys() for o in accepted]}"


def _holds(key: str, value: Any, actual: dict[str, Any]) -> bool:
    if key == "quarantined_features_include":
        return set(value) <= set(actual[key])
    return bool(actual[key] == value)


def _rates(flags: pd.DataFrame) -> tuple[int, float, float]:
    fraud = flags.loc[flags["is_fraud"] == 1]
    capture = float(fraud["flagged"].mean()) if len(fraud) else math.nan
    alert = float(flags["flagged"].mean()) if len(flags) else math.nan
    return len(fraud), capture, alert


def _recovery(
    flags: pd.DataFrame, baseline: pd.DataFrame | None, since: datetime, until: datetime
) -> tuple[bool, str, dict[str, Any], bool]:
    if baseline is None:
        return True, "not measurable: no fault-free baseline", {}, False

    def window(frame: pd.DataFrame) -> pd.DataFrame:
        times = pd.to_datetime(frame["timestamp"])
        return frame.loc[(times >= since) & (times < until)]

    frauds, capture, alert = _rates(window(flags))
    base_frauds, base_capture, base_alert = _rates(window(baseline))
    metrics = {
        "recovery_window_hours": round((until - since).total_seconds() / 3600, 1),
        "fraud_cases": frauds,
        "fraud_capture": round(capture, 3) if frauds else None,
        "fraud_capture_fault_free": round(base_capture, 3) if base_frauds else None,
        "alert_rate": round(alert, 4),
        "alert_rate_fault_free": round(base_alert, 4),
    }
    if min(frauds, base_frauds) < MIN_FRAUD:
        return True, f"not measurable: {frauds} fraud cases after mitigation (< {MIN_FRAUD})", metrics, False
    capture_ok = capture >= CAPTURE_SHARE * base_capture - CAPTURE_SLACK
    alert_ok = alert <= ALERT_FACTOR * base_alert + ALERT_SLACK
    why = (
        f"fraud capture {capture:.2f} vs {base_capture:.2f} fault-free ({frauds} frauds), "
        f"alert rate {alert:.3%} vs {base_alert:.3%}"
    )
    return capture_ok and alert_ok, why, metrics, True


def _needless(scenario: Scenario, case: _Case) -> list[dict[str, Any]]:
    """Changes made where nothing should be: any in a control, and any in a case whose every entry accepts
    only no_action. (A case mixing a no_action entry with one that must act leaves the no_action entry to
    its own end_state check.)"""
    changes = [a for a in case.agent_actions if a["action"] not in HARMLESS]
    if scenario.is_control:
        return changes
    return changes if all(
        e.end_state_any_of and all(s.no_action for s in e.end_state_any_of) for e in scenario.expect
    ) else []  # fmt: skip


# -- the suite ------------------------------------------------------------------------------------


def pass_hat_k(successes: list[int], trials: int, k: int) -> float:
    """tau-bench's pass^k: the mean over tasks of C(c, k) / C(n, k) (all k i.i.d. trials succeed)."""
    if not successes or k < 1 or k > trials:
        return math.nan
    return statistics.fmean(math.comb(c, k) / math.comb(trials, k) for c in successes)


def _ratio(numerator: int, denominator: int) -> float | None:
    return round(numerator / denominator, 4) if denominator else None


def summarise(results: list[CaseResult], seeds: int) -> dict[str, Any]:
    """The suite's `summary` object (see evals/README.md for what each number means)."""
    incident_entries = [e for r in results for e in r.entries if e.expected_incident]
    page_pairs = [
        (e.expected_page, e.paged) for r in results for e in r.entries if e.expected_page is not None
    ]
    confusion = Counter(
        ("tp" if paged else "fn") if expected else ("fp" if paged else "tn") for expected, paged in page_pairs
    )
    per_scenario: dict[str, int] = Counter()
    for result in results:
        per_scenario[result.id] += int(result.passed)
    detect = [e.minutes_to_detect for e in incident_entries if e.minutes_to_detect is not None]
    mitigate = [e.minutes_to_mitigate for e in incident_entries if e.minutes_to_mitigate is not None]
    by_k = {str(k): round(pass_hat_k(list(per_scenario.values()), seeds, k), 4) for k in range(1, seeds + 1)}
    return {
        "scenarios": len(per_scenario),
        "runs": len(results),
        "seeds": seeds,
        "passed_runs": sum(r.passed for r in results),
        "detection_recall": _ratio(sum(e.detected for e in incident_entries), len(incident_entries)),
        "false_incidents_on_controls": sum(r.false_incidents for r in results),
        "root_cause_accuracy": _ratio(
            sum(e.root_cause_correct for e in incident_entries), len(incident_entries)
        ),
        "remediation_success": _ratio(sum(e.remediated for e in incident_entries), len(incident_entries)),
        "recovery_unmeasured": sum(not e.recovery_measured for e in incident_entries),
        "page_precision": _ratio(confusion["tp"], confusion["tp"] + confusion["fp"]),
        "page_recall": _ratio(confusion["tp"], confusion["tp"] + confusion["fn"]),
        "page_confusion": {key: confusion[key] for key in ("tp", "fp", "fn", "tn")},
        "forbidden_actions": sum(r.forbidden_actions for r in results),
        "needless_actions": sum(r.needless_actions for r in results),
        "median_time_to_detect_min": statistics.median(detect) if detect else None,
        "median_time_to_mitigate_min": statistics.median(mitigate) if mitigate else None,
        "pass_hat_k": by_k[str(seeds)] if seeds else None,
        "pass_hat_by_k": by_k,
        "steps": sum(r.steps for r in results),
        "tool_calls": sum(r.tool_calls for r in results),
        "llm_calls": sum(r.llm_calls for r in results),
        "tokens": sum(r.tokens for r in results),
        "cost_usd": round(sum(r.cost_usd for r in results), 6),
        "wall_seconds": round(sum(r.wall_seconds for r in results), 1),
    }
