"""Binned drift statistics agree with scipy and with direct computations; the registry conformance suite;
and the card-testing case that equal-width PSI misses and quantile + tail + business edges catch."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as scipy_stats
from scipy.spatial.distance import jensenshannon

from monitor.stats import (
    ALL_STATS,
    CATEGORICAL_STATS,
    NORMAL_IQR_PER_SD,
    NUMERIC_STATS,
    BinnedPair,
    binned_robust_scale,
    category_counts,
    evaluate,
    histogram_counts,
    js_distance,
    ks_binned,
    linf,
    psi,
    quantile_edges,
    robust_scale,
    wasserstein_binned,
    wasserstein_iqr,
    wilson_interval,
)
from monitor.thresholds import NoDriftBootstrap, decide

# Enough examples to hit ties, empty bins and single rows; no deadline, as CI machines are busy.
EXAMPLES = 60

# Values with many ties (small integers, halves) and without (floats), so edges hit both cases.
tied_values = st.integers(-6, 6).map(lambda i: i / 2)
free_values = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False)
samples = st.lists(st.one_of(tied_values, free_values), min_size=1, max_size=60)
count_vectors = st.integers(1, 30).flatmap(
    lambda k: st.tuples(
        st.lists(st.integers(0, 1000), min_size=k, max_size=k).filter(lambda c: sum(c) > 0),
        st.lists(st.integers(0, 1000), min_size=k, max_size=k).filter(lambda c: sum(c) > 0),
    )
)


def counts_on_distinct_values(a: list[float], b: list[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every distinct value of the union is an edge: the binned CDFs are then the empirical ones."""
    edges = np.unique(np.concatenate([a, b]))
    return histogram_counts(a, edges)[0], histogram_counts(b, edges)[0], edges


# ---------------------------------------------------------------------------------------------------------
# Agreement with scipy and direct computations
# ---------------------------------------------------------------------------------------------------------


@given(samples, samples)
@settings(max_examples=EXAMPLES, deadline=None)
def test_ks_binned_equals_scipy_two_sample_ks(a: list[float], b: list[float]) -> None:
    ref, cur, _ = counts_on_distinct_values(a, b)
    with warnings.catch_warnings():
        # scipy's p-value (unused here) warns on degenerate samples such as [0.0] vs [0.0]
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = scipy_stats.ks_2samp(a, b, method="asymp").statistic
    assert ks_binned(ref, cur) == pytest.approx(expected, rel=1e-9, abs=1e-12)


@given(samples, samples)
@settings(max_examples=EXAMPLES, deadline=None)
def test_wasserstein_binned_equals_scipy_wasserstein(a: list[float], b: list[float]) -> None:
    ref, cur, edges = counts_on_distinct_values(a, b)
    expected = scipy_stats.wasserstein_distance(a, b)
    value = wasserstein_binned(ref, cur, edges, float(edges[0]), float(edges[-1]))
    assert value == pytest.approx(expected, rel=1e-9, abs=1e-9 * (1.0 + float(edges[-1] - edges[0])))


@given(count_vectors)
@settings(max_examples=EXAMPLES, deadline=None)
def test_js_distance_equals_scipy_jensenshannon(pair: tuple[list[int], list[int]]) -> None:
    ref, cur = pair
    expected = jensenshannon(np.asarray(ref, float), np.asarray(cur, float), base=2)
    assert js_distance(ref, cur) == pytest.approx(expected, abs=1e-12)
    assert 0.0 <= js_distance(ref, cur) <= 1.0


@given(count_vectors, st.sampled_from([0.5, 0.1, 1.0]))
@settings(max_examples=EXAMPLES, deadline=None)
def test_psi_equals_direct_loop(pair: tuple[list[int], list[int]], smoothing: float) -> None:
    ref, cur = pair
    k, n_ref, n_cur = len(ref), sum(ref), sum(cur)
    expected = 0.0
    for r, c in zip(ref, cur, strict=True):
        p = (r + smoothing) / (n_ref + smoothing * k)
        q = (c + smoothing) / (n_cur + smoothing * k)
        expected += (q - p) * math.log(q / p)
    assert psi(ref, cur, smoothing=smoothing) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_psi_without_smoothing_is_infinite_on_a_one_sided_empty_bin() -> None:
    assert psi([5, 5, 0], [5, 4, 1], smoothing=0.0) == math.inf
    assert psi([5, 5, 0], [4, 6, 0], smoothing=0.0) == pytest.approx(
        0.1 * math.log(0.6 / 0.5) - 0.1 * math.log(0.4 / 0.5)
    )


