"""The responder wired into the service (`selfheal.service.responder_hooks`), in process over the demo.

A copy of the demo workspace (three incidents, each handled) is investigated again with runbooks whose
actions need a person (`approval_runbooks`): INC-1 (feature pipeline break) then waits to quarantine two
features, INC-3 (bad model deploy) to roll back. Approve and deny go through the API and resume those
paused graphs; steps, chat and the hourly loop are read back from the store they wrote.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.testclient import TestClient

from agent.run_records import agent_runs
from selfheal.app import Platform, simulated_now
from selfheal.service.app import create_app
from selfheal.service.config import ServiceConfig
from selfheal.service.hooks import ServiceHooks
from selfheal.service.responder_hooks import (
    GRACE,
    MAX_CATCH_UP_HOURS,
    ScorerUnderLock,
    hours_to_evaluate,
    responder_hooks,
)
from selfheal.service.runtime import ServiceRuntime
from selfheal.service.web.sse import pieces
from store import Workspace
from tests.test_service import state_snapshot

REPO = Path(__file__).resolve().parents[1]
TOKEN = "responder-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}", "X-Selfheal-Actor": "alice"}
# What needs a person in `approval_runbooks`: (runbook file, action).
NEEDS_APPROVAL = (
    ("feature_pipeline_break.md", "quarantine_feature"),
    ("bad_model_deploy.md", "rollback_model"),
)


def approval_runbooks(folder: Path) -> Path:
    """The shipped runbooks, except that quarantining a feature and rolling back need a person."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in (REPO / "runbooks").glob("*.md"):
        shutil.copy(path, folder)
    for name, action in NEEDS_APPROVAL:
        text = (folder / name).read_text()
        assert f"  {action}: auto\n" in text, f"{name} no longer lets the agent {action} on its own"
        (folder / name).write_text(text.replace(f"  {action}: auto\n", f"  {action}: human\n"))
    return folder


def pause_for_approval(home: Path, runbooks: Path, incidents: tuple[str, ...] = ("INC-1", "INC-3")) -> None:
    """Investigate the demo's incidents again with `approval_runbooks`: each run stops at the approval node."""
    with Platform(Workspace(home)) as platform:
        responder = platform.responder(planner="deterministic", runbooks_dir=runbooks, pagers=[])
        try:
            for incident in incidents:
                run = responder.investigate(incident, again=True)
                assert run.status == "waiting_approval", (incident, run.status, run.state.get("diagnosis"))
        finally:
            responder.close()


@pytest.fixture
def paused(demo_home: Path, tmp_path: Path) -> tuple[Path, Path]:
    runbooks = approval_runbooks(tmp_path / "runbooks")
    pause_for_approval(demo_home, runbooks)
    return demo_home, runbooks


def _app(platform: Platform, runbooks: Path | None) -> Any:
    hooks = responder_hooks(platform, planner="deterministic", runbooks_dir=runbooks, pagers=[])
    return create_app(
        platform, ServiceConfig(token=TOKEN, flush_interval_s=0.05), hooks=hooks, runbooks_dir=runbooks
    )


@pytest.fixture
def service(paused: tuple[Path, Path]) -> Iterator[tuple[TestClient, Platform]]:
    home, runbooks = paused
    with Platform(Workspace(home)) as platform, TestClient(_app(platform, runbooks)) as client:
        yield client, platform


def runtime_of(client: TestClient) -> ServiceRuntime:
    runtime: ServiceRuntime = client.app.state.runtime  # type: ignore[attr-defined]
    return runtime


def _audit(platform: Platform, incident: str, action: str) -> list[dict[str, Any]]:
    frame = platform.store.query(
        "SELECT audit_id, actor, approval, result FROM audit_log WHERE incident_id = ? AND action = ? ORDER BY rowid",
        [incident, action],
    )
    return frame.to_dict("records")


def _latest_run(platform: Platform, incident: str) -> dict[str, Any]:
    return agent_runs(platform.store, incident_id=incident)[-1]


