"""Quarantine imputation from sibling features (scorer/imputation.py), in the serving state and the scorer."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from monitor.incidents import IncidentManager
from scorer.errors import ServingStateError
from scorer.imputation import Surrogate, fit_surrogates, impute_column, impute_value, usable_surrogates
from scorer.serving import utc_now
from selfheal.app import Platform
from store import Workspace
from tests.conftest import HISTORY_DAYS, SmallWorld
from tools.context import ToolContext
from tools.registry import call_tool

TARGET = "customer_avg_amount_30d"
SIBLING = "customer_avg_amount_7d"


def _frame(rows: int = 2000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.gamma(4.0, 10.0, rows)
    return pd.DataFrame(
        {
            "x": x,
            "y": 2.0 * x + 5.0 + rng.normal(0.0, 4.0, rows),
            "w": 0.5 * x + rng.normal(0.0, 20.0, rows),
            "noise": rng.normal(0.0, 1.0, rows),
            "is_night": rng.integers(0, 2, rows).astype(float),
        }
    )


def test_fit_ranks_the_predictors_that_explain_a_feature_and_skips_unrelated_ones() -> None:
    fitted = fit_surrogates(_frame())

    best = fitted["y"][0]
    assert best.source == "x"
    assert best.slope == pytest.approx(2.0, abs=0.05) and best.intercept == pytest.approx(5.0, abs=1.5)
    assert best.r2 > 0.9
    assert [s.r2 for s in fitted["y"]] == sorted((s.r2 for s in fitted["y"]), reverse=True)
    assert "noise" not in fitted  # nothing explains noise
    assert all(s.source != "noise" for ranked in fitted.values() for s in ranked)
    assert "is_night" not in fitted and all(s.source != "is_night" for r in fitted.values() for s in r)


def test_fit_ignores_missing_rows_and_constant_columns() -> None:
    frame = _frame()
    frame.loc[::3, "x"] = np.nan
    frame["flat"] = 1.0

    fitted = fit_surrogates(frame)

    assert fitted["y"][0].source == "x" and fitted["y"][0].slope == pytest.approx(2.0, abs=0.05)
    assert "flat" not in fitted and all(s.source != "flat" for r in fitted.values() for s in r)


def _surrogate(source: str, slope: float, intercept: float = 0.0, lower: float = 0.0, upper: float = 100.0) -> Surrogate:
    return Surrogate(source=source, slope=slope, intercept=intercept, r2=0.8, lower=lower, upper=upper)


def test_each_row_uses_the_first_surrogate_it_has_a_value_for_then_the_constant() -> None:
    first, second = _surrogate("a", 2.0), _surrogate("b", 1.0, 1.0)
    sources = {"a": np.array([1.0, np.nan, np.nan, 80.0]), "b": np.array([5.0, 5.0, np.inf, 5.0])}

    column = impute_column(7.5, [first, second], sources, 4)

    assert column.tolist() == [2.0, 6.0, 7.5, 100.0]  # a; b where a is missing; constant; clipped
    rows = [impute_value(7.5, [first, second], {k: float(v[i]) for k, v in sources.items()}) for i in range(4)]
    assert rows == column.tolist()


def test_a_quarantined_source_is_never_used() -> None:
    ranked = {"t": [_surrogate("a", 1.0), _surrogate("b", 1.0)]}
    assert [s.source for s in usable_surrogates("t", ranked, {"t", "a"})] == ["b"]
    assert usable_surrogates("t", ranked, {"t", "a", "b"}) == []
    assert usable_surrogates("other", ranked, set()) == []


def test_serving_state_keeps_surrogates_with_their_quarantine(platform: Platform) -> None:
    serving = platform.serving
    surrogate = _surrogate(SIBLING, 0.9, 3.0)
    state = serving.quarantine_feature(TARGET, 50.0, actor="test", reason="broken", surrogates=[surrogate])
    assert state.quarantine_surrogates == {TARGET: [surrogate]}
    serving.invalidate()
    assert serving.current().quarantine_surrogates == {TARGET: [surrogate]}  # read back from the table

    released = serving.release_feature(TARGET, actor="test", reason="fixed")
    assert released.quarantined_features == {} and released.quarantine_surrogates == {}
    with pytest.raises(ServingStateError, match="not quarantined"):
        serving.update(actor="test", reason="bad", quarantine_surrogates={TARGET: [surrogate]})
    # Writing back an older state (an undo) brings its surrogates back with it.
    restored = serving.update(actor="test", reason="undo", **state.changes())
    assert restored.quarantine_surrogates == {TARGET: [surrogate]}


def test_the_reference_profile_holds_the_sibling_windows_as_surrogates(platform: Platform) -> None:
    profile = platform.registry.get(1).metadata.reference_profile
    assert profile is not None
    ranked = [Surrogate.model_validate(s) for s in profile["surrogates"][TARGET]]
    assert ranked[0].source == SIBLING and ranked[0].r2 > 0.5


@contextmanager
def _workspace(small_world: SmallWorld, home: Path, *, stuck: bool, imputation: str | None) -> Iterator[Platform]:
    """A copy of the trained workspace; TARGET stuck at 0.0 when `stuck`, quarantined as `imputation` says."""
    shutil.copytree(small_world.template, home)
    with Platform(Workspace(home)) as platform:
        platform.scorer.features.observe(small_world.history)
        if stuck:
            platform.scorer.hooks.features.append(lambda _rows, features: features.assign(**{TARGET: 0.0}))
        if imputation == "mean":
            profile = platform.registry.get(1).metadata.reference_profile or {}
            platform.serving.quarantine_feature(TARGET, profile["numeric"][TARGET]["mean"], actor="test", reason="mean only")
        elif imputation == "reference":
            context = ToolContext(
                store=platform.store, registry=platform.registry, serving=platform.serving,
                incidents=IncidentManager(platform.store), clock=utc_now, scorer=platform.scorer,
                actor="test", reason="the feature job ships constants",
            )
            result = call_tool("quarantine_feature", context, {"feature": TARGET}).data
            assert isinstance(result, dict) and result["surrogates"], result
        yield platform


def _live_day(small_world: SmallWorld) -> pd.DataFrame:
    return small_world.simulator.generate(HISTORY_DAYS, 1)


def test_imputing_from_a_sibling_keeps_the_scores_closer_to_healthy_than_the_mean(
    small_world: SmallWorld, tmp_path: Path
) -> None:
    day = _live_day(small_world)
    scores = {}
    for name, stuck, imputation in (("healthy", False, None), ("mean", True, "mean"), ("sibling", True, "reference")):
        with _workspace(small_world, tmp_path / name, stuck=stuck, imputation=imputation) as platform:
            scores[name] = platform.scorer.score_batch(day).predictions["score"].to_numpy()

    def error(name: str) -> float:
        return float(np.mean(np.abs(scores[name] - scores["healthy"])))

    assert error("sibling") < 0.6 * error("mean"), (error("sibling"), error("mean"))


def test_batch_and_one_record_paths_impute_alike(small_world: SmallWorld, tmp_path: Path) -> None:
    day = _live_day(small_world).head(30)
    with _workspace(small_world, tmp_path / "batch", stuck=False, imputation="reference") as platform:
        batch = platform.scorer.score_batch(day).predictions["score"].tolist()
    with _workspace(small_world, tmp_path / "one", stuck=False, imputation="reference") as platform:
        one_by_one = [platform.scorer.score_one(record)["score"] for record in day.to_dict("records")]
    with _workspace(small_world, tmp_path / "live", stuck=False, imputation=None) as platform:
        unquarantined = platform.scorer.score_batch(day).predictions["score"].tolist()

    assert one_by_one == pytest.approx(batch, abs=1e-6)
    assert batch != pytest.approx(unquarantined, abs=1e-6)  # the imputation did change what the model saw
