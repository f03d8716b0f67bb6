"""Verification while the fallback rules serve: a runbook may name the check to verify with then.

The monitor does not judge the live alert rate while the rules serve (it is the rules', not the model's),
so `threshold_misconfig`, verified by `alert_rate`, would wait out its deadline and page "unverified"
after restoring a threshold under the rules. It names `decision_policy` for that case.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

from agent.verify import verify_fix
from monitor.findings import Finding
from tools.runbooks import lint_text, parse_runbook
from tools.runbooks.library import SHIPPED_RUNBOOKS

ACTED_AT = datetime(2026, 3, 2, 14, 10)


class _Monitor:
    """Answers every check with clean hourly findings and records which check it was asked for."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def evaluate_check(self, name: str, since: datetime, until: datetime) -> list[Finding]:
        self.asked.append(name)
        hours = int((until - since) / timedelta(hours=1))
        return [
            Finding(check=name, kind="prediction_drift", subject="predictions", breached=False, metric="m",
                    value=0.0, threshold=0.5, severity="high")
            for _ in range(hours)
        ]  # fmt: skip


def _runtime(monitor: _Monitor, *, fallback: bool) -> Any:
    return SimpleNamespace(
        clock=lambda: ACTED_AT + timedelta(hours=3),
        config=SimpleNamespace(verify_min_hours={"hour": 2, "day": 24}),
        monitor=monitor,
        serving=SimpleNamespace(current=lambda: SimpleNamespace(fallback=fallback, quarantined_features=[])),
    )


def _threshold_runbook() -> Any:
    path = SHIPPED_RUNBOOKS / "threshold_misconfig.md"
    return parse_runbook(path.read_text(), path)


def test_the_fallback_check_verifies_while_the_rules_serve() -> None:
    runbook = _threshold_runbook()
    incident = {"incident_id": "INC-1", "subject": "predictions"}
    assert runbook.verification.check == "alert_rate" and runbook.verification.while_fallback == "decision_policy"

    on_rules, on_model = _Monitor(), _Monitor()
    under_rules = verify_fix(_runtime(on_rules, fallback=True), runbook, incident, ACTED_AT, attempts=1)
    under_model = verify_fix(_runtime(on_model, fallback=False), runbook, incident, ACTED_AT, attempts=1)

    assert on_rules.asked == ["decision_policy"] and under_rules["check"] == "decision_policy"
    assert on_model.asked == ["alert_rate"] and under_model["check"] == "alert_rate"
    assert under_rules["status"] == under_model["status"] == "verified"


def test_an_unknown_fallback_check_is_a_lint_error() -> None:
    text = (SHIPPED_RUNBOOKS / "threshold_misconfig.md").read_text()
    assert lint_text(text, "threshold_misconfig.md") == []

    problems = lint_text(text.replace("while_fallback: decision_policy", "while_fallback: decision_polcy"), "x.md")

    assert [p.code for p in problems] == ["unknown-check"]
    assert "decision_polcy" in problems[0].message and "decision_policy" in problems[0].message
