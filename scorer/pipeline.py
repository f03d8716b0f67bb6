"""Train a model on transactions and register it: the glue between `scorer.train` and the registry."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from scorer import columns as C
from scorer.features import FeatureConfig
from scorer.metrics import SCORE
from scorer.registry import ModelMetadata, ModelRegistry, ModelVersion, TrainingWindow, fingerprint_frame
from scorer.train import SplitName, TrainParams, TrainReport, run_training

# Decline at an even bet; review the riskiest ~1 % of traffic (a typical manual-review budget).
DECLINE_THRESHOLD = 0.5
REVIEW_SHARE = 0.01


@dataclass
class RegisteredRun:
    report: TrainReport
    model: ModelVersion
    promoted: bool


def suggest_thresholds(test_scores: np.ndarray) -> tuple[float, float]:
    """(decline threshold, review threshold) from the scores of the test window."""
    if len(test_scores) == 0:
        return DECLINE_THRESHOLD, DECLINE_THRESHOLD / 2
    review = float(np.quantile(test_scores, 1.0 - REVIEW_SHARE))
    return DECLINE_THRESHOLD, float(min(max(review, 0.05), DECLINE_THRESHOLD))


def train_and_register(
    registry: ModelRegistry,
    transactions: pd.DataFrame,
    *,
    split: SplitName = "recent",
    params: TrainParams | None = None,
    feature_config: FeatureConfig | None = None,
    train_days: int = 7,
    delay_days: int = 7,
    test_days: int = 7,
    promote: bool = True,
    actor: str = "selfheal train",
    reason: str = "trained",
) -> RegisteredRun:
    """Train on ``transactions``, register the model, and promote it to champion if asked."""
    config = feature_config or FeatureConfig(extra_features=C.CHANNEL in transactions and C.MCC in transactions)
    run = run_training(
        transactions,
        split,
        params=params,
        feature_config=config,
        train_days=train_days,
        delay_days=delay_days,
        test_days=test_days,
    )
    report = run.report
    threshold, review = suggest_thresholds(run.predictions[SCORE].to_numpy())
    metadata = ModelMetadata(
        training_window=TrainingWindow(start=report.train_window.start, end=report.train_window.end),
        data_fingerprint=fingerprint_frame(transactions),
        params=report.params.model_dump(),
        metrics={"auc": report.auc, "ap": report.ap, "cp100": report.cp100},
        feature_columns=report.feature_columns,
        best_iteration=report.best_iteration,
        label_delay_days=config.label_delay_days,
        suggested_threshold=threshold,
        suggested_review_threshold=review,
        notes=f"split={split}, train_rows={report.train_rows}, test_rows={report.test_rows}",
    )
    model = registry.register(run.model.booster, metadata, actor=actor, reason=reason)
    if promote:
        registry.promote(model.version, actor=actor, reason=reason)
    return RegisteredRun(report=report, model=model, promoted=promote)
