"""Drift statistics on binned counts: the monitor never rescans raw rows to compare two distributions.

The reference is profiled once per model version into bin edges (numeric features) or a top-K category list
(categorical fields); each window of live traffic is then counted in one pass (`histogram_counts`,
`category_counts`) into count vectors that add up across windows (24 hourly vectors sum to the daily one).
Every statistic here takes two such count vectors, so a daily or weekly comparison costs a few hundred
floating-point operations whatever the traffic.

Bin convention, shared with the profile and the DuckDB counter: for sorted finite edges e_0 < ... < e_{k-1}
there are k + 1 bins, bin 0 = (-inf, e_0], bin j = (e_{j-1}, e_j], bin k = (e_{k-1}, +inf); i.e. a value x
lands in bin ``np.searchsorted(edges, x, side="left")``. Right-closed bins put an edge value in the bin it
closes, so when the edges are observed reference values (as `quantile_edges` makes them) a discrete feature
has every value alone on its edge, and the binned CDF is exact there. Nulls are counted apart: a rise in
nulls is a data-quality incident, not drift.

Statistics are vectorised row-wise: counts may be 1-D (one comparison) or stacked 2-D (B comparisons at
once, which is how `monitor.thresholds.NoDriftBootstrap` simulates their no-drift distribution). The
scalar functions (`psi`, `js_distance`, ...) wrap the row-wise ones for a single pair; the registries
`NUMERIC_STATS` and `CATEGORICAL_STATS` expose them behind one signature, ``statistic(pair) -> values``,
so checks and the conformance suite can loop over them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

__all__ = [
    "ALL_STATS",
    "CATEGORICAL_STATS",
    "DEFAULT_QUANTILES",
    "NUMERIC_STATS",
    "PSI_SMOOTHING",
    "BinnedPair",
    "Statistic",
    "binned_robust_scale",
    "category_counts",
    "evaluate",
    "histogram_counts",
    "js_distance",
    "js_statistic",
    "ks_binned",
    "ks_statistic",
    "linf",
    "linf_statistic",
    "psi",
    "psi_statistic",
    "quantile_edges",
    "robust_scale",
    "top_shifted_bins",
    "wasserstein_binned",
    "wasserstein_iqr",
    "wasserstein_iqr_statistic",
    "wilson_interval",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

# Additive smoothing for PSI: half a count per bin (Jeffreys' prior for a multinomial). Enough to keep an
# empty bin finite, small enough that it only matters for windows of a few hundred rows.
PSI_SMOOTHING = 0.5

# Reference quantiles used as edges: ventiles for the body, plus p0.1, p1, p99, p99.9 so a shift into the
# tails (card testing at micro-amounts, a burst of huge amounts) changes a bin that holds ~0.1 % of the
# reference instead of disappearing into a 5 % bin; 0 and 1 close the outer bins just below the reference
# minimum and at its maximum, so the outer bins hold only out-of-range values.
DEFAULT_QUANTILES: tuple[float, ...] = (
    0.0,
    0.001,
    0.01,
    *(round(0.05 * i, 2) for i in range(1, 20)),
    0.99,
    0.999,
    1.0,
)

# A value holding at least this share of the reference is an "atom" (0 for a zero-inflated count, both
# values of a flag): it gets a bin of its own and the quantiles are taken over the rest, else the edges
# of a feature that is 0 for 95 % of rows would collapse to a couple of bins.
ATOM_SHARE = 0.05

# IQR of a normal distribution in units of its standard deviation: the fallback scale for features with
# a zero IQR is the standard deviation times this, so the unit stays "IQR-equivalent".
NORMAL_IQR_PER_SD = 1.3489795003921634

_LN2 = math.log(2.0)


# ---------------------------------------------------------------------------------------------------------
# Input checks and proportions
# ---------------------------------------------------------------------------------------------------------


def _counts(counts: npt.ArrayLike, name: str) -> FloatArray:
    """Counts as a float array with at least one bin, finite and non-negative."""
    array = np.asarray(counts, dtype=np.float64)
    if array.ndim == 0 or array.shape[-1] == 0:
        raise ValueError(f"{name} counts must have at least one bin, got shape {array.shape}")
    if not np.all(np.isfinite(array)) or np.any(array < 0):
        raise ValueError(f"{name} counts must be finite and non-negative")
    return array


def _pair(ref: npt.ArrayLike, cur: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Reference and current counts, checked and broadcast to one shape (same bins, same stack)."""
    ref_array, cur_array = _counts(ref, "reference"), _counts(cur, "current")
    if ref_array.shape[-1] != cur_array.shape[-1]:
        raise ValueError(f"bin counts differ: reference {ref_array.shape[-1]}, current {cur_array.shape[-1]}")
    ref_b, cur_b = np.broadcast_arrays(ref_array, cur_array)
    return ref_b, cur_b


