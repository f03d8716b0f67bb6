"""`scorer.one_row.OneRowPredictor`: the same score as `Booster.inplace_predict`, bit for bit, or not used."""

from __future__ import annotations

import numpy as np
import pytest
import xgboost as xgb

from scorer.one_row import OneRowPredictor


@pytest.fixture(scope="module")
def booster() -> xgb.Booster:
    rng = np.random.default_rng(3)
    features = rng.normal(size=(2000, 9)).astype(np.float32)
    features[rng.random(features.shape) < 0.1] = np.nan
    labels = (np.nan_to_num(features[:, 0]) + rng.normal(scale=0.5, size=2000) > 1.0).astype(int)
    params = {"objective": "binary:logistic", "max_depth": 4, "nthread": 1, "seed": 0}
    return xgb.train(params, xgb.DMatrix(features, label=labels), num_boost_round=30)


def test_one_row_scores_equal_inplace_predict_bit_for_bit(booster: xgb.Booster) -> None:
    predictor = OneRowPredictor.for_booster(booster)
    assert predictor is not None
    rng = np.random.default_rng(4)
    rows = rng.normal(scale=3.0, size=(500, 9)).astype(np.float32)
    rows[rng.random(rows.shape) < 0.2] = np.nan  # missing values too
    rows[0] = np.nan  # a row of nothing but missing values
    expected = booster.inplace_predict(rows)
    got = np.array([predictor.predict(row.tolist()) for row in rows], dtype=np.float32)
    assert np.array_equal(got, expected.astype(np.float32), equal_nan=True)
    assert len(set(got.tolist())) > 50  # the rows really took different paths through the trees


def test_without_the_internals_it_declines_and_the_caller_keeps_inplace_predict(
    booster: xgb.Booster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delattr("xgboost.core.make_jcargs")
    assert OneRowPredictor.for_booster(booster) is None
