"""`retrain_model`: train a challenger on recent labels and compare it with the champion on the same rows.

The labelled window is the last ``window_days`` days that have labels (labels arrive days after their
transactions, so the window ends at the latest labelled day, never in the unlabelled present). Its last
`TEST_DAYS` days are held out; the challenger trains on the days before them. Both models are then scored
on exactly the same held-out rows (cards already known to be compromised removed, as in training) and
compared on average precision and on recall and precision at the thresholds serving now.

The challenger is registered, profiled (so the monitor has its reference if it is promoted) and marked
``challenger``. Promotion is a separate action (`promote_model`), taken only if the comparison says so.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Final

import numpy as np
import pandas as pd

from monitor.reference import profile_model
from scorer import columns as C
from scorer.errors import ModelRegistryError
from scorer.features import FeatureConfig, compute_features
from scorer.metrics import average_precision, precision_recall_at_threshold
from scorer.pipeline import train_and_register
from scorer.serving import as_naive_utc
from scorer.train import SplitWindows, TrainParams, predict, split_at
from tools.actions.common import change_reason
from tools.audit import ActionLog, Effect, run_action
from tools.context import ToolContext
from tools.errors import ToolRefused, ToolRetry
from tools.registry import tool

__all__ = ["MIN_TEST_FRAUDS", "MIN_TRAIN_FRAUDS", "TEST_DAYS", "retrain_model"]

# Seven test days: a whole week (weekday and weekend traffic), and exactly the window `profile_model`
# profiles the new model on when the test window ends the data (see `_register_challenger`).
TEST_DAYS: Final = 7
MIN_WINDOW_DAYS: Final = TEST_DAYS + 7
MAX_WINDOW_DAYS: Final = 90
# Below these counts AP and recall are too noisy to choose between two models.
MIN_TRAIN_FRAUDS: Final = 30
MIN_TEST_FRAUDS: Final = 10
RATE_WINDOW: Final = timedelta(days=1)
_COLUMNS: Final = [*C.INPUT_COLUMNS, C.LABEL]


@tool(kind="action", risk="high")
def retrain_model(ctx: ToolContext, window_days: int = 28) -> dict[str, Any]:
    """Train a challenger model on the most recent labelled transactions and compare it with the champion.

    The last 7 labelled days are held out; the challenger trains on the days before them, then both
    models are scored on the same held-out transactions (average precision, recall and precision at the
    serving thresholds). The new version is registered as the challenger and NOT promoted: call
    promote_model if it beats the champion. Refused without enough labelled fraud, or after too many
    retrains in a day.

    Args:
        window_days: How many of the most recent labelled days to use, 14 to 90 (the last 7 are the test).
    """
    if not MIN_WINDOW_DAYS <= window_days <= MAX_WINDOW_DAYS:
        raise ToolRetry(
            f"window_days must be between {MIN_WINDOW_DAYS} and {MAX_WINDOW_DAYS}, got {window_days}"
        )

    def apply() -> Effect:
        _check_retrain_rate(ctx)
        data = _labelled_transactions(ctx, window_days)
        windows = _windows(data, window_days)
        data = data[data[C.TIMESTAMP] < windows.test_end]
        train, test = split_at(data, windows)
        _require_enough_fraud(train, test, windows)
        challenger = _register_challenger(ctx, data, windows)
        state = ctx.serving.current()
        challenger_metrics = _evaluate(ctx, challenger, data, test, state.threshold, state.review_threshold)
        champion_metrics: dict[str, Any] | None = None
        champion_error = None
        if state.champion_version is not None:
            try:
                champion_metrics = _evaluate(
                    ctx, state.champion_version, data, test, state.threshold, state.review_threshold
                )
            except ModelRegistryError as error:  # e.g. a corrupted champion: still report the challenger
                champion_error = str(error)
        return Effect(
            result={
                "challenger_version": challenger,
                "champion_version": state.champion_version,
                "window": {
                    "train_start": windows.train_start.isoformat(),
                    "train_end": windows.train_end.isoformat(),
                    "test_start": windows.test_start.isoformat(),
                    "test_end": windows.test_end.isoformat(),
                },
                "train_rows": len(train),
                "train_frauds": int(train[C.LABEL].sum()),
                "test_rows": len(test),
                "test_frauds": int(test[C.LABEL].sum()),
                "thresholds": {"threshold": state.threshold, "review_threshold": state.review_threshold},
                "challenger": challenger_metrics,
                "champion": champion_metrics,
                "champion_error": champion_error,
                "beats_champion": _beats(challenger_metrics, champion_metrics),
                "promoted": False,
                "next": f"promote_model(version={challenger}) only if beats_champion is true",
            },
            # Nothing serves differently: the new version is only registered and marked challenger.
            inverse=None,
        )

    return run_action(
        ctx,
        "retrain_model",
        {"window_days": window_days},
        apply,
        in_force=lambda result: ctx.registry.alias("challenger") == result["challenger_version"],
    )


def _check_retrain_rate(ctx: ToolContext) -> None:
    limit = ctx.limits.retrains_per_day
    recent = ActionLog(ctx.store, ctx.clock).since("retrain_model", ctx.clock() - RATE_WINDOW)
    if len(recent) >= limit:
        next_allowed = recent[-limit].recorded_at + RATE_WINDOW
        raise ToolRefused(
            f"rate limit: {len(recent)} retrains in the last 24 hours (at most {limit}); the next is allowed "
            f"after {next_allowed.isoformat(sep=' ')} UTC"
        )


def _labelled_transactions(ctx: ToolContext, window_days: int) -> pd.DataFrame:
    """Transactions up to now with `is_fraud` (NaN where no label has arrived), from history and store.

    ``ctx.extras["history"]`` (the training history, in evals and demos) and the store's scored
    transactions with the labels received so far are combined; where both hold a transaction, the copy
    with a known label wins.
    """
    now = pd.Timestamp(as_naive_utc(ctx.clock()))
    # Enough to reach back past the label delay, the window and the feature history before it.
    since = now - pd.Timedelta(days=window_days + FeatureConfig().retention_days + 30)
    frames = []
    history = ctx.extras.get("history")
    if history is not None:
        if not isinstance(history, pd.DataFrame):
            raise TypeError(f"ctx.extras['history'] must be a pandas DataFrame, got {type(history).__name__}")
        frames.append(history[[c for c in _COLUMNS if c in history]])
    frames.append(_store_transactions(ctx, since.to_pydatetime(), now.to_pydatetime()))
    frames = [f.assign(**{C.TIMESTAMP: pd.to_datetime(f[C.TIMESTAMP])}) for f in frames if len(f)]
    if not frames:
        raise ToolRefused("cannot retrain: there are no transactions (no history and none in the store)")
    data = pd.concat(frames, ignore_index=True)
    data = data[(data[C.TIMESTAMP] >= since) & (data[C.TIMESTAMP] <= now)]
    known = data[C.LABEL].notna()
    data = (
        data.assign(_known=known)
        .sort_values("_known", kind="stable")
        .drop_duplicates(C.TRANSACTION_ID, keep="last")
        .drop(columns="_known")
        .sort_values(C.TIMESTAMP, kind="stable")
    )
    # Optional fields the store holds as all-NULL columns would otherwise switch on their encodings.
    empty = [c for c in C.OPTIONAL_INPUT_COLUMNS if c in data and data[c].isna().all()]
    return data.drop(columns=empty).reset_index(drop=True)


def _store_transactions(ctx: ToolContext, since: Any, now: Any) -> pd.DataFrame:
    return ctx.store.query(
        f"""
        WITH tx AS (
            SELECT * FROM transactions WHERE timestamp >= ? AND timestamp <= ?
            QUALIFY row_number() OVER (PARTITION BY transaction_id ORDER BY received_at) = 1
        ), label AS (
            SELECT transaction_id, is_fraud FROM labels WHERE received_at <= ?
            QUALIFY row_number() OVER (PARTITION BY transaction_id ORDER BY received_at DESC) = 1
        )
        SELECT {", ".join(f"tx.{c}" for c in C.INPUT_COLUMNS)}, CAST(label.is_fraud AS DOUBLE) AS {C.LABEL}
        FROM tx LEFT JOIN label USING (transaction_id)
        ORDER BY tx.timestamp
        """,
        [since, now, now],
    )


def _windows(data: pd.DataFrame, window_days: int) -> SplitWindows:
    """Train then test, no gap, ending at the midnight after the latest labelled transaction."""
    labelled = data.loc[data[C.LABEL].notna(), C.TIMESTAMP]
    if labelled.empty:
        raise ToolRefused(
            "cannot retrain: no labelled transactions have arrived (is the label pipeline stalled? "
            "check label freshness)"
        )
    end = labelled.max().normalize() + pd.Timedelta(days=1)
    return SplitWindows(
        end - pd.Timedelta(days=window_days),
        train_days=window_days - TEST_DAYS,
        delay_days=0,
        test_days=TEST_DAYS,
    )


def _require_enough_fraud(train: pd.DataFrame, test: pd.DataFrame, windows: SplitWindows) -> None:
    train_frauds, test_frauds = int(train[C.LABEL].sum()), int(test[C.LABEL].sum())
    if train_frauds < MIN_TRAIN_FRAUDS or test_frauds < MIN_TEST_FRAUDS:
        raise ToolRefused(
            f"cannot retrain: too few labelled frauds ({train_frauds} to train on from "
            f"{windows.train_start.date()} to {windows.train_end.date()}, need {MIN_TRAIN_FRAUDS}; "
            f"{test_frauds} to test on until {windows.test_end.date()}, need {MIN_TEST_FRAUDS}); "
            "a longer window_days may help, or labels are late (check label freshness)"
        )


def _register_challenger(ctx: ToolContext, data: pd.DataFrame, windows: SplitWindows) -> int:
    """Train on the windows' training days, register, profile, and mark the new version challenger."""
    params = ctx.extras.get("train_params")
    if params is not None and not isinstance(params, TrainParams):
        raise TypeError(f"ctx.extras['train_params'] must be TrainParams, got {type(params).__name__}")
    reason = change_reason(ctx, "retrain_model")
    try:
        run = train_and_register(
            ctx.registry,
            data,
            split="recent",  # `data` ends on the test window's last day, so "recent" is exactly `windows`
            params=params,
            train_days=windows.train_days,
            delay_days=windows.delay_days,
            test_days=windows.test_days,
            promote=False,
            actor=ctx.actor,
            reason=reason,
        )
    except ValueError as error:  # e.g. an empty split
        raise ToolRefused(f"cannot retrain: {error}") from error
    version = run.model.version
    # With no gap after training, `profile_model` profiles the last 7 days of `data`: the test window,
    # out of sample, as for any other model.
    profile_model(ctx.registry, version, data, label_delay_days=run.model.metadata.label_delay_days)
    ctx.registry.set_challenger(version, actor=ctx.actor, reason=reason)
    return version