def _proportions(counts: FloatArray, smoothing: float = 0.0) -> FloatArray:
    """Row-wise proportions after adding `smoothing` to every bin.

    An empty window has no distribution; comparing it would silently report "no drift", so it raises.
    """
    if smoothing < 0:
        raise ValueError(f"smoothing must be >= 0, got {smoothing}")
    totals = counts.sum(axis=-1, keepdims=True)
    if np.any(totals <= 0):
        raise ValueError("counts must have a positive total (an empty window has no distribution)")
    return (counts + smoothing) / (totals + smoothing * counts.shape[-1])


def _edges(edges: npt.ArrayLike, bins: int) -> FloatArray:
    """Edges as a float array: finite, strictly increasing, one fewer than the bins."""
    array = np.asarray(edges, dtype=np.float64)
    if array.ndim != 1 or array.shape[0] != bins - 1:
        raise ValueError(f"{bins} bins need {bins - 1} edges, got shape {array.shape}")
    if not np.all(np.isfinite(array)) or np.any(np.diff(array) <= 0):
        raise ValueError("edges must be finite and strictly increasing")
    return array


# ---------------------------------------------------------------------------------------------------------
# Row-wise statistics
# ---------------------------------------------------------------------------------------------------------


def _psi_rows(ref: FloatArray, cur: FloatArray, smoothing: float) -> FloatArray:
    p, q = _proportions(ref, smoothing), _proportions(cur, smoothing)
    # Without smoothing an empty bin gives log(0); it is suppressed here and shows up as +inf (one side
    # empty) or 0 (both empty), never as a warning.
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p == q, 0.0, (q - p) * np.log(q / p))
    result: FloatArray = terms.sum(axis=-1)
    return result


def _js_rows(ref: FloatArray, cur: FloatArray) -> FloatArray:
    p, q = _proportions(ref), _proportions(cur)
    m = 0.5 * (p + q)
    # 0 * log(0 / m) is 0 by continuity; np.where evaluates both branches, so silence the unused one.
    with np.errstate(divide="ignore", invalid="ignore"):
        left = np.where(p > 0, p * np.log(p / m), 0.0)
        right = np.where(q > 0, q * np.log(q / m), 0.0)
    divergence = 0.5 * (left + right).sum(axis=-1) / _LN2
    # Rounding can push the divergence a hair outside [0, 1]; the distance is its square root.
    result: FloatArray = np.sqrt(np.clip(divergence, 0.0, 1.0))
    return result


def _cdf_gaps(ref: FloatArray, cur: FloatArray) -> FloatArray:
    """F_ref - F_cur at every edge (the cumulative share through bins 0..k-1; bin k closes at 1)."""
    gaps: FloatArray = np.cumsum(_proportions(ref) - _proportions(cur), axis=-1)[..., :-1]
    return gaps


def _ks_rows(ref: FloatArray, cur: FloatArray) -> FloatArray:
    gaps = _cdf_gaps(ref, cur)
    if gaps.shape[-1] == 0:  # a single bin: both CDFs are 0 then 1 at the same place
        return np.zeros(gaps.shape[:-1])
    result: FloatArray = np.abs(gaps).max(axis=-1)
    return result


