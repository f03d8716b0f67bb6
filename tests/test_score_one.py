"""The one-record path (`score_one`, and `score_batch` of one record) gives exactly what the vectorised
batch path gives on the same record.

Two scorers start from copies of the same workspace; one scores every record through the public one-record
entry points (`score_one` and `score_batch([record])`, alternately), the other through the vectorised path
(`Scorer._score_vectorised`, the reference semantics). Answers, result frames (values and dtypes), logged
rows (features, scores, decisions, dead-letter reasons) and the serving path taken must be identical,
through labels arriving, quarantine, fallback rules and a threshold change, on a seeded stream with hostile
records mixed in and on hypothesis' hostile records.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scorer import columns as C
from scorer.outcomes import answer_of
from scorer.score import Scorer, ScorerConfig, ScoreResult
from selfheal.app import Platform
from store import Workspace
from tests.conftest import HISTORY_DAYS, SmallWorld
from tests.test_validate import malformed_records

# Columns that differ between any two runs (wall-clock times, random batch ids), left out of comparisons.
VOLATILE = {"latency_ms", "model_ms", "batch_id", "scored_at", "received_at", "dead_letter_id"}


class Twins:
    """Two scorers on copies of one workspace: ``one`` takes the one-record path, ``batch`` the vectorised one."""

    def __init__(self, small_world: SmallWorld, home: Path, config: ScorerConfig | None = None) -> None:
        self.platforms = []
        for name in ("one", "batch"):
            shutil.copytree(small_world.template, home / name)
            platform = Platform(Workspace(home / name), scorer_config=config)
            platform.scorer.features.observe(small_world.history)
            self.platforms.append(platform)
        self.one, self.batch = (p.scorer for p in self.platforms)
        self.calls = 0
        self.fallbacks = 0  # one-record calls that took the vectorised path
        vectorised = self.one._score_vectorised

        def counted(records: Any, source: str) -> ScoreResult:
            self.fallbacks += 1
            return vectorised(records, source)

        self.one._score_vectorised = counted  # type: ignore[method-assign]

    def score(self, record: Any) -> None:
        """Score ``record`` on both; `score_one` and `score_batch([record])` take turns on the fast side."""
        self.calls += 1
        expected = self.batch._score_vectorised([record], "api")
        if self.calls % 2:
            got = self.one.score_one(record)
            want = answer_of(expected)  # the vectorised result in score_one's shape (latency is volatile)
            got.pop("latency_ms", None)
            want.pop("latency_ms", None)
            assert got == want, record
            return
        result = self.one.score_batch([record], source="api")
        assert (result.rows_in, result.serving_state_version, result.model_version, result.used_fallback) == (
            expected.rows_in, expected.serving_state_version, expected.model_version, expected.used_fallback,
        )  # fmt: skip
        assert result.fallback_reason == expected.fallback_reason
        volatile = [c for c in ("latency_ms", "model_ms") if c in result.predictions]
        pd.testing.assert_frame_equal(result.predictions.drop(columns=volatile), expected.predictions.drop(columns=volatile))
        pd.testing.assert_frame_equal(result.dead_letters, expected.dead_letters)

    def both(self, action: str, *args: Any, **kwargs: Any) -> None:
        """Apply the same change (serving state, labels) to both workspaces."""
        for platform in self.platforms:
            target = platform.serving if hasattr(platform.serving, action) else platform.scorer
            getattr(target, action)(*args, **kwargs)

    def assert_same_logs(self) -> None:
        for table, order in (
            ("predictions", "transaction_id"),
            ("transactions", "transaction_id"),
            ("dead_letters", "payload, reason"),
        ):
            frames = []
            for platform in self.platforms:
                platform.scorer.flush()
                logged = platform.store.query(f"SELECT * FROM {table} ORDER BY {order}")
                frames.append(logged.drop(columns=[c for c in logged.columns if c in VOLATILE]))
            pd.testing.assert_frame_equal(frames[0], frames[1])

    def close(self) -> None:
        for platform in self.platforms:
            platform.close()


@pytest.fixture
def twins(small_world: SmallWorld, tmp_path: Path) -> Iterator[Twins]:
    pair = Twins(small_world, tmp_path, ScorerConfig(flush_rows=500))
    yield pair
    pair.close()


def _stream(small_world: SmallWorld, hours: int, seed: int) -> list[Any]:
    """Live transactions as JSON records (what HTTP clients send), with seeded hostile edits mixed in."""
    day = small_world.simulator.generate(HISTORY_DAYS, 1)
    live = day[day[C.TIMESTAMP] < day[C.TIMESTAMP].min().normalize() + pd.Timedelta(hours=hours)]
    records: list[Any] = json.loads(
        live.drop(columns=[C.LABEL, C.FRAUD_SCENARIO]).to_json(orient="records", date_format="iso")
    )
    rng = np.random.default_rng(seed)
    edits = [
        lambda r: {k: v for k, v in r.items() if k != C.AMOUNT},
        lambda r: {**r, C.AMOUNT: -abs(r[C.AMOUNT]) - 1},
        lambda r: {**r, C.AMOUNT: str(r[C.AMOUNT])},  # numeric text: left to the batch validator
        lambda r: {**r, C.AMOUNT: float("nan")},
        lambda r: {**r, C.CHANNEL: "pigeon"},
        lambda r: {**r, C.CHANNEL: None, C.MCC: 5967},
        lambda r: {**r, C.CUSTOMER_ID: None},
        lambda r: {**r, C.TIMESTAMP: r[C.TIMESTAMP] + "+02:00"},
        lambda r: {**r, C.TIMESTAMP: datetime.fromisoformat(r[C.TIMESTAMP])},
        lambda r: {**r, C.TIMESTAMP: "2024-02-30T10:00:00"},
        lambda r: {**r, C.TRANSACTION_ID: str(r[C.TRANSACTION_ID]) + "  "},
        lambda r: ["not", "a", "record"],
    ]
    out: list[Any] = []
    for record in records:
        roll = rng.random()
        if roll < 0.12:
            out.append(edits[int(rng.integers(len(edits)))](record))
        elif roll < 0.14 and out:
            out.append(out[int(rng.integers(len(out)))])  # a repeat: already scored (or still invalid)
        else:
            out.append(record)
    return out


def test_score_one_equals_score_batch_on_a_seeded_stream(twins: Twins, small_world: SmallWorld) -> None:
    stream = _stream(small_world, hours=10, seed=7)
    cut = len(stream) // 5
    for part, change in enumerate(
        [
            None,
            ("quarantine_feature", "terminal_risk_7d", 0.0),
            ("update", {"fallback": True, "fallback_reason": "drill"}),
            ("update", {"fallback": False, "fallback_reason": None, "threshold": 0.2, "review_threshold": 0.05}),
            ("add_labels", None),
        ]
    ):
        if change is not None and change[0] == "add_labels":
            scored = twins.one.store.query("SELECT transaction_id, timestamp FROM transactions")
            labels = scored.assign(is_fraud=(np.arange(len(scored)) % 7 == 0).astype(int), label_time=scored[C.TIMESTAMP])
            twins.both("add_labels", labels)
        elif change is not None and change[0] == "update":
            twins.both("update", actor="test", reason="drill", **change[1])
        elif change is not None:
            twins.both(change[0], change[1], change[2], actor="test", reason="drill")
        for record in stream[part * cut : (part + 1) * cut]:
            twins.score(record)
    twins.assert_same_logs()
    scored = twins.one.store.count("predictions")
    assert scored > 0.7 * len(stream) and twins.one.store.count("dead_letters") > 0.05 * len(stream)
    assert twins.fallbacks < 0.05 * len(stream)  # nearly every record took the fast path


def test_score_one_without_a_model_uses_the_same_rules(twins: Twins, small_world: SmallWorld) -> None:
    twins.both("update", actor="test", reason="no model", champion_version=None)
    for record in _stream(small_world, hours=2, seed=3)[:150]:
        twins.score(record)
    twins.assert_same_logs()
    used = twins.one.store.query("SELECT DISTINCT used_fallback FROM predictions")
    assert used["used_fallback"].tolist() == [True]


@pytest.fixture(scope="module")
def shared_twins(small_world: SmallWorld, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Twins]:
    pair = Twins(small_world, tmp_path_factory.mktemp("twins"), ScorerConfig(flush_rows=10_000, background_writes=True))
    yield pair
    pair.close()


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.lists(malformed_records(), min_size=1, max_size=8))
def test_score_one_equals_score_batch_on_hostile_records(shared_twins: Twins, records: list[Any]) -> None:
    """Hypothesis' hostile records (the batch tests' strategy), through a background log writer."""
    before = shared_twins.one.store.count("predictions") + shared_twins.one.store.count("dead_letters")
    for record in records:
        shared_twins.score(record)
    shared_twins.assert_same_logs()
    after = shared_twins.one.store.count("predictions") + shared_twins.one.store.count("dead_letters")
    assert after - before == len(records)  # conservation, in the store, after flush


def test_hooks_see_single_transactions_as_one_row_frames(platform: Platform, small_world: SmallWorld) -> None:
    """Fault hooks stay honoured: score_one takes the batch path while one is installed."""
    seen: list[int] = []

    def stuck(transactions: pd.DataFrame, features: pd.DataFrame) -> pd.DataFrame:
        seen.append(len(transactions))
        return features.assign(customer_avg_amount_7d=0.0)

    platform.scorer.hooks.features.append(stuck)
    platform.scorer.hooks.extra_latency_ms.append(lambda transactions: np.full(len(transactions), 40.0))
    records = json.loads(
        small_world.simulator.generate(HISTORY_DAYS, 1).iloc[:3].drop(columns=[C.LABEL, C.FRAUD_SCENARIO]).to_json(
            orient="records", date_format="iso"
        )
    )
    answers = [platform.scorer.score_one(record) for record in records]
    platform.scorer.flush()
    assert seen == [1, 1, 1] and all(a["latency_ms"] >= 40.0 for a in answers)
    logged = platform.store.query("SELECT customer_avg_amount_7d, latency_ms FROM predictions")
    assert (logged["customer_avg_amount_7d"] == 0.0).all() and (logged["latency_ms"] >= 40.0).all()


def test_a_fresh_scorer_warmed_from_the_store_refuses_ids_scored_by_the_fast_path(
    platform: Platform, small_world: SmallWorld
) -> None:
    record = json.loads(
        small_world.simulator.generate(HISTORY_DAYS, 1).iloc[:1].drop(columns=[C.LABEL, C.FRAUD_SCENARIO]).to_json(
            orient="records", date_format="iso"
        )
    )[0]
    assert "decision" in platform.scorer.score_one(record)
    platform.scorer.flush()
    fresh = Scorer(platform.store, platform.serving, platform.registry)
    assert fresh.warm_up().logged == 1
    assert fresh.score_one(record)["error"] == "transaction_id already scored"
