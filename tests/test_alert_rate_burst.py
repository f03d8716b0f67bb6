"""The hourly alert-rate check and clustered fraud: one hour's burst of rightly flagged fraud is no incident.

A compromised card makes several transactions in an hour and the model flags them all, so one hour's alerts
are over-dispersed against the binomial the Wilson interval assumes (the eval suite's no-fault controls
raised a prediction-drift incident for 10 alerts in 152 rows, 3 expected). A moderate rise must persist a
second hour; a large one (a wrong threshold) or a collapse is raised at once.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from monitor.checks import ALERT_RATE_SURE, CheckContext, alert_rate_check
from monitor.counts import WindowCounts

HOUR = timedelta(hours=1)
NOON = datetime(2018, 5, 17, 12)
REFERENCE_RATE = 0.02


def _window(start: datetime, rows: int, alerts: int) -> WindowCounts:
    return WindowCounts(
        start=start, end=start + HOUR, model_version=1, scalars={"rows": float(rows), "alerts": float(alerts)}
    )


def _breached(rows: int, alerts: int, previous: tuple[int, int] | None) -> bool:
    history = [] if previous is None else [_window(NOON - HOUR, *previous)]
    profile: Any = SimpleNamespace(alert_rate=REFERENCE_RATE)
    ctx = CheckContext(profile=profile, window=_window(NOON, rows, alerts), cadence="hour", now=NOON + HOUR,
                       store=None, history=history)  # type: ignore[arg-type]  # fmt: skip
    (finding,) = alert_rate_check(ctx)
    return finding.breached


@pytest.mark.parametrize(
    ("rows", "alerts", "previous", "breached"),
    [
        (152, 10, (171, 4), False),  # the control's burst: the hour before was ordinary
        (152, 10, None, False),  # no hour before to confirm it
        (152, 10, (170, 12), True),  # the rise held for two hours
        (150, 60, None, True),  # twenty times the reference: a wrong threshold, raised at once
        (1500, 0, None, True),  # alerts collapsed (a threshold set far too high): raised at once
        (150, 4, (170, 12), False),  # within the interval: nothing, whatever came before
    ],
)
def test_a_moderate_alert_rate_rise_needs_a_second_hour(
    rows: int, alerts: int, previous: tuple[int, int] | None, breached: bool
) -> None:
    assert _breached(rows, alerts, previous) is breached


def test_the_confirming_hour_must_be_the_one_just_before() -> None:
    profile: Any = SimpleNamespace(alert_rate=REFERENCE_RATE)
    stale = _window(NOON - 3 * HOUR, 170, 12)  # high, but three hours ago (a gap in the history)
    ctx = CheckContext(profile=profile, window=_window(NOON, 152, 10), cadence="hour", now=NOON + HOUR,
                       store=None, history=[stale])  # type: ignore[arg-type]  # fmt: skip
    assert alert_rate_check(ctx)[0].breached is False
    assert (60 / 150 - REFERENCE_RATE) / REFERENCE_RATE > ALERT_RATE_SURE  # the "at once" case is above it