def _bin_positions(edges: FloatArray, lower: float, upper: float) -> FloatArray:
    """Where each bin's mass sits for Wasserstein: lower, e_1, ..., e_{k-1}, upper (see wasserstein_binned)."""
    if not (math.isfinite(lower) and math.isfinite(upper)):
        raise ValueError(f"lower and upper must be finite, got {lower}, {upper}")
    if edges.shape[0] == 0:
        return np.array([0.0])
    # An edge outside [lower, upper] (a business edge at 0 below a reference minimum of 0.01) widens the
    # range instead of producing a negative width.
    low, high = min(lower, float(edges[0])), max(upper, float(edges[-1]))
    positions: FloatArray = np.concatenate(([low], edges[1:], [high]))
    return positions


def _wasserstein_rows(
    ref: FloatArray, cur: FloatArray, edges: FloatArray, lower: float, upper: float
) -> FloatArray:
    edges = _edges(edges, ref.shape[-1])
    widths = np.diff(_bin_positions(edges, lower, upper))
    result: FloatArray = (np.abs(_cdf_gaps(ref, cur)) * widths).sum(axis=-1)
    return result


def _linf_rows(ref: FloatArray, cur: FloatArray) -> FloatArray:
    result: FloatArray = np.abs(_proportions(ref) - _proportions(cur)).max(axis=-1)
    return result


# ---------------------------------------------------------------------------------------------------------
# Scalar statistics
# ---------------------------------------------------------------------------------------------------------


def _scalar(values: FloatArray) -> float:
    if values.ndim != 0:
        raise ValueError("expected 1-D count vectors; use the registry statistics for stacked counts")
    return float(values)


def psi(ref_counts: npt.ArrayLike, cur_counts: npt.ArrayLike, *, smoothing: float = PSI_SMOOTHING) -> float:
    """Population stability index of two count vectors over the same bins.

    PSI = sum_i (q_i - p_i) * ln(q_i / p_i), with smoothed proportions p_i = (r_i + s) / (n_ref + s * m)
    and q_i = (c_i + s) / (n_cur + s * m) over m bins. It is the symmetrised Kullback-Leibler divergence
    KL(q||p) + KL(p||q), which is why it is always >= 0 and why, under no drift, it behaves like
    (1/n_ref + 1/n_cur) * chi2(m - 1) (see `monitor.thresholds.psi_no_drift_quantile`).

    The smoothing s (Jeffreys-style, half a count per bin by default) keeps a bin that is empty on one
    side finite: raw PSI is +inf the moment a window shows a value the reference never had in that bin,
    which makes it useless exactly for the tail bins that catch new behaviour.

    Args:
        ref_counts: Reference counts per bin.
        cur_counts: Current-window counts over the same bins.
        smoothing: Pseudo-count added to every bin on both sides; 0 gives the textbook PSI (+inf when a
            bin is empty on one side only).

    Returns:
        The PSI, >= 0.

    Raises:
        ValueError: The vectors differ in length, hold negative or non-finite counts, or one is empty.
    """
    ref, cur = _pair(ref_counts, cur_counts)
    return _scalar(_psi_rows(ref, cur, smoothing))


def js_distance(ref: npt.ArrayLike, cur: npt.ArrayLike) -> float:
    """Jensen-Shannon distance (base 2) of two count vectors: the square root of the JS divergence.

    With p, q the proportions and m = (p + q) / 2, JSD = (KL(p||m) + KL(q||m)) / 2 in bits, and the
    distance is sqrt(JSD), in [0, 1]; it equals ``scipy.spatial.distance.jensenshannon(p, q, base=2)``.
    Unlike PSI it needs no smoothing (m > 0 wherever p or q is), is bounded (a bin appearing from nowhere
    costs at most its share), and its square root is a metric, so values compare across features.

    Args:
        ref: Reference counts per bin.
        cur: Current-window counts over the same bins.

    Returns:
        The distance in [0, 1].
    """
    ref_array, cur_array = _pair(ref, cur)
    return _scalar(_js_rows(ref_array, cur_array))


