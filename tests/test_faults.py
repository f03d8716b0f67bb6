"""The fault library and the world player: one conformance suite over every registered fault.

Each fault is played for the first ten live hours of the small world through the real scorer, starting
at 04:00, and compared with the same hours played without it; the test asserts the effect that fault is meant
to have, measured in the store (or the world's ground truth), and that nothing changed before it began.
"""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from evals.faults import (
    FAULTS,
    INCIDENT_KINDS,
    ROOT_CAUSES,
    SCENARIO_CARD_TESTING,
    SCENARIO_NEW_PATTERN,
    Fault,
    FaultParameterError,
    UnknownFaultKindError,
    make_fault,
)
from evals.faults.world import NEW_CUSTOMER_ID_BASE
from evals.live import HourReport, LiveWorld, Payload, SimClock
from scorer import columns as C
from scorer.metrics import auc_roc
from scorer.score import ScorerConfig
from scorer.serving import ServingState
from selfheal.app import Platform
from store import Workspace
from tests.conftest import HISTORY_DAYS, SmallWorld

LIVE_DAY = HISTORY_DAYS
HOURS = 10  # most of a morning: every fault shows within hours, and the suite stays fast
FAULT_HOUR = 4


@dataclass
class Played:
    """What a run left behind, read back from the store before the workspace closed."""

    predictions: pd.DataFrame
    transactions: pd.DataFrame
    dead_letters: pd.DataFrame
    labels: pd.DataFrame
    audit: pd.DataFrame
    serving: ServingState
    aliases: list[tuple[str, int | None, str]]
    models: dict[int, list[str]]  # version -> feature columns
    artifacts: dict[int, Path]  # version -> model file (the workspace outlives the run)
    truth: pd.DataFrame
    hours: list[HourReport]
    start: datetime  # when the faults began

    def after(self, frame: pd.DataFrame, column: str = C.TIMESTAMP) -> pd.DataFrame:
        return frame.loc[frame[column] >= self.start]

    def before(self, frame: pd.DataFrame, column: str = C.TIMESTAMP) -> pd.DataFrame:
        return frame.loc[frame[column] < self.start]


def _live_start(world: SmallWorld) -> datetime:
    return (world.simulator.config.start + pd.Timedelta(days=LIVE_DAY)).to_pydatetime()


def play(
    world: SmallWorld,
    home: Path,
    faults: Sequence[Fault] = (),
    *,
    on_hour: Callable[[LiveWorld, datetime, HourReport], None] | None = None,
    payload: Payload = "records",
) -> Played:
    """Play HOURS live hours with ``faults`` in a fresh copy of the trained workspace."""
    shutil.copytree(world.template, home)
    start = _live_start(world)
    clock = SimClock(start)
    config = ScorerConfig(flush_rows=1_000_000)  # one write at the end: the tests read the store afterwards
    with Platform(Workspace(home), clock=clock, scorer_config=config) as platform:
        platform.scorer.features.observe(world.history)
        live = LiveWorld(
            platform,
            world.simulator,
            clock=clock,
            start_day=LIVE_DAY,
            days=1,
            faults=faults,
            history=world.history,
            payload=payload,
        )
        if on_hour is not None:
            callback = on_hour
            live.on_hour = lambda now, report: callback(live, now, report)
        hours = list(itertools.islice(live.hours(), HOURS))
        platform.scorer.flush()
        store = platform.store
        return Played(
            predictions=store.query("SELECT * FROM predictions ORDER BY timestamp, transaction_id"),
            transactions=store.query("SELECT * FROM transactions ORDER BY timestamp, transaction_id"),
            dead_letters=store.query("SELECT * FROM dead_letters ORDER BY received_at, transaction_id"),
            labels=store.query("SELECT * FROM labels ORDER BY label_time, transaction_id"),
            audit=store.query("SELECT * FROM audit_log"),
            serving=platform.serving.current(),
            aliases=[(e.alias, e.version, e.actor) for e in platform.registry.history()],
            models={m.version: m.metadata.feature_columns for m in platform.registry.list()},
            artifacts={m.version: m.artifact_path for m in platform.registry.list()},
            truth=live.truth().astype({C.TRANSACTION_ID: str}),
            hours=hours,
            start=start + timedelta(hours=FAULT_HOUR),
        )


