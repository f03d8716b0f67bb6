"""`selfheal run`: a file or stdin played hour by hour through scorer, labels, monitor and responder."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from agent.run_records import agent_runs
from monitor.incidents import IncidentManager
from selfheal.app import Platform, simulated_now
from selfheal.cli import app
from store import Store, Workspace
from tests.conftest import HISTORY_DAYS, SmallWorld

runner = CliRunner()


@pytest.fixture
def played(small_world: SmallWorld, tmp_path: Path) -> tuple[Path, Path, pd.DataFrame]:
    """A copy of the trained workspace, the history as Parquet, and one live day as a frame."""
    home = tmp_path / "workspace"
    shutil.copytree(small_world.template, home)
    history = tmp_path / "history.parquet"
    small_world.history.to_parquet(history)
    live = small_world.simulator.generate(HISTORY_DAYS, 1)
    return home, history, live


def _records(frame: pd.DataFrame) -> list[dict[str, object]]:
    return json.loads(frame.to_json(orient="records", date_format="iso"))


def test_a_file_is_scored_hour_by_hour_with_labels_and_nothing_lost(
    played: tuple[Path, Path, pd.DataFrame], tmp_path: Path
) -> None:
    home, history, live = played
    records = _records(live)
    # A late row (an hour before the one being played), a line that is not JSON and a record without a
    # timestamp: all three are scored or dead-lettered with the hour being filled, never dropped.
    late = dict(records[200], transaction_id="late-1")
    late["timestamp"] = (pd.Timestamp(records[0]["timestamp"]) - timedelta(hours=1)).isoformat()
    lines = [json.dumps(r) for r in records[:300]] + [
        json.dumps(late),
        "{not json",
        json.dumps({"amount": 3}),
    ]
    lines += [json.dumps(r) for r in records[300:]]
    source = tmp_path / "live.jsonl"
    source.write_text("\n".join(lines) + "\n")

    result = runner.invoke(
        app,
        ["run", str(source), "--home", str(home), "--warm-from", str(history), "--planner", "none",
         "--label-delay-days", "0.25", "--batch-size", "500"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    with Platform(Workspace(home)) as platform:
        store = platform.store
        scored = store.count("predictions")
        dead = store.query("SELECT reason FROM dead_letters")
        assert scored + len(dead) == len(lines)  # conservation, the bad lines included
        assert len(dead) >= 2 and dead["reason"].str.len().min() > 0
        assert store.scalar("SELECT count(*) FROM predictions WHERE transaction_id = 'late-1'") == 1
        # Labels 6 hours after their transaction: those of the first 18 hours arrive within the day.
        stamps = pd.to_datetime([r["timestamp"] for r in [*records, late]], format="ISO8601")
        due = stamps + timedelta(hours=6) < stamps.max().ceil("h")  # the late row's label counts too
        labels = store.query("SELECT label_time, received_at FROM labels")
        assert len(labels) == int(due.sum())
        assert (labels["received_at"] >= labels["label_time"]).all()
        assert (labels["received_at"] - labels["label_time"] <= timedelta(hours=1)).all()
        hours = store.scalar("SELECT count(DISTINCT date_trunc('hour', scored_at)) FROM predictions")
    assert hours >= 20  # scored hour by hour with the clock at each hour's end, not in one go
    day_end = pd.Timestamp(live["timestamp"].max()).ceil("h").to_pydatetime()
    assert simulated_now(Workspace(home)) == day_end
    assert f"{len(lines):,}" in result.output  # the summary table counts what came in


def test_an_incident_in_the_stream_is_investigated_and_mitigated(
    played: tuple[Path, Path, pd.DataFrame], tmp_path: Path
) -> None:
    home, history, live = played
    start = pd.Timestamp(live["timestamp"].min()).normalize()
    broken = (live["timestamp"] >= start + timedelta(hours=9)) & (
        live["timestamp"] < start + timedelta(hours=14)
    )
    records = _records(live)
    for record, drop in zip(records, broken, strict=True):
        if drop:
            del record["terminal_id"]  # a producer release stops sending the field
    source = tmp_path / "live.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in records))

    result = runner.invoke(
        app,
        ["run", str(source), "--home", str(home), "--warm-from", str(history), "--planner", "deterministic"],
    )
    assert result.exit_code == 0, result.output
    with Platform(Workspace(home)) as platform:
        incidents = IncidentManager(platform.store).list()
        runs = agent_runs(platform.store)
        dead = platform.store.count("dead_letters")
    assert dead == int(broken.sum())
    assert incidents, result.output
    first = incidents[0]
    assert first.opened_at <= (start + timedelta(hours=11)).to_pydatetime()
    assert runs and runs[0]["incident_id"] == first.incident_id
    assert runs[0]["root_cause"] == "schema_change", [i.title for i in incidents]
    applied = [a["action"] for a in runs[0]["state"]["plan"] if a.get("status") == "applied"]
    assert "enable_fallback_rules" in applied, applied
    assert f"{first.incident_id} responder" in result.output


def test_labels_not_yet_due_when_a_file_ends_arrive_during_the_next_run(
    played: tuple[Path, Path, pd.DataFrame], tmp_path: Path
) -> None:
    """A team plays its data a file at a time (a month, then the next). The labels of a file's last week
    are due after it ends; they used to be dropped with the process, so the next month opened a week-long
    label-freshness incident and scored its first week with terminal risk read from missing labels."""
    home, history, live = played
    middle = pd.Timestamp(live["timestamp"].min()).floor("D") + timedelta(hours=12)
    first, second = tmp_path / "morning.parquet", tmp_path / "afternoon.parquet"
    live[live["timestamp"] < middle].to_parquet(first)
    live[live["timestamp"] >= middle].to_parquet(second)
    options = ["--home", str(home), "--planner", "none", "--label-delay-days", "0.25"]

    result = runner.invoke(app, ["run", str(first), "--warm-from", str(history), *options])
    assert result.exit_code == 0, result.output
    assert "labels not due yet" in result.output  # the summary says what waits for the next run
    result = runner.invoke(app, ["run", str(second), *options])
    assert result.exit_code == 0, result.output

    stamps = live["timestamp"]
    due = stamps + timedelta(hours=6) < stamps.max().ceil("h")
    with Platform(Workspace(home)) as platform:
        labels = platform.store.query("SELECT transaction_id, label_time, received_at FROM labels")
    assert len(labels) == int(due.sum())  # the morning's late labels included, each once
    assert labels["transaction_id"].is_unique
    assert (labels["received_at"] >= labels["label_time"]).all()  # none delivered before its time


def test_bad_sources_fail_clearly(tmp_path: Path) -> None:
    result = runner.invoke(app, ["run", str(tmp_path / "missing.parquet"), "--home", str(tmp_path / "ws")])
    assert result.exit_code == 1 and "no such file" in result.output
    (tmp_path / "x.txt").write_text("a")
    result = runner.invoke(app, ["run", str(tmp_path / "x.txt"), "--home", str(tmp_path / "ws")])
    assert result.exit_code == 1 and "unsupported file type" in result.output
    source = tmp_path / "one.jsonl"
    source.write_text(
        json.dumps({"transaction_id": "a", "timestamp": datetime(2018, 5, 1).isoformat()}) + "\n"
    )
    result = runner.invoke(app, ["run", str(source), "--home", str(tmp_path / "ws")])
    assert result.exit_code == 1 and "no workspace at" in " ".join(result.output.split())
    Store.open(Workspace(tmp_path / "ws").ensure()).close()
    result = runner.invoke(app, ["run", str(source), "--home", str(tmp_path / "ws")])
    assert result.exit_code == 1 and "no champion model" in " ".join(result.output.split())
    result = runner.invoke(app, ["run", str(source), "--planner", "guess"])
    assert result.exit_code == 2 and "--planner" in result.output


def test_the_llm_planner_without_an_endpoint_fails_before_anything_is_scored(
    played: tuple[Path, Path, pd.DataFrame], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, _, live = played
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    source = tmp_path / "live.parquet"
    live.head(50).to_parquet(source)
    result = runner.invoke(app, ["run", str(source), "--home", str(home), "--planner", "llm"])
    assert result.exit_code == 1
    assert "needs an endpoint" in " ".join(result.output.split())
    with Platform(Workspace(home)) as platform:
        assert platform.store.count("predictions") == 0


def test_the_simulator_is_a_source_warmed_with_the_month_before(
    played: tuple[Path, Path, pd.DataFrame], small_world: SmallWorld
) -> None:
    home, _, live = played
    world = small_world.simulator.config
    result = runner.invoke(
        app,
        ["run", "simulator", "--days", "1", "--start-day", str(HISTORY_DAYS), "--seed", str(world.seed),
         "--customers", str(world.customers), "--terminals", str(world.terminals), "--home", str(home),
         "--planner", "none", "--label-delay-days", "0.25"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "warmed with" in result.output  # the template logged no traffic: the 31 days before warm it
    with Platform(Workspace(home)) as platform:
        logged = platform.store.query("SELECT transaction_id, customer_tx_count_30d FROM predictions")
        labels = platform.store.count("labels")
    assert sorted(logged["transaction_id"]) == sorted(live["transaction_id"].astype(str))  # the same day
    # Warm windows: a customer's 30-day count includes the month before (cold state would start near 1).
    assert logged["customer_tx_count_30d"].mean() > 5
    stamps = pd.to_datetime(live["timestamp"])
    assert labels == int((stamps + timedelta(hours=6) < stamps.max().ceil("h")).sum())  # the day's own labels


def test_a_simulated_run_warms_when_the_held_history_ends_long_before_it(
    played: tuple[Path, Path, pd.DataFrame], small_world: SmallWorld
) -> None:
    # History kept earlier (by `selfheal train`, say) that ends weeks before the first simulated day used to
    # count as warm: the run skipped the weeks before it and scored with starved windows.
    home, _, _ = played
    world = small_world.simulator.config
    early = small_world.history[small_world.history["timestamp"] < small_world.history["timestamp"].min() + timedelta(days=3)]
    with Platform(Workspace(home)) as platform:
        assert platform.scorer.keep_history(early) > 0
    result = runner.invoke(
        app,
        ["run", "simulator", "--days", "1", "--start-day", str(HISTORY_DAYS), "--seed", str(world.seed),
         "--customers", str(world.customers), "--terminals", str(world.terminals), "--home", str(home),
         "--planner", "none"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "warmed with" in result.output
    with Platform(Workspace(home)) as platform:
        logged = platform.store.query("SELECT customer_tx_count_30d FROM predictions")
    assert logged["customer_tx_count_30d"].mean() > 5