def ks_binned(ref: npt.ArrayLike, cur: npt.ArrayLike) -> float:
    """Kolmogorov-Smirnov statistic on binned data: max over the edges of |F_ref(e_j) - F_cur(e_j)|.

    Between edges the binned CDFs are unknown, so the maximum is taken where they are known. This is a
    lower bound of the raw-data KS statistic and equals it (``scipy.stats.ks_2samp(...).statistic``) when
    every distinct value is an edge, since both empirical CDFs only jump at data values. Only the
    statistic is used, never its textbook p-value: that assumes continuous data, raw rows and no reference
    noise, and at a million rows it flags differences nobody cares about.

    Args:
        ref: Reference counts per bin.
        cur: Current-window counts over the same bins.

    Returns:
        The statistic in [0, 1].
    """
    ref_array, cur_array = _pair(ref, cur)
    return _scalar(_ks_rows(ref_array, cur_array))


def wasserstein_binned(
    ref: npt.ArrayLike, cur: npt.ArrayLike, edges: npt.ArrayLike, lower: float, upper: float
) -> float:
    """Wasserstein-1 (earth mover's) distance of two binned distributions, in the feature's units.

    W1 = integral |F_ref(x) - F_cur(x)| dx. Counts only say which bin a value is in, so each bin's mass is
    put at one point: an inner bin (e_{j-1}, e_j] at its right edge e_j (exact when values lie on edges:
    discrete features, and scipy's test with every distinct value an edge), the outer bins (-inf, e_0] and
    (e_{k-1}, +inf) at the bounds `lower` and `upper` (the tails are winsorised to the range the profile
    vouches for: values beyond it are counted, but how far beyond is not known). With positions x_0 =
    lower, x_j = e_j (0 < j < k), x_k = upper, the CDFs are step functions and

        W1 = sum_{j=0}^{k-1} |C_ref(j) - C_cur(j)| * (x_{j+1} - x_j),

    where C(j) is the share in bins 0..j. Against the raw-row W1 the error is roughly one bin width per
    unit of mass moved (each row is moved to its bin's right edge), small with quantile bins; tail rows are
    counted at the bounds. An edge outside [lower, upper] widens the range.

    Args:
        ref: Reference counts, k + 1 bins.
        cur: Current-window counts over the same bins.
        edges: The k edges (finite, strictly increasing).
        lower: Where the mass of bin 0 sits (the reference minimum, or p0.1).
        upper: Where the mass of bin k sits (the reference maximum, or p99.9).

    Returns:
        The distance, >= 0, in the feature's units.
    """
    ref_array, cur_array = _pair(ref, cur)
    return _scalar(_wasserstein_rows(ref_array, cur_array, np.asarray(edges, np.float64), lower, upper))


def wasserstein_iqr(
    ref: npt.ArrayLike,
    cur: npt.ArrayLike,
    edges: npt.ArrayLike,
    lower: float,
    upper: float,
    *,
    scale: float | None = None,
) -> float:
    """`wasserstein_binned` divided by the reference's spread, so one floor fits every feature.

    W1 is in the feature's units (currency for amounts, transactions for counts); dividing by the
    reference IQR makes "0.1" mean "the mass moved a tenth of the typical spread" for all of them. The IQR
    is robust to the long tail of amounts, where the standard deviation is dominated by a few big
    payments. When the IQR is 0 (a flag at 10 %, a count that is 0 for 80 % of rows) the fallback is the
    standard deviation times 1.349 (the IQR of a normal in standard deviations), then 1.

    Args:
        ref: Reference counts, k + 1 bins.
        cur: Current-window counts over the same bins.
        edges: The k edges.
        lower: Position of bin 0's mass (see `wasserstein_binned`).
        upper: Position of bin k's mass.
        scale: The reference spread; pass the profile's `robust_scale` of the raw reference rows. When
            None it is estimated from the reference counts (`binned_robust_scale`), which is coarser.

    Returns:
        The normalised distance, >= 0.
    """
    edges_array = np.asarray(edges, np.float64)
    if scale is None:
        scale = binned_robust_scale(ref, edges_array, lower, upper)
    return wasserstein_binned(ref, cur, edges_array, lower, upper) / _positive_scale(scale)


