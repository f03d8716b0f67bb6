"""The incident rules (monitor/incidents.py) on hand-made findings: folding, persistence, clearing."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from monitor.findings import Cadence, Finding
from monitor.incidents import IncidentChange, IncidentManager
from store import Store, Workspace

START = datetime(2026, 5, 4, 9)


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[IncidentManager]:
    with Store.open(Workspace(tmp_path / "ws")) as store:
        yield IncidentManager(store, clock=lambda: START)


def _feature_break(breached: bool = True) -> Finding:
    return Finding(
        check="null_rate", kind="data_quality", subject="customer_avg_amount_30d", breached=breached,
        metric="null_rate", value=1.0 if breached else 0.0, threshold=0.05, severity="high",
        features=["customer_avg_amount_30d"],
    )


def _alert_rate(breached: bool) -> Finding:
    return Finding(
        check="alert_rate", kind="prediction_drift", subject="predictions", breached=breached,
        metric="alert_rate_relative_change", value=3.0 if breached else 0.1, threshold=0.5, severity="high",
    )


def _latency(breached: bool) -> Finding:
    return Finding(
        check="latency", kind="latency", subject="scoring", breached=breached, metric="latency_p99_ratio",
        value=5.0 if breached else 1.0, threshold=3.0,
    )


def _hour(manager: IncidentManager, hour: int, *findings: Finding, cadence: Cadence = "hour") -> list[IncidentChange]:
    start = START + timedelta(hours=hour)
    return manager.process(
        list(findings), window_start=start, window_end=start + timedelta(hours=1), cadence=cadence, model_version=1
    )


def _changes(changes: list[IncidentChange]) -> list[tuple[str, str, str]]:
    return [(c.incident_id, c.change, c.kind) for c in changes]


def test_drift_while_a_feature_is_broken_is_folded_into_the_feature_incident(manager: IncidentManager) -> None:
    changes = _hour(manager, 0, _feature_break(), _alert_rate(True))

    assert _changes(changes) == [("INC-1", "opened", "data_quality"), ("INC-1", "folded", "prediction_drift")]
    assert [i.kind for i in manager.list()] == ["data_quality"]


def test_drift_that_continues_after_the_fix_is_still_the_causes_tail(manager: IncidentManager) -> None:
    _hour(manager, 0, _feature_break(), _alert_rate(True))
    manager.set_status("INC-1", "mitigated", actor="agent", note="quarantined, verified")

    changes = _hour(manager, 1, _feature_break(), _alert_rate(True))

    assert ("INC-1", "folded", "prediction_drift") in _changes(changes)
    assert len(manager.list()) == 1


def test_drift_that_starts_after_the_cause_was_mitigated_opens_its_own_incident(manager: IncidentManager) -> None:
    # A feature breaks at 09:00 and is quarantined; a threshold rollout moves the alert rate at 14:00.
    _hour(manager, 0, _feature_break(), _alert_rate(True))
    manager.set_status("INC-1", "mitigated", actor="agent", note="quarantined, verified")
    for hour in range(1, 5):
        _hour(manager, hour, _feature_break(), _alert_rate(False))

    changes = _hour(manager, 5, _feature_break(), _alert_rate(True))

    assert ("INC-2", "opened", "prediction_drift") in _changes(changes)
    assert [(i.incident_id, i.kind) for i in manager.list()] == [("INC-1", "data_quality"), ("INC-2", "prediction_drift")]


def test_drift_that_starts_while_the_cause_is_unmitigated_is_folded(manager: IncidentManager) -> None:
    _hour(manager, 0, _feature_break(), _alert_rate(False))
    manager.set_status("INC-1", "investigating", actor="agent", note="responder started")

    changes = _hour(manager, 1, _feature_break(), _alert_rate(True))

    assert ("INC-1", "folded", "prediction_drift") in _changes(changes)


def test_latency_needs_two_breaches_in_three_hours(manager: IncidentManager) -> None:
    assert _hour(manager, 0, _latency(True)) == []
    changes = _hour(manager, 1, _latency(True))
    assert _changes(changes) == [("INC-1", "opened", "latency")]


def test_an_incident_clears_after_calm_windows_and_a_breach_soon_after_reopens_it(manager: IncidentManager) -> None:
    _hour(manager, 0, _alert_rate(True))
    assert _hour(manager, 1, _alert_rate(False)) == []  # prediction drift clears after 2 calm windows
    assert _changes(_hour(manager, 2, _alert_rate(False))) == [("INC-1", "resolved", "prediction_drift")]

    assert _changes(_hour(manager, 3, _alert_rate(True))) == [("INC-1", "reopened", "prediction_drift")]


def test_a_daily_drift_over_the_day_of_the_outage_is_still_the_causes(manager: IncidentManager) -> None:
    # The feature broke at 09:00 and was mitigated at 10:00; the day's score distribution includes that hour.
    _hour(manager, 0, _feature_break(), _alert_rate(True))
    manager.set_status("INC-1", "mitigated", actor="agent", note="quarantined", at=START + timedelta(hours=1))
    day_start = START.replace(hour=0)
    score_drift = Finding(
        check="score_drift", kind="prediction_drift", subject="predictions", breached=True, metric="effect",
        value=1.3, threshold=1.0,
    )

    changes = manager.process(
        [score_drift], window_start=day_start, window_end=day_start + timedelta(days=1), cadence="day", model_version=1
    )

    assert _changes(changes) == [("INC-1", "folded", "prediction_drift")]


def test_the_responder_leaves_resolved_what_the_monitor_resolved_after_its_fix(manager: IncidentManager) -> None:
    from types import SimpleNamespace

    from agent.nodes import _set_status

    (opened,) = _hour(manager, 0, _feature_break())
    incident_id = opened.incident_id
    resolved_at = START + timedelta(hours=5)
    manager.set_status(incident_id, "resolved", actor="monitor", note="cleared", at=resolved_at)
    runtime: Any = SimpleNamespace(incidents=manager)

    # The fix was in force before the monitor resolved it: the verified run does not reopen it.
    _set_status(runtime, incident_id, "mitigated", "verified", acted_at=(resolved_at - timedelta(hours=2)).isoformat())
    assert manager.get(incident_id).status == "resolved"
    # A run that acted only after that (it waited for a person): its change must be watched again.
    _set_status(runtime, incident_id, "mitigated", "verified", acted_at=(resolved_at + timedelta(hours=1)).isoformat())
    assert manager.get(incident_id).status == "mitigated"
    # Escalation always goes through.
    _set_status(runtime, incident_id, "escalated", "paged")
    assert manager.get(incident_id).status == "escalated"


def test_an_incident_set_active_again_after_a_resolve_is_not_closed(manager: IncidentManager) -> None:
    # The monitor resolved the feature break; a responder run that acted later escalated it (a person must
    # fix the upstream job). It kept the resolve's `closed_at`, so the next day it no longer explained the
    # drift its broken feature still caused: an active cause read as one closed a day before.
    _hour(manager, 0, _feature_break())
    manager.set_status("INC-1", "resolved", actor="monitor", note="cleared", at=START + timedelta(hours=1))
    manager.set_status("INC-1", "escalated", actor="agent", note="paged", at=START + timedelta(hours=2))

    assert manager.get("INC-1").closed_at is None
    changes = _hour(manager, 30, _alert_rate(True))

    assert _changes(changes) == [("INC-1", "folded", "prediction_drift")]
    manager.set_status("INC-1", "resolved", actor="person:ana", note="upstream fixed", at=START + timedelta(hours=40))
    assert manager.get("INC-1").closed_at == START + timedelta(hours=40)
