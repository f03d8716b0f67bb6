"""The hourly alert-rate check and clustered fraud: one card's burst of rightly flagged fraud is no incident.

A compromised card (or terminal) makes several transactions in an hour and the model flags them all, so
flagged rows are over-dispersed against the binomial the Wilson interval assumes: the eval suite's no-fault
controls raised a prediction-drift incident for 10 alerts in 152 rows (3 expected). A rise is therefore
judged on distinct cards or terminals among the flagged rows; a wrong threshold spreads its alerts over
many of them, and a collapse of alerts is judged on the rows.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest

from monitor.checks import CheckContext, alert_rate_check
from monitor.counts import WindowCounts, _alert_sources

NOON = datetime(2018, 5, 17, 12)
REFERENCE_RATE = 0.02


def _breached(rows: int, alerts: int, sources: float | None) -> bool:
    return bool(_finding(rows, alerts, sources).breached)


def _finding(rows: int, alerts: int, sources: float | None) -> Any:
    scalars = {"rows": float(rows), "alerts": float(alerts)}
    if sources is not None:
        scalars["alert_sources"] = sources
    window = WindowCounts(start=NOON, end=NOON + timedelta(hours=1), model_version=1, scalars=scalars)
    profile: Any = SimpleNamespace(alert_rate=REFERENCE_RATE)
    store: Any = None
    (finding,) = alert_rate_check(
        CheckContext(profile=profile, window=window, cadence="hour", now=NOON, store=store)
    )
    return finding


@pytest.mark.parametrize(
    ("rows", "alerts", "sources", "breached"),
    [
        (152, 10, 3, False),  # the control's burst: ten flagged rows from three cards
        (152, 10, 10, True),  # the same count from ten cards: the alert policy moved
        (150, 60, 55, True),  # a wrong threshold: many more alerts, from many cards
        (1500, 0, 0, True),  # alerts collapsed (a threshold set far too high): judged on rows
        (152, 10, None, True),  # a window counted before sources were: judged on rows, as it was
        (150, 4, 4, False),  # within the interval
    ],
)
def test_a_rise_in_alerts_is_judged_on_distinct_sources(
    rows: int, alerts: int, sources: float | None, breached: bool
) -> None:
    assert _breached(rows, alerts, sources) is breached


def test_alert_sources_are_the_fewer_of_distinct_cards_and_terminals_among_flagged_rows() -> None:
    rows = pd.DataFrame({
        "decision": ["decline", "decline", "review", "approve", "decline"],
        "customer_id": [1, 1, 1, 2, 3],  # one card made three of the four flagged rows
        "terminal_id": [10, 11, 12, 13, 14],
    })  # fmt: skip
    assert _alert_sources(rows) == 2.0
    assert math.isnan(_alert_sources(rows.drop(columns=["customer_id"])))


def test_the_evidence_says_when_its_interval_counts_sources_not_rows() -> None:
    # Ten alerts from three cards: the interval is around 3/152, below the alert rate 10/152, which read
    # as a wrong interval in an incident's evidence until the evidence said what it counts.
    evidence = _finding(152, 10, 3).evidence
    assert evidence["alert_sources"] == 3 and "distinct" in evidence["wilson_of"]
    assert evidence["wilson_low"] <= 3 / 152 <= evidence["wilson_high"]  # the sources' rate, not 10 / 152
    assert "wilson_of" not in _finding(152, 10, None).evidence  # judged on rows: nothing to explain