def _evaluate(
    ctx: ToolContext, version: int, data: pd.DataFrame, test: pd.DataFrame, threshold: float, review: float
) -> dict[str, Any]:
    """A model's metrics on the test rows, with features computed as the scorer computes them."""
    loaded = ctx.registry.load(version)
    config = FeatureConfig(extra_features=True, label_delay_days=loaded.metadata.label_delay_days)
    start = test[C.TIMESTAMP].min() - pd.Timedelta(days=config.retention_days + 1)
    span = data[(data[C.TIMESTAMP] >= start) & (data[C.TIMESTAMP] <= test[C.TIMESTAMP].max())]
    features = compute_features(span, config).loc[test.index]
    scores = predict(loaded.booster, features, loaded.metadata.feature_columns)
    labels = test[C.LABEL].to_numpy(dtype=np.int64)
    at_threshold = precision_recall_at_threshold(labels, scores, threshold)
    at_review = precision_recall_at_threshold(labels, scores, review)
    return {
        "version": version,
        "ap": average_precision(labels, scores),
        "recall_at_threshold": at_threshold.recall,
        "precision_at_threshold": at_threshold.precision,
        "recall_at_review": at_review.recall,
        "precision_at_review": at_review.precision,
    }


def _beats(challenger: dict[str, Any], champion: dict[str, Any] | None) -> bool | None:
    """Better ranking (AP) without catching less fraud at the review threshold; None: nothing to compare."""
    if champion is None:
        return None
    return bool(
        challenger["ap"] > champion["ap"] and challenger["recall_at_review"] >= champion["recall_at_review"]
    )