def linf(ref: npt.ArrayLike, cur: npt.ArrayLike) -> float:
    """L-infinity distance of proportions, max_i |p_i - q_i|: the largest share any one category gained or lost.

    For categorical fields the bins have no order, so KS and Wasserstein do not apply; this is the
    readable one ("channel 'ecom' went from 30 % to 41 %") and it does not grow with the number of
    categories the way PSI and JS do.

    Args:
        ref: Reference counts per category.
        cur: Current-window counts per category.

    Returns:
        The distance in [0, 1].
    """
    ref_array, cur_array = _pair(ref, cur)
    return _scalar(_linf_rows(ref_array, cur_array))


# ---------------------------------------------------------------------------------------------------------
# Spread of the reference (for wasserstein_iqr)
# ---------------------------------------------------------------------------------------------------------


def _positive_scale(scale: float) -> float:
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be finite and positive, got {scale}")
    return scale


def _scale_from(iqr: float, sd: float) -> float:
    """IQR, else the IQR-equivalent of the standard deviation, else 1 (a constant reference)."""
    if iqr > 0:
        return iqr
    if sd > 0:
        return NORMAL_IQR_PER_SD * sd
    return 1.0


def robust_scale(values: npt.ArrayLike) -> float:
    """Spread of raw reference values used to normalise Wasserstein: the IQR (fallbacks in `wasserstein_iqr`).

    Args:
        values: Reference values; nulls and infinities are ignored.

    Returns:
        A positive scale (1.0 for an empty or constant reference).
    """
    array = np.asarray(values, dtype=np.float64)
    finite = array[np.isfinite(array)]
    if finite.size == 0:
        return 1.0
    q25, q75 = np.quantile(finite, [0.25, 0.75])
    return _scale_from(float(q75 - q25), float(finite.std()))


def binned_robust_scale(counts: npt.ArrayLike, edges: npt.ArrayLike, lower: float, upper: float) -> float:
    """`robust_scale` estimated from reference counts, with each bin's mass at its Wasserstein position.

    The quantiles are those of the step CDF `wasserstein_binned` uses, so the two are consistent; the
    result is coarse by up to a bin width. Stacked counts are pooled.

    Args:
        counts: Reference counts, k + 1 bins (or a stack of them).
        edges: The k edges.
        lower: Position of bin 0's mass.
        upper: Position of bin k's mass.

    Returns:
        A positive scale.
    """
    array = _counts(counts, "reference")
    pooled = array.reshape(-1, array.shape[-1]).sum(axis=0)
    weights = _proportions(pooled)
    positions = _bin_positions(_edges(edges, pooled.shape[0]), lower, upper)
    cumulative = np.cumsum(weights)
    # First bin whose cumulative share reaches the quantile; the tiny tolerance absorbs rounding in cumsum.
    q25, q75 = (positions[np.searchsorted(cumulative, u - 1e-12)] for u in (0.25, 0.75))
    mean = float(weights @ positions)
    sd = math.sqrt(max(float(weights @ (positions - mean) ** 2), 0.0))
    return _scale_from(float(q75 - q25), sd)