# -- approve and deny ---------------------------------------------------------------------------------


def test_approve_resumes_the_paused_investigation_and_runs_its_actions_once(
    service: tuple[TestClient, Platform],
) -> None:
    client, platform = service
    before = _audit(platform, "INC-1", "quarantine_feature")
    response = client.post("/v1/incidents/INC-1/approve", json={"note": "null rates checked"}, headers=AUTH)
    assert response.status_code == 200, response.text
    run = response.json()
    assert run["thread_id"] == "INC-1/2" and run["status"] != "waiting_approval"
    quarantines = [a for a in run["plan"] if a["action"] == "quarantine_feature"]
    assert len(quarantines) == 2 and {a["status"] for a in quarantines} == {"applied"}
    assert {a["decided_by"] for a in quarantines} == {"api:alice"}
    # The audit log has each quarantine once more, approved by the API caller, under the ids the run reports.
    added = _audit(platform, "INC-1", "quarantine_feature")[len(before) :]
    assert [row["audit_id"] for row in added] == [a["audit_id"] for a in quarantines]
    assert {row["approval"] for row in added} == {"human:api:alice"}
    features = {a["args"]["feature"] for a in quarantines}
    assert features <= set(platform.serving.current().quarantined_features)
    assert _latest_run(platform, "INC-1")["status"] == run["status"]
    steps = client.get("/v1/incidents/INC-1/steps").json()
    assert any(
        s["thread_id"] == "INC-1/2" and s.get("note") == "approved by api:alice: null rates checked"
        for s in steps
    )
    assert runtime_of(client).metrics.agent_runs.value(outcome=run["outcome"] or run["status"]) == 1
    # Nothing waits any more: a second approval is refused and changes nothing.
    again = client.post("/v1/incidents/INC-1/approve", json={}, headers=AUTH)
    assert again.status_code == 409 and "no investigation waiting for approval" in again.json()["detail"]
    assert len(_audit(platform, "INC-1", "quarantine_feature")) == len(before) + 2


def test_deny_resumes_without_the_action_and_pages(service: tuple[TestClient, Platform]) -> None:
    client, platform = service
    rollbacks = _audit(platform, "INC-3", "rollback_model")
    notes = len(_audit(platform, "INC-3", "add_note"))
    champion = platform.serving.current().champion_version
    triggers = platform.store.count("pages")
    response = client.post("/v1/incidents/INC-3/deny", json={"note": "not during the sale"}, headers=AUTH)
    assert response.status_code == 200, response.text
    run = response.json()
    assert run["status"] == "done" and run["outcome"] == "escalated"
    [rollback] = [a for a in run["plan"] if a["action"] == "rollback_model"]
    assert rollback["status"] == "denied" and rollback["decided_by"] == "api:alice"
    # Nothing rolled back; the denial itself is in the audit log, under the id the run reports.
    (denial,) = _audit(platform, "INC-3", "rollback_model")[len(rollbacks) :]
    assert denial["audit_id"] == rollback["audit_id"]
    assert (denial["actor"], denial["approval"], json.loads(denial["result"])["status"]) == (
        "api:alice", "human:api:alice", "denied")  # fmt: skip
    assert platform.serving.current().champion_version == champion
    # The runbook's note ("... rolled back to v1") would record the rollback as done: it is not written.
    [note] = [a for a in _latest_run(platform, "INC-3")["state"]["plan"] if a["action"] == "add_note"]
    assert note["status"] == "skipped" and "rollback_model (denied)" in note["result"]["message"]
    assert len(_audit(platform, "INC-3", "add_note")) == notes
    assert run["page_decision"]["sent"] is True and platform.store.count("pages") > triggers


