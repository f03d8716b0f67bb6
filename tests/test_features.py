"""Features: handbook definitions on hand-made data, and streaming == batch on simulated data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scorer.feature_state import FeatureState
from scorer.features import FEATURE_COLUMNS, FeatureConfig, compute_features
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


@pytest.mark.slow
def test_streaming_features_equal_batch_features_hour_by_hour() -> None:
    """Acceptance 4: the two paths agree (tolerance 1e-9) on the same data, labels arriving late."""
    tx = _simulated(days=52)  # long enough past the 38-day retention that old rows are evicted
    config = FeatureConfig(extra_features=True)
    batch = compute_features(tx, config)
    # Labels of a transaction reach the streaming state label_delay_days after it happened. Before scoring
    # hour H we deliver the labels due by the END of H: a transaction at t inside H needs the labels of
    # rows up to t - delay, and labels of later rows fall outside its window, so knowing them early is moot.
    delay = pd.Timedelta(days=config.label_delay_days)
    state = FeatureState(config, min_recent_rows=512)  # small, so the tail is merged into the indexes often
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


def _assert_indexes_are_stable_sorts(state: FeatureState) -> None:
    """Each window index lists its rows in the stable sort of (entity, time), with its prefix sums.

    The large level holds rows [0, promoted), the small one [promoted, indexed): row ids in arrival order.
    """
    state._sync_labels()  # labels reach the terminal indexes lazily, before the next batch reads them
    rows = state._rows
    for level, lo, hi in ((state._large, 0, state._promoted), (state._small, state._promoted, state._indexed)):
        span = slice(lo, hi)
        frauds = np.nan_to_num(rows.label[span]).astype(np.int64)
        for index, codes, values in (
            (level.customers, rows.customer[span], rows.units[span]),
            (level.terminals, rows.terminal[span], frauds),
        ):
            assert len(index) == hi - lo
            if hi == lo:
                continue
            key = codes * index.stride + (rows.ts_ms[span] - index.t0)
            order = np.argsort(key, kind="stable")
            if index.row is not None:  # the customer index keeps no row ids: its values show the tie order
                np.testing.assert_array_equal(index.row, lo + order)
            np.testing.assert_array_equal(index.key, key[order])
            np.testing.assert_array_equal(index.values, values[order])
            np.testing.assert_array_equal(index.prefix, np.concatenate([[0], np.cumsum(values[order])]))
            assert rows.ts_ms[span].max() - index.t0 <= index.capacity and rows.ts_ms[span].min() >= index.t0


def test_window_indexes_stay_stable_sorts_through_merges_evictions_and_relayouts() -> None:
    """Merges insert into the sorted order; evictions and key relayouts keep it: it must be the stable sort."""
    tx = _simulated(days=90)  # > retention (38 days) + headroom: rows are evicted and keys laid out again
    tx["timestamp"] = tx["timestamp"].dt.floor("h")  # many equal keys: ties must stay in arrival order
    state = FeatureState(min_recent_rows=256)
    layouts, evictions = set(), 0
    for start in range(0, len(tx), 700):
        before = state.rows
        chunk = tx.iloc[start : start + 700]
        state.transform(chunk.drop(columns=["is_fraud"]))
        if start % 2100 == 0:  # labels arrive now and then: the terminal index re-reads its fraud counts
            state.add_labels(chunk["transaction_id"].to_numpy(), chunk["is_fraud"].to_numpy())
        evictions += state.rows < before + len(chunk)
        layouts.add((state._large.customers.t0, state._large.customers.stride))
        _assert_indexes_are_stable_sorts(state)
    assert evictions >= 2 and len(layouts) > 3
    assert state.rows < 0.6 * len(tx)  # 90 days seen, about 39 (+ up to a quarter) kept


def _frame(rows: list[tuple[int, int, int, float, str | None, str | None]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "transaction_id": [f"x{i}" for i in range(len(rows))],
            "timestamp": pd.Timestamp("2024-03-01") + pd.to_timedelta([r[0] for r in rows], unit="min"),
            "customer_id": [f"c{r[1]}" for r in rows],
            "terminal_id": [f"t{r[2]}" for r in rows],
            "amount": [r[3] for r in rows],
            "channel": pd.array([r[4] for r in rows], dtype=object),
            "mcc": pd.array([r[5] for r in rows], dtype=object),
        }
    )


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 12 * 24 * 60).map(lambda m: m - m % 30),  # minutes, on a 30-minute grid: ties
            st.integers(0, 3),  # customer
            st.integers(0, 3),  # terminal
            st.floats(0, 500, allow_nan=False).map(lambda x: round(x, 2)),
            st.sampled_from([None, "online", "card_present"]),
            st.sampled_from([None, "5967", "5411"]),
        ),
        min_size=1,
        max_size=80,
    ),
    st.integers(1, 12),
    st.floats(0, 1),
)
def test_one_transaction_path_equals_one_row_batches(
    rows: list[tuple[int, int, int, float, str | None, str | None]], recent: int, late_share: float
) -> None:
    """`transform_one` (plain Python over the tail) gives exactly what a one-row `transform` gives.

    Rows arrive mostly in time order with some late ones (ties and out-of-order times are where arrival
    order matters), labels arrive along the way, and a small ``min_recent_rows`` merges the tail often.
    """
    rows = sorted(rows, key=lambda r: r[0])
    late = int(len(rows) * late_share) // 4
    rows = rows[late:] + rows[:late]  # a few rows arrive after later ones
    frame = _frame(rows)
    config = FeatureConfig(extra_features=True, label_delay_days=2, windows_days=(1, 3))
    single, batch = FeatureState(config, min_recent_rows=recent), FeatureState(config, min_recent_rows=recent)
    for i, row in enumerate(frame.itertuples(index=False)):
        stamp = pd.Timestamp(row.timestamp)
        one = single.transform_one(
            row.transaction_id, stamp.value // 1_000_000, row.customer_id, row.terminal_id, row.amount,
            row.channel, row.mcc,
        )  # fmt: skip
        expected = batch.transform(frame.iloc[[i]]).to_numpy()[0]
        np.testing.assert_array_equal(np.array(one), expected)
        if i % 5 == 4:
            labelled = frame.iloc[i - 4 : i + 1]
            flags = (labelled["amount"] > 250).astype(int).to_numpy()
            assert single.add_labels(labelled["transaction_id"], flags) == batch.add_labels(labelled["transaction_id"], flags)
    assert single.rows == batch.rows


def _labels_of(state: FeatureState, transaction_id: str) -> list[float]:
    """The labels of every retained row holding this id, by a scan (what the lookup must agree with)."""
    rows = state._rows
    return rows.label[: rows.size][rows.transaction_id[: rows.size] == transaction_id].tolist()  # type: ignore[no-any-return]


def test_labels_find_every_row_of_their_id_through_evictions() -> None:
    """Labels are matched through an id -> row lookup; an id held by two rows (history observed twice, say)
    labels both, as a scan would; unknown ids label nothing; the lookup survives compaction."""
    state = FeatureState(min_recent_rows=4)
    first = _frame([(m * 60, m % 3, m % 2, 10.0 + m, None, None) for m in range(24)])
    state.observe(first)
    state.observe(first.iloc[[3, 5]])  # x3 and x5 again: each id now has two rows
    state.transform_one("solo", int(pd.Timestamp("2024-03-02").value // 1_000_000), "c1", "t1", 5.0)

    assert state.add_labels(["x3", "x7", "nope", "solo"], [1, 0, 1, 1]) == 4  # x3's two rows, x7, solo
    assert _labels_of(state, "x3") == [1.0, 1.0] and _labels_of(state, "x7") == [0.0]
    assert _labels_of(state, "solo") == [1.0] and np.isnan(_labels_of(state, "x5")).all()
    assert state.add_labels(["x5", "x5"], [0, 1]) == 2  # x5's two rows; the later label wins
    assert _labels_of(state, "x5") == [1.0, 1.0]

    # Forty days later the first day is evicted: its ids label nothing, new ones still do.
    later = _frame([(40 * 24 * 60 + m * 60, m % 3, m % 2, 5.0, None, None) for m in range(80)])
    later["transaction_id"] = [f"y{i}" for i in range(len(later))]
    state.transform(later)
    assert state.add_labels(["x3", "y0", "y79"], [1, 1, 1]) == 2
    assert _labels_of(state, "x3") == [] and _labels_of(state, "y0") == [1.0] and _labels_of(state, "y79") == [1.0]


def test_missing_ids_are_not_indexed_and_hide_no_repeat() -> None:
    """A frame whose text id column has missing values (pandas gives NaN or None): those rows are never
    labelled, and an id repeated beside them still labels every one of its rows."""
    state = FeatureState(min_recent_rows=4)
    frame = _frame([(m * 60, m % 2, m % 2, 10.0, None, None) for m in range(5)])
    frame["transaction_id"] = pd.array(["a", "b", None, "b", None], dtype="str")
    state.observe(frame)
    assert state.add_labels(["b"], [1]) == 2 and _labels_of(state, "b") == [1.0, 1.0]
    assert state.add_labels(["nan", "None", ""], [1, 1, 1]) == 0
