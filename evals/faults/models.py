"""Building the bad models that deploy faults ship, fast enough for tests and cached per history.

Poor models are really trained, with the bug inside the training pipeline (flipped labels, one stump,
columns in the wrong order), and evaluated by that same buggy pipeline, so their recorded metrics look
like what a careless pipeline would report. Slow models are the champion's own trees split into many
scaled copies: the scores stay the champion's (to float rounding) while each prediction walks ``trees``
trees, so the fault is latency alone. Training thousands of real trees would take minutes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

import numpy as np
import pandas as pd
import xgboost as xgb

from scorer import columns as C
from scorer.features import EXTRA_FEATURE_COLUMNS, FeatureConfig, compute_features
from scorer.metrics import auc_roc, average_precision
from scorer.registry import ModelMetadata, TrainingWindow, fingerprint_frame
from scorer.train import TrainParams, time_split, train_model

BadDeployMode = Literal["inverted_labels", "undertrained", "wrong_feature_order"]

# Small but real: enough trees that the inverted and reordered models are confidently wrong.
_QUICK = TrainParams(n_estimators=40, max_depth=3, early_stopping_rounds=None, valid_days=0, nthread=1)
_STUMP = TrainParams(n_estimators=1, max_depth=1, early_stopping_rounds=None, valid_days=0, nthread=1)
_TRAIN_DAYS: Final = 7
_TEST_DAYS: Final = 7
_CACHE_SIZE: Final = 32


@dataclass(frozen=True)
class BuiltModel:
    """A booster and the metadata to register it with (``created_at`` is set at registration)."""

    booster_ubj: bytes
    metadata: dict[str, Any]

    def booster(self) -> xgb.Booster:
        booster = xgb.Booster()
        booster.load_model(bytearray(self.booster_ubj))
        return booster

    def metadata_at(self, created_at: datetime) -> ModelMetadata:
        return ModelMetadata.model_validate({**self.metadata, "created_at": created_at})


_cache: dict[tuple[object, ...], BuiltModel] = {}


def _cached(key: tuple[object, ...], build: Any) -> BuiltModel:
    if key not in _cache:
        if len(_cache) >= _CACHE_SIZE:
            _cache.pop(next(iter(_cache)))
        _cache[key] = build()
    return _cache[key]


def poor_model(
    history: pd.DataFrame, mode: BadDeployMode, columns: list[str], label_delay_days: int
) -> BuiltModel:
    """A deliberately poor model trained on the most recent labelled weeks of ``history``.

    Args:
        history: Transactions with ``is_fraud`` (what the champion was trained on).
        mode: ``inverted_labels`` (fraud and genuine swapped), ``undertrained`` (one tree of depth 1) or
            ``wrong_feature_order`` (trained with the columns sorted by name but recorded in model order,
            the classic train/serve skew: its metadata looks exactly right).
        columns: The champion's feature columns (the poor model claims the same).
        label_delay_days: The champion's label delay (features must be computed the same way).
    """
    key = ("poor", fingerprint_frame(history), mode, tuple(columns), label_delay_days)
    return _cached(key, lambda: _train_poor(history, mode, columns, label_delay_days))


def _train_poor(
    history: pd.DataFrame, mode: BadDeployMode, columns: list[str], label_delay_days: int
) -> BuiltModel:
    config = FeatureConfig(
        extra_features=all(c in columns for c in EXTRA_FEATURE_COLUMNS), label_delay_days=label_delay_days
    )
    if config.columns != columns:
        raise ValueError(f"cannot rebuild features {columns}: the feature code makes {config.columns}")
    train, test = time_split(history, _TRAIN_DAYS, label_delay_days, _TEST_DAYS)
    since = train[C.TIMESTAMP].min() - pd.Timedelta(days=config.retention_days)
    features = compute_features(history.loc[history[C.TIMESTAMP] >= since], config)
    order = sorted(columns) if mode == "wrong_feature_order" else columns

    def inputs(rows: pd.DataFrame) -> pd.DataFrame:
        # Values of `order` under the names of `columns`: a no-op unless the columns are scrambled.
        return features.loc[rows.index, order].set_axis(columns, axis=1)

    def labels(rows: pd.DataFrame) -> np.ndarray:
        y = rows[C.LABEL].to_numpy(dtype=np.float64)
        return 1.0 - y if mode == "inverted_labels" else y

    params = _STUMP if mode == "undertrained" else _QUICK
    model = train_model(inputs(train), labels(train), params=params, feature_columns=columns)
    scores = model.predict(inputs(test))
    metadata = {
        "training_window": TrainingWindow(
            start=train[C.TIMESTAMP].min().normalize(), end=test[C.TIMESTAMP].min().normalize()
        ),
        "data_fingerprint": fingerprint_frame(train),
        "params": params.model_dump(),
        # As the buggy pipeline measured them, on its own (equally buggy) test set.
        "metrics": {"auc": auc_roc(labels(test), scores), "ap": average_precision(labels(test), scores)},
        "feature_columns": columns,
        "best_iteration": model.best_iteration,
        "label_delay_days": label_delay_days,
        "notes": f"nightly retrain, train_rows={len(train)}, test_rows={len(test)}",
    }
    return BuiltModel(model.to_ubj(), metadata)


def slow_model(champion_ubj: bytes, champion_metadata: ModelMetadata, trees: int) -> BuiltModel:
    """The champion with its trees split into ``trees`` scaled copies: same scores, slower predictions."""
    key = ("slow", hashlib.sha256(champion_ubj).hexdigest(), trees)

    def build() -> BuiltModel:
        booster = xgb.Booster()
        booster.load_model(bytearray(champion_ubj))
        slow = replicate_trees(booster, trees)
        params = {**champion_metadata.params, "n_estimators": trees, "early_stopping_rounds": None}
        metadata = {
            **champion_metadata.model_dump(exclude={"created_at", "reference_profile"}),
            "params": params,
            "best_iteration": trees - 1,
            "notes": "nightly retrain, early stopping off",
        }
        return BuiltModel(bytes(slow.save_raw(raw_format="ubj")), metadata)

    return _cached(key, build)


def replicate_trees(booster: xgb.Booster, trees: int) -> xgb.Booster:
    """A booster of exactly ``trees`` trees whose margin equals ``booster``'s (to float rounding).

    Tree i is repeated k_i times with its leaf values divided by k_i, with k_i as even as possible.

    Raises:
        ValueError: ``trees`` is smaller than the booster's tree count, or the booster is not a
            single-output tree model.
    """
    model = json.loads(bytes(booster.save_raw(raw_format="json")))
    gbtree = model["learner"]["gradient_booster"]["model"]
    original = gbtree["trees"]
    if not original or trees < len(original):
        raise ValueError(f"cannot make {trees} trees from a booster of {len(original)}")
    if (
        any(group != 0 for group in gbtree["tree_info"])
        or gbtree["gbtree_model_param"]["num_parallel_tree"] != "1"
    ):
        raise ValueError("only single-output boosters with one tree per round can be replicated")
    base, extra = divmod(trees, len(original))
    replicated: list[dict[str, Any]] = []
    for index, tree in enumerate(original):
        copies = base + (1 if index < extra else 0)
        scaled = _scaled_leaves(tree, 1.0 / copies)
        first = len(replicated)
        replicated.extend([{**scaled, "id": first + i} for i in range(copies)])
    gbtree["trees"] = replicated
    gbtree["tree_info"] = [0] * trees
    gbtree["iteration_indptr"] = list(range(trees + 1))
    gbtree["gbtree_model_param"]["num_trees"] = str(trees)
    slow = xgb.Booster()
    slow.load_model(bytearray(json.dumps(model).encode()))
    slow.set_param({"nthread": 1})
    return slow


def _scaled_leaves(tree: dict[str, Any], factor: float) -> dict[str, Any]:
    """A copy of a JSON tree with its leaf values multiplied by ``factor``."""
    leaves = np.asarray(tree["left_children"]) == -1
    scaled = dict(tree)
    for name in ("split_conditions", "base_weights"):
        values = np.asarray(tree[name], dtype=np.float64)
        values[leaves] *= factor
        scaled[name] = values.tolist()
    return scaled
