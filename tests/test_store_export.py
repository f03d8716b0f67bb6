"""`Store.export(by_day=True)` / `selfheal export --by-day`: Hive partitions a lake reads as one table."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from typer.testing import CliRunner

from selfheal.cli import app
from store import Store, Workspace

START = datetime(2018, 6, 1)


def _labels(first_day: int, days: int, per_day: int, tag: str) -> pd.DataFrame:
    stamps = [START + timedelta(days=d, hours=h) for d in range(first_day, first_day + days) for h in range(per_day)]
    return pd.DataFrame({
        "transaction_id": [f"{tag}{i}" for i in range(len(stamps))], "is_fraud": [i % 2 for i in range(len(stamps))],
        "label_time": stamps, "received_at": stamps,
    })  # fmt: skip


def _lake(folder: Path) -> pd.DataFrame:
    with duckdb.connect() as con:
        return con.execute(
            f"SELECT * FROM read_parquet('{folder}/*/*.parquet', hive_partitioning = true) ORDER BY label_time"
        ).df()


def test_days_exported_again_replace_their_partition_and_no_other(tmp_path: Path) -> None:
    lake = tmp_path / "lake" / "labels"
    with Store(tmp_path / "ws.duckdb") as store:
        store.append("labels", _labels(0, 3, 4, "a"))  # June 1-3, 4 rows a day
        assert store.export("labels", lake, since=START, until=START + timedelta(days=2), by_day=True) == 8
        assert sorted(p.name for p in lake.iterdir()) == ["day=2018-06-01", "day=2018-06-02"]
        store.append("labels", _labels(1, 1, 2, "late"))  # two late labels for June 2
        assert store.export("labels", lake, since=START + timedelta(days=1), by_day=True) == 10  # June 2-3

        logged = store.query("SELECT * FROM labels ORDER BY label_time")
    lake_rows = _lake(lake)
    assert sorted(p.name for p in lake.iterdir()) == ["day=2018-06-01", "day=2018-06-02", "day=2018-06-03"]
    assert len(lake_rows) == len(logged) == 14 and lake_rows["transaction_id"].is_unique
    assert sorted(lake_rows["transaction_id"]) == sorted(logged["transaction_id"])
    assert (pd.to_datetime(lake_rows["day"]) == lake_rows["label_time"].dt.normalize()).all()


def test_by_day_needs_a_time_column_and_the_cli_a_folder(tmp_path: Path) -> None:
    home = tmp_path / "ws"
    with Store(Workspace(home).ensure().db_path) as store:
        store.append("labels", _labels(0, 1, 3, "a"))
        with pytest.raises(ValueError, match="no time column"):
            store.export("schema_migrations", tmp_path / "x", by_day=True)
    runner = CliRunner()
    a_file = tmp_path / "file.parquet"
    a_file.write_bytes(b"")
    refused = runner.invoke(app, ["export", "labels", "--by-day", "--out", str(a_file), "--home", str(home)])
    assert refused.exit_code == 1 and "is a file" in " ".join(refused.output.split())
    done = runner.invoke(app, ["export", "labels", "--by-day", "--out", str(tmp_path / "lake"), "--home", str(home)])
    assert done.exit_code == 0, done.output
    assert len(_lake(tmp_path / "lake")) == 3


def test_bounds_inside_a_day_export_that_whole_day_and_nothing_is_left_in_the_lake_folder(tmp_path: Path) -> None:
    """An hourly job that exported `since 20:00` used to replace the day's partition with its last hours."""
    lake = tmp_path / "lake"
    with Store(tmp_path / "ws.duckdb") as store:
        store.append("labels", _labels(0, 2, 24, "a"))  # June 1-2, every hour
        store.export("labels", lake, by_day=True)
        assert store.export("labels", lake, since=START + timedelta(hours=20), until=START + timedelta(hours=22),
                            by_day=True) == 24  # fmt: skip
    assert len(_lake(lake)) == 48
    assert sorted(p.name for p in lake.iterdir()) == ["day=2018-06-01", "day=2018-06-02"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".lake")] == []  # staging cleaned up
