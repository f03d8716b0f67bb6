"""Fraud-detection metrics: AUC-ROC, average precision, card precision@k, precision/recall at a threshold.

AUC-ROC and average precision are scikit-learn's, because the Fraud Detection Handbook's published table
uses them and our numbers must be comparable to it. Card precision@k follows the handbook's chapter-4
definition: investigators check k cards a day, so what counts is how many of the k most suspicious cards
of each day are really compromised, not counting cards already caught on an earlier day (those are
blocked and would otherwise be "found" again every day).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

from scorer.columns import CUSTOMER_ID, LABEL, TIMESTAMP

__all__ = [
    "SCORE",
    "CardPrecision",
    "ThresholdMetrics",
    "auc_roc",
    "average_precision",
    "card_precision_at_k",
    "card_precision_at_k_per_day",
    "metrics_summary",
    "precision_recall_at_threshold",
]

# Column holding a model's fraud score in prediction frames.
SCORE = "score"

ArrayLike = npt.ArrayLike


def _labels_scores(y_true: ArrayLike, y_score: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Return labels and scores as flat arrays of equal length."""
    labels = np.asarray(y_true).ravel()
    scores = np.asarray(y_score, dtype=np.float64).ravel()
    if labels.shape != scores.shape:
        raise ValueError(f"labels and scores differ in length: {labels.shape[0]} vs {scores.shape[0]}")
    return labels, scores


def _both_classes(labels: np.ndarray) -> bool:
    """True when both a positive and a negative label are present (ranking metrics need both)."""
    positives = int(np.count_nonzero(labels == 1))
    return 0 < positives < labels.shape[0]


def auc_roc(y_true: ArrayLike, y_score: ArrayLike) -> float:
    """Area under the ROC curve (scikit-learn's `roc_auc_score`).

    Args:
        y_true: 0/1 labels.
        y_score: Scores, higher meaning more likely fraud.

    Returns:
        The AUC, or NaN when only one class is present (the AUC is undefined there; scikit-learn would
        raise, and a monitoring window without a fraud is normal, not an error).
    """
    labels, scores = _labels_scores(y_true, y_score)
    if not _both_classes(labels):
        return math.nan
    return float(roc_auc_score(labels, scores))


def average_precision(y_true: ArrayLike, y_score: ArrayLike) -> float:
    """Average precision (scikit-learn's `average_precision_score`, the area under the PR curve).

    Args:
        y_true: 0/1 labels.
        y_score: Scores, higher meaning more likely fraud.

    Returns:
        The average precision, or NaN without a positive label (undefined; scikit-learn would warn).
        With positives only it is 1.0.
    """
    labels, scores = _labels_scores(y_true, y_score)
    if not np.any(labels == 1):
        return math.nan
    return float(average_precision_score(labels, scores))


@dataclass(frozen=True)
class ThresholdMetrics:
    """Confusion counts and rates when transactions scoring at or above a threshold are flagged."""

    threshold: float
    flagged: int
    true_positives: int
    positives: int
    precision: float
    recall: float


def precision_recall_at_threshold(
    y_true: ArrayLike, y_score: ArrayLike, threshold: float
) -> ThresholdMetrics:
    """Precision and recall when every score `>= threshold` is flagged as fraud.

    Args:
        y_true: 0/1 labels.
        y_score: Scores.
        threshold: Decision threshold (inclusive, like the scorer's decision rule).

    Returns:
        The counts with precision (NaN when nothing is flagged) and recall (NaN without positives):
        undefined is reported as undefined rather than as 0, so an alert on "precision < x" does not fire
        on an empty window.
    """
    labels, scores = _labels_scores(y_true, y_score)
    flagged_mask = scores >= threshold
    positive_mask = labels == 1
    flagged = int(np.count_nonzero(flagged_mask))
    positives = int(np.count_nonzero(positive_mask))
    tp = int(np.count_nonzero(flagged_mask & positive_mask))
    return ThresholdMetrics(
        threshold=float(threshold),
        flagged=flagged,
        true_positives=tp,
        positives=positives,
        precision=tp / flagged if flagged else math.nan,
        recall=tp / positives if positives else math.nan,
    )


@dataclass(frozen=True)
class CardPrecision:
    """Card precision@k per test day and its mean (the handbook's headline number)."""

    k: int
    days: list[pd.Timestamp]
    precision_per_day: list[float]
    # Compromised cards still in play each day (after removing cards detected on earlier days).
    compromised_cards_per_day: list[int]
    # Cards counted as detected: compromised cards that made the top k, in order of days.
    detected_cards: list[object]

    @property
    def mean(self) -> float:
        """Mean of the daily precisions (NaN without days)."""
        return float(np.mean(self.precision_per_day)) if self.precision_per_day else math.nan


