"""Performance estimated from calibrated scores, before labels arrive (confidence-based, as NannyML's CBPE).

Labels come days after a transaction (7 in the default world), so matured-label recall (`checks.
cohort_recall`) judges traffic a week old. A calibrated score says how likely each transaction is fraud;
summed, they estimate what labels will say:

    expected frauds  = sum of p(fraud | score) over the window's rows
    expected caught  = the same sum over the rows the alert policy flagged (decision review or decline)
    estimated recall = expected caught / expected frauds

The calibration map is fitted once per model, on its reference window (its out-of-sample test week, with
labels): scores are cut into quantile bins, each bin's fraud rate is made monotone in the score by pooling
adjacent violators (isotonic regression), and a live score gets its bin's rate.

What it can and cannot see. It follows the model's *inputs*: a population whose features move into score
ranges where the model flags less (or more) of the fraud it expects moves the estimate. It cannot see fraud
the model does not recognise at all: a new pattern scores low, is expected to be genuine, and the estimate
holds while real recall falls. That is what matured labels are for; this does not replace them.

Live estimates are compared with the same estimate on the reference window (not with its real recall), so
the calibration's own small bias cancels out; their noise is the reference's day-to-day spread of the
estimate, which is far smaller than real recall's (an expectation, not a count of a few dozen frauds).
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from store import Store

if TYPE_CHECKING:
    from monitor.profile import ReferenceProfile  # profile imports this module (its Calibration)

CALIBRATION_BINS: Final = 100
MIN_CALIBRATION_FRAUDS: Final = 20  # fewer labelled frauds on the reference: no calibration, no estimate
MIN_ESTIMATE_ROWS: Final = 500  # a window with fewer scored rows is not estimated
NOISE_FLOOR: Final = 0.01  # the estimate's spread is never taken as below this (a quiet reference week)


class Calibration(BaseModel):
    """A step function from score to P(fraud): bin ``i`` holds scores up to ``upper_edges[i]``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    upper_edges: list[float] = Field(description="upper score edge of each bin, increasing; the last covers the rest")
    probabilities: list[float] = Field(description="P(fraud) in each bin, non-decreasing")
    reference_rows: int
    reference_frauds: int

    def probability(self, scores: np.ndarray) -> np.ndarray:
        """P(fraud) for each score."""
        edges = np.asarray(self.upper_edges[:-1], dtype=np.float64)
        index = np.searchsorted(edges, np.asarray(scores, dtype=np.float64), side="left")
        return np.asarray(self.probabilities, dtype=np.float64)[index]


