"""The log writer: chunks at thresholds, flush as a barrier, no row lost or doubled when a write fails."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from store import LogWriteError, LogWriter, Store

LABEL_ROW = ("transaction_id", "is_fraud", "label_time", "received_at")
WHEN = datetime(2024, 5, 1, 12, 0)


def _labels(start: int, n: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "transaction_id": [f"t{i}" for i in range(start, start + n)],
            "is_fraud": np.arange(n) % 2,
            "label_time": pd.Timestamp(WHEN),
            "received_at": pd.Timestamp(WHEN),
        }
    )


class FlakyStore(Store):
    """A real store whose appends fail while ``failures`` > 0 (a full disk, a lock timeout)."""

    failures = 0

    def append(self, table: str, frame: pd.DataFrame | pa.Table) -> int:
        written = super().append(table, frame)  # inside the writer's transaction: rolled back below
        if self.failures:
            self.failures -= 1
            raise OSError("disk full")
        return written


@pytest.fixture
def store(tmp_path: Path) -> Iterator[FlakyStore]:
    with FlakyStore(tmp_path / "log.duckdb") as opened:
        yield opened


@pytest.mark.parametrize("background", [False, True])
def test_rows_are_written_in_chunks_at_the_threshold_and_all_of_them_by_flush(
    store: FlakyStore, background: bool
) -> None:
    writer = LogWriter(store, flush_rows=100, background=background)
    writer.append({"labels": _labels(0, 60)})
    assert writer.staged_rows == 60
    writer.append({"labels": _labels(60, 60)})  # 120 >= 100: sealed into a chunk
    assert writer.staged_rows == 0
    writer.append_rows({"labels": (LABEL_ROW, ("t120", 1, WHEN, WHEN))})
    assert writer.flush() >= 1  # the staged row, and the chunk if the writer thread had not finished it
    assert store.count("labels") == 121 == writer.written_rows
    logged = store.query("SELECT * FROM labels ORDER BY transaction_id")
    assert logged["transaction_id"].is_unique
    assert logged.loc[logged["transaction_id"] == "t120", "is_fraud"].item() == 1
    writer.close()


def test_frames_arrow_tables_and_single_rows_of_one_table_land_in_one_chunk_in_order(store: FlakyStore) -> None:
    writer = LogWriter(store, flush_rows=1_000)
    writer.append({"labels": _labels(0, 2)})
    writer.append_rows({"labels": (LABEL_ROW, ("t2", 0, np.datetime64(WHEN, "ns"), WHEN))})
    writer.append_rows({"labels": (LABEL_ROW, ("t3", 1, np.datetime64(WHEN, "ns"), WHEN))})
    writer.append({"labels": pa.Table.from_pandas(_labels(4, 2), preserve_index=False)})
    assert store.count("labels") == 0  # below the threshold: nothing written yet
    assert writer.flush() == 6
    logged = store.query("SELECT * FROM labels")
    assert logged["transaction_id"].tolist() == ["t0", "t1", "t2", "t3", "t4", "t5"]
    assert (logged["label_time"] == pd.Timestamp(WHEN)).all()


def test_columns_the_table_lacks_are_refused_and_the_rows_kept(store: FlakyStore) -> None:
    writer = LogWriter(store, flush_rows=1_000)
    writer.append({"labels": _labels(0, 3).assign(colour="red")})
    with pytest.raises(LogWriteError, match="colour") as raised:
        writer.flush()
    assert isinstance(raised.value.__cause__, ValueError)
    assert store.count("labels") == 0


@pytest.mark.parametrize("background", [False, True])
def test_a_failed_write_loses_no_row_and_doubles_none(store: FlakyStore, background: bool) -> None:
    """The failed chunk's transaction rolls back; the chunk is kept and written by the next flush."""
    writer = LogWriter(store, flush_rows=50, background=background)
    store.failures = 1
    if background:
        writer.append({"labels": _labels(0, 50)})  # sealed and handed to the writer thread, which fails
        with pytest.raises(LogWriteError, match="disk full"):
            writer.flush()
    else:
        with pytest.raises(LogWriteError, match="disk full"):
            writer.append({"labels": _labels(0, 50)})  # written in the caller: the error surfaces here
    assert store.count("labels") == 0
    writer.append({"labels": _labels(50, 10)})
    writer.flush()
    logged = store.query("SELECT transaction_id FROM labels")
    assert sorted(logged["transaction_id"]) == sorted(f"t{i}" for i in range(60))
    writer.close()


def test_close_flushes_and_stops_the_writer_thread(store: FlakyStore) -> None:
    writer = LogWriter(store, flush_rows=10_000, background=True)
    writer.append({"labels": _labels(0, 5)})
    thread = writer._thread
    assert thread is not None and thread.is_alive()
    writer.close()
    assert not thread.is_alive()
    assert store.count("labels") == 5


