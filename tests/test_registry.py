"""Model registry: versions, artifacts and their hashes, aliases, promotion and rollback, on a real DuckDB file."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from scorer.errors import (
    ModelIntegrityError,
    ModelRegistryError,
    NoRollbackTargetError,
    UnknownModelVersionError,
)
from scorer.registry import ModelMetadata, ModelRegistry, TrainingWindow, fingerprint_frame
from scorer.serving import ServingStateStore
from store.db import Store

FEATURES = ["amount", "customer_tx_count_1d", "terminal_risk_7d"]
START = datetime(2024, 3, 1)


class FakeClock:
    """Simulated time: every reading is one minute after the last."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        self.now += timedelta(minutes=1)
        return self.now


@pytest.fixture(scope="module")
def training_data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    x = rng.random((300, len(FEATURES)))
    y = (x[:, 0] + 0.3 * rng.random(300) > 0.8).astype(float)
    return x, y


def _train(data: tuple[np.ndarray, np.ndarray], seed: int) -> xgb.Booster:
    x, y = data
    params = {"objective": "binary:logistic", "max_depth": 2, "nthread": 1, "seed": seed, "verbosity": 0}
    return xgb.train(params, xgb.DMatrix(x, label=y, feature_names=FEATURES), num_boost_round=3 + seed)


@pytest.fixture(scope="module")
def boosters(training_data: tuple[np.ndarray, np.ndarray]) -> list[xgb.Booster]:
    """Three small, different boosters (3, 4 and 5 trees)."""
    return [_train(training_data, seed) for seed in range(3)]


def _metadata(**overrides: object) -> ModelMetadata:
    fields: dict[str, object] = {
        "created_at": START,
        "training_window": TrainingWindow(start=START - timedelta(days=30), end=START),
        "data_fingerprint": "abc123",
        "params": {"max_depth": 2, "eta": 0.3, "nested": {"a": [1, 2]}},
        "metrics": {"auc": 0.91, "ap": 0.55},
        "feature_columns": FEATURES,
        "best_iteration": 2,
        "label_delay_days": 7,
        "suggested_threshold": 0.6,
        "suggested_review_threshold": 0.3,
        "notes": "unit test",
    }
    fields.update(overrides)
    return ModelMetadata.model_validate(fields)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "db.duckdb") as opened:
        yield opened


@pytest.fixture
def registry(store: Store, tmp_path: Path, clock: FakeClock) -> ModelRegistry:
    return ModelRegistry(store, tmp_path / "models", ServingStateStore(store, clock=clock))


@pytest.fixture
def three(registry: ModelRegistry, boosters: list[xgb.Booster]) -> ModelRegistry:
    """A registry holding v1..v3, nothing promoted."""
    for booster in boosters:
        registry.register(booster, _metadata(), actor="trainer", reason="test")
    return registry


def _corrupt(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 4] = bytes(b ^ 0xFF for b in data[middle : middle + 4])
    path.write_bytes(bytes(data))


# -- registration -------------------------------------------------------------------------------


def test_register_numbers_versions_and_saves_ubj_with_its_hash(
    registry: ModelRegistry, boosters: list[xgb.Booster], tmp_path: Path
) -> None:
    versions = [registry.register(b, _metadata(), actor="trainer", reason="r").version for b in boosters]

    assert versions == [1, 2, 3]
    assert [m.version for m in registry.list()] == [1, 2, 3]
    second = registry.get(2)
    assert second.artifact_path == tmp_path / "models" / "v2" / "model.ubj"
    assert second.artifact_path.read_bytes() == bytes(boosters[1].save_raw(raw_format="ubj"))
    assert registry.verify(2).ok
    assert registry.aliases() == {"champion": None, "previous": None, "challenger": None}
    assert registry.serving.current().version == 0  # registering serves nothing