def test_a_decision_needs_something_waiting_and_names_only_what_waits(
    service: tuple[TestClient, Platform],
) -> None:
    client, platform = service
    before = state_snapshot(platform)
    done = client.post("/v1/incidents/INC-2/approve", json={}, headers=AUTH)
    assert (
        done.status_code == 409 and done.json()["detail"] == "INC-2 has no investigation waiting for approval"
    )
    # INC-1 waits on plan entries 0 and 1 (the two quarantines), decided together.
    not_waiting = client.post("/v1/incidents/INC-1/approve", json={"action": 2}, headers=AUTH)
    assert (
        not_waiting.status_code == 409
        and "action 2 of the plan is not waiting" in not_waiting.json()["detail"]
    )
    one_of_two = client.post("/v1/incidents/INC-1/deny", json={"action": 0}, headers=AUTH)
    assert (
        one_of_two.status_code == 409
        and "2 actions wait for approval together" in one_of_two.json()["detail"]
    )
    unknown = client.post("/v1/incidents/INC-9/approve", json={}, headers=AUTH)
    assert unknown.status_code == 404
    assert state_snapshot(platform) == before
    assert _latest_run(platform, "INC-1")["status"] == "waiting_approval"


def test_without_the_token_approve_deny_and_chat_answer_401_and_change_nothing(
    service: tuple[TestClient, Platform],
) -> None:
    client, platform = service
    before = (state_snapshot(platform), agent_runs(platform.store), platform.store.count("chat_messages"))
    for path in ("approve", "deny", "chat", "chat/stream", "investigate"):
        for headers in ({}, {"Authorization": "Bearer not-the-token"}, {"X-Selfheal-Actor": "alice"}):
            response = client.post(
                f"/v1/incidents/INC-1/{path}", json={"note": "n", "message": "why?"}, headers=headers
            )
            assert response.status_code == 401, (path, headers, response.text)
    after = (state_snapshot(platform), agent_runs(platform.store), platform.store.count("chat_messages"))
    assert after == before


def test_investigate_through_the_api_carries_on_or_starts_again(service: tuple[TestClient, Platform]) -> None:
    client, platform = service
    latest = client.post("/v1/incidents/INC-2/investigate", json={}, headers=AUTH)
    assert latest.status_code == 200, latest.text
    assert (latest.json()["thread_id"], latest.json()["status"]) == (
        "INC-2/1",
        "done",
    )  # finished: returned as is
    assert len(agent_runs(platform.store, incident_id="INC-2")) == 1
    refused = client.post(
        "/v1/incidents/INC-2/investigate", json={"again": True, "planner": "llm"}, headers=AUTH
    )
    assert refused.status_code == 409 and "needs an endpoint" in refused.json()["detail"]
    again = client.post("/v1/incidents/INC-2/investigate", json={"again": True}, headers=AUTH)
    assert again.status_code == 200, again.text
    run = again.json()
    assert run["thread_id"] == "INC-2/2" and run["status"] != "running"
    stored = agent_runs(platform.store, incident_id="INC-2")
    assert [r["thread_id"] for r in stored] == ["INC-2/1", "INC-2/2"] and stored[-1]["status"] == run[
        "status"
    ]
    assert runtime_of(client).metrics.agent_runs.value(outcome=run["outcome"] or run["status"]) >= 1
    assert client.post("/v1/incidents/INC-9/investigate", json={}, headers=AUTH).status_code == 404


def test_steps_are_every_investigations_steps_in_order(service: tuple[TestClient, Platform]) -> None:
    client, platform = service
    steps = client.get("/v1/incidents/inc-1/steps").json()
    runs = agent_runs(platform.store, incident_id="INC-1")
    assert [s["thread_id"] for s in steps] == [r["thread_id"] for r in runs for _ in r["state"]["steps"]]
    assert [s["n"] for s in steps] == [s["n"] for r in runs for s in r["state"]["steps"]]
    assert {s["name"] for s in steps} >= {"get_incident", "quality_report"}
    assert client.get("/v1/incidents/INC-77/steps").status_code == 404
    listed = client.get("/v1/runs", params={"incident_id": "1"}).json()
    assert [(r["thread_id"], r["status"]) for r in listed] == [
        ("INC-1/1", "done"),
        ("INC-1/2", "waiting_approval"),
    ]
    assert all("state" not in r for r in listed)
    assert client.get("/v1/runs", params={"incident_id": "INC-77"}).status_code == 404