def example(kind: str, start: datetime) -> Fault:
    return make_fault(kind, FAULTS[kind].example_params, start)


@pytest.fixture(scope="module")
def control(small_world: SmallWorld, tmp_path_factory: pytest.TempPathFactory) -> Played:
    return play(small_world, tmp_path_factory.mktemp("control") / "ws")


# -- the effect each fault must have ------------------------------------------------------------------


def _scored_auc(run: Played) -> float:
    scored = run.after(run.predictions).merge(run.truth[[C.TRANSACTION_ID, C.LABEL]], on=C.TRANSACTION_ID)
    return auc_roc(scored[C.LABEL], scored["score"])


def _joined_amounts(run: Played, control: Played) -> pd.DataFrame:
    columns = [C.TRANSACTION_ID, C.AMOUNT]
    return run.after(run.transactions)[columns].merge(
        control.transactions[columns], on=C.TRANSACTION_ID, suffixes=("", "_control")
    )


def check_feature_nulls(run: Played, control: Played) -> None:
    null_share = run.after(run.predictions)[["terminal_risk_7d", "terminal_risk_30d"]].isna().mean()
    assert ((null_share > 0.45) & (null_share < 0.75)).all()  # rate 0.6
    assert run.before(run.predictions)["terminal_risk_7d"].notna().all()
    assert control.predictions["terminal_risk_7d"].notna().all()


def check_feature_constant(run: Played, control: Played) -> None:
    assert (
        (run.after(run.predictions)[["customer_avg_amount_7d", "customer_avg_amount_30d"]] == 0.0).all().all()
    )
    assert (control.after(control.predictions)["customer_avg_amount_7d"] > 0).all()


def check_schema_change(run: Played, control: Played) -> None:
    assert control.dead_letters.empty
    assert len(run.dead_letters) == len(control.after(control.predictions))  # every record after the change
    assert set(run.dead_letters["reason"]) == {"missing field terminal_id"}
    assert len(run.before(run.predictions)) == len(control.before(control.predictions))


def check_amount_shift(run: Played, control: Played) -> None:
    joined = _joined_amounts(run, control)
    shifted = np.isclose(joined[C.AMOUNT], (joined["amount_control"] * 100).round(2))
    assert 0.35 < shifted.mean() < 0.65  # share 0.5
    assert np.isclose(joined.loc[~shifted, C.AMOUNT], joined.loc[~shifted, "amount_control"]).all()


def check_volume_drop(run: Played, control: Played) -> None:
    kept = len(run.after(run.predictions)) / len(control.after(control.predictions))
    assert 0.15 < kept < 0.45  # factor 0.3
    assert len(run.before(run.predictions)) == len(control.before(control.predictions))


def check_text_injection(run: Played, control: Played) -> None:
    text = FAULTS["text_injection"].example_params["text"]
    carries = run.transactions[C.MERCHANT_NAME] == text
    assert carries.sum() > 0 and run.transactions.loc[carries, C.TIMESTAMP].min() >= run.start
    assert not (control.transactions[C.MERCHANT_NAME] == text).any()


def check_card_testing(run: Played, control: Played) -> None:
    injected = run.transactions.loc[
        ~run.transactions[C.TRANSACTION_ID].isin(control.transactions[C.TRANSACTION_ID])
    ]
    # share 0.05 of the day's rows after 04:00, spread from 04:00 to the day's last transaction
    assert 5 <= len(injected) <= 0.1 * len(control.after(control.truth))
    assert (injected[C.AMOUNT] <= 2.0).all() and (injected[C.CHANNEL] == "online").all()
    assert injected[C.TERMINAL_ID].nunique() <= 2 and injected[C.TIMESTAMP].min() >= run.start
    truth = run.truth.set_index(C.TRANSACTION_ID).loc[injected[C.TRANSACTION_ID]]
    assert (truth[C.LABEL] == 1).all() and (truth[C.FRAUD_SCENARIO] == SCENARIO_CARD_TESTING).all()