@given(count_vectors)
@settings(max_examples=EXAMPLES, deadline=None)
def test_linf_equals_direct_max(pair: tuple[list[int], list[int]]) -> None:
    ref, cur = pair
    expected = max(abs(r / sum(ref) - c / sum(cur)) for r, c in zip(ref, cur, strict=True))
    assert linf(ref, cur) == pytest.approx(expected, abs=1e-15)


edge_lists = st.lists(st.one_of(tied_values, free_values), min_size=1, max_size=12, unique=True).map(sorted)
raw_values = st.lists(
    st.one_of(tied_values, free_values, st.sampled_from([math.nan, math.inf, -math.inf])), max_size=80
)


@given(raw_values, edge_lists)
@settings(max_examples=EXAMPLES, deadline=None)
def test_histogram_counts_matches_direct_right_closed_count(values: list[float], edges: list[float]) -> None:
    counts, nulls = histogram_counts(values, edges)
    bounds = [-math.inf, *edges, math.inf]
    expected = [0] * (len(edges) + 1)
    for x in values:
        if math.isnan(x):
            continue
        for j in range(len(edges) + 1):
            # bin 0 is (-inf, e_0] and must take -inf itself
            if (bounds[j] < x or j == 0) and x <= bounds[j + 1]:
                expected[j] += 1
                break
    assert counts.tolist() == expected
    assert nulls == sum(math.isnan(x) for x in values)


def test_histogram_counts_edge_values_close_their_bin() -> None:
    counts, nulls = histogram_counts([0.0, 1.0, 1.5, 2.0, 3.0, None, -np.inf, np.inf], [0.0, 2.0])
    assert counts.tolist() == [2, 3, 2]  # (-inf, 0]: -inf, 0; (0, 2]: 1, 1.5, 2; (2, inf): 3, inf
    assert nulls == 1


def test_histogram_counts_accepts_nullable_pandas_and_adds_up_across_windows() -> None:
    for nullable in (pd.Series([1.0, None, 4.0], dtype="Float64"), [1.0, pd.NA, 4.0], pd.array([1, None, 4])):
        counts, nulls = histogram_counts(nullable, [2.0])
        assert (counts.tolist(), nulls) == ([1, 1], 1)
    rng = np.random.default_rng(0)
    hours = [rng.lognormal(3, 1, 500) for _ in range(24)]
    edges = quantile_edges(np.concatenate(hours[:3]))
    hourly = sum(histogram_counts(h, edges)[0] for h in hours)
    assert np.array_equal(hourly, histogram_counts(np.concatenate(hours), edges)[0])


@given(st.integers(0, 500), st.integers(0, 500), st.sampled_from([1.0, 1.959963984540054, 2.576]))
@settings(max_examples=EXAMPLES, deadline=None)
def test_wilson_interval_matches_formula_and_contains_the_proportion(s: int, extra: int, z: float) -> None:
    n = s + extra
    low, high = wilson_interval(s, n, z)
    if n == 0:
        assert (low, high) == (0.0, 1.0)
        return
    p = s / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert low == pytest.approx(max(0.0, centre - half), abs=1e-12)
    assert high == pytest.approx(min(1.0, centre + half), abs=1e-12)
    assert 0.0 <= low <= p <= high <= 1.0


def test_wilson_interval_rejects_impossible_counts() -> None:
    with pytest.raises(ValueError):
        wilson_interval(5, 3)


def test_wasserstein_iqr_divides_by_the_reference_scale() -> None:
    edges = np.array([0.0, 1.0, 2.0, 3.0])
    ref, cur = np.array([0, 5, 5, 5, 0]), np.array([0, 0, 5, 5, 5])
    # Bins 1..3 sit at 1, 2, 3 and the top bin at upper = 4: every third of the mass moves one unit.
    raw = wasserstein_binned(ref, cur, edges, 0.0, 4.0)
    assert raw == pytest.approx(1.0)
    assert wasserstein_iqr(ref, cur, edges, 0.0, 4.0, scale=2.0) == pytest.approx(0.5)
    assert binned_robust_scale(ref, edges, 0.0, 4.0) == pytest.approx(2.0)  # quartiles at 1 and 3
    assert wasserstein_iqr(ref, cur, edges, 0.0, 4.0) == pytest.approx(0.5)


