"""The monitor end to end: silence without faults, one incident per fault, drift the naive way misses,
and re-evaluation in a fresh process. (Detection of each fault in time: `test_monitor_detection.py`.)

Every case plays live hours through the real scorer and runs the monitor after each hour
(the `play` fixture in `tests/conftest.py`). Worlds are seeded, so the outcomes are reproducible.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import numpy as np
import pytest

from evals.faults import FAULTS, make_fault
from monitor.counts import ADDITIVE, SCORE_SUBJECT, load_windows, sum_windows
from monitor.runner import Monitor
from monitor.stats import histogram_counts, psi
from scorer import columns as C
from scorer.simulate import WorldConfig
from tests.conftest import SmallWorld, build_world

# -- silence --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def seasonal_world(tmp_path_factory: pytest.TempPathFactory) -> SmallWorld:
    """Daily seasonality (time of day) and weekly seasonality (quieter weekends)."""
    config = WorldConfig(seed=9, customers=1000, terminals=2000, weekend_activity=0.75)
    return build_world(config, tmp_path_factory.mktemp("seasonal-world"))


@pytest.mark.slow
def test_thirty_days_without_faults_raise_no_incident(play: Any, seasonal_world: SmallWorld) -> None:
    """Acceptance 1 (first half): 30 days of no-fault traffic with daily and weekly seasonality."""
    played = play([], days=30, target=seasonal_world)
    incidents = played.incidents()
    assert incidents == [], [(i.incident_id, i.title) for i in incidents]
    windows = played.platform.store.scalar("SELECT count(*) FROM monitor_windows WHERE cadence = 'hour'")
    assert windows == 30 * 24
    days = played.platform.store.scalar("SELECT count(DISTINCT window_end) FROM monitor_findings WHERE cadence = 'day'")
    assert days == 30


def test_a_three_day_feature_outage_is_one_data_quality_incident_and_no_drift_incident(
    play: Any, world: SmallWorld
) -> None:
    """Acceptance 4: dedup, persistence and folding keep a long fault to one incident."""
    start = world.at(0, 8)
    fault = make_fault(
        "feature_nulls", {"features": ["terminal_risk_7d", "terminal_risk_30d"], "rate": 1.0}, start, start + timedelta(days=3)
    )
    played = play([fault], days=4)
    incidents = played.incidents()
    assert [i.kind for i in incidents] == ["data_quality"], [(i.kind, i.title) for i in incidents]
    events = played.monitor.incidents.events(incidents[0].incident_id)
    assert (events["event"] == "breach").sum() > 10  # it kept breaching: the same incident was updated


def test_card_testing_is_missed_by_equal_width_psi_but_caught_by_the_profile_bins(
    play: Any, world: SmallWorld
) -> None:
    """Acceptance 3: 5 % of traffic moved to micro-amounts."""
    start = world.at(0, 0)
    played = play([make_fault("card_testing", {"share": 0.05, "amount_max": 2.0}, start, None)], days=1)
    kinds = {i.kind for i in played.incidents()}
    assert "data_drift" in kinds
    drift = next(i for i in played.incidents() if i.kind == "data_drift")
    assert "amount" in drift.features
    # The same day's amounts against the reference, with 10 equal-width bins (Evidently's default style).
    reference = world.history[C.AMOUNT].to_numpy()
    live = played.live.truth()[C.AMOUNT].to_numpy()
    edges = np.linspace(min(reference.min(), live.min()), max(reference.max(), live.max()), 11)[1:-1]
    ref_counts, _ = histogram_counts(reference, edges)
    cur_counts, _ = histogram_counts(live, edges)
    assert psi(ref_counts, cur_counts) < 0.1, "equal-width PSI should not see card testing"


def test_benign_seasonal_shift_raises_no_incident(play: Any, world: SmallWorld) -> None:
    start = world.at(1, 0)
    fault = make_fault("benign_seasonal", FAULTS["benign_seasonal"].example_params, start, None)
    played = play([fault], days=2)
    assert played.incidents() == [], [(i.kind, i.title) for i in played.incidents()]


# -- re-evaluation (verification after a remediation) --------------------------------------------


def test_evaluate_check_sees_the_same_history_in_a_fresh_process(play: Any, world: SmallWorld) -> None:
    """`Monitor.evaluate_check` in a monitor that never ran (a CLI or service process) judges each stored
    hour on the same trailing hours as the monitor that counted them: label_freshness looks back a day."""
    stall = world.at(1, 0)
    played = play([make_fault("label_stall", {}, stall, None)], days=3)
    since, until = world.at(1, 12), world.at(2, 12)
    platform = played.platform
    fresh = Monitor(platform.store, platform.registry, platform.serving, clock=platform.scorer.clock)

    seen_live = played.monitor.evaluate_check("label_freshness", since, until)
    seen_fresh = fresh.evaluate_check("label_freshness", since, until)

    assert len(seen_live) == 24 and any(f.breached for f in seen_live)
    assert [(f.breached, f.value, f.evidence) for f in seen_fresh] == [
        (f.breached, f.value, f.evidence) for f in seen_live
    ]


def test_an_hour_monitored_again_is_counted_once(play: Any, world: SmallWorld) -> None:
    """A restarted `selfheal run` replays its source from the start, and `selfheal monitor run` may cover
    monitored hours: the hour's counts replace the earlier ones (appended, the day's sum held it twice)."""
    played = play([], days=1)
    platform = played.platform
    day_start, day_end = world.at(0, 0), world.at(1, 0)
    before = sum_windows(load_windows(platform.store, day_start, day_end, 1))

    again = Monitor(platform.store, platform.registry, platform.serving, clock=platform.scorer.clock)
    for hour in (5, 23):  # 23: the hour that closes the day, so the day is summed again too
        again.run_hour(world.at(0, hour))

    rows = platform.store.execute(
        "SELECT count(*), count(DISTINCT window_start) FROM monitor_windows WHERE cadence = 'hour' "
        "AND window_start >= ? AND window_start < ?",
        [day_start, day_end],
    )
    assert rows == [(24, 24)]
    after = sum_windows(load_windows(platform.store, day_start, day_end, 1))
    assert after.subjects[SCORE_SUBJECT].rows == before.subjects[SCORE_SUBJECT].rows
    assert {k: after.scalars.get(k) for k in ADDITIVE} == {k: before.scalars.get(k) for k in ADDITIVE}