def card_precision_at_k_per_day(
    predictions: pd.DataFrame,
    k: int = 100,
    *,
    remove_detected: bool = True,
    score_column: str = SCORE,
) -> CardPrecision:
    """Card precision@k for each calendar day of `predictions`, the handbook's chapter-4 definition.

    For each day in increasing order: drop the transactions of cards detected on earlier days; reduce to
    one row per card (max score, max label: a card is compromised if any of its transactions that day is
    a fraud); take the k cards with the highest score; precision is the number of compromised cards among
    them divided by k (by k even when fewer than k cards are active, as in the handbook); the compromised
    cards in that top k are "detected" and leave all later days.

    Ties in score are broken by customer id (ascending) so the result is deterministic; the handbook's
    pandas quicksort leaves tie order unspecified, which only matters for exactly equal scores.

    Args:
        predictions: Frame with `customer_id`, `timestamp`, `is_fraud` and the score column.
        k: Cards investigated per day.
        remove_detected: Exclude cards detected on earlier days (the handbook's default).
        score_column: Name of the score column.

    Returns:
        The per-day precisions, the number of compromised cards in play each day, and the detected cards.

    Raises:
        ValueError: `k` is not positive or a column is missing.
    """
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    needed = [CUSTOMER_ID, TIMESTAMP, LABEL, score_column]
    missing = [c for c in needed if c not in predictions.columns]
    if missing:
        raise ValueError(f"predictions lack column(s) {missing}")
    frame = pd.DataFrame(
        {
            CUSTOMER_ID: predictions[CUSTOMER_ID].to_numpy(),
            "day": pd.to_datetime(predictions[TIMESTAMP]).dt.normalize().to_numpy(),
            LABEL: predictions[LABEL].to_numpy(),
            SCORE: predictions[score_column].to_numpy(dtype=np.float64),
        }
    )
    # One row per (day, card): computed once for all days, since removal only ever drops whole cards.
    per_card = frame.groupby(["day", CUSTOMER_ID], sort=True).agg({SCORE: "max", LABEL: "max"}).reset_index()
    detected: set[object] = set()
    detected_order: list[object] = []
    result = CardPrecision(
        k=k, days=[], precision_per_day=[], compromised_cards_per_day=[], detected_cards=[]
    )
    for day, cards in per_card.groupby("day", sort=True):
        if detected:
            cards = cards.loc[~cards[CUSTOMER_ID].isin(list(detected))]
        new_cards, precision = _top_k_day(cards, k)
        result.days.append(pd.Timestamp(day))  # type: ignore[arg-type]
        result.precision_per_day.append(precision)
        result.compromised_cards_per_day.append(int(np.count_nonzero(cards[LABEL].to_numpy() == 1)))
        if remove_detected:
            detected.update(new_cards)
        detected_order.extend(new_cards)
    result.detected_cards.extend(detected_order)
    return result


def _top_k_day(cards: pd.DataFrame, k: int) -> tuple[list[object], float]:
    """Compromised cards among the day's k highest-scoring cards, and their share of k."""
    # Sort by card id first, then a stable sort on score: equal scores keep the card-id order.
    ranked = cards.sort_values(CUSTOMER_ID, kind="stable").sort_values(SCORE, ascending=False, kind="stable")
    top = ranked.head(k)
    hits = top.loc[top[LABEL] == 1, CUSTOMER_ID].tolist()
    return hits, len(hits) / k


def card_precision_at_k(
    predictions: pd.DataFrame,
    k: int = 100,
    *,
    remove_detected: bool = True,
    score_column: str = SCORE,
) -> float:
    """Mean daily card precision@k (the handbook's CP@k); see `card_precision_at_k_per_day`.

    Args:
        predictions: Frame with `customer_id`, `timestamp`, `is_fraud` and the score column.
        k: Cards investigated per day.
        remove_detected: Exclude cards detected on earlier days (the handbook's default).
        score_column: Name of the score column.

    Returns:
        The mean over days, NaN for an empty frame.
    """
    return card_precision_at_k_per_day(
        predictions, k, remove_detected=remove_detected, score_column=score_column
    ).mean


def metrics_summary(predictions: pd.DataFrame, *, k_values: Iterable[int] = (100,)) -> dict[str, float]:
    """AUC-ROC, average precision and CP@k of a prediction frame, as the handbook's table reports them.

    Args:
        predictions: Frame with `customer_id`, `timestamp`, `is_fraud` and `score`.
        k_values: The k of each card precision to report (keys `cp{k}`).

    Returns:
        `{"auc": ..., "ap": ..., "cp100": ...}`.
    """
    labels = predictions[LABEL].to_numpy()
    scores = predictions[SCORE].to_numpy(dtype=np.float64)
    out = {"auc": auc_roc(labels, scores), "ap": average_precision(labels, scores)}
    for k in k_values:
        out[f"cp{k}"] = card_precision_at_k(predictions, k)
    return out