# -- chat ---------------------------------------------------------------------------------------------


def _events(body: str) -> list[tuple[str, dict[str, Any]]]:
    """Server-sent events as (name, data); comments left out."""
    found = []
    for frame in body.split("\n\n"):
        lines = [line for line in frame.split("\n") if line and not line.startswith(":")]
        if not lines:
            continue
        name = next(line[len("event: ") :] for line in lines if line.startswith("event: "))
        data = "\n".join(line[len("data: ") :] for line in lines if line.startswith("data: "))
        found.append((name, json.loads(data)))
    return found


def test_chat_answers_from_the_record_and_streams_the_same_answer_as_events(
    service: tuple[TestClient, Platform],
) -> None:
    client, platform = service
    question = {"message": "why did you change the threshold?"}
    answer = client.post("/v1/incidents/INC-2/chat", json=question, headers=AUTH)
    assert answer.status_code == 200, answer.text
    reply = answer.json()
    [threshold_change] = _audit(platform, "INC-2", "set_threshold")
    assert (
        reply["incident_id"] == "INC-2"
        and reply["answer"]
        and threshold_change["audit_id"] in reply["sources"]
    )
    with client.stream("POST", "/v1/incidents/INC-2/chat/stream", json=question, headers=AUTH) as streamed:
        assert streamed.status_code == 200
        assert streamed.headers["content-type"].startswith("text/event-stream")
        events = _events(streamed.read().decode())
    names = [name for name, _ in events]
    assert names[0] == "start" and names[-1] == "done" and set(names[1:-1]) == {"delta"} and len(names) > 3
    done = events[-1][1]
    assert "".join(data["text"] for name, data in events if name == "delta") == done["answer"]
    assert done["answer"] == reply["answer"] and done["sources"] == reply["sources"]
    assert "<script" not in done["html"] and done["html"].startswith("<")
    turns = platform.store.query(
        "SELECT actor, message FROM chat_messages WHERE incident_id = 'INC-2' ORDER BY turn"
    )
    assert list(turns["actor"]) == ["api:alice", "api:alice"]
    unknown = client.post("/v1/incidents/INC-9/chat/stream", json={"message": "why?"}, headers=AUTH)
    assert unknown.status_code == 404  # refused before the stream begins


def test_answer_pieces_join_back_to_the_answer() -> None:
    for text in ("", "   ", "one", "a b  c\n\nd\te ", "**bold** `code` and a [link](http://x)\n- item\n"):
        cut = pieces(text, words=2)
        assert "".join(cut) == text
        assert all(cut) and len(cut) <= max(1, len(text.split()))


def test_the_chat_and_decide_answer_503_when_the_service_has_no_responder(demo_home: Path) -> None:
    with Platform(Workspace(demo_home)) as platform:
        app = create_app(platform, ServiceConfig(token=TOKEN), hooks=ServiceHooks())
        with TestClient(app) as client:
            for path, body in [
                ("chat/stream", {"message": "why?"}),
                ("chat", {"message": "why?"}),
                ("approve", {}),
                ("deny", {}),
                ("investigate", {}),
            ]:
                answer = client.post(f"/v1/incidents/INC-1/{path}", json=body, headers=AUTH)
                assert answer.status_code == 503, (path, answer.text)
                assert "responder not available" in answer.text, (path, answer.text)


# -- the hourly loop ----------------------------------------------------------------------------------


def test_hours_to_evaluate_are_the_closed_hours_since_the_last_one() -> None:
    at = datetime(2018, 5, 18, 3, 0)
    assert hours_to_evaluate(at + GRACE, datetime(2018, 5, 18, 0, 0)) == [
        at - timedelta(hours=2),
        at - timedelta(hours=1),
        at,
    ]
    assert hours_to_evaluate(at + GRACE - timedelta(seconds=1), datetime(2018, 5, 18, 0)) == [
        at - timedelta(hours=2),
        at - timedelta(hours=1),
    ]
    assert hours_to_evaluate(at + GRACE, at) == []
    assert hours_to_evaluate(at + GRACE, None) == [at]  # never monitored: the latest closed hour only
    week_ago = hours_to_evaluate(at + GRACE, at - timedelta(days=7))
    assert len(week_ago) == MAX_CATCH_UP_HOURS and week_ago[-1] == at