def test_wasserstein_outer_bins_sit_at_the_bounds_and_edges_widen_them() -> None:
    # Half the window beyond the last edge: its mass sits at `upper`.
    assert wasserstein_binned([0, 10, 0], [0, 5, 5], [0.0, 1.0], 0.0, 11.0) == pytest.approx(5.0)
    # A business edge below `lower` widens the range instead of producing a negative width.
    assert wasserstein_binned([10, 0, 0], [0, 10, 0], [0.0, 1.0], 0.5, 1.0) == pytest.approx(1.0)


def test_robust_scale_falls_back_when_the_iqr_is_zero() -> None:
    rng = np.random.default_rng(1)
    normal = rng.normal(0, 2, 200_000)
    assert robust_scale(normal) == pytest.approx(2 * NORMAL_IQR_PER_SD, rel=0.02)
    flag = (rng.random(100_000) < 0.1).astype(float)  # IQR 0: use the IQR-equivalent of the sd
    assert robust_scale(flag) == pytest.approx(NORMAL_IQR_PER_SD * flag.std(), rel=1e-9)
    assert robust_scale(np.full(10, 7.0)) == 1.0
    edges = quantile_edges(normal)
    counts = histogram_counts(normal, edges)[0]
    binned = binned_robust_scale(counts, edges, float(normal.min()), float(normal.max()))
    assert binned == pytest.approx(robust_scale(normal), rel=0.1)


@pytest.mark.parametrize(
    ("ref", "cur"),
    [([1, 2], [1, 2, 3]), ([1, -1], [1, 1]), ([0, 0], [1, 1]), ([1, np.nan], [1, 1]), ([], [])],
)
def test_statistics_reject_bad_counts(ref: list[float], cur: list[float]) -> None:
    for statistic in (psi, js_distance, ks_binned, linf):
        with pytest.raises(ValueError):
            statistic(ref, cur)


# ---------------------------------------------------------------------------------------------------------
# Counting categories and building edges
# ---------------------------------------------------------------------------------------------------------


def test_category_counts_puts_unknown_values_in_other_and_nulls_last() -> None:
    values = ["ecom", "pos", None, np.nan, "atm", "ecom", pd.NA, 7]
    assert category_counts(values, ["ecom", "pos"]).tolist() == [2, 1, 2, 3]
    assert category_counts(pd.Series(values, dtype=object), []).tolist() == [5, 3]
    with pytest.raises(ValueError):
        category_counts(values, ["ecom", "ecom"])


@given(st.lists(st.one_of(tied_values, free_values, st.just(math.nan)), max_size=300))
@settings(max_examples=EXAMPLES, deadline=None)
def test_quantile_edges_are_sorted_unique_finite(values: list[float]) -> None:
    edges = quantile_edges(values, extra_edges=[0.0, 1.0])
    assert np.all(np.isfinite(edges))
    assert np.all(np.diff(edges) > 0)
    assert {0.0, 1.0} <= set(edges.tolist())
    finite = [v for v in values if math.isfinite(v)]
    if finite:
        counts = histogram_counts(finite, edges)[0]
        assert counts[0] == 0 and counts[-1] == 0  # the outer bins are out-of-range only


def test_quantile_edges_isolate_heavy_ties_and_keep_resolution_above_them() -> None:
    rng = np.random.default_rng(2)
    # A zero-inflated count (terminal_tx_count-like): 95 % zeros, then a long tail.
    values = np.where(rng.random(100_000) < 0.95, 0.0, rng.geometric(0.1, 100_000).astype(float))
    edges = quantile_edges(values)
    counts = histogram_counts(values, edges)[0]
    zero_bin = int(np.searchsorted(edges, 0.0))
    assert counts[zero_bin] == np.count_nonzero(values == 0)  # the atom has its own bin
    assert np.count_nonzero(counts) >= 15  # and the 5 % above it still get ~ventiles
    assert quantile_edges(np.full(50, 3.0)).tolist() == [np.nextafter(3.0, -np.inf), 3.0]
    assert quantile_edges([np.nan, np.inf]).tolist() == []
    flag_edges = quantile_edges((rng.random(1000) < 0.2).astype(float))
    assert histogram_counts([0.0, 1.0, 0.5], flag_edges)[0].tolist() == [0, 1, 2, 0]


# ---------------------------------------------------------------------------------------------------------
# Registry conformance: every statistic, one suite
# ---------------------------------------------------------------------------------------------------------