def test_a_background_write_runs_duckdb_on_the_threads_asked_and_restores_the_setting(store: FlakyStore) -> None:
    before = store.scalar("SELECT current_setting('threads')")
    seen: list[int] = []
    append = store.append

    def spy(table: str, frame: pd.DataFrame | pa.Table) -> int:
        seen.append(int(store.scalar("SELECT current_setting('threads')")))
        return append(table, frame)

    store.append = spy  # type: ignore[method-assign]
    writer = LogWriter(store, flush_rows=10, background=True, duckdb_threads=1)
    writer.append({"labels": _labels(0, 10)})
    writer.close()
    assert seen == [1] and store.scalar("SELECT current_setting('threads')") == before


@pytest.mark.parametrize("background", [False, True])
def test_a_chunk_that_keeps_failing_is_set_aside_and_later_rows_are_written(
    store: FlakyStore, background: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """A chunk that cannot be written (a value the database cannot hold) used to be retried first at every
    flush, forever, blocking every later chunk. After MAX_WRITE_ATTEMPTS it goes to a spill file instead."""
    import json

    from store.log_writer import MAX_WRITE_ATTEMPTS

    writer = LogWriter(store, flush_rows=1_000, background=background, min_spill_age_s=0)
    writer.append({"labels": _labels(0, 5)})
    writer.append_rows({"labels": (("transaction_id", "is_fraud", "label_time", "received_at"), ("t5\ud800", 1, WHEN, WHEN))})
    for _ in range(MAX_WRITE_ATTEMPTS):  # a lone surrogate: no UTF-8 store can hold it
        with pytest.raises(LogWriteError, match="UnicodeEncodeError"):
            writer.flush()
    assert store.count("labels") == 0 and not writer.spilled

    writer.append({"labels": _labels(10, 3)})
    writer.flush()  # sets the failing chunk aside, then writes the new rows

    assert sorted(store.query("SELECT transaction_id FROM labels")["transaction_id"]) == ["t10", "t11", "t12"]
    [spilled] = writer.spilled
    lines = [json.loads(line) for line in spilled.read_text(encoding="ascii").splitlines()]
    assert [(line["table"], line["row"]["transaction_id"]) for line in lines] == [
        ("labels", f"t{i}") for i in range(5)
    ] + [("labels", "t5\ud800")]  # every row, the unstorable text too
    assert spilled.parent == store.path.parent / "log-spill"
    assert "6 log rows set aside" in caplog.text
    writer.close()


def test_rows_appended_when_an_earlier_background_write_failed_are_kept(store: FlakyStore) -> None:
    """The writer thread's failure is raised at the next append. That append's own rows used to be dropped
    (the error was raised before they were staged) although the scorer had already answered for them."""
    writer = LogWriter(store, flush_rows=50, background=True)
    store.failures = 1
    writer.append({"labels": _labels(0, 50)})  # sealed; the writer thread's write fails
    writer._wait_idle()
    with pytest.raises(LogWriteError, match="disk full"):
        writer.append({"labels": _labels(50, 5)})
    health = writer.health()
    assert (health["write_failures"], health["unwritten_chunks"]) == (1, 1) and "disk full" in health["last_error"]
    writer.append_rows({"labels": (LABEL_ROW, ("t55", 1, WHEN, WHEN))})  # the error was raised once
    writer.close()
    assert sorted(store.query("SELECT transaction_id FROM labels")["transaction_id"]) == sorted(
        f"t{i}" for i in range(56)
    )
    assert writer.health()["unwritten_chunks"] == 0


@pytest.mark.parametrize("background", [False, True])
def test_close_sets_aside_what_it_cannot_write(store: FlakyStore, background: bool) -> None:
    """A process that closes its writer while the disk fails must not lose the rows it still holds."""
    import json

    writer = LogWriter(store, flush_rows=1_000, background=background)
    writer.append({"labels": _labels(0, 4)})
    store.failures = 10
    with pytest.raises(LogWriteError, match="disk full"):
        writer.close()
    assert store.count("labels") == 0
    [spilled] = writer.spilled
    rows = [json.loads(line)["row"]["transaction_id"] for line in spilled.read_text(encoding="ascii").splitlines()]
    assert rows == ["t0", "t1", "t2", "t3"]
    assert writer.health()["spilled_files"] == 1


def test_set_aside_rows_load_back_once_the_cause_is_gone(store: FlakyStore) -> None:
    """What a failing disk set aside at close loads back, typed as the table wants, exactly once."""
    from store.spill import load_spilled, spill_files

    writer = LogWriter(store, flush_rows=1_000)
    labels = _labels(0, 4)
    writer.append({"labels": labels})
    writer.append_rows({"labels": (LABEL_ROW, ("t4", 1, np.datetime64(WHEN, "ns"), WHEN))})
    store.failures = 10
    with pytest.raises(LogWriteError):
        writer.close()
    [path] = spill_files(store)

    still_failing = load_spilled(store)
    assert [(x.status, x.rows) for x in still_failing] == [("failed", {"labels": 5})]
    assert "disk full" in str(still_failing[0].error) and spill_files(store) == [path]
    store.failures = 0
    [loaded] = load_spilled(store)
    assert (loaded.status, loaded.rows) == ("loaded", {"labels": 5}) and spill_files(store) == []
    logged = store.query("SELECT * FROM labels ORDER BY transaction_id")
    assert logged["transaction_id"].tolist() == ["t0", "t1", "t2", "t3", "t4"]
    assert logged["is_fraud"].tolist() == [0, 1, 0, 1, 1]
    assert (logged["label_time"] == pd.Timestamp(WHEN)).all()
    moved = path.parent / "loaded" / path.name  # put back by hand: recognised, not loaded twice
    moved.rename(path)
    assert [x.status for x in load_spilled(store)] == ["already loaded"] and store.count("labels") == 5


def test_a_flush_whose_retry_fails_keeps_the_rows_it_had_just_sealed(store: FlakyStore) -> None:
    """Writing in the caller, a flush retries failed chunks before the chunk it seals; when that retry
    failed, the new chunk used to be dropped."""
    writer = LogWriter(store, flush_rows=3)
    store.failures = 1
    with pytest.raises(LogWriteError):
        writer.append({"labels": _labels(0, 3)})  # sealed, written, failed: kept for a retry
    writer.append({"labels": _labels(3, 2)})  # staged
    store.failures = 1
    with pytest.raises(LogWriteError):
        writer.flush()  # the retry fails before the staged rows are written
    writer.flush()
    assert sorted(store.query("SELECT transaction_id FROM labels")["transaction_id"]) == [f"t{i}" for i in range(5)]



def test_failed_chunks_are_merged_capped_and_not_spilled_by_a_quick_burst_of_flushes(store: FlakyStore) -> None:
    """With flush_rows=1 every call is a chunk: an outage used to keep thousands of them, unbounded, and
    three quick flushes (three reads of the service) set them aside as one file each."""
    from store import LogWriterFull

    writer = LogWriter(store, flush_rows=1, max_unwritten_rows=6)
    store.failures = 10_000
    for i in range(5):
        with pytest.raises(LogWriteError):
            writer.append_rows({"labels": (LABEL_ROW, (f"t{i}", 1, WHEN, WHEN))})
    assert writer.health()["unwritten_chunks"] == 1 and writer.health()["unwritten_rows"] == 5  # merged
    for _ in range(4):
        with pytest.raises(LogWriteError):
            writer.flush()
    assert writer.spilled == []  # failed often, but not for long: still kept for a retry
    writer.check_capacity()  # 5 rows <= 6: nothing to do
    for i in range(5, 9):
        with pytest.raises(LogWriteError):
            writer.append_rows({"labels": (LABEL_ROW, (f"t{i}", 1, WHEN, WHEN))})
    writer.check_capacity()  # 9 rows > 6: the oldest chunk goes to a spill file
    assert len(writer.spilled) == 1 and writer.health()["unwritten_rows"] <= 6

    def no_spill(chunk: object) -> None:
        raise OSError("spill disk full")

    for i in range(9, 12):
        with pytest.raises(LogWriteError):
            writer.append_rows({"labels": (LABEL_ROW, (f"t{i}", 1, WHEN, WHEN))})
    writer._spill = no_spill  # type: ignore[method-assign]
    with pytest.raises(LogWriterFull, match="refusing new rows"):
        writer.check_capacity()
    assert writer.health()["unwritten_rows"] == 7  # nothing dropped: kept for the next try


def test_a_real_database_refusal_names_its_cause_and_the_connection_goes_on(store: FlakyStore) -> None:
    """A row DuckDB itself refuses (a NULL in a NOT NULL column), not a patched failure: its error used to
    read "current transaction is aborted" (unregistering the frame inside the aborted transaction raised
    over it); the connection must take the next rows all the same."""
    writer = LogWriter(store, flush_rows=1, min_spill_age_s=0)
    with pytest.raises(LogWriteError, match=r"NOT NULL constraint failed: labels\.transaction_id"):
        writer.append_rows({"labels": (LABEL_ROW, (None, 1, WHEN, WHEN))})
    writer.append_rows({"labels": (LABEL_ROW, ("t1", 1, WHEN, WHEN))})
    assert store.count("labels") == 1
    for _ in range(2):
        with pytest.raises(LogWriteError, match="NOT NULL"):
            writer.flush()
    writer.flush()  # third failure done: set aside, and nothing else waits
    assert len(writer.spilled) == 1 and writer.health()["unwritten_chunks"] == 0