def test_metadata_round_trips_including_nan_metrics_and_reference_profile(
    registry: ModelRegistry, boosters: list[xgb.Booster]
) -> None:
    metadata = _metadata(metrics={"auc": 0.9, "cp100": float("nan")})
    registry.register(boosters[0], metadata, actor="trainer", reason="r")

    stored = registry.get(1).metadata
    assert stored.model_dump(exclude={"metrics"}) == metadata.model_dump(exclude={"metrics"})
    assert stored.metrics["auc"] == 0.9 and math.isnan(stored.metrics["cp100"])
    assert stored.reference_profile is None

    profile = {"features": {"amount": {"bins": [0.0, 1.0], "counts": [3, 4]}}, "score_mean": 0.1}
    registry.set_reference_profile(1, profile)
    assert registry.get(1).metadata.reference_profile == profile
    assert registry.get(1).sha256 == registry.list()[0].sha256


def test_reference_profile_must_be_json(registry: ModelRegistry, boosters: list[xgb.Booster]) -> None:
    registry.register(boosters[0], _metadata(), actor="trainer", reason="r")
    with pytest.raises(ModelRegistryError, match="v1 is not JSON-serialisable"):
        registry.set_reference_profile(1, {"bad": object()})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"feature_columns": ["a", "a"]}, "repeats"),
        ({"suggested_threshold": 0.2, "suggested_review_threshold": 0.5}, "must be <="),
        ({"suggested_review_threshold": None}, "both thresholds or neither"),
        ({"training_window": {"start": START, "end": START}}, "must be before"),
    ],
)
def test_metadata_is_validated(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _metadata(**overrides)


def test_register_refuses_features_that_contradict_the_booster(
    registry: ModelRegistry, boosters: list[xgb.Booster]
) -> None:
    with pytest.raises(ModelRegistryError, match="feature names"):
        registry.register(boosters[0], _metadata(feature_columns=["x", "y", "z"]), actor="t", reason="r")
    assert registry.list() == []


def test_fingerprint_is_stable_and_changes_with_the_data() -> None:
    frame = pd.DataFrame(
        {
            "timestamp": pd.date_range("2024-01-01", periods=5, freq="h"),
            "amount": [1.0, 2.0, 3.0, 4.0, 5.5],
            "is_fraud": [0, 0, 1, 0, 0],
            "customer_id": list("abcde"),
        }
    )
    fingerprint = fingerprint_frame(frame)

    assert fingerprint == fingerprint_frame(frame.copy())
    assert fingerprint == fingerprint_frame(frame.iloc[::-1])  # row order does not matter
    assert len(fingerprint) == 16
    changed_amount = frame.assign(amount=frame["amount"] + 0.01)
    assert fingerprint_frame(changed_amount) != fingerprint
    assert fingerprint_frame(frame.iloc[:-1]) != fingerprint
    assert fingerprint_frame(frame.assign(timestamp=frame["timestamp"] + pd.Timedelta("1s"))) != fingerprint


# -- promotion and rollback ---------------------------------------------------------------------


def test_promote_and_rollback_move_aliases_and_serving_state(three: ModelRegistry) -> None:
    first = three.promote(1, actor="alice", reason="initial model")
    assert first.champion_version == 1
    assert three.aliases() == {"champion": 1, "previous": None, "challenger": None}

    three.promote(2, actor="bob", reason="weekly retrain")
    assert three.aliases() == {"champion": 2, "previous": 1, "challenger": None}

    rolled = three.rollback(actor="agent", reason="precision dropped")
    assert rolled.champion_version == 1
    assert three.aliases() == {"champion": 1, "previous": 2, "challenger": None}

    states = three.serving.history()
    assert [(s.version, s.champion_version, s.changed_by) for s in states] == [
        (3, 1, "agent"),
        (2, 2, "bob"),
        (1, 1, "alice"),
    ]
    assert states[0].reason == "rollback to model v1: precision dropped"
    assert states[1].reason == "promote model v2: weekly retrain"
    assert states[0].changed_at > states[1].changed_at > states[2].changed_at  # the injected clock

    events = three.history()
    assert [(e.alias, e.version, e.actor) for e in events] == [
        ("champion", 1, "agent"),
        ("previous", 2, "agent"),
        ("champion", 2, "bob"),
        ("previous", 1, "bob"),
        ("champion", 1, "alice"),
    ]


def test_first_champion_takes_suggested_thresholds_later_ones_keep_them(
    registry: ModelRegistry, boosters: list[xgb.Booster]
) -> None:
    registry.register(boosters[0], _metadata(), actor="t", reason="r")
    registry.register(
        boosters[1], _metadata(suggested_threshold=0.9, suggested_review_threshold=0.8), actor="t", reason="r"
    )

    first = registry.promote(1, actor="alice", reason="go")
    assert (first.threshold, first.review_threshold) == (0.6, 0.3)
    second = registry.promote(2, actor="alice", reason="go")
    assert (second.threshold, second.review_threshold) == (0.6, 0.3)


def test_promote_is_idempotent(three: ModelRegistry) -> None:
    state = three.promote(1, actor="alice", reason="go")
    events = len(three.history())

    assert three.promote(1, actor="alice", reason="retry") == state
    assert len(three.history()) == events
    assert len(three.serving.history()) == 1


def test_promote_clears_the_challenger_it_promotes(three: ModelRegistry) -> None:
    three.promote(1, actor="alice", reason="go")
    three.set_challenger(2, actor="trainer", reason="candidate")
    assert three.alias("challenger") == 2

    three.promote(2, actor="alice", reason="challenger won")
    assert three.aliases() == {"champion": 2, "previous": 1, "challenger": None}


def test_register_with_alias(registry: ModelRegistry, boosters: list[xgb.Booster]) -> None:
    registry.register(boosters[0], _metadata(), actor="t", reason="r", alias="champion")
    registry.register(boosters[1], _metadata(), actor="t", reason="r", alias="challenger")

    assert registry.aliases() == {"champion": 1, "previous": None, "challenger": 2}
    assert registry.serving.current().champion_version == 1
    with pytest.raises(ModelRegistryError, match="cannot register with alias 'previous'"):
        registry.register(boosters[2], _metadata(), actor="t", reason="r", alias="previous")


def test_rollback_without_previous_is_refused(three: ModelRegistry) -> None:
    with pytest.raises(NoRollbackTargetError, match="there is no champion"):
        three.rollback(actor="agent", reason="r")
    three.promote(1, actor="alice", reason="go")
    with pytest.raises(NoRollbackTargetError, match="no previous champion \\(the champion is v1\\)"):
        three.rollback(actor="agent", reason="r")
    assert three.serving.current().version == 1


def test_rollback_to_a_chosen_version(three: ModelRegistry) -> None:
    three.promote(3, actor="alice", reason="go")
    state = three.rollback(to_version=1, actor="agent", reason="v3 and v2 are bad")
    assert state.champion_version == 1
    assert three.aliases()["previous"] == 3


def test_unknown_versions_are_refused(three: ModelRegistry) -> None:
    with pytest.raises(UnknownModelVersionError, match=r"no model v9; registered: v1\.\.v3"):
        three.promote(9, actor="alice", reason="go")
    with pytest.raises(UnknownModelVersionError, match="no model v9"):
        three.rollback(to_version=9, actor="alice", reason="go")


def test_an_empty_registry_says_so(registry: ModelRegistry) -> None:
    with pytest.raises(UnknownModelVersionError, match="no model v1; no models are registered"):
        registry.load(1)
    assert registry.list() == [] and registry.last_verified_version() is None


def test_changes_need_an_actor_and_a_reason(three: ModelRegistry) -> None:
    with pytest.raises(ModelRegistryError, match="reason must be a non-empty string"):
        three.promote(1, actor="alice", reason="  ")
    assert three.serving.current().version == 0


# -- integrity ----------------------------------------------------------------------------------


def test_loaded_model_is_verified_single_threaded_and_predicts_like_the_original(
    three: ModelRegistry, boosters: list[xgb.Booster], training_data: tuple[np.ndarray, np.ndarray]
) -> None:
    loaded = three.load(2)

    assert loaded.version == 2 and loaded.sha256 == three.get(2).sha256
    assert loaded.metadata == three.get(2).metadata
    assert '"nthread":"1"' in loaded.booster.save_config().replace(" ", "")
    matrix = xgb.DMatrix(training_data[0], feature_names=FEATURES)
    np.testing.assert_array_equal(loaded.booster.predict(matrix), boosters[1].predict(matrix))


@pytest.mark.parametrize("damage", ["corrupt", "missing"])
def test_damaged_artifact_is_refused_by_load_verify_and_promote(three: ModelRegistry, damage: str) -> None:
    path = three.get(2).artifact_path
    expected = three.get(2).sha256
    if damage == "corrupt":
        _corrupt(path)
        message = f"model v2 .*sha256 mismatch .*expected {expected}, actual [0-9a-f]{{64}}"
    else:
        path.unlink()
        message = "model v2 .*artifact missing: .*v2/model.ubj"

    with pytest.raises(ModelIntegrityError, match=message) as raised:
        three.load(2)
    assert raised.value.version == 2 and raised.value.expected_sha256 == expected
    check = three.verify(2)
    assert not check.ok and check.reason == raised.value.reason
    with pytest.raises(ModelIntegrityError, match=message):
        three.promote(2, actor="alice", reason="go")
    assert three.aliases()["champion"] is None and three.serving.current().version == 0


def test_rollback_to_a_corrupt_model_is_refused_and_changes_nothing(three: ModelRegistry) -> None:
    three.promote(1, actor="alice", reason="go")
    three.promote(2, actor="alice", reason="go")
    _corrupt(three.get(1).artifact_path)

    with pytest.raises(ModelIntegrityError, match="model v1 "):
        three.rollback(actor="agent", reason="r")
    assert three.aliases() == {"champion": 2, "previous": 1, "challenger": None}
    assert three.serving.current().champion_version == 2


def test_last_verified_version_skips_corrupt_and_excluded(three: ModelRegistry) -> None:
    assert three.last_verified_version() == 3
    _corrupt(three.get(3).artifact_path)
    assert three.last_verified_version() == 2
    assert three.last_verified_version(exclude={2}) == 1
    three.get(1).artifact_path.unlink()
    assert three.last_verified_version(exclude={2}) is None


def test_a_failed_champion_change_leaves_aliases_and_serving_state_as_they_were(
    registry: ModelRegistry, boosters: list[xgb.Booster]
) -> None:
    registry.register(boosters[0], _metadata(), actor="t", reason="r")
    registry.serving.update(actor="ops", reason="stricter", threshold=0.7, review_threshold=0.4)

    def broken_clock() -> datetime:
        raise RuntimeError("clock broke")

    # The aliases are written first, then the serving state, whose clock fails: all must roll back.
    registry.serving.clock = broken_clock
    with pytest.raises(RuntimeError, match="clock broke"):
        registry.promote(1, actor="alice", reason="go")
    assert registry.aliases()["champion"] is None
    assert registry.history() == []
    assert registry.serving.current().version == 1
    assert registry.serving.current().champion_version is None


# -- persistence --------------------------------------------------------------------------------


def test_reopening_the_store_keeps_models_aliases_and_state(
    tmp_path: Path, boosters: list[xgb.Booster], clock: FakeClock
) -> None:
    path, models = tmp_path / "db.duckdb", tmp_path / "models"
    with Store(path) as store:
        registry = ModelRegistry(store, models, ServingStateStore(store, clock=clock))
        for booster in boosters[:2]:
            registry.register(booster, _metadata(), actor="trainer", reason="r")
        registry.promote(1, actor="alice", reason="go")
        registry.promote(2, actor="alice", reason="go")
        registry.set_reference_profile(2, {"psi_bins": 10})
        before = (registry.list(), registry.aliases(), registry.history(), registry.serving.history())

    with Store(path) as store:
        reopened = ModelRegistry(store, models, ServingStateStore(store, clock=clock))
        after = (reopened.list(), reopened.aliases(), reopened.history(), reopened.serving.history())
        assert after == before
        assert reopened.serving.current().champion_version == 2
        assert reopened.get(2).metadata.reference_profile == {"psi_bins": 10}
        assert reopened.load(2).version == 2
        assert reopened.register(boosters[2], _metadata(), actor="t", reason="r").version == 3
