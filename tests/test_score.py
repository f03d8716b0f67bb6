"""The scoring engine: conservation under hostile input, fallback on a corrupted artifact, quarantine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scorer import columns as C
from selfheal.app import Platform
from tests.conftest import HISTORY_DAYS, FullDisk, SmallWorld
from tests.test_validate import malformed_records


def _live(small_world: SmallWorld, hours: int = 6) -> pd.DataFrame:
    day = small_world.simulator.generate(HISTORY_DAYS, 1)
    end = day[C.TIMESTAMP].min().normalize() + pd.Timedelta(hours=hours)
    return day[day[C.TIMESTAMP] < end].drop(columns=[C.LABEL, C.FRAUD_SCENARIO])


def test_batch_scoring_logs_every_row_with_model_and_serving_versions(platform: Platform, small_world: SmallWorld) -> None:
    live = _live(small_world)
    result = platform.scorer.score_batch(live)
    assert result.scored == len(live) and result.dead_lettered == 0
    assert result.model_version == 1 and not result.used_fallback
    logged = platform.store.query("SELECT * FROM predictions")
    assert len(logged) == len(live)
    assert (logged["model_version"] == 1).all()
    assert (logged["serving_state_version"] == platform.serving.current().version).all()
    assert logged["latency_ms"].gt(0).all()
    assert set(logged["decision"]) <= {"approve", "review", "decline"}
    assert logged["score"].between(0, 1).all()
    assert platform.store.count("transactions") == len(live)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.lists(malformed_records(), min_size=1, max_size=20))
def test_hostile_records_never_crash_the_scorer_and_conservation_holds(platform: Platform, records: list[Any]) -> None:
    """Acceptance 5: every record in is scored or dead-lettered with a reason, in the store too."""
    before_p, before_d = platform.store.count("predictions"), platform.store.count("dead_letters")
    result = platform.scorer.score_batch(records, source="hypothesis")
    assert result.rows_in == len(records) == result.scored + result.dead_lettered
    after_p, after_d = platform.store.count("predictions"), platform.store.count("dead_letters")
    assert (after_p - before_p, after_d - before_d) == (result.scored, result.dead_lettered)
    reasons = platform.store.query("SELECT reason, payload FROM dead_letters WHERE source = 'hypothesis'")
    assert reasons["reason"].str.len().gt(0).all()


def test_single_transaction_path(platform: Platform, small_world: SmallWorld) -> None:
    record = _live(small_world).iloc[0].to_dict()
    answer = platform.scorer.score_one(record)
    assert answer["decision"] in {"approve", "review", "decline"} and answer["model_version"] == 1
    again = platform.scorer.score_one(record)
    assert again["error"] == "transaction_id already scored"


def test_corrupted_artifact_is_refused_and_fallback_rules_serve_with_a_recorded_reason(
    platform: Platform, small_world: SmallWorld
) -> None:
    """Acceptance 6 (scorer half): a bad hash never serves; rules do, and the audit log says why."""
    artifact = Path(platform.registry.get(1).artifact_path)
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0xFF
    artifact.write_bytes(bytes(data))
    platform.scorer.invalidate_model()  # a fresh process would not have the verified model cached

    result = platform.scorer.score_batch(_live(small_world, hours=3))
    assert result.used_fallback and result.model_version is None
    assert result.fallback_reason is not None and "v1" in result.fallback_reason
    logged = platform.store.query("SELECT DISTINCT used_fallback, fallback_reason, model_version FROM predictions")
    assert logged["used_fallback"].all() and logged["model_version"].isna().all()
    audit = platform.store.query("SELECT action, reason FROM audit_log WHERE action = 'model_load_failed'")
    assert len(audit) == 1
    assert "sha256" in audit["reason"].iloc[0].lower() or "hash" in audit["reason"].iloc[0].lower()


def test_fallback_switch_and_quarantine_come_from_serving_state(platform: Platform, small_world: SmallWorld) -> None:
    live = _live(small_world, hours=12)
    first, second = live.iloc[: len(live) // 2], live.iloc[len(live) // 2 :]
    platform.serving.update(actor="test", reason="drill", fallback=True, fallback_reason="drill")
    ruled = platform.scorer.score_batch(first)
    assert ruled.used_fallback and ruled.fallback_reason == "drill"
    assert set(np.round(ruled.predictions["score"], 2)) <= {0.01, 0.6, 0.8, 0.9}

    platform.serving.update(actor="test", reason="end drill", fallback=False, fallback_reason=None)
    platform.serving.quarantine_feature("terminal_risk_7d", 0.0, actor="test", reason="broken upstream")
    quarantined = platform.scorer.score_batch(second)
    assert not quarantined.used_fallback
    # The logged feature keeps its computed value; only the model input is imputed: the served scores are
    # the champion's prediction on the logged features with the quarantined one replaced by 0.0.
    logged = platform.store.query(
        "SELECT * FROM predictions WHERE serving_state_version = ?", [platform.serving.current().version]
    )
    assert len(logged) == len(second)
    model = platform.registry.load(1)
    imputed = logged[model.metadata.feature_columns].assign(terminal_risk_7d=0.0).to_numpy(np.float32)
    np.testing.assert_allclose(logged["score"], model.booster.inplace_predict(imputed), rtol=0, atol=1e-6)
    raw = logged[model.metadata.feature_columns].to_numpy(np.float32)
    assert (logged["terminal_risk_7d"] != 0).any()  # the window has risky terminals, so imputing matters
    assert not np.allclose(logged["score"], model.booster.inplace_predict(raw), rtol=0, atol=1e-9)


def test_labels_feed_the_store_and_the_feature_state(platform: Platform, small_world: SmallWorld) -> None:
    live = _live(small_world, hours=2)
    platform.scorer.score_batch(live)
    labels = pd.DataFrame(
        {C.TRANSACTION_ID: live[C.TRANSACTION_ID], C.LABEL: 0, "label_time": live[C.TIMESTAMP] + pd.Timedelta(days=7)}
    )
    assert platform.scorer.add_labels(labels) == len(live)
    assert platform.store.count("labels") == len(live)


def test_warm_up_rebuilds_feature_state_from_the_store(platform: Platform, small_world: SmallWorld) -> None:
    live = _live(small_world, hours=4)
    platform.scorer.score_batch(live)
    from scorer.score import Scorer, WarmUp

    fresh = Scorer(platform.store, platform.serving, platform.registry)
    assert fresh.warm_up() == WarmUp(logged=len(live), observed=0)  # the fixture observed in memory only
    assert fresh.score_one(live.iloc[0].to_dict())["error"] == "transaction_id already scored"


def test_logged_live_features_equal_batch_features_over_history_and_live(
    platform: Platform, small_world: SmallWorld
) -> None:
    """The scorer's streaming features (history read with integer ids, live traffic validated to text ids)
    equal the batch definition over the same data: the ids must name the same entities on both paths."""
    from scorer.features import FeatureConfig, compute_features

    day = small_world.simulator.generate(HISTORY_DAYS, 1)
    live = day[day[C.TIMESTAMP] < day[C.TIMESTAMP].min().normalize() + pd.Timedelta(hours=8)]
    for _, hour in live.groupby(live[C.TIMESTAMP].dt.floor("h")):
        platform.scorer.score_batch(hour.drop(columns=[C.LABEL, C.FRAUD_SCENARIO]).to_dict("records"))
    config = FeatureConfig(extra_features=True)
    # Live labels are not known yet when live rows are scored; history labels are.
    combined = pd.concat([small_world.history, live.assign(**{C.LABEL: np.nan})], ignore_index=True)
    expected = compute_features(combined, config).iloc[len(small_world.history) :]
    logged = platform.store.query("SELECT * FROM predictions ORDER BY timestamp, transaction_id")
    expected = expected.set_axis(live[C.TRANSACTION_ID].astype(str)).loc[logged[C.TRANSACTION_ID]]
    np.testing.assert_allclose(logged[config.columns].to_numpy(), expected.to_numpy(), rtol=0, atol=1e-9)


def test_a_failing_log_write_keeps_the_answers_and_the_rows(
    platform: Platform, small_world: SmallWorld, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A full disk used to fail the scoring call after its ids were taken: the caller got an error for rows
    that were scored, and a retry was refused as "already scored". Now the answer stands, the rows wait in
    the writer, and the next flush that succeeds writes every one of them."""
    live = _live(small_world, hours=24)
    batch, single = live.iloc[:50], live.iloc[50].to_dict()
    disk = FullDisk(platform.store, monkeypatch)
    result = platform.scorer.score_batch(batch)
    answer = platform.scorer.score_one(single)
    retried = platform.scorer.score_batch(batch.iloc[:3])

    assert result.scored == 50 and answer["decision"] in {"approve", "review", "decline"}
    assert retried.dead_lettered == 3  # staged rows are accepted rows: the same ids again are duplicates
    assert platform.store.count("predictions") == 0 and "disk full" in caplog.text
    health = platform.scorer.log_health()
    assert health["write_failures"] == 3 and health["unwritten_chunks"] == 1  # merged while they wait
    assert health["unwritten_rows"] == 50 + 50 + 1 + 1 + 3  # transactions, predictions, dead letters
    disk.full = False
    platform.scorer.flush()
    assert platform.store.count("predictions") == 51 and platform.store.count("dead_letters") == 3
    assert platform.scorer.log_health()["unwritten_chunks"] == 0


