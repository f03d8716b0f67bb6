"""Features: handbook definitions on hand-made data, and streaming == batch on simulated data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scorer.features import FEATURE_COLUMNS, FeatureConfig, FeatureState, compute_features
from scorer.simulate import Simulator, WorldConfig


def _tx(rows: list[tuple[str, str, str, float, float]]) -> pd.DataFrame:
    """(timestamp, customer, terminal, amount, label) -> canonical frame."""
    frame = pd.DataFrame(rows, columns=["timestamp", "customer_id", "terminal_id", "amount", "is_fraud"])
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], format="ISO8601")
    frame.insert(0, "transaction_id", range(len(frame)))
    return frame


def test_customer_windows_include_the_current_transaction_and_exclude_t_minus_n() -> None:
    tx = _tx(
        [
            ("2024-01-01 10:00", "c1", "t1", 10.0, 0),
            ("2024-01-02 10:00", "c1", "t1", 20.0, 0),  # exactly 1 day later: the first is outside (t-1d, t]
            ("2024-01-02 10:00:01", "c1", "t2", 30.0, 0),
            ("2024-01-02 11:00", "c2", "t1", 99.0, 0),
        ]
    )
    f = compute_features(tx)
    assert f["customer_tx_count_1d"].tolist() == [1, 1, 2, 1]
    assert f["customer_avg_amount_1d"].tolist() == [10.0, 20.0, 25.0, 99.0]
    assert f["customer_tx_count_7d"].tolist() == [1, 2, 3, 1]
    assert f["customer_avg_amount_7d"].iloc[2] == pytest.approx(20.0)


def test_terminal_windows_are_shifted_back_by_the_label_delay() -> None:
    config = FeatureConfig(label_delay_days=7)
    tx = _tx(
        [
            ("2024-01-01 10:00", "a", "t1", 10.0, 1),
            ("2024-01-03 10:00", "b", "t1", 10.0, 0),
            ("2024-01-08 09:00", "c", "t1", 10.0, 0),  # 7d - 1h after the first: still inside the delay
            ("2024-01-08 11:00", "d", "t1", 10.0, 0),  # 7d + 1h after the first: the first is now visible
            ("2024-01-10 11:00", "e", "t1", 10.0, 0),  # both early ones within (t-8d, t-7d]? no: 1d window
        ]
    )
    f = compute_features(tx, config)
    assert f["terminal_tx_count_1d"].tolist() == [0, 0, 0, 1, 1]
    assert f["terminal_risk_1d"].tolist() == [0, 0, 0, 1.0, 0.0]
    assert f["terminal_tx_count_7d"].tolist() == [0, 0, 0, 1, 2]
    assert f["terminal_risk_7d"].tolist() == [0, 0, 0, 1.0, 0.5]


def test_weekend_and_night_follow_the_handbook() -> None:
    tx = _tx(
        [
            ("2024-01-06 06:59", "a", "t", 1.0, 0),  # Saturday, hour 6 -> night
            ("2024-01-08 07:00", "a", "t", 1.0, 0),  # Monday, hour 7 -> day
        ]
    )
    f = compute_features(tx)
    assert f["is_weekend"].tolist() == [1.0, 0.0]
    assert f["is_night"].tolist() == [1.0, 0.0]


def test_feature_columns_are_the_handbook_fifteen() -> None:
    assert len(FEATURE_COLUMNS) == 15
    assert FeatureConfig(extra_features=True).columns[-2:] == ["is_online", "is_high_risk_mcc"]


def _simulated(days: int = 45) -> pd.DataFrame:
    return Simulator(WorldConfig(seed=3, customers=400, terminals=800)).generate(0, days)


def test_streaming_features_equal_batch_features_hour_by_hour() -> None:
    """Acceptance 4: the two paths agree (tolerance 1e-9) on the same data, labels arriving late."""
    tx = _simulated()
    config = FeatureConfig(extra_features=True)
    batch = compute_features(tx, config)
    # Labels of a transaction reach the streaming state label_delay_days after it happened. Before scoring
    # hour H we deliver the labels due by the END of H: a transaction at t inside H needs the labels of
    # rows up to t - delay, and labels of later rows fall outside its window, so knowing them early is moot.
    delay = pd.Timedelta(days=config.label_delay_days)
    state = FeatureState(config, min_recent_rows=512)  # small, so the old-rows index is rebuilt often
    parts = []
    unlabelled = tx.drop(columns=["is_fraud"])
    hours = tx["timestamp"].dt.floor("h")
    label_due = tx["timestamp"] + delay
    labelled_until = tx["timestamp"].min() - pd.Timedelta(days=1)
    for hour, rows in unlabelled.groupby(hours, sort=True):
        hour_end = hour + pd.Timedelta(hours=1)
        due = (label_due > labelled_until) & (label_due <= hour_end)
        state.add_labels(tx.loc[due, "transaction_id"].to_numpy(), tx.loc[due, "is_fraud"].to_numpy())
        labelled_until = hour_end
        parts.append(state.transform(rows))
    streamed = pd.concat(parts).loc[tx.index]
    np.testing.assert_allclose(streamed.to_numpy(), batch.to_numpy(), rtol=0, atol=1e-9)
    assert state.rows < len(tx)  # old rows were evicted


def test_single_transactions_stream_like_a_batch() -> None:
    tx = _simulated(days=12)
    batch = compute_features(tx)
    state = FeatureState(min_recent_rows=64)
    state.observe(tx.iloc[:-200])
    singles = pd.concat([state.transform(tx.iloc[[i]]) for i in range(len(tx) - 200, len(tx))])
    np.testing.assert_allclose(singles.to_numpy(), batch.iloc[-200:].to_numpy(), rtol=0, atol=1e-9)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 20 * 24),  # hour offset
            st.integers(0, 4),  # customer
            st.integers(0, 3),  # terminal
            st.floats(0, 500, allow_nan=False).map(lambda x: round(x, 2)),
            st.integers(0, 1),
        ),
        min_size=1,
        max_size=120,
    ),
    st.integers(1, 40),
)
def test_streaming_equals_batch_for_any_split(rows: list[tuple[int, int, int, float, int]], chunk: int) -> None:
    rows = sorted(rows, key=lambda r: r[0])
    tx = pd.DataFrame(
        {
            "transaction_id": range(len(rows)),
            "timestamp": pd.Timestamp("2024-03-01") + pd.to_timedelta([r[0] for r in rows], unit="h"),
            "customer_id": [f"c{r[1]}" for r in rows],
            "terminal_id": [r[2] for r in rows],
            "amount": [r[3] for r in rows],
            "is_fraud": [r[4] for r in rows],
        }
    )
    batch = compute_features(tx)
    state = FeatureState(min_recent_rows=8)
    streamed = pd.concat([state.transform(tx.iloc[i : i + chunk]) for i in range(0, len(tx), chunk)])
    np.testing.assert_allclose(streamed.to_numpy(), batch.to_numpy(), rtol=0, atol=1e-9)


def test_rebuilt_indexes_equal_a_full_stable_sort() -> None:
    """Rebuilds merge the previous order with the recent rows; the result must be the stable sort itself."""
    tx = _simulated(days=20)
    tx["timestamp"] = tx["timestamp"].dt.floor("h")  # many equal keys: ties must stay in arrival order
    state = FeatureState(min_recent_rows=256)
    rebuilds = 0
    for start in range(0, len(tx), 700):
        before = state._index
        state.transform(tx.iloc[start : start + 700])
        index = state._index
        if index is None or index is before:
            continue
        rebuilds += 1
        assert state._old is not None
        for windows, ids in ((index.customers, state._old.customer_id), (index.terminals, state._old.terminal_id)):
            key = ids * windows.stride + (state._old.ts_ms - windows.t0)
            np.testing.assert_array_equal(windows.order, np.argsort(key, kind="stable"))
    assert rebuilds > 3
