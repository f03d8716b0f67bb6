"""Waiting for evidence (`agent.label_evidence`): an unexplained alert-rate rise is held until its labels are in.

A small trained world scores one live day; an hourly alert-rate incident is opened at noon with no change to
explain it. With a one-day label delay the day's labels are in 36 hours after the breach, so the responder
waits; woken early it waits again; woken on time it matches the runbooks again with the ``labels`` root
filled in. Labels that show recall fell make it a new fraud pattern; labels that do not leave it unclaimed,
and the responder abstains and pages as it did before waiting existed.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from agent.label_evidence import MAX_LABEL_WAIT, awaits_labels, label_evidence
from agent.responder import Responder
from evals.live import SimClock
from monitor.findings import Finding
from monitor.runner import Monitor, MonitorConfig
from scorer import columns as C
from scorer.simulate import LABEL_COLUMNS
from selfheal.app import Platform
from store import Workspace
from tests.conftest import HISTORY_DAYS, SmallWorld

RISE = {"check": "alert_rate", "alert_rate": 0.05, "reference_alert_rate": 0.02, "rows": 400, "alerts": 20}


@dataclass
class Day:
    platform: Platform
    clock: SimClock
    world: SmallWorld
    live: pd.DataFrame  # the scored day, with its true labels

    def open_alert_rate_incident(self, evidence: dict[str, object] = RISE) -> str:
        self.clock.set(self.world.at(0, 12))
        finding = Finding(
            check="alert_rate", kind="prediction_drift", subject="predictions", breached=True,
            metric="alert_rate_relative_change", value=1.5, threshold=0.5, severity="high", evidence=dict(evidence),
        )  # fmt: skip
        changes = self.monitor().incidents.process(
            [finding], window_start=self.world.at(0, 11), window_end=self.world.at(0, 12), cadence="hour",
            model_version=self.platform.registry.alias("champion"),
        )  # fmt: skip
        return changes[0].incident_id

    def monitor(self, label_delay_days: int = 1) -> Monitor:
        config = MonitorConfig(label_delay_days=label_delay_days)
        return Monitor(self.platform.store, self.platform.registry, self.platform.serving, config=config, clock=self.clock)

    def responder(self, label_delay_days: int = 1) -> Responder:
        return self.platform.responder(
            self.monitor(label_delay_days), planner="deterministic", pagers=[], extras={"history": self.world.history}
        )

    def label(self, *, hide_fraud: bool) -> None:
        """The day's labels arrive; ``hide_fraud`` adds frauds among the approved (what a new pattern does)."""
        labels = self.live[[C.TRANSACTION_ID, C.LABEL]].copy()
        if hide_fraud:
            approved = self.platform.store.query("SELECT transaction_id FROM predictions WHERE decision = 'approve'")
            missed = set(approved["transaction_id"].head(3 * int(labels[C.LABEL].sum())))
            labels.loc[labels[C.TRANSACTION_ID].astype(str).isin(missed), C.LABEL] = 1
        labels["label_time"] = self.clock()
        self.platform.scorer.add_labels(labels)
        self.platform.scorer.flush()


@pytest.fixture
def day(small_world: SmallWorld, tmp_path: Path) -> Iterator[Day]:
    home = tmp_path / "workspace"
    shutil.copytree(small_world.template, home)
    clock = SimClock(small_world.at(0, 0))
    with Platform(Workspace(home), clock=clock) as platform:
        platform.scorer.features.observe(small_world.history)
        live = small_world.simulator.generate(HISTORY_DAYS, 1)
        platform.scorer.score_batch(live.drop(columns=list(LABEL_COLUMNS)))
        platform.scorer.flush()
        yield Day(platform, clock, small_world, live)


def test_an_unexplained_rise_waits_for_labels_that_show_recall_fell_then_is_a_new_fraud_pattern(day: Day) -> None:
    incident_id = day.open_alert_rate_incident()
    responder = day.responder()
    try:
        run = responder.investigate(incident_id)
        assert run.status == "waiting_data" and run.waiting is not None
        matured = day.world.at(2, 0)  # the cohort [00:00, 24:00) of day 0, plus the one-day label delay
        assert (run.waiting["check"], run.waiting["not_before"]) == ("labels", matured.isoformat())
        assert "to tell a new fraud pattern" in run.waiting["reason"]

        day.clock.set(day.world.at(1, 12))
        assert responder.wake_due() == []  # not due
        early = responder.wake(run.thread_id)  # `selfheal investigate` an hour too soon: it waits again
        assert early.status == "waiting_data" and early.waiting is not None and early.waiting["check"] == "labels"

        day.label(hide_fraud=True)
        day.clock.set(matured)
        (woken,) = responder.wake_due()
        diagnosis = woken.state["diagnosis"]
        assert (diagnosis["root_cause"], diagnosis["runbook_id"]) == ("new_fraud_pattern", "new_fraud_pattern")
        assert [a["action"] for a in woken.state["plan"]][:1] == ["retrain_model"]
        waits = [s for s in woken.state["steps"] if s["name"] == "wait_for_labels"]
        assert len(waits) == 2  # the first wait and the one after the early wake-up
        # The incident's timeline says why nobody was paged yet, once (the second wait is a repeat).
        notes = day.platform.store.query(
            "SELECT detail FROM incident_events WHERE incident_id = ? AND event = 'note'", [incident_id]
        )["detail"].tolist()
        assert sum("Waiting for labels before deciding" in note for note in notes) == 1
    finally:
        responder.close()


def test_labels_that_show_no_recall_drop_leave_it_unclaimed_and_the_responder_pages(day: Day) -> None:
    incident_id = day.open_alert_rate_incident()
    responder = day.responder()
    try:
        run = responder.investigate(incident_id)
        assert run.status == "waiting_data"
        day.label(hide_fraud=False)
        day.clock.set(day.world.at(2, 0))
        (woken,) = responder.wake_due()
        assert woken.status == "done" and woken.state["diagnosis"]["abstained"]
        assert woken.state["page_decision"]["page"] and woken.state["page_decision"]["rule"] == "abstained"
        labels = label_evidence(responder.runtime.monitor, responder.runtime.incidents.get(incident_id), day.clock())
        assert labels["matured"] and labels["frauds"] is not None and labels["z"] < 1.5
    finally:
        responder.close()


def test_labels_due_too_late_or_a_falling_rate_are_not_waited_for(day: Day) -> None:
    incident_id = day.open_alert_rate_incident()
    responder = day.responder(label_delay_days=7)  # due 7.5 days after the breach: a person hears now
    try:
        run = responder.investigate(incident_id)
        assert run.status == "done" and run.state["page_decision"]["rule"] == "abstained"
    finally:
        responder.close()
    incident = responder.runtime.incidents.get(incident_id)
    soon = label_evidence(day.monitor(1), incident, day.clock())
    assert awaits_labels(incident, soon) is not None
    falling = incident.model_copy(update={"evidence": {**RISE, "alert_rate": 0.01}})
    assert awaits_labels(falling, soon) is None  # fraud may be going through: no waiting
    other = incident.model_copy(update={"evidence": {**RISE, "check": "score_drift"}})
    assert awaits_labels(other, soon) is None
    assert awaits_labels(incident, {**soon, "matured": True}) is None
    late = {**soon, "matures_at": (incident.first_breach_at + MAX_LABEL_WAIT + timedelta(hours=1)).isoformat()}
    assert awaits_labels(incident, late) is None
    assert datetime.fromisoformat(str(soon["matures_at"])) - incident.first_breach_at == timedelta(hours=36)