# ---------------------------------------------------------------------------------------------------------
# Registry: one signature for every statistic
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class BinnedPair:
    """Reference and current counts over the same bins, with what the profile knows about the bins.

    `ref` and `cur` are 1-D count vectors, or stacks (B, bins) compared row by row (the bootstrap). The
    geometry (edges, lower, upper, scale) is only needed by the numeric statistics that use positions
    (Wasserstein); categorical pairs leave it None.
    """

    ref: FloatArray
    cur: FloatArray
    edges: FloatArray | None = None
    lower: float | None = None
    upper: float | None = None
    scale: float | None = None  # reference spread for wasserstein_iqr; None = estimate from `ref`

    def __post_init__(self) -> None:
        ref, cur = _pair(self.ref, self.cur)
        object.__setattr__(self, "ref", ref)
        object.__setattr__(self, "cur", cur)
        if self.edges is not None:
            object.__setattr__(self, "edges", _edges(self.edges, ref.shape[-1]))

    @property
    def bins(self) -> int:
        """Number of bins (categories)."""
        return int(self.ref.shape[-1])

    def geometry(self) -> tuple[FloatArray, float, float]:
        """Edges, lower and upper, which Wasserstein needs.

        Raises:
            ValueError: The pair was built without them.
        """
        if self.edges is None or self.lower is None or self.upper is None:
            raise ValueError("this statistic needs edges, lower and upper (a numeric feature's profile)")
        return self.edges, self.lower, self.upper


Statistic = Callable[[BinnedPair], FloatArray]


def psi_statistic(pair: BinnedPair) -> FloatArray:
    """PSI with Jeffreys smoothing (`psi`); alarm scale: 0.1 moderate, 0.25 major."""
    return _psi_rows(pair.ref, pair.cur, PSI_SMOOTHING)


def js_statistic(pair: BinnedPair) -> FloatArray:
    """Jensen-Shannon distance, base 2 (`js_distance`); in [0, 1]."""
    return _js_rows(pair.ref, pair.cur)


def ks_statistic(pair: BinnedPair) -> FloatArray:
    """Largest CDF gap over the bin edges (`ks_binned`); in [0, 1]."""
    return _ks_rows(pair.ref, pair.cur)


def wasserstein_iqr_statistic(pair: BinnedPair) -> FloatArray:
    """Wasserstein-1 distance over the reference IQR (`wasserstein_iqr`); needs the pair's geometry."""
    edges, lower, upper = pair.geometry()
    scale = pair.scale if pair.scale is not None else binned_robust_scale(pair.ref, edges, lower, upper)
    return _wasserstein_rows(pair.ref, pair.cur, edges, lower, upper) / _positive_scale(scale)


def linf_statistic(pair: BinnedPair) -> FloatArray:
    """Largest change in any one bin's share (`linf`); in [0, 1]."""
    return _linf_rows(pair.ref, pair.cur)


NUMERIC_STATS: Mapping[str, Statistic] = MappingProxyType(
    {
        "psi": psi_statistic,
        "js": js_statistic,
        "ks": ks_statistic,
        "wasserstein_iqr": wasserstein_iqr_statistic,
    }
)
CATEGORICAL_STATS: Mapping[str, Statistic] = MappingProxyType(
    {"psi": psi_statistic, "js": js_statistic, "linf": linf_statistic}
)
ALL_STATS: Mapping[str, Statistic] = MappingProxyType({**NUMERIC_STATS, **CATEGORICAL_STATS})


def evaluate(name: str, pair: BinnedPair) -> float:
    """Value of the registered statistic `name` for a single (1-D) pair.

    Raises:
        KeyError: No statistic has that name.
    """
    if name not in ALL_STATS:
        raise KeyError(f"unknown drift statistic {name!r}; known: {sorted(ALL_STATS)}")
    return _scalar(ALL_STATS[name](pair))


def top_shifted_bins(pair: BinnedPair, n: int = 5) -> list[dict[str, Any]]:
    """The `n` bins of a single (1-D) pair whose share moved most, by their PSI-style contribution.

    Each is ``{"bin": index, "reference_share", "current_share", "psi_contribution"}``, largest first; the
    contribution ``(cur - ref) * ln(cur / ref)`` (shares nudged by 1e-6 so an empty bin stays finite) is
    what a drift finding's evidence and the agent's drift report show.
    """
    ref = pair.ref / max(pair.ref.sum(), 1)
    cur = pair.cur / max(pair.cur.sum(), 1)
    contribution = (cur - ref) * np.log((cur + 1e-6) / (ref + 1e-6))
    return [
        {"bin": int(i), "reference_share": float(ref[i]), "current_share": float(cur[i]),
         "psi_contribution": float(contribution[i])}
        for i in np.argsort(contribution)[::-1][:n]
    ]