def check_population_shift(run: Played, control: Played) -> None:
    customer = run.transactions[C.CUSTOMER_ID].astype(np.int64)
    new = run.transactions.loc[customer >= NEW_CUSTOMER_ID_BASE]
    share = len(new) / len(run.after(run.transactions))
    assert 0.15 < share < 0.4 and new[C.TIMESTAMP].min() >= run.start
    assert new[C.AMOUNT].mean() > 1.5 * control.transactions[C.AMOUNT].mean()
    assert (control.transactions[C.CUSTOMER_ID].astype(np.int64) < NEW_CUSTOMER_ID_BASE).all()


def check_new_fraud_pattern(run: Played, control: Played) -> None:
    pattern = run.truth.loc[run.truth[C.FRAUD_SCENARIO] == SCENARIO_NEW_PATTERN]
    assert len(pattern) > 0 and (pattern[C.LABEL] == 1).all()
    assert pattern[C.AMOUNT].between(60, 200).all() and (pattern[C.CHANNEL] == "online").all()
    assert (control.truth[C.FRAUD_SCENARIO] != SCENARIO_NEW_PATTERN).all()
    assert run.truth[C.LABEL].sum() > control.truth[C.LABEL].sum()


def check_benign_seasonal(run: Played, control: Played) -> None:
    joined = _joined_amounts(run, control)
    hour = (
        run.after(run.transactions)
        .set_index(C.TRANSACTION_ID)
        .loc[joined[C.TRANSACTION_ID], C.TIMESTAMP]
        .dt.hour
    )
    in_hours = hour.isin([9]).to_numpy()
    assert in_hours.any()
    assert np.allclose(
        joined.loc[in_hours, C.AMOUNT], (joined.loc[in_hours, "amount_control"] * 1.15).round(2)
    )
    assert np.allclose(joined.loc[~in_hours, C.AMOUNT], joined.loc[~in_hours, "amount_control"])
    assert (run.truth[C.LABEL].to_numpy() == control.truth[C.LABEL].to_numpy()).all()  # genuine stays genuine


def check_label_stall(run: Played, control: Played) -> None:
    assert len(control.after(control.labels, "label_time")) > 0
    assert run.after(run.labels, "label_time").empty
    assert len(run.before(run.labels, "label_time")) == len(control.before(control.labels, "label_time"))
    assert sum(h.labels_withheld for h in run.hours) == len(control.after(control.labels, "label_time"))


def check_latency(run: Played, control: Played) -> None:
    extra = (
        run.after(run.predictions)["latency_ms"].mean()
        - control.after(control.predictions)["latency_ms"].mean()
    )
    assert 14.0 < extra < 26.0  # 40 ms on half the rows, plus noise


def check_threshold_misconfig(run: Played, control: Played) -> None:
    assert run.serving.threshold == 0.05 and run.serving.changed_by == "deploy-bot"
    assert run.serving.review_threshold <= run.serving.threshold
    declines = (run.after(run.predictions)["decision"] == "decline").mean()
    assert declines > 1.5 * (control.after(control.predictions)["decision"] == "decline").mean()


def check_corrupt_artifact(run: Played, control: Played) -> None:
    after = run.after(run.predictions)
    assert after["used_fallback"].all() and after["fallback_reason"].str.contains("sha256").all()
    assert not run.before(run.predictions)["used_fallback"].any()
    assert "model_load_failed" in set(run.audit["action"])
    assert not control.predictions["used_fallback"].any()


def check_bad_deploy(run: Played, control: Played) -> None:
    assert ("champion", 2, "deploy-bot") in run.aliases
    assert run.models[2] == run.models[1]  # wrong_feature_order: the metadata looks right
    assert (run.after(run.predictions)["model_version"] == 2).all()
    assert _scored_auc(run) < _scored_auc(control) - 0.15


