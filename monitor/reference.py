"""Train, register and profile a model in one step: every registered model gets its reference profile.

The profile is computed on the model's *test* window (scored out of sample, as live traffic will be),
with the feature values the scorer computes, the model's scores, and the thresholds it will serve with.
It lives in the registry next to the model (`ModelMetadata.reference_profile`), so a rollback brings its
reference back with it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from monitor.estimated import fit_calibration, reference_estimate
from monitor.profile import ReferenceProfile, build_profile
from scorer import columns as C
from scorer.features import FeatureConfig, compute_features
from scorer.pipeline import RegisteredRun, train_and_register
from scorer.registry import ModelMetadata, ModelRegistry
from scorer.train import SplitName, TrainParams

MS_PER_DAY = pd.Timedelta(days=1)


def train_register_and_profile(
    registry: ModelRegistry,
    transactions: pd.DataFrame,
    *,
    split: SplitName = "recent",
    params: TrainParams | None = None,
    promote: bool = True,
    actor: str = "selfheal train",
    reason: str = "trained",
    label_delay_days: int = 7,
) -> tuple[RegisteredRun, ReferenceProfile]:
    """Train (by default on the most recent data), register (and promote), then attach the reference profile."""
    run = train_and_register(
        registry, transactions, split=split, params=params, promote=promote, actor=actor, reason=reason,
        delay_days=label_delay_days,
    )
    profile = profile_model(registry, run.model.version, transactions, label_delay_days=label_delay_days)
    return run, profile


def profile_model(
    registry: ModelRegistry, version: int, transactions: pd.DataFrame, *, label_delay_days: int = 7
) -> ReferenceProfile:
    """Build and store the reference profile of a registered model from its test window."""
    model = registry.get(version)
    loaded = registry.load(version)
    metadata = loaded.metadata
    start, end = _test_window(transactions, metadata, label_delay_days)
    config = FeatureConfig(
        extra_features=any(c in metadata.feature_columns for c in ("is_online", "is_high_risk_mcc")),
        label_delay_days=label_delay_days,
    )
    stamps = transactions[C.TIMESTAMP]
    span = transactions[(stamps >= start - pd.Timedelta(days=config.retention_days + 1)) & (stamps < end)]
    features = compute_features(span, FeatureConfig(extra_features=True, label_delay_days=label_delay_days))
    in_window = ((span[C.TIMESTAMP] >= start) & (span[C.TIMESTAMP] < end)).to_numpy()
    window_features = features[in_window]
    window = span[in_window]
    scores = np.asarray(loaded.booster.inplace_predict(window_features[metadata.feature_columns].to_numpy(np.float32)))
    threshold = metadata.suggested_threshold if metadata.suggested_threshold is not None else 0.5
    review = metadata.suggested_review_threshold if metadata.suggested_review_threshold is not None else threshold / 2
    days = pd.to_datetime(window[C.TIMESTAMP]).dt.floor("D").to_numpy()
    calibration = fit_calibration(scores, window[C.LABEL].to_numpy()) if C.LABEL in window else None
    performance = _performance(window, days, scores, threshold, review)
    if calibration is not None:
        performance.update(reference_estimate(scores, scores >= review, days, calibration))
    profile = build_profile(
        window_features,
        scores,
        transactions=window,
        volume_history=stamps,
        threshold=threshold,
        review_threshold=review,
        model_version=model.version,
        importance=_importance(loaded.booster),
        performance=performance,
        calibration=calibration,
    )
    registry.set_reference_profile(version, profile.model_dump(mode="json"))
    return profile


def test_window_start(metadata: ModelMetadata, delay_days: int) -> pd.Timestamp:
    """Where a registered model's test window starts: the end of its training window plus the label delay."""
    return pd.Timestamp(metadata.training_window.end) + pd.Timedelta(days=delay_days)


def _test_window(
    transactions: pd.DataFrame, metadata: ModelMetadata, delay_days: int
) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The window after the training window and the label delay, up to the end of the data."""
    start = test_window_start(metadata, delay_days)
    end = pd.Timestamp(transactions[C.TIMESTAMP].max()) + pd.Timedelta(seconds=1)
    if start >= end:  # no data after the delay: fall back to the last week of the data
        start = end - pd.Timedelta(days=7)
    return start, end


def _importance(booster: object) -> dict[str, float]:
    getter = getattr(booster, "get_score", None)
    if getter is None:
        return {}
    scores = getter(importance_type="total_gain")
    return {str(k): float(v) for k, v in scores.items()}


def _performance(
    window: pd.DataFrame, days: np.ndarray, scores: np.ndarray, threshold: float, review: float
) -> dict[str, float]:
    """Reference metrics of the alert policy, and how much daily recall wanders on its own."""
    if C.LABEL not in window or len(window) == 0:
        return {}
    labels = window[C.LABEL].to_numpy()
    fraud = labels == 1
    flagged = scores >= review
    declined = scores >= threshold
    frauds = max(int(fraud.sum()), 1)
    daily = pd.DataFrame({"day": days, "fraud": fraud, "caught": fraud & flagged}).groupby("day").sum()
    daily = daily[daily["fraud"] >= 5]
    daily_recall = (daily["caught"] / daily["fraud"]).to_numpy()
    return {
        "fraud_rate": float(fraud.mean()),
        "recall_at_review": float((flagged & fraud).sum() / frauds),
        "precision_at_review": float((flagged & fraud).sum() / max(int(flagged.sum()), 1)),
        "recall_at_threshold": float((declined & fraud).sum() / frauds),
        "precision_at_threshold": float((declined & fraud).sum() / max(int(declined.sum()), 1)),
        # Day-to-day spread of recall: fraud comes in campaigns (a compromised terminal, a card), so a
        # day's recall varies far more than a binomial count of its frauds suggests.
        "recall_daily_sd": float(np.std(daily_recall, ddof=1)) if len(daily_recall) >= 3 else float("nan"),
    }
