"""Metrics: hand-computed examples, the handbook's card-precision rules, and a reference implementation."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scorer.metrics import (
    auc_roc,
    average_precision,
    card_precision_at_k,
    card_precision_at_k_per_day,
    metrics_summary,
    precision_recall_at_threshold,
)


def _predictions(rows: list[tuple[str, str, float, int]]) -> pd.DataFrame:
    """Rows of (timestamp, customer, score, label)."""
    return pd.DataFrame(
        {
            "timestamp": pd.to_datetime([r[0] for r in rows]),
            "customer_id": [r[1] for r in rows],
            "score": [r[2] for r in rows],
            "is_fraud": [r[3] for r in rows],
        }
    )


# Three days, four cards, k = 2. Worked by hand:
#   day 1 per card (max score, max label): A (.9, 1)  B (.8, 0)  C (.7, 1)  D (.1, 1)
#         top 2 = A, B -> 1/2; A is detected (B is in the top 2 but genuine, so it is not).
#   day 2: A (.95, 1)  C (.6, 1)  D (.5, 0)  B (.3, 0); A is removed -> top 2 = C, D -> 1/2; C detected.
#   day 3: A (.9, 1)  C (.9, 1)  B (.2, 1); A and C removed -> only B -> 1/2 (divided by k, not by 1).
#   mean = 0.5. Without the removal: 1/2, 2/2 (A, C), 2/2 (A, C) -> 5/6.
EXAMPLE = _predictions(
    [
        ("2018-08-08 01:00", "A", 0.9, 0),
        ("2018-08-08 13:00", "A", 0.2, 1),  # the card's label is its max label, not the top score's label
        ("2018-08-08 02:00", "B", 0.8, 0),
        ("2018-08-08 03:00", "C", 0.7, 1),
        ("2018-08-08 23:59", "D", 0.1, 1),
        ("2018-08-09 00:00", "A", 0.95, 1),
        ("2018-08-09 05:00", "C", 0.6, 1),
        ("2018-08-09 06:00", "D", 0.5, 0),
        ("2018-08-09 07:00", "B", 0.3, 0),
        ("2018-08-10 08:00", "A", 0.9, 1),
        ("2018-08-10 09:00", "C", 0.9, 1),
        ("2018-08-10 10:00", "B", 0.2, 1),
    ]
)


class TestCardPrecision:
    def test_hand_example_with_exclusion_of_detected_cards(self) -> None:
        result = card_precision_at_k_per_day(EXAMPLE, k=2)
        assert result.precision_per_day == [0.5, 0.5, 0.5]
        assert result.mean == pytest.approx(0.5)
        assert result.detected_cards == ["A", "C", "B"]
        # Compromised cards still in play each day, after removal: A, C, D / C / B.
        assert result.compromised_cards_per_day == [3, 1, 1]
        assert [d.date().isoformat() for d in result.days] == ["2018-08-08", "2018-08-09", "2018-08-10"]

    def test_hand_example_without_exclusion(self) -> None:
        result = card_precision_at_k_per_day(EXAMPLE, k=2, remove_detected=False)
        assert result.precision_per_day == [0.5, 1.0, 1.0]
        assert card_precision_at_k(EXAMPLE, k=2, remove_detected=False) == pytest.approx(5 / 6)

    def test_mean_is_card_precision_at_k(self) -> None:
        assert card_precision_at_k(EXAMPLE, k=2) == pytest.approx(0.5)

    def test_divides_by_k_when_fewer_cards_are_active(self) -> None:
        frame = _predictions([("2018-08-08 10:00", "A", 0.9, 1)])
        assert card_precision_at_k(frame, k=100) == pytest.approx(0.01)

    def test_ties_broken_by_customer_id(self) -> None:
        frame = _predictions(
            [
                ("2018-08-08 10:00", "b", 0.5, 1),
                ("2018-08-08 11:00", "a", 0.5, 0),
                ("2018-08-08 12:00", "c", 0.5, 1),
            ]
        )
        # Top 1 of three equal scores is card "a" (genuine): precision 0.
        assert card_precision_at_k(frame, k=1) == 0.0
        assert card_precision_at_k(frame.iloc[::-1], k=1) == 0.0

    def test_genuine_cards_in_top_k_stay_in_play(self) -> None:
        frame = _predictions([("2018-08-08 10:00", "A", 0.9, 0), ("2018-08-09 10:00", "A", 0.9, 1)])
        assert card_precision_at_k_per_day(frame, k=1).precision_per_day == [0.0, 1.0]

    def test_custom_score_column_and_empty_frame(self) -> None:
        renamed = EXAMPLE.rename(columns={"score": "p"})
        assert card_precision_at_k(renamed, k=2, score_column="p") == pytest.approx(0.5)
        assert math.isnan(card_precision_at_k(EXAMPLE.iloc[0:0], k=2))

    def test_rejects_bad_input(self) -> None:
        with pytest.raises(ValueError, match="k must be positive"):
            card_precision_at_k(EXAMPLE, k=0)
        with pytest.raises(ValueError, match="score"):
            card_precision_at_k(EXAMPLE.drop(columns=["score"]))


def _handbook_reference(predictions: pd.DataFrame, k: int) -> float:
    """The handbook's published procedure, restated step by step (no shared code with the module)."""
    days = sorted(predictions["timestamp"].dt.normalize().unique())
    detected: list[object] = []
    per_day = []
    for day in days:
        df_day = predictions[predictions["timestamp"].dt.normalize() == day]
        df_day = df_day[~df_day["customer_id"].isin(detected)]
        per_card = df_day.groupby("customer_id")[["score", "is_fraud"]].max()
        top = per_card.sort_values("score", ascending=False).head(k)
        hits = list(top.index[top["is_fraud"] == 1])
        per_day.append(len(hits) / k)
        detected.extend(hits)
    return float(np.mean(per_day))


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n_rows=st.integers(1, 300),
    n_cards=st.integers(1, 40),
    n_days=st.integers(1, 5),
    k=st.integers(1, 15),
)
def test_matches_reference_implementation(seed: int, n_rows: int, n_cards: int, n_days: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2018-08-08")
    frame = pd.DataFrame(
        {
            "timestamp": start + pd.to_timedelta(rng.integers(0, n_days * 86_400, n_rows), unit="s"),
            "customer_id": rng.integers(0, n_cards, n_rows),
            # Continuous scores: no ties, so the reference's unspecified tie order cannot matter.
            "score": rng.random(n_rows),
            "is_fraud": (rng.random(n_rows) < 0.3).astype(int),
        }
    )
    assert card_precision_at_k(frame, k) == pytest.approx(_handbook_reference(frame, k))


class TestRankingMetrics:
    LABELS = np.array([0, 0, 1, 1])
    SCORES = np.array([0.1, 0.4, 0.35, 0.8])

    def test_auc_by_hand(self) -> None:
        # Positive-negative pairs ranked right: (.35>.1), (.8>.1), (.8>.4); wrong: (.35<.4) -> 3/4.
        assert auc_roc(self.LABELS, self.SCORES) == pytest.approx(0.75)

    def test_average_precision_by_hand(self) -> None:
        # Ranked: .8 (+), .4 (-), .35 (+), .1 (-): recall steps of 1/2 at precision 1 and 2/3.
        assert average_precision(self.LABELS, self.SCORES) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)

    def test_undefined_cases_are_nan_without_warnings(self) -> None:
        assert math.isnan(auc_roc([0, 0], [0.1, 0.2]))
        assert math.isnan(auc_roc([1, 1], [0.1, 0.2]))
        assert math.isnan(average_precision([0, 0], [0.1, 0.2]))
        assert average_precision([1, 1], [0.1, 0.2]) == pytest.approx(1.0)

    def test_length_mismatch(self) -> None:
        with pytest.raises(ValueError, match="differ in length"):
            auc_roc([0, 1], [0.5])

    def test_summary(self) -> None:
        summary = metrics_summary(EXAMPLE, k_values=(2,))
        assert summary["cp2"] == pytest.approx(0.5)
        assert summary["auc"] == pytest.approx(auc_roc(EXAMPLE["is_fraud"], EXAMPLE["score"]))
        assert set(summary) == {"auc", "ap", "cp2"}


class TestThreshold:
    def test_by_hand(self) -> None:
        labels = [1, 0, 1, 0, 1]
        scores = [0.9, 0.8, 0.5, 0.2, 0.1]
        m = precision_recall_at_threshold(labels, scores, 0.5)  # flags .9, .8, .5 (inclusive)
        assert (m.flagged, m.true_positives, m.positives) == (3, 2, 3)
        assert m.precision == pytest.approx(2 / 3)
        assert m.recall == pytest.approx(2 / 3)

    def test_undefined_is_nan(self) -> None:
        m = precision_recall_at_threshold([0, 0], [0.1, 0.2], 0.5)
        assert math.isnan(m.precision)
        assert math.isnan(m.recall)
        assert m.flagged == 0