def _trees(artifact: Path) -> int:
    return xgb.Booster(model_file=str(artifact)).num_boosted_rounds()


def check_slow_deploy(run: Played, control: Played) -> None:
    assert ("champion", 2, "deploy-bot") in run.aliases
    after, control_after = run.after(run.predictions), control.after(control.predictions)
    assert (after["model_version"] == 2).all()
    assert np.allclose(after["score"], control_after["score"], atol=1e-4)  # same model, only slower
    # A prediction walks every tree, so its time grows with their number; the time itself swings with CPU
    # contention and is the benchmarks' business. The deployed model has the fault's trees, far more than
    # the champion's.
    slow, fast = (_trees(run.artifacts[v]) for v in (2, 1))
    assert slow == FAULTS["slow_deploy"].example_params["trees"] and slow > 5 * fast


EFFECTS: dict[str, Callable[[Played, Played], None]] = {
    name.removeprefix("check_"): check for name, check in globals().items() if name.startswith("check_")
}


# -- conformance ------------------------------------------------------------------------------------


def test_every_fault_has_an_effect_check() -> None:
    assert set(EFFECTS) == set(FAULTS)


@pytest.mark.parametrize("kind", sorted(FAULTS))
def test_fault_is_documented_and_round_trips(kind: str) -> None:
    cls = FAULTS[kind]
    doc = cls.__doc__ or ""
    assert doc.strip() and cls.root_cause in ROOT_CAUSES and f"``{cls.root_cause}``" in doc
    assert set(cls.expected_kinds) <= set(INCIDENT_KINDS)
    assert (cls.root_cause in ("benign_seasonal_shift", "none")) == (cls.expected_kinds == ())
    for name, field in cls.model_fields.items():
        assert field.description, f"{kind}.{name} has no description"
        assert name in ("start", "end") or f"{name}:" in doc, f"{kind}.{name} is not in the docstring"
    start = datetime(2018, 5, 16, 4)
    fault = make_fault(kind, cls.example_params, start, start + timedelta(hours=3))
    assert fault.kind == kind and fault.params() == {**fault.params(), **cls.example_params}
    assert make_fault(kind, fault.params(), fault.start, fault.end) == fault


@pytest.mark.parametrize("kind", sorted(FAULTS))
def test_fault_has_its_effect_in_a_live_run(
    kind: str, small_world: SmallWorld, control: Played, tmp_path: Path
) -> None:
    start = _live_start(small_world) + timedelta(hours=FAULT_HOUR)
    run = play(small_world, tmp_path / "ws", [example(kind, start)])
    assert sum(h.rows_in for h in run.hours) == len(run.predictions) + len(run.dead_letters)
    assert set(run.hours[FAULT_HOUR].active_faults) == {kind} and not run.hours[FAULT_HOUR - 1].active_faults
    EFFECTS[kind](run, control)


# -- building faults --------------------------------------------------------------------------------


def test_unknown_kind_is_named() -> None:
    with pytest.raises(UnknownFaultKindError, match=r"'feature_null'.*did you mean 'feature_nulls'"):
        make_fault("feature_null", {}, datetime(2018, 5, 16))


def test_unknown_parameter_is_named() -> None:
    with pytest.raises(
        FaultParameterError, match=r"'volume_drop': parameter 'factr': unknown.*factor"
    ) as error:
        make_fault("volume_drop", {"factr": 0.5}, datetime(2018, 5, 16))
    assert (error.value.kind, error.value.field) == ("volume_drop", "factr")


@pytest.mark.parametrize(
    ("kind", "params", "field"),
    [
        ("volume_drop", {"factor": 1.5}, "factor"),
        ("feature_nulls", {"features": ["terminal_risk_8d"]}, "features"),
        ("schema_change", {"drop": ["amount"], "rename": {"terminal_id": "amount"}}, "rename"),
        ("bad_deploy", {"mode": "sabotage"}, "mode"),
        ("volume_drop", {"factor": 0.5, "start": "2018-05-16"}, "start"),
        ("latency", {}, "extra_ms"),
    ],
)
def test_bad_parameter_is_named(kind: str, params: dict[str, object], field: str) -> None:
    with pytest.raises(FaultParameterError, match=f"parameter '{field}'") as error:
        make_fault(kind, params, datetime(2018, 5, 16))
    assert error.value.field == field


