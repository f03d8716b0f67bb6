"""What a quarantined feature is replaced with: a healthy sibling feature's estimate, else a constant.

Imputing one constant (the reference mean) for a per-customer or per-terminal feature erases what the
model reads from it: every customer gets the same 30-day average amount, and transactions that were
ordinary for *that* customer look unusual. In the eval suite this doubled the alert rate after a
quarantine (`feature-constant-minor`). The features come in families over 1, 7 and 30 days, so a broken
window is usually well predicted by a sibling window of the same entity; this module fits those
predictors once, on the model's reference window, and applies them at serving time:

- `fit_surrogates` ranks, for each feature, the other logged features by how well a straight line from
  them predicts it (R^2 on the reference window) and keeps the best few.
- The serving state records, per quarantined feature, its constant (the reference mean) and those ranked
  surrogates. `impute_column` / `impute_value` use the first surrogate whose source is neither quarantined
  itself nor missing on that row, and the constant otherwise, so quarantining two siblings in turn never
  feeds one broken feature from the other.

The estimate is clipped to the target's reference range: a line fitted on counts must not emit a negative
count, nor an extrapolation the model never saw.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from typing import Final

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

# A surrogate must explain at least this share of the target's variance to beat the constant by enough
# to be worth its complexity; below it the reference mean is imputed.
MIN_R2: Final = 0.3
MAX_SURROGATES: Final = 3
# Fewer finite pairs than this and a fitted line says little.
MIN_FIT_ROWS: Final = 50
# Clock functions and 0/1 encodings neither make good targets for a line nor good sources.
NOT_FITTED: Final = frozenset({"is_weekend", "is_night", "is_online", "is_high_risk_mcc"})


class Surrogate(BaseModel):
    """``target ~= slope * source + intercept``, clipped to ``[lower, upper]``, fitted on the reference."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: str = Field(min_length=1)
    slope: float
    intercept: float
    r2: float = Field(ge=0.0, le=1.0, description="share of the target's reference variance explained")
    lower: float
    upper: float

    @field_validator("slope", "intercept", "lower", "upper")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError(f"must be finite, got {value}")
        return value

    def estimate(self, source_values: np.ndarray) -> np.ndarray:
        return np.clip(self.slope * source_values + self.intercept, self.lower, self.upper)

    def describe(self) -> str:
        return f"{self.slope:.4g} x {self.source} {'+' if self.intercept >= 0 else '-'} {abs(self.intercept):.4g} (R^2 {self.r2:.2f})"


def fit_surrogates(features: pd.DataFrame, *, min_r2: float = MIN_R2, keep: int = MAX_SURROGATES) -> dict[str, list[Surrogate]]:
    """For each fitted feature of `features`, the best single-feature linear predictors among the others.

    Args:
        features: one column per feature, rows of the reference window (as the scorer computes them).
        min_r2: drop predictors explaining less of the target's variance than this.
        keep: at most this many predictors per feature, best first.
    """
    names = [name for name in features.columns if name not in NOT_FITTED]
    values = {name: features[name].to_numpy(dtype=np.float64) for name in names}
    fitted: dict[str, list[Surrogate]] = {}
    for target in names:
        y = values[target]
        candidates = [s for s in (_fit(y, values[source], source) for source in names if source != target) if s is not None]
        ranked = sorted((s for s in candidates if s.r2 >= min_r2), key=lambda s: (-s.r2, s.source))[:keep]
        if ranked:
            fitted[target] = ranked
    return fitted


def _fit(y: np.ndarray, x: np.ndarray, source: str) -> Surrogate | None:
    finite = np.isfinite(x) & np.isfinite(y)
    if int(finite.sum()) < MIN_FIT_ROWS:
        return None
    x, y = x[finite], y[finite]
    x_var = float(np.var(x))
    y_var = float(np.var(y))
    if x_var <= 0.0 or y_var <= 0.0:
        return None
    slope = float(np.mean((x - x.mean()) * (y - y.mean()))) / x_var
    intercept = float(y.mean() - slope * x.mean())
    r2 = min(max(slope * slope * x_var / y_var, 0.0), 1.0)
    return Surrogate(source=source, slope=slope, intercept=intercept, r2=r2, lower=float(y.min()), upper=float(y.max()))


def usable_surrogates(
    feature: str, surrogates: Mapping[str, Sequence[Surrogate]], quarantined: Collection[str]
) -> list[Surrogate]:
    """`feature`'s surrogates whose source is not quarantined itself, best first."""
    return [s for s in surrogates.get(feature, ()) if s.source not in quarantined]


def impute_column(
    constant: float,
    surrogates: Sequence[Surrogate],
    source_column: Mapping[str, np.ndarray],
    rows: int,
) -> np.ndarray:
    """The imputed values of one quarantined feature over a batch.

    Args:
        constant: what rows no surrogate can estimate get (the reference mean, or a value a person chose).
        surrogates: usable surrogates, best first (`usable_surrogates`).
        source_column: live values of each source feature over the batch.
        rows: the batch's length.
    """
    imputed = np.full(rows, np.nan, dtype=np.float64)
    for surrogate in surrogates:
        source = source_column[surrogate.source]
        fill = np.isnan(imputed) & np.isfinite(source)
        if fill.any():
            imputed[fill] = surrogate.estimate(source[fill])
    imputed[np.isnan(imputed)] = constant
    return imputed


def impute_value(constant: float, surrogates: Sequence[Surrogate], source_value: Mapping[str, float]) -> float:
    """`impute_column` for one row."""
    for surrogate in surrogates:
        value = source_value[surrogate.source]
        if math.isfinite(value):
            return float(surrogate.estimate(np.array([value]))[0])
    return float(constant)