# ---------------------------------------------------------------------------------------------------------
# Counting a window (one pass) and profiling the reference
# ---------------------------------------------------------------------------------------------------------


def _float_values(values: Any) -> FloatArray:
    """Values as floats with every null (None, NaN, pd.NA) as NaN."""
    if not isinstance(values, pd.Series | pd.Index | pd.api.extensions.ExtensionArray):
        try:
            return np.asarray(values, dtype=np.float64).ravel()
        except TypeError:  # pd.NA in a plain list or object array: let pandas map it to NaN
            values = pd.Series(np.asarray(values, dtype=object).ravel())
    converted: FloatArray = pd.Series(values).to_numpy(dtype=np.float64, na_value=np.nan)
    return converted


def histogram_counts(values: Any, edges: npt.ArrayLike) -> tuple[IntArray, int]:
    """Count numeric values into the k + 1 right-closed bins of `edges`, in one pass.

    Bin j counts e_{j-1} < x <= e_j (``np.searchsorted(edges, x, side="left")``); -inf lands in bin 0 and
    +inf in bin k, since they are values beyond the range, not missing ones. NaN and None are nulls,
    returned apart because a null rate is a data-quality signal, not drift.

    Args:
        values: Numbers (array, list, pandas Series; None / NaN / pd.NA are nulls).
        edges: The k finite, strictly increasing edges.

    Returns:
        Counts per bin (k + 1 integers) and the number of nulls.
    """
    edge_array = np.atleast_1d(np.asarray(edges, dtype=np.float64))
    edge_array = _edges(edge_array, edge_array.shape[0] + 1)
    array = _float_values(values)
    nulls = np.isnan(array)
    bins = np.searchsorted(edge_array, array[~nulls], side="left")
    counts: IntArray = np.bincount(bins, minlength=edge_array.shape[0] + 1).astype(np.int64)
    return counts, int(nulls.sum())


def category_counts(values: Any, categories: Sequence[Any]) -> IntArray:
    """Count categorical values into the profile's categories, then OTHER, then NULL, in one pass.

    OTHER is any non-null value not in `categories` (the reference's top K). Whether such a value is one
    the reference had outside its top K or one it never saw (UNSEEN) is the profile's business: it knows
    the reference vocabulary and can pass it as `categories` with its own OTHER, or track unseen values
    apart. NULL (None, NaN, pd.NA) is the last slot; drop it (``counts[:-1]``) before the drift
    statistics, since nulls are a data-quality signal.

    Args:
        values: Category values (array, list, pandas Series).
        categories: The distinct, non-null categories to count.

    Returns:
        Counts: one per category, then OTHER, then NULL (len(categories) + 2 integers).
    """
    index = pd.Index(list(categories), dtype=object)
    if not index.is_unique or bool(index.isna().any()):
        raise ValueError("categories must be distinct and non-null")
    array = np.asarray(pd.Series(values, dtype=object).to_numpy(), dtype=object)
    nulls = pd.isna(array)
    codes = index.get_indexer(array[~nulls])
    known = np.bincount(codes[codes >= 0], minlength=len(index)).astype(np.int64)
    other, null = int(np.count_nonzero(codes < 0)), int(nulls.sum())
    counts: IntArray = np.concatenate([known, np.array([other, null], dtype=np.int64)])
    return counts


def _atoms_and_neighbours(finite: FloatArray, atom_share: float) -> tuple[FloatArray, FloatArray]:
    """Values holding >= `atom_share` of the rows, with the largest value below each, and the other rows."""
    distinct, counts = np.unique(finite, return_counts=True)
    is_atom = counts >= atom_share * finite.size
    if not is_atom.any():
        return np.empty(0), finite
    atom_positions = np.flatnonzero(is_atom)
    # The largest value below an atom closes the bin before it, so the atom sits alone in its bin.
    below = distinct[atom_positions[atom_positions > 0] - 1]
    edges = np.concatenate([distinct[atom_positions], below])
    rest = finite[~np.isin(finite, distinct[atom_positions])]
    return edges, rest