def _random_pair(seed: int, bins: int = 12) -> BinnedPair:
    rng = np.random.default_rng(seed)
    edges = np.sort(rng.choice(np.arange(-50, 50), bins - 1, replace=False)).astype(float)
    ref = rng.integers(0, 100, bins).astype(float)
    cur = rng.integers(0, 100, bins).astype(float)
    ref[0] += 1  # never empty
    cur[-1] += 1
    return BinnedPair(ref, cur, edges, float(edges[0]) - 5, float(edges[-1]) + 5, scale=7.0)


@pytest.mark.parametrize("name", sorted(ALL_STATS))
def test_registered_statistic_conformance(name: str) -> None:
    statistic = ALL_STATS[name]
    assert statistic.__doc__ and statistic.__doc__.strip()
    pairs = [_random_pair(seed) for seed in range(20)]
    for pair in pairs:
        value = evaluate(name, pair)
        assert math.isfinite(value) and value >= 0
        swapped = BinnedPair(pair.cur, pair.ref, pair.edges, pair.lower, pair.upper, pair.scale)
        assert evaluate(name, swapped) == pytest.approx(value, rel=1e-12, abs=1e-15)
        same = BinnedPair(pair.ref, pair.ref, pair.edges, pair.lower, pair.upper, pair.scale)
        assert evaluate(name, same) == 0.0
    # Vectorised over stacked counts: one call for B pairs equals B calls.
    stacked = BinnedPair(
        np.stack([p.ref for p in pairs]), np.stack([p.cur for p in pairs]), pairs[0].edges, -60.0, 60.0, 7.0
    )
    one_by_one = [evaluate(name, BinnedPair(p.ref, p.cur, pairs[0].edges, -60.0, 60.0, 7.0)) for p in pairs]
    np.testing.assert_allclose(statistic(stacked), one_by_one, rtol=1e-12, atol=1e-15)


def test_registries_cover_the_documented_statistics() -> None:
    assert set(NUMERIC_STATS) == {"psi", "js", "ks", "wasserstein_iqr"}
    assert set(CATEGORICAL_STATS) == {"psi", "js", "linf"}
    with pytest.raises(KeyError):
        evaluate("chi2", _random_pair(0))
    with pytest.raises(ValueError):  # Wasserstein needs the numeric geometry
        evaluate("wasserstein_iqr", BinnedPair(np.ones(3), np.ones(3)))


# ---------------------------------------------------------------------------------------------------------
# Why quantile edges with tail and business edges: card testing on skewed amounts
# ---------------------------------------------------------------------------------------------------------


def test_card_testing_is_missed_by_equal_width_psi_and_caught_by_quantile_tail_and_business_edges() -> None:
    rng = np.random.default_rng(42)
    n_ref, n_cur = 100_000, 10_000
    reference = rng.lognormal(3.5, 1.0, n_ref)  # median ~33, long tail into the thousands
    assert reference.max() > 1_000
    # Card testing: 5 % of traffic becomes micro-amounts between 0.5 and 2.0.
    testing = rng.random(n_cur) < 0.05
    window = np.where(testing, rng.uniform(0.5, 2.0, n_cur), rng.lognormal(3.5, 1.0, n_cur))

    equal_width = np.linspace(reference.min(), reference.max(), 11)[1:-1]
    ref_ew, cur_ew = histogram_counts(reference, equal_width)[0], histogram_counts(window, equal_width)[0]
    psi_ew = psi(ref_ew, cur_ew)
    missed = decide("psi", psi_ew, n_ref, n_cur, null=NoDriftBootstrap(ref_ew))
    assert psi_ew < 0.01  # the micro-amounts land in the first bin with ~90 % of all traffic
    assert not missed.drifted

    edges = quantile_edges(reference, extra_edges=(0.0, 1.0, 5.0))
    ref_q, cur_q = histogram_counts(reference, edges)[0], histogram_counts(window, edges)[0]
    psi_q = psi(ref_q, cur_q)
    caught = decide("psi", psi_q, n_ref, n_cur, null=NoDriftBootstrap(ref_q))
    assert caught.drifted
    assert psi_q > caught.floor and psi_q > caught.no_drift_quantile
    assert caught.p_value < 1e-6
    # The same edges stay quiet on a no-drift window of the same size.
    calm = histogram_counts(rng.lognormal(3.5, 1.0, n_cur), edges)[0]
    assert not decide("psi", psi(ref_q, calm), n_ref, n_cur, null=NoDriftBootstrap(ref_q)).drifted
