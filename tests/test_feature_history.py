"""Observed history is kept in the workspace: a restarted scorer's feature windows equal a running one's.

History that was only observed (the demo's month, `selfheal run --warm-from`) used to live in memory alone;
a restart warmed up from the log only and scored with starved windows (terminal 30-day counts near 0).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from scorer import columns as C
from scorer.feature_state import FeatureState
from scorer.history import HistoryCoverage
from selfheal.app import Platform
from selfheal.cli import app
from selfheal.cli_warm import short_history_warning
from store import Workspace
from tests.conftest import HISTORY_DAYS, SmallWorld
from tests.service_process import serve_process

runner = CliRunner()
RETENTION_DAYS = FeatureState().config.retention_days  # 37: 30-day terminal windows + the 7-day label delay


@pytest.fixture
def home(small_world: SmallWorld, tmp_path: Path) -> Path:
    """A copy of the trained workspace that has scored and observed nothing."""
    target = tmp_path / "workspace"
    shutil.copytree(small_world.template, target)
    return target


def _hours(small_world: SmallWorld, first: int, last: int) -> pd.DataFrame:
    """Live hours [first, last) of the day after the history, without labels (as traffic comes)."""
    day = small_world.simulator.generate(HISTORY_DAYS, 1)
    start = day[C.TIMESTAMP].min().normalize()
    hours = (day[C.TIMESTAMP] - start) // pd.Timedelta(hours=1)
    return day[(hours >= first) & (hours < last)].drop(columns=[C.LABEL, C.FRAUD_SCENARIO])


def _features(state: FeatureState, batch: pd.DataFrame) -> np.ndarray:
    return state.transform(batch, remember=False).to_numpy()


def test_a_restarted_scorer_has_the_features_of_one_that_kept_running(
    home: Path, small_world: SmallWorld
) -> None:
    with Platform(Workspace(home)) as running:
        assert running.scorer.observe_history(small_world.history) == len(small_world.history)
        for hour in range(4):
            batch = _hours(small_world, hour, hour + 1)
            running.scorer.score_batch(batch)
            # Some of what was scored is labelled (a few as fraud): labels must come back with their rows.
            labelled = batch.iloc[::3]
            running.scorer.add_labels(
                pd.DataFrame({C.TRANSACTION_ID: labelled[C.TRANSACTION_ID], C.LABEL: np.arange(len(labelled)) % 5 == 0,
                              "label_time": labelled[C.TIMESTAMP]})
            )  # fmt: skip
        kept_running = running.scorer.features
    following = _hours(small_world, 4, 6)

    with Platform(Workspace(home)) as restarted:
        warmed = restarted.scorer.warm_up()
        expected = _features(kept_running, following)
        got = _features(restarted.scorer.features, following)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)
        assert warmed.logged == len(_hours(small_world, 0, 4))
        assert 0 < warmed.observed < len(small_world.history)  # only what the windows still reach
        columns = restarted.scorer.features.config.columns
        terminal_30d = got[:, columns.index("terminal_tx_count_30d")]
        assert terminal_30d.mean() > 5  # warm windows (the bug left them near 0), not two equally cold states
        assert not restarted.scorer.history_coverage().short


def test_the_kept_history_is_bounded_by_the_feature_retention(home: Path, small_world: SmallWorld) -> None:
    history = small_world.history
    middle = history[C.TIMESTAMP].min() + pd.Timedelta(days=HISTORY_DAYS // 2)
    with Platform(Workspace(home)) as platform:
        platform.scorer.observe_history(history[history[C.TIMESTAMP] < middle])
        early = platform.store.count("feature_history")
        assert early == int((history[C.TIMESTAMP] < middle).sum())  # all of it within the retention window
        platform.scorer.observe_history(history[history[C.TIMESTAMP] >= middle])
        # Observing the same history again adds nothing, in memory or in the table.
        rows_in_memory, rows_kept = platform.scorer.features.rows, platform.store.count("feature_history")
        assert platform.scorer.observe_history(history) == 0
        assert (platform.scorer.features.rows, platform.store.count("feature_history")) == (
            rows_in_memory,
            rows_kept,
        )
        oldest = pd.Timestamp(platform.store.scalar("SELECT min(timestamp) FROM feature_history"))
    horizon = history[C.TIMESTAMP].max() - pd.Timedelta(days=RETENTION_DAYS + 1)
    assert oldest > horizon  # the first half's oldest days were dropped when newer history arrived
    assert rows_kept == int((history[C.TIMESTAMP] > horizon).sum()) < len(history)


def test_the_warning_names_what_is_missing_and_what_to_do() -> None:
    assert (
        short_history_warning(HistoryCoverage(rows=0, held_days=0.0, needed_days=37)) is None
    )  # nothing yet
    assert short_history_warning(HistoryCoverage(rows=9_000, held_days=36.99, needed_days=37)) is None
    warning = short_history_warning(HistoryCoverage(rows=9_000, held_days=7.2, needed_days=37))
    assert warning is not None
    assert "need 37 days of history; the workspace holds 7 days" in warning and "--warm-from" in warning


def _said(output: str) -> str:
    return " ".join(output.split())  # rich wraps long lines


def test_score_warns_when_the_workspace_holds_a_few_hours_and_run_warm_from_fixes_it_for_good(
    home: Path, small_world: SmallWorld, tmp_path: Path
) -> None:
    files = [tmp_path / f"hours-{hour}.parquet" for hour in range(0, 8, 2)]
    for hour, path in zip(range(0, 8, 2), files, strict=True):
        _hours(small_world, hour, hour + 2).to_parquet(path)
    history = tmp_path / "history.parquet"
    small_world.history.to_parquet(history)
    warned = f"feature windows need {RETENTION_DAYS} days of history"

    result = runner.invoke(app, ["score", str(files[0]), "--home", str(home)])
    assert result.exit_code == 0, result.output
    assert warned not in _said(result.output)  # an empty workspace expects no history
    result = runner.invoke(app, ["score", str(files[1]), "--home", str(home)])
    assert result.exit_code == 0, result.output
    assert f"{warned}; the workspace holds less than a day" in _said(result.output)  # 2 hours logged

    result = runner.invoke(
        app, ["run", str(files[2]), "--home", str(home), "--warm-from", str(history), "--planner", "none"]
    )
    assert result.exit_code == 0, result.output
    assert warned not in _said(result.output) and "earlier transactions" in result.output
    # A later start without --warm-from: the history was kept, the windows are full and nothing warns.
    result = runner.invoke(app, ["score", str(files[3]), "--home", str(home)])
    assert result.exit_code == 0, result.output
    assert warned not in _said(result.output)
    with Platform(Workspace(home)) as platform:
        scored = platform.store.query(
            "SELECT terminal_tx_count_30d FROM predictions WHERE timestamp >= ?",
            [pd.Timestamp(pd.read_parquet(files[3])[C.TIMESTAMP].min()).to_pydatetime()],
        )
    assert len(scored) and scored["terminal_tx_count_30d"].mean() > 5


def test_serve_warns_at_start_when_the_history_is_short(home: Path, small_world: SmallWorld) -> None:
    with Platform(Workspace(home)) as platform:
        platform.scorer.score_batch(_hours(small_world, 0, 3))
        platform.scorer.flush()
    with serve_process(home, "--no-autopilot") as served:
        deadline = time.monotonic() + 10
        while "feature windows need" not in "".join(served.stderr) and time.monotonic() < deadline:
            time.sleep(0.1)  # stderr is read by a thread: the lines may trail the discovery record
        said = _said("".join(served.stderr))
    assert (
        f"feature windows need {RETENTION_DAYS} days of history; the workspace holds less than a day" in said
    )
    assert "feature state warmed with" in said


def test_train_keeps_its_data_so_the_first_score_starts_warm(small_world: SmallWorld, tmp_path: Path) -> None:
    # `selfheal train --data history; selfheal score live` (the README's path) used to score its first
    # weeks with empty windows: the training data, the history live traffic follows, was not kept.
    history, live = tmp_path / "history.parquet", tmp_path / "live.parquet"
    small_world.history.to_parquet(history)
    _hours(small_world, 0, 2).to_parquet(live)
    home = tmp_path / "trained"

    assert runner.invoke(app, ["train", "--data", str(history), "--json", "--home", str(home)]).exit_code == 0
    result = runner.invoke(app, ["score", str(live), "--home", str(home)])

    assert result.exit_code == 0, result.output
    assert "feature windows need" not in _said(result.output)
    with Platform(Workspace(home)) as platform:
        scored = platform.store.query("SELECT terminal_tx_count_30d, customer_tx_count_30d FROM predictions")
    assert len(scored) and scored["terminal_tx_count_30d"].mean() > 5 and scored["customer_tx_count_30d"].mean() > 5


FEATURE_COLUMNS = ", ".join(FeatureState().config.columns)


def _logged_features(home: Path) -> pd.DataFrame:
    with Platform(Workspace(home)) as platform:
        return platform.store.query(
            f"SELECT transaction_id, {FEATURE_COLUMNS} FROM predictions ORDER BY transaction_id"
        )


def test_rescoring_kept_history_counts_each_transaction_once(small_world: SmallWorld, tmp_path: Path) -> None:
    # `selfheal train --data all.parquet` keeps the data's last weeks; scoring some of those same
    # transactions afterwards (the test days, say) counted each twice in its own windows: the kept copy
    # and the scored one. The scored rows must get the features of a workspace that kept only what came
    # before them, on both scoring paths.
    live = _hours(small_world, 0, 3)
    batch, singles = live.iloc[:-5], live.iloc[-5:]
    labelled = small_world.history
    overlapping = pd.concat([labelled, live.assign(**{C.LABEL: 0})], ignore_index=True)
    homes = {}
    for name, kept in (("rescored", overlapping), ("reference", labelled)):
        homes[name] = tmp_path / name
        shutil.copytree(small_world.template, homes[name])
        with Platform(Workspace(homes[name])) as platform:
            platform.scorer.keep_history(kept)
        with Platform(Workspace(homes[name])) as restarted:  # a new process, as `selfheal score` is
            restarted.scorer.warm_up()
            restarted.scorer.score_batch(batch)
            for record in singles.to_dict("records"):
                restarted.scorer.score_one(record)
            restarted.scorer.flush()

    rescored, reference = _logged_features(homes["rescored"]), _logged_features(homes["reference"])
    assert len(rescored) == len(live)
    pd.testing.assert_frame_equal(rescored, reference, rtol=0, atol=1e-9)


def test_observed_history_scored_in_the_same_process_counts_once(home: Path, small_world: SmallWorld) -> None:
    live = _hours(small_world, 0, 2)
    with Platform(Workspace(home)) as platform:
        platform.scorer.observe_history(pd.concat([small_world.history, live.assign(**{C.LABEL: 0})]))
        platform.scorer.score_batch(live)
        following = _hours(small_world, 2, 3)
        got = _features(platform.scorer.features, following)
    reference = FeatureState(platform.scorer.features.config)
    reference.observe(small_world.history)
    reference.transform(live)
    np.testing.assert_allclose(got, _features(reference, following), rtol=0, atol=1e-9)


def test_forgetting_rows_equals_never_having_seen_them(small_world: SmallWorld) -> None:
    history = small_world.history
    forgotten = history.sample(frac=0.2, random_state=3)
    following = _hours(small_world, 0, 2)
    state, reference = FeatureState(), FeatureState(min_recent_rows=64)
    state.observe(history)
    reference.observe(history.drop(forgotten.index))

    assert state.forget(forgotten[C.TRANSACTION_ID].astype(str).tolist()) == len(forgotten)
    assert state.forget(["no-such-id"]) == 0
    np.testing.assert_allclose(_features(state, following), _features(reference, following), rtol=0, atol=1e-9)
    labelled = following.iloc[::4]
    for each in (state, reference):  # labels still find their rows after the rebuild
        each.transform(following)
        each.add_labels(labelled[C.TRANSACTION_ID].astype(str).to_numpy(), np.ones(len(labelled)))
    after = _hours(small_world, 2, 3)
    np.testing.assert_allclose(_features(state, after), _features(reference, after), rtol=0, atol=1e-9)
