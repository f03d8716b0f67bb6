"""Drift thresholds that know the sample size: a practical floor AND the no-drift 99th percentile.

A fixed cut-off ("PSI > 0.2") false-alarms on 100-row windows, where sampling noise alone moves PSI past
0.4, and a textbook p-value flags everything at a million rows, where a 0.2 % shift is "significant". So a
statistic drifts only when both gates open (`decide`):

- it is above a practical floor (`PracticalFloors`): a change big enough to matter whatever the traffic;
- it is above what no drift produces for these sample sizes: the 99th percentile of the statistic when the
  reference and the window are drawn from the same distribution. For PSI in its asymptotic regime that is
  a closed form (`psi_no_drift_quantile`); otherwise a seeded multinomial bootstrap from the reference
  counts (`NoDriftBootstrap`), cached per window-size bucket so an hourly monitor does not re-simulate.

A feature has several statistics; `decide_feature` splits the 1 % between them (Bonferroni), since a
feature flagged when any of four statistics fires at its own p99 false-alarms up to ~1.5 % on 100-row
windows. Across features the p-values go through Benjamini-Hochberg (`benjamini_hochberg`, `apply_fdr`),
so twenty features checked every hour do not add up to twenty chances of a false alarm.

Which gate binds: at ~100 rows the no-drift percentile (PSI p99 ~ 0.44 with 26 bins); from ~1 000 rows the
floor (the p99 falls as 1/n for PSI and 1/sqrt(n) for the distances), which is what keeps big windows quiet.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from types import ModuleType
from typing import Literal, TypeVar

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from monitor.stats import ALL_STATS, PSI_SMOOTHING, BinnedPair, FloatArray, binned_robust_scale, evaluate

__all__ = [
    "DEFAULT_FLOORS",
    "DEFAULT_Q",
    "DriftDecision",
    "FeatureDecision",
    "NoDriftBootstrap",
    "PracticalFloors",
    "apply_fdr",
    "benjamini_hochberg",
    "binomial_upper_tail",
    "bootstrap_for",
    "decide",
    "decide_feature",
    "n_cur_bucket",
    "psi_closed_form_applies",
    "psi_no_drift_quantile",
    "psi_p_value",
]

DEFAULT_Q = 0.99  # the no-drift percentile a statistic must exceed: 1 % false alarms per feature and window

# Cochran's rule for chi-square approximations asks every bin for >= 5 expected counts; a 99th percentile
# sits further in the tail than the 95th the rule was made for, and a 0/1 flag at 5 % in a 100-row window
# (5 expected) has a lattice p99 the chi-square misses, so we ask for 10. Below that, PSI's null
# distribution is simulated instead.
MIN_EXPECTED_PER_BIN = 10.0

# Tail shape for extrapolating bootstrap p-values beyond the largest draw: PSI is a chi-square-like
# quadratic form (exponential tail in PSI itself); the distances are square roots of such forms or, for
# KS, a Gaussian supremum, whose tails are exponential in the square of the statistic.
TAIL_POWER: Mapping[str, float] = {"psi": 1.0, "js": 2.0, "ks": 2.0, "wasserstein_iqr": 2.0, "linf": 2.0}


class PracticalFloors(BaseModel):
    """Smallest effect worth an alert, per statistic, whatever the sample size.

    These are the gate that keeps million-row windows quiet: there the no-drift percentile is tiny, and
    only an effect someone would act on should page.
    """

    model_config = ConfigDict(frozen=True)

    # Credit-scoring rule of thumb (Siddiqi; also the fraud and risk vendors): PSI < 0.1 "no significant
    # change", 0.1-0.25 "moderate", > 0.25 "major". We alert from "moderate": the agent triages before a
    # human looks, so a moderate shift is worth a look, not a page. (A 0.32 sd mean shift of a normal.)
    psi: float = Field(0.1, gt=0, description="population stability index")
    # Evidently's default drift threshold for the JS distance is 0.1; a 0.25 sd mean shift of a normal
    # feature gives about that with ~25 quantile bins.
    js: float = Field(0.1, gt=0, description="Jensen-Shannon distance, base 2")
    # A 10-point gap between the CDFs somewhere: a tenth of the traffic changed side of some value. A
    # 0.25 sd mean shift of a normal gives 0.1.
    ks: float = Field(0.1, gt=0, description="largest CDF gap over the bin edges")
    # Evidently's normed Wasserstein default is 0.1 standard deviations; 0.1 IQR (~0.135 sd for a normal)
    # is the same scale, robust to the long tail of amounts.
    # Raised from Evidently's 0.1 to 0.2 IQR: amounts move by 10-15 % around holidays and paydays, and a
    # fraud model whose features are relative to each card's own habits does not care; a fifth of the IQR
    # (a ~25 % change in typical basket size, or a tail that moved) is where it starts to matter.
    wasserstein_iqr: float = Field(0.2, gt=0, description="Wasserstein-1 distance over the reference IQR")
    # A category gaining or losing 5 points of traffic (channel e-commerce 30 % -> 35 %): small enough to
    # catch a new fraud pattern concentrating on one merchant category, large enough to ignore day-of-week
    # wobble in the mix.
    linf: float = Field(0.05, gt=0, description="largest change in one category's share")

    def floor(self, statistic: str) -> float:
        """The floor for `statistic`.

        Raises:
            KeyError: No floor is defined for that statistic.
        """
        values = self.model_dump()
        if statistic not in values:
            raise KeyError(f"no practical floor for statistic {statistic!r}")
        return float(values[statistic])


DEFAULT_FLOORS = PracticalFloors()


# ---------------------------------------------------------------------------------------------------------
# PSI: closed form
# ---------------------------------------------------------------------------------------------------------


def _sampling_scale(n_ref: int, n_cur: int) -> float:
    if n_ref <= 0 or n_cur <= 0:
        raise ValueError(f"sample sizes must be positive, got n_ref={n_ref}, n_cur={n_cur}")
    return 1.0 / n_ref + 1.0 / n_cur


def _empty_bin_term(n_ref: int, n_cur: int, total_bins: int, smoothing: float) -> float:
    """PSI contributed by one bin empty in both samples: the smoothing alone makes it non-zero."""
    if smoothing <= 0:
        return 0.0
    q = smoothing / (n_cur + smoothing * total_bins)
    p = smoothing / (n_ref + smoothing * total_bins)
    return (q - p) * math.log(q / p)


@dataclass(frozen=True)
class _PsiNull:
    """PSI under no drift ~ offset + scale * chi2(dof)."""

    offset: float
    scale: float
    dof: float


def _psi_null(n_ref: int, n_cur: int, bins: int, empty_bins: int, smoothing: float) -> _PsiNull:
    if bins < 1 or empty_bins < 0:
        raise ValueError(f"need bins >= 1 and empty_bins >= 0, got {bins}, {empty_bins}")
    offset = empty_bins * _empty_bin_term(n_ref, n_cur, bins + empty_bins, smoothing)
    # An empty reference bin most likely holds < 1/n_ref of the population (the bin above the maximum holds
    # 1/(n_ref + 1) on average): a small window leaves it empty too (the offset), but from n_cur ~ n_ref on
    # it fills and fluctuates like any bin, so it earns up to one degree of freedom.
    dof = bins - 1 + empty_bins * min(1.0, n_cur / n_ref)
    return _PsiNull(offset, _sampling_scale(n_ref, n_cur), dof)


def psi_no_drift_quantile(
    n_ref: int,
    n_cur: int,
    bins: int,
    q: float = DEFAULT_Q,
    *,
    empty_bins: int = 0,
    smoothing: float = PSI_SMOOTHING,
) -> float:
    """The q-quantile of PSI under no drift, in closed form.

    PSI is the symmetrised KL divergence; to second order it is sum_i (q_i - p_i)^2 / pi_i, and with
    both samples multinomial from the same pi, (q_i - p_i) has variance pi_i (1 - pi_i) (1/n_ref + 1/n_cur),
    so PSI ~ (1/n_ref + 1/n_cur) * chi2(bins - 1) (the Pearson statistic of a 2 x bins table), with `bins`
    the bins the reference populates. A bin the reference leaves empty (below the minimum, above the
    maximum, a business edge nobody reaches) is different: in a small window it stays empty and adds a
    fixed term, because the smoothing makes q = s / (n_cur + s m) differ from p = s / (n_ref + s m) there
    (without that term a 100-row window with 4 empty bins false-alarms ~13 %); in a window as large as the
    reference it fills like any bin, so it adds min(1, n_cur / n_ref) degrees of freedom.

    Accuracy (simulated in tests/test_thresholds.py, both samples redrawn): realised false alarms at the
    p99 are 0.2-1.2 % for windows of 100 to 1e6 rows on quantile-binned profiles, conservative (~0.1-0.8
    %) once n_cur >= n_ref, where the practical floor binds anyway. The approximation breaks when many
    bins hold a handful of reference rows (a long categorical tail), hence `psi_closed_form_applies`.

    Args:
        n_ref: Reference rows (non-null).
        n_cur: Window rows (non-null).
        bins: Bins the reference populates (>= 1).
        q: Quantile level.
        empty_bins: Bins empty in the reference.
        smoothing: The pseudo-count `monitor.stats.psi` uses.

    Returns:
        The no-drift q-quantile of PSI.
    """
    null = _psi_null(n_ref, n_cur, bins, empty_bins, smoothing)
    if null.dof <= 0:  # nothing can fluctuate: PSI is the fixed offset
        return null.offset
    return float(null.offset + null.scale * _scipy_stats().chi2.ppf(q, null.dof))


def psi_p_value(
    psi: float,
    n_ref: int,
    n_cur: int,
    bins: int,
    *,
    empty_bins: int = 0,
    smoothing: float = PSI_SMOOTHING,
) -> float:
    """P(PSI >= psi) under no drift, from the closed form of `psi_no_drift_quantile`.

    Args:
        psi: Observed PSI.
        n_ref: Reference rows.
        n_cur: Window rows.
        bins: Bins the reference populates.
        empty_bins: Bins empty in the reference.
        smoothing: The pseudo-count `monitor.stats.psi` uses.

    Returns:
        The p-value in [0, 1].
    """
    null = _psi_null(n_ref, n_cur, bins, empty_bins, smoothing)
    if null.dof <= 0:
        return 1.0 if psi <= null.offset * (1 + 1e-9) else 0.0
    return float(_scipy_stats().chi2.sf(max(psi - null.offset, 0.0) / null.scale, null.dof))


def psi_closed_form_applies(ref_counts: npt.ArrayLike, n_cur: int) -> bool:
    """Whether `psi_no_drift_quantile` can be trusted for this reference and window size.

    True when every bin the reference populates expects >= 10 rows in both the reference and the window
    (`MIN_EXPECTED_PER_BIN`, Cochran's rule made stricter for a p99). With the default quantile edges the
    smallest bin holds 0.1 % of the reference, so windows of >= 10 000 rows use the closed form and
    smaller ones the bootstrap.
    """
    counts = np.asarray(ref_counts, dtype=np.float64)
    populated = counts[counts > 0]
    if populated.size == 0:
        return False
    smallest = float(populated.min())
    share = smallest / float(counts.sum())
    return smallest >= MIN_EXPECTED_PER_BIN and n_cur * share >= MIN_EXPECTED_PER_BIN


# ---------------------------------------------------------------------------------------------------------
# Bootstrap for everything else
# ---------------------------------------------------------------------------------------------------------


def n_cur_bucket(n_cur: int, per_decade: int = 8) -> tuple[int, int]:
    """Log-scale bucket of a window size and the size simulated for it.

    The simulated size is the bucket's lower end (<= n_cur): smaller samples give larger no-drift
    statistics, so a window is never judged against a quantile that is too low. With 8 buckets per decade
    the lower end is at most 25 % below n_cur, which moves a 1/sqrt(n) statistic's quantile by <= 12 %.

    Returns:
        (bucket index, simulated window size).
    """
    if n_cur <= 0:
        raise ValueError(f"window size must be positive, got {n_cur}")
    bucket = math.floor(math.log10(n_cur) * per_decade + 1e-9)
    size = max(1, min(n_cur, math.floor(10 ** (bucket / per_decade) + 1e-6)))
    return bucket, size


@functools.lru_cache(maxsize=64)
def _upper_order_index(n_boot: int, q: float, confidence: float) -> int:
    """0-based index into the sorted draws of an upper confidence bound for their q-quantile.

    The k-th smallest of B draws is >= the true q-quantile when fewer than k draws fall below it, and that
    count is Binomial(B, q); the smallest k with P(Binomial(B, q) <= k - 1) >= confidence is the bound.
    """
    k = int(_scipy_stats().binom.ppf(confidence, n_boot, q)) + 1
    return min(k, n_boot) - 1


class NoDriftBootstrap:
    """No-drift distributions of the drift statistics, simulated from one reference's counts.

    For a window of n_cur rows it draws B pairs (a reference sample of n_ref rows and a window of n_cur
    rows, both multinomial from the reference proportions), computes every statistic on each pair at
    once (the statistics are vectorised over the B rows), and keeps the sorted values. Drawing the
    reference too matters: the reference is itself a sample, and at n_cur >= n_ref its noise dominates.

    The no-drift quantile is an upper 99 % confidence bound of the q-quantile (an order statistic of the
    draws, `_upper_order_index`; for q = 0.99 and B = 2000 the 10th largest of 2000), not the plain
    empirical quantile: the plain p99 is right on average, so about half the seeds let more than 1 % of
    no-drift windows through (measured on 100-row windows: 0.4-1.1 % depending on the seed); with the
    bound it was 0.2-0.8 % (mean 0.5 %) over 10 seeds, 3 feature shapes and 4 statistics. B = 2000
    (~20 ms per statistic and window-size bucket with 26 bins) instead of a few hundred keeps that bound close to the
    p99 and gives p-values down to 1/2001, which Benjamini-Hochberg across ~20 features needs; beyond the
    largest draw the p-value is extrapolated with an exponential tail (`TAIL_POWER`).

    Results are cached per window-size bucket (`n_cur_bucket`): an hourly monitor simulates once per
    bucket for the life of the reference. Draws are seeded by (seed, bucket), so they do not depend on the
    order of calls.
    """

    def __init__(
        self,
        ref_counts: npt.ArrayLike,
        *,
        edges: npt.ArrayLike | None = None,
        lower: float | None = None,
        upper: float | None = None,
        scale: float | None = None,
        n_boot: int = 2000,
        seed: int = 0,
        buckets_per_decade: int = 8,
        confidence: float = 0.99,
    ) -> None:
        """Prepare the bootstrap for one reference profile.

        Args:
            ref_counts: Reference counts per bin (categories for a categorical field, NULL slot dropped).
            edges: Numeric features: the bin edges (needed for Wasserstein).
            lower: Numeric features: position of bin 0's mass (see `monitor.stats.wasserstein_binned`).
            upper: Numeric features: position of the last bin's mass.
            scale: Reference spread for `wasserstein_iqr`; estimated from the counts when None.
            n_boot: Bootstrap pairs per window-size bucket.
            seed: Base seed; the draws for a bucket are seeded by (seed, bucket).
            buckets_per_decade: Resolution of the window-size cache.
            confidence: Confidence of the upper bound used as the no-drift quantile.
        """
        counts = np.asarray(ref_counts, dtype=np.float64)
        if counts.ndim != 1 or counts.size == 0 or np.any(counts < 0) or counts.sum() <= 0:
            raise ValueError(
                "reference counts must be a non-empty, non-negative vector with a positive total"
            )
        if n_boot < 100:
            raise ValueError(f"n_boot must be >= 100 for a 99th percentile, got {n_boot}")
        self.ref_counts = counts
        self.n_ref = round(float(counts.sum()))
        self.proportions = counts / counts.sum()
        self.n_boot = n_boot
        self.seed = seed
        self.buckets_per_decade = buckets_per_decade
        self.confidence = confidence
        edge_array = None if edges is None else np.asarray(edges, dtype=np.float64)
        if edge_array is not None and lower is not None and upper is not None and scale is None:
            scale = binned_robust_scale(counts, edge_array, lower, upper)
        # The template carries the geometry; each simulation replaces its counts.
        self._template = BinnedPair(counts, counts, edge_array, lower, upper, scale)
        self._cache: dict[tuple[str, int], FloatArray] = {}

    def _draw_pairs(self, bucket: int, size: int) -> BinnedPair:
        rng = np.random.default_rng([self.seed, bucket])
        ref = rng.multinomial(self.n_ref, self.proportions, size=self.n_boot).astype(np.float64)
        cur = rng.multinomial(size, self.proportions, size=self.n_boot).astype(np.float64)
        return replace(self._template, ref=ref, cur=cur)

    def draws(self, statistic: str, n_cur: int) -> FloatArray:
        """The sorted no-drift draws of `statistic` for a window of `n_cur` rows (cached per bucket)."""
        if statistic not in ALL_STATS:
            raise KeyError(f"unknown drift statistic {statistic!r}; known: {sorted(ALL_STATS)}")
        bucket, size = n_cur_bucket(n_cur, self.buckets_per_decade)
        key = (statistic, bucket)
        if key not in self._cache:
            self._cache[key] = np.sort(ALL_STATS[statistic](self._draw_pairs(bucket, size)))
        return self._cache[key]

    def quantile(self, statistic: str, n_cur: int, q: float = DEFAULT_Q) -> float:
        """No-drift q-quantile of `statistic` for a window of `n_cur` rows (upper confidence bound)."""
        return float(self.draws(statistic, n_cur)[_upper_order_index(self.n_boot, q, self.confidence)])

    def p_value(self, statistic: str, value: float, n_cur: int) -> float:
        """P(statistic >= value) under no drift, for a window of `n_cur` rows.

        (1 + #draws >= value) / (B + 1), the usual Monte Carlo p-value (never 0, slightly conservative);
        beyond the largest draw, that 1 / (B + 1) times an exponential tail fitted to the top 1 % of the
        draws on the scale value ** TAIL_POWER, so strong drift still ranks in Benjamini-Hochberg. Those
        extrapolated values (1e-30 for a blatant shift) order the features correctly; read them as "far
        beyond anything no drift produced", not as calibrated probabilities.
        """
        draws = self.draws(statistic, n_cur)
        at_or_above = self.n_boot - int(np.searchsorted(draws, value, side="left"))
        if at_or_above > 0:
            return (1 + at_or_above) / (self.n_boot + 1)
        return _tail_p_value(draws, value, TAIL_POWER.get(statistic, 2.0)) / (self.n_boot + 1)


def _tail_p_value(sorted_draws: FloatArray, value: float, power: float) -> float:
    """Survival beyond the largest draw, relative to it, with an exponential excess over the top 1 %."""
    top = max(2, sorted_draws.size // 100)
    scaled = sorted_draws[-top:] ** power
    mean_excess = float(np.mean(scaled - scaled[0]))
    if mean_excess <= 0:  # the top draws are all equal (a discrete statistic): nothing lies beyond them
        return 0.0
    return math.exp(-(value**power - float(scaled[-1])) / mean_excess)


# ---------------------------------------------------------------------------------------------------------
# Decisions
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DriftDecision:
    """One statistic of one feature for one window, with the numbers the evidence bundle shows."""

    statistic: str
    value: float
    drifted: bool  # value > floor AND value > no_drift_quantile (AND, after apply_fdr, BH rejects)
    threshold: float  # max(floor, no_drift_quantile): what the value had to exceed
    p_value: float  # P(statistic >= value) under no drift for these sample sizes
    floor: float
    no_drift_quantile: float
    q: float
    n_ref: int
    n_cur: int
    method: Literal["closed_form", "bootstrap"]
    suppressed_by_fdr: bool = False


def _psi_decision_null(
    value: float, n_ref: int, n_cur: int, q: float, null: NoDriftBootstrap | None, bins: int | None
) -> tuple[float, float, Literal["closed_form", "bootstrap"]]:
    if null is not None and not psi_closed_form_applies(null.ref_counts, n_cur):
        return null.quantile("psi", n_cur, q), null.p_value("psi", value, n_cur), "bootstrap"
    if null is not None:
        populated = int(np.count_nonzero(null.ref_counts))
        empty = null.ref_counts.size - populated
    elif bins is not None:
        populated, empty = bins, 0
    else:
        raise ValueError("psi needs either a NoDriftBootstrap or the number of bins")
    quantile = psi_no_drift_quantile(n_ref, n_cur, populated, q, empty_bins=empty)
    return quantile, psi_p_value(value, n_ref, n_cur, populated, empty_bins=empty), "closed_form"


@functools.lru_cache(maxsize=128)
def _cached_bootstrap(
    ref_counts: bytes, edges: bytes | None, lower: float | None, upper: float | None, scale: float | None
) -> NoDriftBootstrap:
    counts = np.frombuffer(ref_counts, dtype=np.float64)
    edge_array = None if edges is None else np.frombuffer(edges, dtype=np.float64)
    return NoDriftBootstrap(counts, edges=edge_array, lower=lower, upper=upper, scale=scale)


def bootstrap_for(pair: BinnedPair) -> NoDriftBootstrap:
    """The (process-wide cached) default `NoDriftBootstrap` of a pair's reference counts and geometry.

    Checks that build a `BinnedPair` per window get the same bootstrap, and so the same cached draws,
    every time they compare against the same reference.
    """
    if pair.ref.ndim != 1:
        raise ValueError("bootstrap_for needs a single (1-D) reference count vector")
    edges = None if pair.edges is None else pair.edges.tobytes()
    return _cached_bootstrap(pair.ref.tobytes(), edges, pair.lower, pair.upper, pair.scale)


def decide(
    stat_name: str,
    value: float,
    n_ref: int | BinnedPair,
    n_cur: int | None = None,
    *,
    null: NoDriftBootstrap | None = None,
    bins: int | None = None,
    floors: PracticalFloors = DEFAULT_FLOORS,
    q: float = DEFAULT_Q,
) -> DriftDecision:
    """Whether one statistic shows drift: above its practical floor AND above the no-drift q-quantile.

    PSI uses the closed form when `psi_closed_form_applies` (or when only `bins` is known), else the
    bootstrap; every other statistic uses the bootstrap. Two call forms:
    ``decide(name, value, n_ref, n_cur, null=bootstrap)``, or ``decide(name, value, pair)`` where the
    sizes come from the pair's totals and the bootstrap from `bootstrap_for(pair)`.

    Args:
        stat_name: A registered statistic (`monitor.stats.ALL_STATS`).
        value: Its value for this window.
        n_ref: Reference rows (non-null; must match `null` when given), or the compared `BinnedPair`.
        n_cur: Window rows (non-null); omitted when `n_ref` is a pair.
        null: The reference's no-drift bootstrap (required except for PSI with `bins`, or with a pair).
        bins: PSI without a bootstrap: the number of bins, all assumed populated by the reference.
        floors: Practical floors.
        q: Quantile level of the no-drift gate.

    Returns:
        The decision and the numbers behind it.
    """
    if isinstance(n_ref, BinnedPair):
        pair = n_ref
        n_ref, n_cur = round(float(pair.ref.sum())), round(float(pair.cur.sum()))
        null = null if null is not None else bootstrap_for(pair)
    if n_cur is None:
        raise ValueError("n_cur is required unless a BinnedPair is given")
    if null is not None and null.n_ref != n_ref:
        raise ValueError(f"n_ref={n_ref} does not match the bootstrap's reference ({null.n_ref} rows)")
    floor = floors.floor(stat_name)
    method: Literal["closed_form", "bootstrap"]
    if stat_name == "psi":
        quantile, p_value, method = _psi_decision_null(value, n_ref, n_cur, q, null, bins)
    elif null is None:
        raise ValueError(f"{stat_name} needs a NoDriftBootstrap of the reference")
    else:
        quantile, p_value = null.quantile(stat_name, n_cur, q), null.p_value(stat_name, value, n_cur)
        method = "bootstrap"
    threshold = max(floor, quantile)
    return DriftDecision(
        statistic=stat_name,
        value=float(value),
        drifted=bool(value > threshold),
        threshold=threshold,
        p_value=p_value,
        floor=floor,
        no_drift_quantile=quantile,
        q=q,
        n_ref=n_ref,
        n_cur=n_cur,
        method=method,
    )


def benjamini_hochberg(p_values: npt.ArrayLike, q: float = 1 - DEFAULT_Q) -> npt.NDArray[np.bool_]:
    """Benjamini-Hochberg step-up: which hypotheses to reject at false discovery rate q.

    Sort the m p-values, find the largest rank k with p_(k) <= k q / m, reject the k smallest. With one
    feature it is the plain p <= q test; with twenty it asks the strongest feature for p <= q / 20 but
    lets a broad shift (many small p-values) through, which Bonferroni would not.

    Args:
        p_values: One p-value per hypothesis.
        q: The false discovery rate.

    Returns:
        A boolean mask, True where rejected, in the input order.
    """
    p = np.asarray(p_values, dtype=np.float64).ravel()
    if np.any(np.isnan(p)) or np.any((p < 0) | (p > 1)):
        raise ValueError("p-values must lie in [0, 1]")
    rejected = np.zeros(p.size, dtype=bool)
    if p.size == 0:
        return rejected
    order = np.argsort(p, kind="stable")
    passing = np.flatnonzero(p[order] <= q * np.arange(1, p.size + 1) / p.size)
    if passing.size:
        rejected[order[: passing[-1] + 1]] = True
    return rejected


@dataclass(frozen=True)
class FeatureDecision:
    """All statistics of one feature for one window, combined so the feature false-alarms <= 1 - q."""

    drifted: bool  # some statistic passed its floor and its Bonferroni-adjusted no-drift quantile
    p_value: float  # min p-value times the number of statistics (Bonferroni), capped at 1: the BH input
    decisions: tuple[DriftDecision, ...]
    suppressed_by_fdr: bool = False


def decide_feature(
    pair: BinnedPair,
    statistics: Iterable[str],
    *,
    null: NoDriftBootstrap | None = None,
    floors: PracticalFloors = DEFAULT_FLOORS,
    q: float = DEFAULT_Q,
) -> FeatureDecision:
    """Decide drift for one feature from several statistics, keeping the feature's false alarms <= 1 - q.

    Each statistic alone false-alarms <= 1 - q, but a feature flagged when any of its four statistics
    fires would false-alarm up to four times that (measured: ~1.8 % on 100-row windows with q = 0.99).
    So each statistic is tested at level (1 - q) / k (Bonferroni over the k statistics; they are
    positively correlated, so the union stays well below 1 - q), and the feature's p-value for
    Benjamini-Hochberg across features is min(1, k * min p). Power is barely affected: from ~1 000 rows
    the floors, not the quantiles, bind.

    Args:
        pair: The feature's reference and window counts (1-D).
        statistics: Names of registered statistics, e.g. ``NUMERIC_STATS`` or ``CATEGORICAL_STATS``.
        null: The reference's bootstrap; `bootstrap_for(pair)` when None.
        floors: Practical floors.
        q: The feature-level no-drift quantile.

    Returns:
        The combined decision with each statistic's decision.
    """
    names = list(statistics)
    if not names:
        raise ValueError("at least one statistic is needed")
    null = null if null is not None else bootstrap_for(pair)
    n_ref, n_cur = round(float(pair.ref.sum())), round(float(pair.cur.sum()))
    per_statistic_q = 1.0 - (1.0 - q) / len(names)
    decisions = tuple(
        decide(name, evaluate(name, pair), n_ref, n_cur, null=null, floors=floors, q=per_statistic_q)
        for name in names
    )
    p_value = min(1.0, len(names) * min(d.p_value for d in decisions))
    return FeatureDecision(any(d.drifted for d in decisions), p_value, decisions)


_Decision = TypeVar("_Decision", DriftDecision, FeatureDecision)


def apply_fdr(decisions: Sequence[_Decision], q: float = 1 - DEFAULT_Q) -> list[_Decision]:
    """Benjamini-Hochberg over a window's decisions (one per feature): drift must also survive it.

    Args:
        decisions: One decision per feature (`FeatureDecision`, or the `DriftDecision` alerted on).
        q: The false discovery rate.

    Returns:
        The decisions, in order, with `drifted` cleared and `suppressed_by_fdr` set where BH does not reject.
    """
    rejected = benjamini_hochberg([d.p_value for d in decisions], q)
    return [
        d if r or not d.drifted else replace(d, drifted=False, suppressed_by_fdr=True)
        for d, r in zip(decisions, rejected, strict=True)
    ]


def binomial_upper_tail(hits: int, rows: int, share: float) -> float:
    """P(X >= hits) for X ~ Binomial(rows, share): how often the reference's share puts this many of
    ``rows`` (or more) in one place by chance."""
    if hits <= 0:
        return 1.0
    return float(_scipy_stats().binom.sf(hits - 1, rows, min(max(share, 0.0), 1.0)))


def _scipy_stats() -> ModuleType:
    """``scipy.stats``, imported on the first threshold computed: it takes ~1 s to import, and everything
    that merely imports the monitor (the CLI's read commands, chat, the service's start) would pay it."""
    from scipy import stats

    return stats
