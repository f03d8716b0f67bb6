"""Reference profiles: what "normal" looks like for one model version, computed once when it is trained.

A profile holds, per monitored subject, the bin edges and the reference counts that every live window is
compared with; windows are then counted in one pass into vectors over the same bins (`monitor.counts`),
so no check ever rescans the reference. Per numeric feature: quantile edges plus tail edges (p0.1, p1,
p99, p99.9) and business edges (0 for amounts and counts), null and range statistics. Per categorical
field: the top categories covering >= 99.5 % of the reference, then OTHER and NULL. Also the score
distribution, the alert rate, the reference performance, the hour-of-week volume baseline, and for each
feature the sibling features that best estimate it (what a quarantine imputes with, `scorer.imputation`).

Calendar features (``is_weekend``, ``is_night``) are deliberately not drift subjects: they are functions
of the clock, so a Saturday or a night-time window "drifts" on them by construction.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from monitor.estimated import Calibration
from monitor.stats import category_counts, histogram_counts, quantile_edges
from scorer import columns as C
from scorer.imputation import Surrogate, fit_surrogates

# 2: surrogates (sibling features that estimate each feature, for quarantines) and the alert-rate curve.
# 3: the score calibration that estimates performance before labels arrive (`monitor.estimated`).
PROFILE_FORMAT = 3
CALENDAR_FEATURES = frozenset({"is_weekend", "is_night"})
CATEGORICAL_FIELDS = (C.CHANNEL, C.MCC, C.COUNTRY)
QUANTILES = (*tuple(np.round(np.linspace(0.05, 0.95, 19), 2)), 0.001, 0.01, 0.99, 0.999)
# Edges a payments team reasons with: zero, small "card testing" amounts, and the handbook's 220 cut.
BUSINESS_EDGES = {"amount": (0.0, 1.0, 2.0, 5.0, 220.0)}
COUNT_FEATURE_EDGES = (0.0,)
CATEGORY_COVERAGE = 0.995
MIN_DAYTYPE_ROWS = 200
ALERT_CURVE_POINTS = 400
SCORE_QUANTILES = (*tuple(np.round(np.linspace(0.1, 0.9, 9), 2)), 0.95, 0.99, 0.999)


class NumericProfile(BaseModel):
    """Reference distribution of one numeric subject."""

    model_config = ConfigDict(frozen=True)

    edges: list[float]
    counts: list[int]  # len(edges) + 1 bins, right-closed
    nulls: int
    rows: int
    lower: float  # reference minimum: outer bound for the Wasserstein distance
    upper: float
    iqr: float
    # The Wasserstein scale: max(IQR, 1.349 sd). The IQR alone collapses on zero-inflated features
    # (terminal risk is 0 for most rows), which turns tiny tail wobbles into huge normalised distances.
    scale: float = 1.0
    p001: float
    p999: float
    mean: float
    top_bin_share: float = Field(description="largest share of non-null rows in one bin (stuck-value check)")
    # The same bins counted on weekdays and on weekend days only: daily windows are compared with the
    # reference of their own day type, so weekly seasonality is not mistaken for drift.
    weekday_counts: list[int] | None = None
    weekend_counts: list[int] | None = None
    # Each reference day's counts: the monitor measures how far a normal day strays from the rest of the
    # reference (features over 30-day windows move slowly, so rows of one day are not independent draws).
    daily_counts: list[list[int]] = Field(default_factory=list)
    daily_weekend: list[bool] = Field(default_factory=list)

    def reference_counts(self, weekend: bool | None = None) -> list[int]:
        """Reference counts for a day type (None: all days), falling back to all days when too few rows."""
        chosen = self.weekend_counts if weekend else self.weekday_counts if weekend is False else None
        if chosen is None or sum(chosen) < MIN_DAYTYPE_ROWS:
            return self.counts
        return chosen

    @property
    def null_rate(self) -> float:
        return self.nulls / self.rows if self.rows else 0.0


class CategoricalProfile(BaseModel):
    """Reference distribution of one categorical field: top categories, then OTHER and NULL."""

    model_config = ConfigDict(frozen=True)

    categories: list[str]
    counts: list[int]  # len(categories) + 2: ..., OTHER, NULL
    rows: int


class ReferenceProfile(BaseModel):
    """Everything the monitor compares live windows with, for one model version."""

    model_config = ConfigDict(frozen=True)

    format: int = PROFILE_FORMAT
    model_version: int | None = None
    window_start: datetime
    window_end: datetime
    rows: int
    numeric: dict[str, NumericProfile]
    categorical: dict[str, CategoricalProfile]
    score: NumericProfile
    threshold: float
    review_threshold: float
    alert_rate: float = Field(description="share of reference rows at or above the review threshold")
    decline_rate: float
    importance: dict[str, float] = Field(default_factory=dict, description="feature importance (gain share)")
    performance: dict[str, float] = Field(default_factory=dict)
    hourly_volume: list[float] = Field(description="mean transactions per hour of week (Monday 00h = 0)")
    hourly_volume_cv: float = Field(description="spread of hourly volume around the baseline, beyond Poisson")
    latency_ms_p99: float | None = None
    alert_rate_curve: list[tuple[float, float]] = Field(
        default_factory=list,
        description="(score cut, share of reference scores >= it) on a log grid: the alert rate any review threshold would give",
    )
    surrogates: dict[str, list[Surrogate]] = Field(
        default_factory=dict,
        description="feature -> sibling features that estimate it on this window, best first (quarantine imputes with them)",
    )
    calibration: Calibration | None = Field(
        default=None,
        description="score -> P(fraud) on this window's labels: estimates recall before labels arrive (None: too few frauds)",
    )

    def numeric_subjects(self) -> list[str]:
        return list(self.numeric)

    def expected_volume(self, hour_start: pd.Timestamp) -> float:
        return self.hourly_volume[_hour_of_week(hour_start)]

    def implied_alert_rate(self, review_threshold: float) -> float | None:
        """The share of reference scores a review threshold would flag (None: the profile has no curve)."""
        if not self.alert_rate_curve:
            return None
        cuts, shares = zip(*self.alert_rate_curve, strict=True)
        return float(np.interp(review_threshold, cuts, shares))


def _hour_of_week(moment: pd.Timestamp) -> int:
    return int(moment.day_of_week) * 24 + int(moment.hour)


def numeric_profile(
    values: np.ndarray,
    extra_edges: tuple[float, ...] = (),
    weekend: np.ndarray | None = None,
    day: np.ndarray | None = None,
) -> NumericProfile:
    """Profile one numeric column (NaN = null).

    Args:
        values: the column.
        extra_edges: business edges to add to the quantile edges.
        weekend: marks weekend rows, for day-type reference counts.
        day: each row's calendar day, for the per-day counts of the natural-variability baseline.
    """
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    edges = quantile_edges(finite, QUANTILES, extra_edges) if len(finite) else np.asarray(extra_edges or (0.0,))
    counts, nulls = histogram_counts(values, edges)
    if len(finite):
        q = np.quantile(finite, [0.001, 0.25, 0.75, 0.999])
        lower, upper, mean = float(finite.min()), float(finite.max()), float(finite.mean())
    else:
        q, lower, upper, mean = np.zeros(4), 0.0, 0.0, 0.0
    non_null = max(int(counts.sum()), 1)
    return NumericProfile(
        edges=[float(e) for e in edges],
        counts=[int(c) for c in counts],
        nulls=int(nulls),
        rows=len(values),
        lower=lower,
        upper=upper,
        iqr=float(q[2] - q[1]),
        scale=_wasserstein_scale(finite, float(q[2] - q[1])),
        p001=float(q[0]),
        p999=float(q[3]),
        mean=mean,
        top_bin_share=float(counts.max() / non_null),
        weekday_counts=None if weekend is None else [int(c) for c in histogram_counts(values[~weekend], edges)[0]],
        weekend_counts=None if weekend is None else [int(c) for c in histogram_counts(values[weekend], edges)[0]],
        daily_counts=[] if day is None else [
            [int(c) for c in histogram_counts(values[day == d], edges)[0]] for d in np.unique(day)
        ],
        daily_weekend=[] if day is None or weekend is None else [bool(weekend[day == d][0]) for d in np.unique(day)],
    )


def _wasserstein_scale(finite: np.ndarray, iqr: float) -> float:
    scale = max(iqr, 1.349 * float(finite.std())) if len(finite) else 0.0
    return scale if scale > 0 else 1.0


def categorical_profile(values: pd.Series) -> CategoricalProfile:
    """Top categories covering `CATEGORY_COVERAGE` of the non-null reference rows."""
    present = values.dropna().astype(str)
    frequencies = present.value_counts()
    cumulative = frequencies.cumsum() / max(len(present), 1)
    keep = int(np.searchsorted(cumulative.to_numpy(), CATEGORY_COVERAGE) + 1) if len(present) else 0
    categories = [str(c) for c in frequencies.index[:keep]]
    return CategoricalProfile(
        categories=categories,
        counts=[int(c) for c in category_counts(values.to_numpy(dtype=object), categories)],
        rows=len(values),
    )


def hourly_volume_baseline(timestamps: pd.Series) -> tuple[list[float], float]:
    """Mean count per hour of week over the whole weeks seen, and the extra-Poisson spread (a CV)."""
    hours = pd.to_datetime(timestamps).dt.floor("h")
    per_hour = hours.value_counts().sort_index()
    full = pd.date_range(per_hour.index.min(), per_hour.index.max(), freq="h")
    per_hour = per_hour.reindex(full, fill_value=0)
    how = per_hour.index.day_of_week * 24 + per_hour.index.hour
    means = per_hour.groupby(how).mean().reindex(range(168)).ffill().bfill()
    expected = means.to_numpy()[how]
    counts = per_hour.to_numpy(dtype=np.float64)
    # Variance beyond Poisson, as a coefficient of variation: real traffic is overdispersed.
    excess = np.maximum(((counts - expected) ** 2 - expected).mean(), 0.0)
    cv = float(np.sqrt(excess) / max(expected.mean(), 1e-9))
    return [float(v) for v in means.to_numpy()], cv


def build_profile(
    features: pd.DataFrame,
    scores: np.ndarray,
    *,
    transactions: pd.DataFrame,
    volume_history: pd.Series,
    threshold: float,
    review_threshold: float,
    model_version: int | None = None,
    importance: dict[str, float] | None = None,
    performance: dict[str, float] | None = None,
    calibration: Calibration | None = None,
) -> ReferenceProfile:
    """Build a model's reference profile.

    Args:
        features: the features of the reference window (the model's test window: out-of-sample, as live).
        scores: the model's scores on those rows.
        transactions: the same rows' transactions (for categorical fields and the time window).
        volume_history: timestamps of the whole history, for the hour-of-week volume baseline.
        threshold: decline threshold the model serves with.
        review_threshold: review threshold.
        model_version: registry version, when known.
        importance: feature importance (gain), to rank drifted features.
        performance: reference metrics (ap, precision and recall at the threshold, fraud rate).
        calibration: the scores' calibration on this window's labels (`monitor.estimated`).
    """
    numeric: dict[str, NumericProfile] = {}
    stamps = pd.to_datetime(transactions[C.TIMESTAMP])
    weekend = (stamps.dt.day_of_week >= 5).to_numpy()
    day = stamps.dt.floor("D").to_numpy()
    for name in features.columns:
        if name in CALENDAR_FEATURES:
            continue
        extra = BUSINESS_EDGES.get(name, COUNT_FEATURE_EDGES if "count" in name or "risk" in name else ())
        numeric[name] = numeric_profile(features[name].to_numpy(dtype=np.float64), extra, weekend, day)
    categorical = {
        name: categorical_profile(transactions[name]) for name in CATEGORICAL_FIELDS if name in transactions
    }
    score_values = np.asarray(scores, dtype=np.float64)
    volume, cv = hourly_volume_baseline(volume_history)
    return ReferenceProfile(
        model_version=model_version,
        window_start=stamps.min().to_pydatetime(),
        window_end=stamps.max().to_pydatetime(),
        rows=len(features),
        numeric=numeric,
        categorical=categorical,
        score=numeric_profile(score_values, (review_threshold, threshold), weekend, day),
        threshold=threshold,
        review_threshold=review_threshold,
        alert_rate=float(np.mean(score_values >= review_threshold)) if len(score_values) else 0.0,
        decline_rate=float(np.mean(score_values >= threshold)) if len(score_values) else 0.0,
        importance=_normalised(importance or {}),
        performance=performance or {},
        hourly_volume=volume,
        hourly_volume_cv=cv,
        alert_rate_curve=alert_rate_curve(score_values),
        surrogates=fit_surrogates(features),
        calibration=calibration,
    )


def alert_rate_curve(scores: np.ndarray) -> list[tuple[float, float]]:
    """(cut, share of `scores` >= cut) on a grid dense where fraud scores live (log-spaced, 1e-4 .. 1)."""
    if len(scores) == 0:
        return []
    cuts = np.unique(np.concatenate(([0.0], np.geomspace(1e-4, 1.0, ALERT_CURVE_POINTS))))
    ordered = np.sort(scores)
    shares = 1.0 - np.searchsorted(ordered, cuts, side="left") / len(ordered)
    return [(float(c), float(s)) for c, s in zip(cuts, shares, strict=True)]


def _normalised(importance: dict[str, float]) -> dict[str, float]:
    total = sum(importance.values())
    return {k: v / total for k, v in importance.items()} if total > 0 else {}


def profile_from_dict(payload: dict[str, Any]) -> ReferenceProfile:
    return ReferenceProfile.model_validate(payload)
