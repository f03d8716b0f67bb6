"""The responder end to end: real simulator, scorer, monitor, LangGraph graph, runbooks and tools.

Each test plays live hours of a small trained world with a fault, lets the Autopilot investigate what
the monitor raises, and checks the outcome in the store: diagnosis, actions in the audit log, the
verification, the page decision and its justification, the report files.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agent.responder import checkpoints_path
from selfheal.app import Platform
from store import Workspace
from tests.conftest import SmallWorld
from tests.responder_worlds import Played, play
from tools.audit import ActionLog
from tools.pagers import OutboxPager, pagerduty_event

REPO = Path(__file__).resolve().parents[1]
SNAPSHOTS = Path(__file__).parent / "snapshots"


@pytest.fixture(scope="module")
def feature_break(medium_world: SmallWorld, tmp_path_factory: pytest.TempPathFactory) -> Played:
    """Two minor features go null for six hours (the upstream job is fixed by its owners)."""
    fault = medium_world.fault("feature_nulls", {"features": ["customer_avg_amount_30d", "terminal_tx_count_30d"]}, 0, 9, 6)
    return play(medium_world, tmp_path_factory.mktemp("feature-break") / "ws", [fault], days=1)


@pytest.fixture(scope="module")
def bad_deploy(medium_world: SmallWorld, tmp_path_factory: pytest.TempPathFactory) -> Played:
    fault = medium_world.fault("bad_deploy", {"mode": "inverted_labels"}, 0, 9)
    # score_drift is a daily check: verification waits for a whole day after the rollback.
    return play(medium_world, tmp_path_factory.mktemp("bad-deploy") / "ws", [fault], days=2)


def _audit(home: Path) -> list[Any]:
    with Platform(Workspace(home)) as platform:
        return ActionLog(platform.store, platform.clock).rows()


def _outbox(home: Path) -> list[Any]:
    """The pages recorded in the outbox (one row per page; deliveries by other channels left out)."""
    with Platform(Workspace(home)) as platform:
        return [r for r in OutboxPager(platform.store).rows() if r.channel == "outbox"]


def test_feature_pipeline_break_is_quarantined_verified_and_paged(feature_break: Played) -> None:
    run = feature_break.run_for("INC-1")
    state = run["state"]
    assert run["status"] == "done" and run["root_cause"] == "feature_pipeline_break"
    applied = {(a["action"], json.dumps(a["args"], sort_keys=True)) for a in state["plan"] if a["status"] == "applied"}
    assert ("quarantine_feature", '{"feature": "customer_avg_amount_30d"}') in applied
    assert ("quarantine_feature", '{"feature": "terminal_tx_count_30d"}') in applied
    assert state["verification"]["status"] == "verified"
    # The runbook says the upstream job needs a person even when the mitigation holds.
    assert state["page_decision"] == {**state["page_decision"], "page": True, "rule": "runbook_always", "sent": True}
    assert run["verified"] is True and run["paged"] is True
    pages = [r for r in _outbox(feature_break.home) if r.action == "trigger"]
    assert len(pages) == 1 and pages[0].incident_id == "INC-1"
    body = pages[0].page().body
    for heading in ("What broke", "Evidence", "What was done", "Verified", "What to do next", "Report"):
        assert f"**{heading}" in body
    assert "quarantine_feature" in body and "verified" in body
    # Every action is audited with the incident and the agent as actor.
    audit = [r for r in _audit(feature_break.home) if r.incident_id == "INC-1"]
    assert {r.action for r in audit} >= {"quarantine_feature", "add_note", "page"}
    assert all(r.actor == "agent" for r in audit)


def test_the_page_is_resolved_when_the_upstream_fix_clears_the_incident(feature_break: Played) -> None:
    whats = [(e.what, e.incident_id) for e in feature_break.events]
    assert ("resolved", "INC-1") in whats and ("resolve_sent", "INC-1") in whats
    actions = [r.action for r in _outbox(feature_break.home)]
    assert actions.count("trigger") == 1 and actions.count("resolve") == 1


def test_bad_deploy_is_rolled_back_verified_and_not_paged_with_the_reason_recorded(bad_deploy: Played) -> None:
    run = bad_deploy.run_for("INC-1")
    state = run["state"]
    assert run["root_cause"] == "bad_model_deploy" and run["status"] == "done"
    rollback = next(a for a in state["plan"] if a["action"] == "rollback_model")
    assert rollback["status"] == "applied" and rollback["args"] == {"to_version": 1}
    assert state["verification"]["status"] == "verified"
    assert state["page_decision"]["page"] is False and state["page_decision"]["rule"] == "fixed_and_verified"
    assert not [r for r in _outbox(bad_deploy.home) if r.action == "trigger"]
    # The justified no-page is on the record: an audited note on the incident's timeline.
    notes = [r for r in _audit(bad_deploy.home) if r.action == "add_note" and "No page sent" in r.args["text"]]
    assert len(notes) == 1 and "fixed and verified" in notes[0].args["text"]
    with Platform(Workspace(bad_deploy.home)) as platform:
        assert platform.serving.current().champion_version == 1
        assert platform.store.scalar("SELECT status FROM incidents WHERE incident_id = 'INC-1'") in ("mitigated", "resolved")


def test_reports_are_written_for_every_finished_investigation(bad_deploy: Played, feature_break: Played) -> None:
    for played in (bad_deploy, feature_break):
        report = played.run_for("INC-1")["state"]["report"]
        markdown, html = Path(report["markdown"]), Path(report["html"])
        assert markdown.exists() and html.exists()
        assert "INC-1" in markdown.read_text() and "<svg" in html.read_text()


def test_page_payload_matches_the_snapshot(feature_break: Played) -> None:
    """What PagerDuty receives (Events API v2), with numbers rounded so float noise does not churn it."""
    page = next(r for r in _outbox(feature_break.home) if r.action == "trigger").page()
    event = _rounded(pagerduty_event(page, routing_key="R" * 32))
    path = SNAPSHOTS / "page_payload.json"
    if os.environ.get("SELFHEAL_UPDATE_SNAPSHOTS"):
        path.write_text(json.dumps(event, indent=2, sort_keys=True) + "\n")
    assert path.exists(), f"no snapshot {path}: run with SELFHEAL_UPDATE_SNAPSHOTS=1 once and review it"
    assert event == json.loads(path.read_text())


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return float(f"{value:.4g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def test_no_runbook_means_abstain_and_page(medium_world: SmallWorld, tmp_path: Path) -> None:
    """With only an unrelated runbook installed, the planner abstains rather than guess, and pages."""
    runbooks = tmp_path / "runbooks"
    runbooks.mkdir()
    shutil.copy(REPO / "runbooks" / "label_pipeline_stall.md", runbooks)
    fault = medium_world.fault("bad_deploy", {"mode": "inverted_labels"}, 0, 9)
    played = play(medium_world, tmp_path / "ws", [fault], days=1, runbooks_dir=runbooks,
                  stop=lambda events: any(e.what == "investigated" for e in events))
    state = played.run_for("INC-1")["state"]
    assert state["diagnosis"]["abstained"] is True and state["diagnosis"]["runbook_id"] is None
    assert state.get("plan", []) == [] and state["page_decision"]["rule"] == "abstained" and state["page_decision"]["sent"]
    with Platform(Workspace(played.home)) as platform:
        assert platform.serving.current().champion_version == 2  # nothing was touched
        assert platform.store.scalar("SELECT status FROM incidents WHERE incident_id = 'INC-1'") == "escalated"


# -- approval -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def paused(medium_world: SmallWorld, tmp_path_factory: pytest.TempPathFactory) -> tuple[Played, Path]:
    """A bad deploy where the runbook says a human must approve the rollback: the graph pauses."""
    runbooks = tmp_path_factory.mktemp("approval-runbooks")
    for path in (REPO / "runbooks").glob("*.md"):
        shutil.copy(path, runbooks)
    text = (runbooks / "bad_model_deploy.md").read_text()
    (runbooks / "bad_model_deploy.md").write_text(text.replace("rollback_model: auto", "rollback_model: human"))
    fault = medium_world.fault("bad_deploy", {"mode": "inverted_labels"}, 0, 9)
    played = play(medium_world, tmp_path_factory.mktemp("paused") / "ws", [fault], days=1, runbooks_dir=runbooks,
                  stop=lambda events: any(e.what == "investigated" for e in events))
    return played, runbooks


def _cli(*args: str, home: Path, runbooks: Path) -> subprocess.CompletedProcess[str]:
    """The real CLI in another process (the DuckDB file and the checkpoints are opened there)."""
    return subprocess.run(
        [sys.executable, "-m", "selfheal.cli", *args, "--home", str(home), "--runbooks", str(runbooks)],
        capture_output=True, text=True, cwd=REPO, timeout=300, check=False,
    )


def _copy(played: Played, tmp_path: Path) -> Path:
    home = tmp_path / "copy"
    shutil.copytree(played.home, home)
    return home


def test_an_action_needing_approval_pauses_the_graph(paused: tuple[Played, Path]) -> None:
    played, _ = paused
    run = played.run_for("INC-1")
    assert run["status"] == "waiting_approval"
    assert run["waiting"]["type"] == "approval" and run["waiting"]["actions"][0]["action"] == "rollback_model"
    assert not [r for r in _audit(played.home) if r.action == "rollback_model"]
    assert checkpoints_path(played.home).exists()
    # Someone is told: a paused run used to wait without a word to anyone.
    (asked,) = [r.page() for r in _outbox(played.home) if r.action == "trigger"]
    assert "INC-1 waits for your approval: rollback_model(to_version=" in asked.summary
    assert "selfheal approve INC-1 --by NAME" in asked.body and asked.custom_details["page_rule"] == "approval_needed"


def test_approve_from_another_process_resumes_and_runs_the_action_once(paused: tuple[Played, Path], tmp_path: Path) -> None:
    played, runbooks = paused
    home = _copy(played, tmp_path)
    result = _cli("approve", "INC-1", "--by", "alice", "--note", "checked", home=home, runbooks=runbooks)
    assert result.returncode == 0, result.stderr
    assert "rollback_model" in result.stdout and "applied" in result.stdout
    rollbacks = [r for r in _audit(home) if r.action == "rollback_model"]
    assert len(rollbacks) == 1 and rollbacks[0].approval == "human:alice" and rollbacks[0].status == "applied"
    with Platform(Workspace(home)) as platform:
        assert platform.serving.current().champion_version == 1
    # Approving again is refused: nothing waits any more.
    again = _cli("approve", "INC-1", "--by", "bob", home=home, runbooks=runbooks)
    assert again.returncode == 1 and "not waiting for approval" in again.stderr
    assert len([r for r in _audit(home) if r.action == "rollback_model"]) == 1


def test_deny_from_another_process_resumes_without_the_action_and_pages(paused: tuple[Played, Path], tmp_path: Path) -> None:
    played, runbooks = paused
    home = _copy(played, tmp_path)
    result = _cli("deny", "INC-1", "--by", "alice", "--note", "not now", home=home, runbooks=runbooks)
    assert result.returncode == 0, result.stderr
    assert "denied" in result.stdout
    # Nothing rolled back: the one rollback row is the denial, by the person who denied it.
    rollbacks = [r for r in _audit(home) if r.action == "rollback_model"]
    assert [(r.status, r.actor, r.approval) for r in rollbacks] == [("denied", "alice", "human:alice")]
    # The approval page, then the page that says how it ended (a page of its own).
    asked, ended = [r.page() for r in _outbox(home) if r.action == "trigger"]
    assert "waits for your approval" in asked.summary and "remediation did not go through" in ended.body
    assert asked.dedup_key == ended.dedup_key  # one alert at the pager
    with Platform(Workspace(home)) as platform:
        assert platform.serving.current().champion_version == 2
