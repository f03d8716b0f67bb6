"""The monitor detects each fault in time, with the right incident kind and the faulty features named.

Every case plays live hours through the real scorer and runs the monitor after each hour
(the `play` fixture in `tests/conftest.py`). Worlds are seeded, so the outcomes are reproducible.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from evals.faults import FAULTS, make_fault
from tests.conftest import HOUR, SmallWorld

# Each detection case appends (fault, kind, time to detect) here; the table is written as a test artifact.
DETECTIONS: list[dict[str, Any]] = []
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


@pytest.fixture(scope="module", autouse=True)
def _write_detection_table() -> Iterator[None]:
    yield
    if DETECTIONS:
        ARTIFACTS.mkdir(exist_ok=True)
        lines = ["| fault | incident kind | time to detect | deadline |", "|---|---|---|---|"]
        lines += [f"| {d['fault']} | {d['kind']} | {d['detected_after']} | {d['deadline']} |" for d in DETECTIONS]
        (ARTIFACTS / "monitor_detection.md").write_text("\n".join(lines) + "\n")


# -- detection ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    kind: str
    params: dict[str, Any]
    deadline: timedelta
    days: int
    start: tuple[int, int] = (1, 10)  # live day, hour
    features: tuple[str, ...] = ()


CASES = [
    Case("feature_nulls", {"features": ["terminal_risk_7d", "terminal_risk_30d"], "rate": 1.0}, HOUR, 2,
         features=("terminal_risk_7d", "terminal_risk_30d")),
    Case("feature_constant", {"features": ["customer_avg_amount_7d"], "value": 0.0}, HOUR, 2,
         features=("customer_avg_amount_7d",)),
    Case("schema_change", {"drop": ["amount"], "rename": {}}, HOUR, 2, features=("amount",)),
    Case("volume_drop", {"factor": 0.3}, HOUR, 2),
    Case("corrupt_artifact", {}, HOUR, 2),
    Case("threshold_misconfig", {"threshold": 0.02}, HOUR, 2),
    Case("bad_deploy", {"mode": "inverted_labels"}, 2 * HOUR, 2),
    Case("latency", {"extra_ms": 50.0, "share": 0.5}, 3 * HOUR, 2),
    Case("slow_deploy", {"trees": 3000}, 3 * HOUR, 2),
    # Drift is judged on daily windows: a fault starting at midnight must be seen when its first day closes.
    Case("amount_shift", {"factor": 100.0, "share": 1.0}, timedelta(days=1), 2, start=(1, 0), features=("amount",)),
    Case("card_testing", {"share": 0.05, "amount_max": 2.0}, timedelta(days=1), 2, start=(1, 0), features=("amount",)),
    Case("population_shift", {"new_customer_share": 0.5}, timedelta(days=1), 2, start=(1, 0)),
    Case("label_stall", {}, timedelta(hours=26), 3),
]


@pytest.mark.parametrize("case", CASES, ids=[c.kind for c in CASES])
def test_fault_is_detected_in_time_with_the_right_kind_and_features(play: Any, world: SmallWorld, case: Case) -> None:
    """Acceptance 2: data quality and ops within an hour (latency: a confirming hour), drift within a day."""
    start = world.at(*case.start)
    fault = make_fault(case.kind, case.params, start, None)
    played = play([fault], days=case.days)
    expected_kinds = set(FAULTS[case.kind].expected_kinds)
    incidents = played.incidents()
    assert incidents, f"{case.kind} raised no incident"
    first = incidents[0]
    assert first.kind in expected_kinds, (first.kind, expected_kinds, first.title)
    DETECTIONS.append(
        {"fault": case.kind, "kind": first.kind, "detected_after": str(first.opened_at - start), "deadline": str(case.deadline)}
    )
    assert first.opened_at - start <= case.deadline, (first.opened_at, start)
    assert first.opened_at >= start, "an incident before the fault started is a false alarm"
    # The faulty features are named by an incident of an expected kind within the deadline (an amount
    # shift trips the hourly alert-rate check before the daily drift check names `amount`).
    named = {
        feature
        for incident in incidents
        if incident.kind in expected_kinds and incident.opened_at - start <= case.deadline
        for feature in incident.features
    }
    assert set(case.features) <= named, (case.features, named)


@pytest.mark.slow
def test_new_fraud_pattern_is_detected_when_its_labels_mature(play: Any, world: SmallWorld) -> None:
    """Performance decay needs labels: detection within label maturity (7 days) + 1 day."""
    start = world.at(1, 0)
    fault = make_fault("new_fraud_pattern", FAULTS["new_fraud_pattern"].example_params, start, None)
    played = play([fault], days=10)
    kinds = {i.kind for i in played.incidents()}
    assert "performance_decay" in kinds or "prediction_drift" in kinds, kinds
    decay = [i for i in played.incidents() if i.kind in FAULTS["new_fraud_pattern"].expected_kinds]
    DETECTIONS.append(
        {"fault": "new_fraud_pattern", "kind": decay[0].kind, "detected_after": str(decay[0].opened_at - start),
         "deadline": "9 days (label delay 7 d + the cohort's day + 1 d)"}
    )
    assert decay[0].opened_at - start <= timedelta(days=9)
