"""Actions asked for in chat that wait for a person (`agent.chat.requests`): approved, denied, decided once.

The demo's INC-3 (a bad model deploy, rolled back to v1) is reopened in chat with a runbook whose rollbacks need
a person; someone asks to serve v2 again. The request is recorded, not run; then a person decides on it from
the code, the CLI or the service.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from agent.chat import ChatParts
from agent.chat.actions import request_action
from agent.chat.answers import audit_line
from agent.chat.record import IncidentRecord
from agent.chat.requests import decide_request, open_requests
from selfheal.app import Platform
from selfheal.cli import app
from store import Workspace
from tools.audit import ActionLog
from tools.runbooks.library import default_runbooks_dir

ASKER, APPROVER = "api:alice", "cli:bob"


def human_rollback_runbooks(folder: Path) -> Path:
    shutil.copytree(default_runbooks_dir(), folder)
    path = folder / "bad_model_deploy.md"
    text = path.read_text()
    assert "rollback_model: auto" in text, "bad_model_deploy no longer lets the agent roll back on its own"
    path.write_text(text.replace("rollback_model: auto", "rollback_model: human", 1))
    return folder


@pytest.fixture
def runbooks(tmp_path: Path) -> Path:
    return human_rollback_runbooks(tmp_path / "runbooks")


@pytest.fixture
def opened(demo_home: Path) -> Iterator[Platform]:
    with Platform(Workspace(demo_home)) as platform:
        yield platform


def ask_to_serve_v2(parts: ChatParts, actor: str = ASKER) -> str:
    """What the chat does when its model asks INC-3 for the rollback (tests/test_chat_llm.py drives the
    model); the runbooks must put rollbacks behind a person. Returns the request's audit id."""
    outcome = request_action(
        parts, IncidentRecord.load(parts, "INC-3"), "rollback_model", {"to_version": 2}, "v2 looks fine", actor=actor
    )
    assert outcome["status"] == "pending_approval", outcome
    assert f"selfheal approve INC-3 --request {outcome['audit_id']} --by NAME" in outcome["message"]
    return str(outcome["audit_id"])


def audit(platform: Platform, audit_id: str) -> dict[str, Any]:
    row = platform.store.query("SELECT * FROM audit_log WHERE audit_id = ?", [audit_id]).to_dict("records")[0]
    return {**row, "result": json.loads(row["result"])}


def test_approving_runs_the_action_as_the_approver_and_closes_the_request(opened: Platform, runbooks: Path) -> None:
    parts = ChatParts.for_platform(opened, runbooks_dir=runbooks)
    assert opened.serving.current().champion_version == 1
    request = ask_to_serve_v2(parts)
    assert opened.serving.current().champion_version == 1  # asked for, not run
    assert [r.audit_id for r in open_requests(opened.store, "INC-3")] == [request]

    outcome = decide_request(parts, "3", "approve", request, by=APPROVER, note="v2's metrics checked")
    assert outcome["status"] == "applied" and opened.serving.current().champion_version == 2
    action = audit(opened, outcome["audit_id"])
    assert (action["action"], action["actor"], action["approval"]) == ("rollback_model", APPROVER, f"human:{APPROVER}")
    assert action["result"]["status"] == "applied" and request in action["reason"]
    decision = audit(opened, outcome["decision_audit_id"])
    assert decision["actor"] == APPROVER and decision["result"] == {
        "status": "approved",
        "request": request,
        "via": "chat",
        "outcome": "applied",
        "action_audit_id": outcome["audit_id"],
    }
    assert open_requests(opened.store, "INC-3") == []
    line = audit_line(ActionLog(opened.store, opened.clock).rows(incident_id="INC-3")[-1])
    assert f"**approved** by {APPROVER}: decision on chat request `{request}`" in line
    with pytest.raises(ValueError, match="is not a chat request of INC-3 that waits for approval"):
        decide_request(parts, "INC-3", "approve", request, by=APPROVER)


def test_denying_runs_nothing_and_closes_the_request(opened: Platform, runbooks: Path) -> None:
    parts = ChatParts.for_platform(opened, runbooks_dir=runbooks)
    request = ask_to_serve_v2(parts)
    aliases = opened.store.count("model_aliases")
    outcome = decide_request(parts, "INC-3", "deny", request, by=APPROVER, note="not during the sale")
    assert outcome["status"] == "denied" and outcome["audit_id"] is None
    assert opened.store.count("model_aliases") == aliases and opened.serving.current().champion_version == 1
    decision = audit(opened, outcome["decision_audit_id"])
    assert decision["result"]["status"] == "denied" and "not during the sale" in decision["reason"]
    assert open_requests(opened.store, "INC-3") == []


