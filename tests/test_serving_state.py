"""Serving state: versioned, validated, auditable rows with a cached current state, on a real DuckDB file."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from scorer.errors import ServingStateError
from scorer.serving import ServingState, ServingStateStore, default_state
from store.db import Store

START = datetime(2024, 3, 1, 12, 0)


class FakeClock:
    """Simulated time: every reading is one minute after the last."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        self.now += timedelta(minutes=1)
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "db.duckdb") as opened:
        yield opened


@pytest.fixture
def serving(store: Store) -> ServingStateStore:
    return ServingStateStore(store, clock=FakeClock())


def test_the_default_state_is_version_0_and_is_not_written(serving: ServingStateStore) -> None:
    state = serving.current()

    assert state == default_state()
    assert (state.version, state.champion_version, state.fallback) == (0, None, False)
    assert (state.threshold, state.review_threshold, state.quarantined_features) == (0.5, 0.2, {})
    assert serving.store.count("serving_state") == 0
    assert serving.history() == []
    assert serving.get(0) == state


def test_update_writes_the_next_version_with_who_why_and_when(serving: ServingStateStore) -> None:
    first = serving.update(actor="alice", reason="tighten", threshold=0.7, review_threshold=0.4)
    second = serving.update(actor="agent", reason="feature broken", quarantined_features={"amount": 12.5})

    assert (first.version, first.changed_by, first.reason) == (1, "alice", "tighten")
    assert first.changed_at == START + timedelta(minutes=1)
    assert second.version == 2 and second.changed_at == START + timedelta(minutes=2)
    assert (second.threshold, second.review_threshold) == (0.7, 0.4)  # carried over from version 1
    assert second.quarantined_features == {"amount": 12.5}
    assert serving.get(1) == first and serving.get(2) == second


def test_a_change_that_changes_nothing_writes_nothing(serving: ServingStateStore) -> None:
    first = serving.update(actor="alice", reason="tighten", threshold=0.7)

    assert serving.update(actor="alice", reason="again", threshold=0.7) == first
    assert serving.update(actor="alice", reason="nothing") == first
    assert serving.store.count("serving_state") == 1


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"threshold": 1.5}, "threshold: Input should be less than or equal to 1"),
        ({"review_threshold": -0.1}, "review_threshold: Input should be greater than or equal to 0"),
        ({"review_threshold": 0.6}, r"review_threshold \(0.6\) must be <= threshold \(0.5\)"),
        ({"threshold": 0.1}, r"review_threshold \(0.2\) must be <= threshold \(0.1\)"),
        ({"champion_version": 0}, "champion_version: Input should be greater than or equal to 1"),
        ({"quarantined_features": {"amount": float("nan")}}, "imputation value for 'amount' must be finite"),
        ({"quarantined_features": {"": 1.0}}, "needs a name"),
        ({"fallback_reason": "why"}, "only set while the fallback is on"),
        ({"version": 7}, r"cannot change \['version'\]"),
        ({"colour": "red"}, r"cannot change \['colour'\]"),
    ],
)
def test_invalid_changes_are_refused_and_write_nothing(
    serving: ServingStateStore, changes: dict[str, object], message: str
) -> None:
    with pytest.raises(ServingStateError, match=message):
        serving.update(actor="alice", reason="bad", **changes)  # type: ignore[arg-type]
    assert serving.store.count("serving_state") == 0
    assert serving.current().version == 0


@pytest.mark.parametrize(("actor", "reason"), [("", "why"), ("alice", ""), ("alice", "   ")])
def test_every_change_needs_who_and_why(serving: ServingStateStore, actor: str, reason: str) -> None:
    with pytest.raises(ServingStateError, match="must be a non-empty string"):
        serving.update(actor=actor, reason=reason, threshold=0.6)


def test_fallback_reason_follows_the_fallback(serving: ServingStateStore) -> None:
    on = serving.update(actor="agent", reason="model errors", fallback=True)
    assert (on.fallback, on.fallback_reason) == (True, "model errors")

    explicit = serving.update(actor="agent", reason="r", fallback_reason="artifact corrupt")
    assert explicit.fallback_reason == "artifact corrupt"

    off = serving.update(actor="agent", reason="model restored", fallback=False)
    assert (off.fallback, off.fallback_reason) == (False, None)