def test_a_batch_that_fails_before_its_rows_are_staged_can_be_sent_again(
    platform: Platform, small_world: SmallWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ids join the duplicate check only once their rows are staged: a call that raised before that is not
    half-done, so sending it again scores it instead of dead-lettering every row as already scored."""
    import scorer.score as score_module

    live = _live(small_world, hours=24).iloc[:20]

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("log rows could not be built")

    with monkeypatch.context() as patched:
        patched.setattr(score_module, "batch_log_tables", broken)
        with pytest.raises(RuntimeError, match="could not be built"):
            platform.scorer.score_batch(live)
    again = platform.scorer.score_batch(live)
    assert again.scored == 20 and again.dead_lettered == 0
    platform.scorer.flush()
    assert platform.store.count("predictions") == 20


def test_when_unwritten_rows_can_neither_be_written_nor_set_aside_new_calls_are_refused_whole(
    platform: Platform, small_world: SmallWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Memory is the last place rows can wait: past the writer's cap, with the spill folder failing too,
    the scorer refuses a call before taking any of its rows (the service answers 503), and the same call
    is scored once the log can be written again."""
    from store import LogWriterFull

    live = _live(small_world, hours=24)
    first, second = live.iloc[:20], live.iloc[20:30]
    disk = FullDisk(platform.store, monkeypatch)
    writer = platform.scorer._writer
    monkeypatch.setattr(writer, "max_unwritten_rows", 10)
    monkeypatch.setattr(writer, "_spill", lambda chunk: (_ for _ in ()).throw(OSError("spill disk full")))
    assert platform.scorer.score_batch(first).scored == 20  # 40 log rows wait in memory now
    with pytest.raises(LogWriterFull, match="refusing new rows"):
        platform.scorer.score_batch(second)
    with pytest.raises(LogWriterFull):
        platform.scorer.score_one(second.iloc[0].to_dict())
    disk.full = False
    platform.scorer.flush()
    assert platform.scorer.score_batch(second).scored == 10  # not half-taken: scored now, not "already scored"
    platform.scorer.flush()
    assert platform.store.count("predictions") == 30