def fit_calibration(scores: np.ndarray, labels: np.ndarray, bins: int = CALIBRATION_BINS) -> Calibration | None:
    """Isotonic calibration on quantile bins of the scores; None with too few frauds to fit one."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float64)
    keep = np.isfinite(scores) & np.isfinite(labels)
    scores, labels = scores[keep], labels[keep]
    frauds = int(labels.sum())
    if frauds < MIN_CALIBRATION_FRAUDS:
        return None
    order = np.argsort(scores, kind="stable")
    scores, labels = scores[order], labels[order]
    # Quantile bins, but never splitting equal scores (many rows share the model's lowest leaves).
    cuts = np.unique(np.searchsorted(scores, np.quantile(scores, np.linspace(0, 1, bins + 1)[1:-1]), side="right"))
    cuts = cuts[(cuts > 0) & (cuts < len(scores))]
    starts = np.concatenate([[0], cuts])
    counts = np.diff(np.concatenate([starts, [len(scores)]])).astype(np.float64)
    positives = np.add.reduceat(labels, starts)
    uppers = scores[np.concatenate([cuts, [len(scores)]]) - 1]
    rates, edges = _pool_adjacent_violators(positives / counts, counts, uppers)
    return Calibration(
        upper_edges=[float(e) for e in edges], probabilities=[float(r) for r in rates],
        reference_rows=len(scores), reference_frauds=frauds,
    )  # fmt: skip


def _pool_adjacent_violators(
    rates: np.ndarray, weights: np.ndarray, uppers: np.ndarray
) -> tuple[list[float], list[float]]:
    """Merge neighbouring bins until the rates never decrease; a merged bin keeps the upper edge of its last."""
    merged: list[list[float]] = []  # [rate, weight, upper edge]
    for rate, weight, upper in zip(rates.tolist(), weights.tolist(), uppers.tolist(), strict=True):
        merged.append([rate, weight, upper])
        while len(merged) > 1 and merged[-2][0] > merged[-1][0]:
            (r1, w1, _), (r2, w2, u2) = merged[-2], merged[-1]
            merged[-2:] = [[(r1 * w1 + r2 * w2) / (w1 + w2), w1 + w2, u2]]
    return [m[0] for m in merged], [m[2] for m in merged]


def estimate(scores: np.ndarray, flagged: np.ndarray, calibration: Calibration) -> dict[str, float]:
    """Expected frauds, expected caught, estimated recall and precision of the flagged rows (rows without
    a finite score are left out: a NaN would sort into the top bin)."""
    scores = np.asarray(scores, dtype=np.float64)
    finite = np.isfinite(scores)
    probability = calibration.probability(scores[finite])
    flagged = np.asarray(flagged, dtype=bool)[finite]
    expected = float(probability.sum())
    caught = float(probability[flagged].sum())
    return {
        "rows": float(len(probability)),
        "expected_frauds": expected,
        "expected_caught": caught,
        "recall": caught / expected if expected > 0 else float("nan"),
        "precision": caught / max(int(flagged.sum()), 1),
    }


def reference_estimate(
    scores: np.ndarray, flagged: np.ndarray, days: np.ndarray, calibration: Calibration
) -> dict[str, float]:
    """The estimate on the reference window, and its day-to-day spread (the noise live days are judged by)."""
    whole = estimate(scores, flagged, calibration)
    daily = []
    for day in np.unique(days):
        on_day = days == day
        if on_day.sum() >= MIN_ESTIMATE_ROWS:
            daily.append(estimate(scores[on_day], flagged[on_day], calibration)["recall"])
    spread = float(np.std(daily, ddof=1)) if len(daily) >= 3 else float("nan")
    return {"estimated_recall_at_review": whole["recall"], "estimated_recall_daily_sd": spread}



def window_estimate(
    store: Store, profile: ReferenceProfile, model_version: int | None, start: datetime, end: datetime
) -> dict[str, Any] | None:
    """The estimate on the model-scored rows of [start, end) against the reference's; None when it cannot be
    made (no reference estimate, another model served, fewer than `MIN_ESTIMATE_ROWS` rows, or no fraud
    expected at all).

    Rows the fallback rules scored are left out: their scores are not the model's. A row counts as flagged
    when its score reaches the *reference's* review threshold, not by its logged decision: the estimate
    judges the model at the policy its reference was judged at, so a threshold changed since (by a person
    or the threshold runbook) does not read as the population moving.
    """
    calibration, performance = profile.calibration, profile.performance
    reference = performance.get("estimated_recall_at_review")
    if calibration is None or reference is None or model_version is None or math.isnan(reference):
        return None
    if profile.model_version is not None and profile.model_version != model_version:
        return None  # another version's profile (`Monitor.profile` lends one) does not calibrate these scores
    frame = store.query(
        "SELECT score FROM predictions WHERE timestamp >= ? AND timestamp < ? AND model_version = ? "
        "AND NOT used_fallback",
        [pd.Timestamp(start).to_pydatetime(), pd.Timestamp(end).to_pydatetime(), model_version],
    )
    if len(frame) < MIN_ESTIMATE_ROWS:
        return None
    scores = frame["score"].to_numpy(dtype=np.float64)
    found = estimate(scores, scores >= profile.review_threshold, calibration)
    if not found["expected_frauds"] > 0:
        return None
    spread = performance.get("estimated_recall_daily_sd", float("nan"))
    noise = max(NOISE_FLOOR, 0.0 if math.isnan(spread) else spread)
    drop = reference - found["recall"]
    return {
        "window_start": str(pd.Timestamp(start)), "window_end": str(pd.Timestamp(end)), "rows": len(frame),
        "recall": found["recall"], "precision": found["precision"], "expected_frauds": found["expected_frauds"],
        "reference_recall": reference, "drop": drop, "z": drop / noise, "noise_sd": noise,
    }  # fmt: skip