def quantile_edges(
    values: npt.ArrayLike,
    quantiles: Iterable[float] = DEFAULT_QUANTILES,
    extra_edges: Iterable[float] = (),
    *,
    atom_share: float = ATOM_SHARE,
) -> FloatArray:
    """Bin edges for a numeric reference: its quantiles, with heavy ties handled, plus business edges.

    Quantiles are taken with the inverted-CDF method, so every edge is an observed value and a discrete
    feature's values sit on edges (exact binned CDFs). Level 0 (the minimum) is the exception: it gives
    the edge just below the minimum, so bin 0 holds only values below the reference range and, like the
    bin above the maximum, is empty in the reference. Values holding >= `atom_share` of the rows (0 in a
    zero-inflated count, both values of a flag) become edges along with the largest value below each, and
    the quantiles are then taken over the remaining rows: otherwise a feature that is 0 for 95 % of rows
    gets all its ventiles at 0 and the remaining 5 % share one or two bins. Duplicates are dropped, so a
    constant column yields a single bin of its own. Business edges (0, 1, 5 for amounts) are added as
    given.

    Args:
        values: Reference values; nulls and infinities are ignored.
        quantiles: Quantile levels in [0, 1] (default: min, p0.1, p1, ventiles, p99, p99.9, max).
        extra_edges: Business edges added as they are; must be finite.
        atom_share: Share of rows from which a single value counts as an atom.

    Returns:
        Sorted, unique, finite edges (possibly empty when there are no finite values and no extras).
    """
    levels = np.asarray(list(quantiles), dtype=np.float64)
    if np.any((levels < 0) | (levels > 1)):
        raise ValueError("quantile levels must lie in [0, 1]")
    extras = np.asarray(list(extra_edges), dtype=np.float64)
    if not np.all(np.isfinite(extras)):
        raise ValueError("extra edges must be finite")
    array = np.asarray(values, dtype=np.float64).ravel()
    finite = array[np.isfinite(array)]
    parts = [extras]
    if finite.size:
        atom_edges, rest = _atoms_and_neighbours(finite, atom_share)
        parts.append(atom_edges)
        body = levels[levels > 0]
        if rest.size and body.size:
            parts.append(np.quantile(rest, body, method="inverted_cdf"))
        if levels.size > body.size:
            # Level 0 closes bin 0 just below the reference minimum: bin 0 holds only values below the
            # reference range, empty in the reference like the bin above the maximum, instead of mixing
            # them with the single smallest reference row (a bin with one count is noise at any size).
            parts.append(np.array([np.nextafter(finite.min(), -np.inf)]))
    edges: FloatArray = np.unique(np.concatenate(parts))
    return edges


# ---------------------------------------------------------------------------------------------------------
# Alert rates
# ---------------------------------------------------------------------------------------------------------


def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval for a proportion (an alert rate, a null rate, a fraud rate).

    With p = successes / n: centre = (p + z^2 / 2n) / (1 + z^2 / n) and half-width = z / (1 + z^2 / n) *
    sqrt(p (1 - p) / n + z^2 / 4n^2). Unlike the normal (Wald) interval it never collapses to [0, 0] when
    nothing happened in a small window, never leaves [0, 1], and keeps close to its nominal coverage for
    rare events, which is what alert and fraud rates are.

    Args:
        successes: Number of events, 0 <= successes <= n.
        n: Number of trials; with 0 trials nothing is known and the interval is (0, 1).
        z: Normal quantile of the two-sided level (1.96 for 95 %).

    Returns:
        (low, high), with low <= successes / n <= high.
    """
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    z2 = z * z
    denominator = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1.0 - p) / n + z2 / (4 * n * n))
    # Clamp rounding only: mathematically the interval already lies in [0, 1] and contains p.
    return max(0.0, min(centre - half, p)), min(1.0, max(centre + half, p))