def test_the_hourly_job_monitors_the_closed_hours_and_investigates_what_opens(demo_home: Path) -> None:
    """Three hours pass after the demo stopped, without a transaction: the job evaluates each once, the
    monitor sees the volume gone and opens an incident, and the responder investigates it at once."""
    workspace = Workspace(demo_home)
    stopped = simulated_now(workspace)
    assert stopped is not None
    now = stopped + timedelta(hours=3) + GRACE
    with Platform(workspace, clock=lambda: now) as platform:
        incidents_before = set(platform.store.query("SELECT incident_id FROM incidents")["incident_id"])
        with TestClient(_app(platform, None)) as client:
            runtime = runtime_of(client)
            [job] = runtime.hooks.jobs
            assert job.name == "monitor_and_respond" and job.every_s == 60
            events = job.run(runtime)
            assert isinstance(events, list)
            ends = platform.store.query(
                "SELECT window_end FROM monitor_windows WHERE cadence = 'hour' AND window_end > ? ORDER BY 1",
                [stopped],
            )["window_end"].tolist()
            assert [e.to_pydatetime() for e in ends] == [stopped + timedelta(hours=h) for h in (1, 2, 3)]
            opened = (
                set(platform.store.query("SELECT incident_id FROM incidents")["incident_id"])
                - incidents_before
            )
            assert opened, "three hours without traffic raised nothing"
            kinds = set(platform.store.query("SELECT kind FROM incidents WHERE number > 3")["kind"])
            assert "volume" in kinds
            runs = [r for r in agent_runs(platform.store) if r["incident_id"] in opened]
            assert {r["incident_id"] for r in runs} == opened
            # Every graph invocation of the loop is counted on /metrics by its outcome.
            invoked = Counter(e.run.outcome or e.run.status for e in events if e.run is not None)
            assert {o: runtime.metrics.agent_runs.value(outcome=o) for o in invoked} == invoked
            assert {e.incident_id for e in events if e.what == "investigated"} == opened
            # Nothing closed since: the next tick evaluates nothing and changes nothing.
            windows = platform.store.count("monitor_windows")
            assert job.run(runtime) == [] and platform.store.count("monitor_windows") == windows


def test_the_responders_scorer_calls_wait_for_the_scoring_engines_lock() -> None:
    """Inside the service the tools get `ScorerUnderLock`: a call waits while the scoring worker holds the
    engine's lock (mid-batch), and runs once it is released."""

    class Engine:
        def __init__(self) -> None:
            self.lock = threading.Lock()
            self.scorer = SimpleNamespace(
                status=lambda: {"locked": self.lock.locked()}, features="feature state"
            )

        @contextmanager
        def exclusive(self) -> Iterator[Any]:
            with self.lock:
                yield self.scorer

    engine = Engine()
    scorer = ScorerUnderLock(engine)  # type: ignore[arg-type]
    assert scorer.features == "feature state"  # attributes pass through as they are
    answers: list[Any] = []
    with engine.exclusive():  # the worker is scoring a batch
        caller = threading.Thread(target=lambda: answers.append(scorer.status()))
        caller.start()
        caller.join(timeout=0.3)
        assert caller.is_alive() and answers == []  # still waiting for the lock
    caller.join(timeout=10)
    assert answers == [{"locked": True}] and not engine.lock.locked()  # it ran holding the lock, then let go