def test_window_must_be_ordered() -> None:
    with pytest.raises(FaultParameterError, match="parameter 'end': must be after start") as error:
        make_fault("label_stall", {}, datetime(2018, 5, 16, 10), datetime(2018, 5, 16, 9))
    assert error.value.field == "end"


# -- the world player -------------------------------------------------------------------------------


def _stored(run: Played) -> pd.DataFrame:
    """Stored predictions without what legitimately differs between runs (batch ids, wall-clock timings)."""
    return run.predictions.drop(columns=["batch_id", "latency_ms", "model_ms"]).reset_index(drop=True)


def test_same_seed_same_predictions(small_world: SmallWorld, tmp_path: Path) -> None:
    start = _live_start(small_world) + timedelta(hours=FAULT_HOUR)
    faults = [
        example("card_testing", start),
        example("feature_nulls", start),
        example("population_shift", start),
    ]
    first = play(small_world, tmp_path / "a", faults)
    second = play(small_world, tmp_path / "b", faults)
    pd.testing.assert_frame_equal(_stored(first), _stored(second))
    assert first.predictions["terminal_risk_7d"].isna().any()


def test_remediation_ends_serving_and_stream_faults(
    small_world: SmallWorld, control: Played, tmp_path: Path
) -> None:
    start = _live_start(small_world) + timedelta(hours=FAULT_HOUR)
    remediated = start + timedelta(hours=3)
    faults = [example("feature_nulls", start), example("volume_drop", start)]

    def remediate(live: LiveWorld, now: datetime, report: HourReport) -> None:
        if now == remediated:
            for fault in faults:
                live.end_fault(fault, now)
            assert not live.platform.scorer.hooks.features

    run = play(small_world, tmp_path / "ws", faults, on_hour=remediate)
    during = run.predictions.loc[run.predictions[C.TIMESTAMP].between(start, remediated, inclusive="left")]
    healed = run.predictions.loc[run.predictions[C.TIMESTAMP] >= remediated]
    assert during["terminal_risk_7d"].isna().any() and healed["terminal_risk_7d"].notna().all()
    control_healed = control.predictions.loc[control.predictions[C.TIMESTAMP] >= remediated]
    assert list(healed[C.TRANSACTION_ID]) == list(control_healed[C.TRANSACTION_ID])  # full volume again
    assert [h.active_faults for h in run.hours[FAULT_HOUR + 3 :]] == [()] * (HOURS - FAULT_HOUR - 3)


def test_schema_change_sent_as_frames_arrives_as_nulls(small_world: SmallWorld, tmp_path: Path) -> None:
    start = _live_start(small_world) + timedelta(hours=FAULT_HOUR)
    run = play(small_world, tmp_path / "ws", [example("schema_change", start)], payload="frame")
    assert len(run.dead_letters) > 0 and set(run.dead_letters["reason"]) == {"missing value for terminal_id"}
    assert len(run.before(run.predictions)) > 0 and run.after(run.predictions).empty


def test_world_needs_the_platform_clock(small_world: SmallWorld, tmp_path: Path) -> None:
    with Platform(Workspace(tmp_path / "ws")) as platform, pytest.raises(ValueError, match="clock"):
        LiveWorld(
            platform, small_world.simulator, clock=SimClock(datetime(2018, 5, 16)), start_day=LIVE_DAY, days=1
        )


def test_sim_clock_never_goes_back() -> None:
    clock = SimClock(datetime(2018, 5, 16, 10))
    clock.set(datetime(2018, 5, 16, 11))
    with pytest.raises(ValueError, match="cannot go back"):
        clock.set(datetime(2018, 5, 16, 9))
