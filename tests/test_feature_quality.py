"""The hourly feature-quality check's stuck-value rule, on the handbook's own shape of terminal risk.

`selfheal run` over a clean month of the handbook's data (trained on the months before) opened two
"feature pipeline broken" incidents, each paged: `terminal_risk_30d` is 0 for 89.4 % of the handbook's
reference rows, and two night hours (123 rows with 122 zeros; 80 rows, all zeros) crossed the fixed
99 % share. At that reference share such hours come by chance every few weeks; a stuck value must be
judged against the share of its own bin and the hour's size.
"""

from __future__ import annotations

import numpy as np

from monitor.checks import feature_problems
from monitor.counts import SubjectCounts
from monitor.profile import COUNT_FEATURE_EDGES, NumericProfile, numeric_profile
from monitor.stats import histogram_counts

# The handbook's terminal_risk_30d over the reference week of a model trained on April-July 2018:
# 60,099 of 67,240 rows at 0 (top bin 0.8938), the rest spread over (0, 1].
REFERENCE_ROWS, REFERENCE_ZEROS = 67_240, 60_099


def _terminal_risk_reference() -> NumericProfile:
    rng = np.random.default_rng(0)
    values = np.concatenate([np.zeros(REFERENCE_ZEROS), rng.beta(1.2, 30.0, REFERENCE_ROWS - REFERENCE_ZEROS)])
    profile = numeric_profile(values, COUNT_FEATURE_EDGES)
    assert round(profile.top_bin_share, 4) == 0.8938
    return profile


def _hour(reference: NumericProfile, zeros: int, others: np.ndarray) -> SubjectCounts:
    values = np.concatenate([np.zeros(zeros), others])
    counts, nulls = histogram_counts(values, reference.edges)
    return SubjectCounts(counts, nulls, len(values))


def test_a_quiet_night_hour_of_a_mostly_zero_feature_is_not_a_stuck_feature() -> None:
    reference = _terminal_risk_reference()
    for zeros, others in ((122, np.array([0.05])), (80, np.array([]))):  # the two hours that paged
        hour = _hour(reference, zeros, others)
        assert "stuck_share" not in feature_problems("terminal_risk_30d", reference, hour, 0, 0)


def test_a_feature_stuck_in_its_most_common_bin_is_still_caught_once_the_hour_is_big_enough() -> None:
    reference = _terminal_risk_reference()
    problems = feature_problems("terminal_risk_30d", reference, _hour(reference, 400, np.array([])), 0, 0)
    assert problems["stuck_share"] == 1.0


def test_a_feature_stuck_at_a_rare_value_is_caught_in_a_small_hour() -> None:
    rng = np.random.default_rng(1)
    reference = numeric_profile(rng.gamma(2.0, 30.0, 20_000))  # an average amount: 0.0 is never seen
    hour = _hour(reference, 60, np.array([]))
    assert feature_problems("customer_avg_amount_30d", reference, hour, 0, 0)["stuck_share"] == 1.0
