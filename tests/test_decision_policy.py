"""The decision-policy check: a threshold change judged by what it flags on the reference scores."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pytest

from monitor.checks import CheckContext, decision_policy_check
from monitor.counts import WindowCounts
from monitor.profile import ReferenceProfile, alert_rate_curve, profile_from_dict
from selfheal.app import Platform

# After the fixture's promotion (written at wall-clock time), as every later change is.
T0 = datetime.now().replace(microsecond=0) + timedelta(days=1)


def test_the_curve_is_the_share_of_scores_at_or_above_each_cut() -> None:
    scores = np.random.default_rng(3).beta(0.3, 8.0, 20_000)
    curve = dict(alert_rate_curve(scores))

    for cut in (0.0, 0.01, 0.1, 0.5, 1.0):
        nearest = min(curve, key=lambda c: abs(c - cut))
        assert curve[nearest] == pytest.approx(float(np.mean(scores >= nearest)))
    shares = list(curve.values())
    assert shares == sorted(shares, reverse=True) and shares[0] == 1.0


def _profile(platform: Platform) -> ReferenceProfile:
    payload = platform.registry.get(1).metadata.reference_profile
    assert payload is not None
    return profile_from_dict(payload)


def _check(platform: Platform, now: datetime, *, fallback_rows: float = 0.0) -> list:
    scalars = {"rows": 200.0, "fallback_rows": fallback_rows}
    window = WindowCounts(start=now - timedelta(hours=1), end=now, model_version=1, scalars=scalars)
    context = CheckContext(profile=_profile(platform), window=window, cadence="hour", now=now, store=platform.store)
    return decision_policy_check(context)


def _set(platform: Platform, at: datetime, threshold: float, review: float) -> None:
    platform.serving.clock = lambda: at
    platform.serving.update(actor="deploy-bot", reason="config rollout", threshold=threshold, review_threshold=review)


def test_a_threshold_that_flags_far_more_of_the_reference_breaches_at_once(platform: Platform) -> None:
    profile = _profile(platform)
    before = platform.serving.current()
    assert _check(platform, T0) == []  # no threshold change: nothing to judge

    _set(platform, T0, 0.02, 0.02)
    [finding] = _check(platform, T0 + timedelta(hours=1))

    implied = profile.implied_alert_rate(0.02)
    assert finding.breached and finding.kind == "prediction_drift" and finding.subject == "predictions"
    assert implied is not None and finding.evidence["alert_rate"] == pytest.approx(implied)
    assert implied > 1.5 * finding.evidence["reference_alert_rate"]

    # The restore is the latest threshold change: it flags what the reference did.
    _set(platform, T0 + timedelta(hours=2), before.threshold, before.review_threshold)
    [restored] = _check(platform, T0 + timedelta(hours=3))
    assert not restored.breached and restored.value < 0.05
    assert _check(platform, T0 + timedelta(hours=60)) == []  # too old to be the cause of anything now


def test_a_small_retune_does_not_breach(platform: Platform) -> None:
    profile = _profile(platform)
    before = platform.serving.current()
    # A review threshold flagging 20 % more of the reference than the profiled one.
    target = 1.2 * profile.alert_rate
    cuts = [cut for cut, share in profile.alert_rate_curve if share >= target]
    review = min(max(cuts), before.threshold)
    _set(platform, T0, before.threshold, review)

    [finding] = _check(platform, T0 + timedelta(hours=1))

    assert not finding.breached and finding.value < 0.5


def test_a_wrong_threshold_is_judged_while_the_fallback_rules_serve(platform: Platform) -> None:
    """The check reads the model's reference scores, not live ones: a threshold set wrong while the rules
    serve (whose alert rate the monitor does not judge) would hit the model's traffic once it serves again."""
    before = platform.serving.current()
    _set(platform, T0, 0.02, 0.02)

    [finding] = _check(platform, T0 + timedelta(hours=1), fallback_rows=200.0)

    assert finding.breached
    _set(platform, T0 + timedelta(hours=2), before.threshold, before.review_threshold)
    [restored] = _check(platform, T0 + timedelta(hours=3), fallback_rows=200.0)
    assert not restored.breached