def test_quarantine_and_release_merge_with_the_latest_state(serving: ServingStateStore) -> None:
    serving.quarantine_feature("amount", 50.0, actor="agent", reason="unit change upstream")
    serving.quarantine_feature("terminal_risk_7d", 0.01, actor="agent", reason="label feed stalled")
    both = serving.current().quarantined_features
    released = serving.release_feature("amount", actor="agent", reason="fixed upstream")
    again = serving.release_feature("amount", actor="agent", reason="retry")

    assert both == {"amount": 50.0, "terminal_risk_7d": 0.01}
    assert released.quarantined_features == {"terminal_risk_7d": 0.01}
    assert again == released  # releasing what is not quarantined writes nothing


def test_history_is_newest_first_and_limited(serving: ServingStateStore) -> None:
    for threshold in (0.6, 0.7, 0.8):
        serving.update(actor="alice", reason=f"to {threshold}", threshold=threshold)

    assert [s.version for s in serving.history()] == [3, 2, 1]
    assert [s.threshold for s in serving.history(limit=2)] == [0.8, 0.7]
    assert serving.history(limit=0) == []
    with pytest.raises(ServingStateError, match=r"no serving state version 9; versions are 0\.\.3"):
        serving.get(9)


def test_an_old_state_can_be_written_back(serving: ServingStateStore) -> None:
    serving.update(actor="alice", reason="a", threshold=0.7, quarantined_features={"amount": 1.0})
    serving.update(actor="agent", reason="b", fallback=True, threshold=0.9)

    restored = serving.update(actor="alice", reason="undo version 2", **serving.get(1).changes())

    assert restored.version == 3
    assert restored.changes() == serving.get(1).changes()


def test_current_is_cached_and_correct_after_updates(serving: ServingStateStore) -> None:
    first = serving.current()
    assert serving.current() is first  # served from memory

    updated = serving.update(actor="alice", reason="r", threshold=0.6)
    assert serving.current() == updated
    assert serving.current() is serving.current()

    # A second ServingStateStore on the same store shares the cache, so neither serves a stale state.
    other = ServingStateStore(serving.store)
    assert other.current() is serving.current()
    later = other.update(actor="bob", reason="r", threshold=0.65)
    assert serving.current() == later


def test_the_cache_reads_no_table_once_warm(
    serving: ServingStateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    serving.update(actor="alice", reason="r", threshold=0.6)
    serving.current()
    calls: list[str] = []
    original = Store.execute

    def counting(self: Store, sql: str, params: object = None) -> object:
        calls.append(sql)
        return original(self, sql, params)  # type: ignore[arg-type]

    monkeypatch.setattr(Store, "execute", counting)
    for _ in range(100):
        serving.current()
    assert calls == []


def test_concurrent_writers_lose_no_change(serving: ServingStateStore) -> None:
    def quarantine(worker: int) -> None:
        for i in range(5):
            serving.quarantine_feature(f"f{worker}_{i}", float(i), actor=f"w{worker}", reason="load")

    threads = [threading.Thread(target=quarantine, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(serving.current().quarantined_features) == 20
    assert [s.version for s in serving.history()] == list(range(20, 0, -1))


def test_aware_clock_times_are_stored_as_naive_utc(store: Store) -> None:
    plus_two = timezone(timedelta(hours=2))
    serving = ServingStateStore(store, clock=lambda: datetime(2024, 3, 1, 14, 0, tzinfo=plus_two))

    state = serving.update(actor="alice", reason="r", threshold=0.6)
    assert state.changed_at == datetime(2024, 3, 1, 12, 0)
    assert serving.get(1).changed_at == datetime(2024, 3, 1, 12, 0)


def test_the_default_clock_is_utc_now(store: Store) -> None:
    before = datetime.now(UTC).replace(tzinfo=None)
    state = ServingStateStore(store).update(actor="alice", reason="r", threshold=0.6)
    assert before <= state.changed_at <= datetime.now(UTC).replace(tzinfo=None)


def test_reopening_the_store_keeps_every_version(tmp_path: Path) -> None:
    path = tmp_path / "db.duckdb"
    with Store(path) as store:
        serving = ServingStateStore(store, clock=FakeClock())
        serving.update(actor="alice", reason="a", threshold=0.7, champion_version=3)
        serving.update(actor="agent", reason="b", fallback=True, quarantined_features={"amount": 9.0})
        before = serving.history()

    with Store(path) as store:
        reopened = ServingStateStore(store)
        assert reopened.history() == before
        assert reopened.current() == before[0]
        assert isinstance(reopened.current(), ServingState)
        assert reopened.update(actor="bob", reason="c", fallback=False).version == 3