def test_a_crash_between_the_action_and_the_decision_does_not_act_twice(
    opened: Platform, runbooks: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts = ChatParts.for_platform(opened, runbooks_dir=runbooks)
    request = ask_to_serve_v2(parts)
    record = ActionLog.record

    def crash_on_the_decision(self: ActionLog, **row: Any) -> Any:
        if row["result"].get("status") == "approved":
            raise RuntimeError("killed before the decision was written")
        return record(self, **row)

    monkeypatch.setattr(ActionLog, "record", crash_on_the_decision)
    with pytest.raises(RuntimeError, match="killed"):
        decide_request(parts, "INC-3", "approve", request, by=APPROVER)
    monkeypatch.undo()
    assert opened.serving.current().champion_version == 2
    aliases, serving_versions = opened.store.count("model_aliases"), opened.store.count("serving_state")
    assert [r.audit_id for r in open_requests(opened.store, "INC-3")] == [request]  # still open: decide again

    again = decide_request(parts, "INC-3", "approve", request, by=APPROVER)
    assert again["status"] == "repeat" and opened.serving.current().champion_version == 2
    # Rolled back once: the second approval changed no alias and no serving state.
    assert (opened.store.count("model_aliases"), opened.store.count("serving_state")) == (aliases, serving_versions)
    assert open_requests(opened.store, "INC-3") == []


def test_a_request_that_is_not_open_or_of_another_incident_is_refused(opened: Platform, runbooks: Path) -> None:
    parts = ChatParts.for_platform(opened, runbooks_dir=runbooks)
    request = ask_to_serve_v2(parts)
    with pytest.raises(ValueError, match=r"not a chat request of INC-2 .*\(open: none\)"):
        decide_request(parts, "INC-2", "approve", request, by=APPROVER)
    with pytest.raises(ValueError, match=rf"open: {request} \(rollback_model\)"):
        decide_request(parts, "INC-3", "approve", "rollback_model-000000000000-1", by=APPROVER)
    with pytest.raises(KeyError):
        decide_request(parts, "INC-99", "approve", request, by=APPROVER)
    assert opened.serving.current().champion_version == 1


def test_the_cli_approves_a_chat_request_and_refuses_an_unknown_one(demo_home: Path, runbooks: Path) -> None:
    with Platform(Workspace(demo_home)) as platform:
        request = ask_to_serve_v2(ChatParts.for_platform(platform, runbooks_dir=runbooks))
    home = ["--home", str(demo_home), "--runbooks", str(runbooks)]
    runner = CliRunner()
    unknown = runner.invoke(app, ["approve", "INC-3", "--request", "nope-1", "--by", "bob", *home])
    assert unknown.exit_code == 1 and "nope-1 is not a chat request of INC-3" in unknown.output
    done = runner.invoke(app, ["approve", "INC-3", "--request", request, "--by", "bob", *home])
    assert done.exit_code == 0, done.output
    assert f"{request}: approve -> rollback_model" in done.output and "applied" in done.output
    with Platform(Workspace(demo_home)) as platform:
        assert platform.serving.current().champion_version == 2
        (row,) = [r for r in ActionLog(platform.store, platform.clock).rows(incident_id="INC-3") if r.approval == "human:bob"
                  and r.result.get("status") == "applied"]
        assert row.actor == "bob"


def test_status_lists_a_chat_request_until_it_is_decided(opened: Platform, runbooks: Path) -> None:
    """`selfheal status` counts an action asked for in chat that waits for a person as waiting for approval."""
    from selfheal.service import views

    parts = ChatParts.for_platform(opened, runbooks_dir=runbooks)
    assert "INC-3" not in views.status(opened)["incidents"]["waiting_approval"]
    request = ask_to_serve_v2(parts)
    waiting = views.status(opened)
    assert "INC-3" in waiting["incidents"]["waiting_approval"]
    assert any(line.startswith("waiting for approval:") and "INC-3" in line for line in waiting["attention"])
    decide_request(parts, "3", "deny", request, by=APPROVER, note="not now")
    assert "INC-3" not in views.status(opened)["incidents"]["waiting_approval"]