def test_an_action_asked_for_in_chat_is_approved_or_denied_through_the_api(
    service: tuple[TestClient, Platform], paused: tuple[Path, Path]
) -> None:
    """A chat request waiting for a person (`agent.chat.requests`) is decided with ``request``, and only it:
    INC-3's paused investigation keeps waiting."""
    from agent.chat import ChatParts
    from tests.test_chat_requests import ask_to_serve_v2

    client, platform = service
    parts = ChatParts.for_platform(platform, runbooks_dir=paused[1])

    def ask() -> str:
        return ask_to_serve_v2(parts, actor="api:carol")

    first = ask()
    both = client.post("/v1/incidents/INC-3/approve", json={"request": first, "action": 0}, headers=AUTH)
    assert both.status_code == 409 and "not both" in both.json()["detail"]
    denied = client.post("/v1/incidents/INC-3/deny", json={"request": first, "note": "no"}, headers=AUTH)
    assert denied.status_code == 200 and denied.json()["status"] == "denied"
    assert platform.serving.current().champion_version == 1
    again = client.post("/v1/incidents/INC-3/approve", json={"request": first}, headers=AUTH)
    assert again.status_code == 409 and "waits for approval" in again.json()["detail"]

    approved = client.post("/v1/incidents/INC-3/approve", json={"request": ask()}, headers=AUTH)
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "applied" and platform.serving.current().champion_version == 2
    (row,) = [r for r in _audit(platform, "INC-3", "rollback_model") if r["audit_id"] == approved.json()["audit_id"]]
    assert (row["actor"], row["approval"]) == ("api:alice", "human:api:alice")
    assert _latest_run(platform, "INC-3")["status"] == "waiting_approval"


def test_a_runbook_edited_while_the_service_runs_governs_its_next_run(
    demo_home: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The service loaded its runbooks once, at start: after `rollback_model: human` was saved, the web
    # page and /v1/runbooks showed the edit while the responder went on rolling back without asking.
    runbooks = tmp_path / "runbooks"
    runbooks.mkdir()
    for path in (REPO / "runbooks").glob("*.md"):
        shutil.copy(path, runbooks)
    deploy = runbooks / "bad_model_deploy.md"
    with Platform(Workspace(demo_home)) as platform, TestClient(_app(platform, runbooks)) as client:
        deploy.write_text(deploy.read_text().replace("  rollback_model: auto\n", "  rollback_model: human\n"))
        shown = client.get("/v1/runbooks/bad_model_deploy").json()
        assert shown["front_matter"]["actions"]["rollback_model"] == "human"  # what a person sees ...

        run = client.post("/v1/incidents/INC-3/investigate", json={"again": True}, headers=AUTH).json()

        assert run["status"] == "waiting_approval", run  # ... is what the responder does
        assert [a["action"] for a in run["plan"] if a["approval"] == "human"] == ["rollback_model"]
        # An edit that does not load leaves the last library that did in force, and says why.
        (runbooks / "half_saved.md").write_text("---\nid: half_saved\n")
        with caplog.at_level("WARNING", logger="selfheal.service.responder_hooks"):
            denied = client.post("/v1/incidents/INC-3/deny", json={"note": "not now"}, headers=AUTH)
        assert denied.status_code == 200, denied.text
        assert "half_saved.md" in caplog.text and "keeps acting on the ones it had" in caplog.text


def test_a_medium_severity_run_waits_for_approval_without_paging(demo_home: Path, tmp_path: Path) -> None:
    # High and critical runbooks page for approval; a medium one (a population shift's retrain) waits for
    # working hours, listed by `selfheal status`, instead of waking someone at night.
    runbooks = approval_runbooks(tmp_path / "runbooks")
    deploy = runbooks / "bad_model_deploy.md"
    deploy.write_text(deploy.read_text().replace("\nseverity: high\n", "\nseverity: medium\n", 1))
    with Platform(Workspace(demo_home)) as platform:
        pages = platform.store.count("pages")
    pause_for_approval(demo_home, runbooks, incidents=("INC-3",))
    with Platform(Workspace(demo_home)) as platform:
        assert platform.store.count("pages") == pages
        run = _latest_run(platform, "INC-3")
    assert run["status"] == "waiting_approval"
    assert any("not paged (medium severity)" in (s.get("note") or "") for s in run["state"]["steps"])
