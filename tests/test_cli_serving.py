"""`selfheal serving ...`: a person's changes to what serves, on the workspace file and through the service.

Each change is checked three ways: the serving state it wrote (who, why), its audit row (actor
``person:NAME``, the action, the reason) and what the scorer serves afterwards. No-ops change nothing and
exit with 0; bad input exits with 1 and writes nothing.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

import selfheal.client
from selfheal.app import Platform
from selfheal.cli import app as cli_app
from selfheal.client import ServiceClient
from selfheal.service import views
from selfheal.service.app import create_app
from selfheal.service.config import ServiceConfig
from store import Workspace
from tests.conftest import SmallWorld
from tests.test_service import AUTH, TOKEN, live_records

FEATURE = "terminal_risk_7d"
runner = CliRunner()


@pytest.fixture
def home(small_world: SmallWorld, tmp_path: Path) -> Path:
    """A private copy of the trained workspace (v1 champion, no service running)."""
    folder = tmp_path / "workspace"
    shutil.copytree(small_world.template, folder)
    return folder


def cli(home: Path, *args: str) -> Any:
    return runner.invoke(cli_app, ["serving", *args, "--home", str(home)])


def audit_rows(platform: Platform) -> list[tuple[str, str, str, str, str]]:
    """(actor, action, reason, approval, status) of every audit row, oldest first."""
    frame = platform.store.query(
        "SELECT actor, action, reason, approval, result FROM audit_log ORDER BY rowid"
    )
    return [
        (r.actor, r.action, r.reason, r.approval, json.loads(r.result)["status"]) for r in frame.itertuples()
    ]


def scored(platform: Platform, small_world: SmallWorld, index: int = 0) -> dict[str, Any]:
    """The predictions row of one live transaction scored now (the first `index` ones are skipped)."""
    record = live_records(small_world, index + 1)[index]
    row: dict[str, Any] = platform.scorer.score_batch([record]).predictions.iloc[0].to_dict()
    return row


# -- on the workspace file ----------------------------------------------------------------------------


def test_fallback_on_and_off_is_audited_and_the_scorer_follows(home: Path, small_world: SmallWorld) -> None:
    on = cli(home, "fallback", "on", "--by", "alice", "--reason", "v1 declines everyone")
    assert on.exit_code == 0, on.output
    assert "the fallback rules now score instead of model v1" in on.stdout
    with Platform(Workspace(home)) as platform:
        state = platform.serving.current()
        assert (state.fallback, state.fallback_reason, state.changed_by) == (
            True,
            "v1 declines everyone",
            "person:alice",
        )
        assert "v1 declines everyone" in state.reason
        assert audit_rows(platform) == [
            ("person:alice", "enable_fallback_rules", "v1 declines everyone", "human", "applied")
        ]
        assert scored(platform, small_world)["used_fallback"]

    again = cli(home, "fallback", "on", "--by", "alice", "--reason", "still")
    assert again.exit_code == 0 and "already on" in again.stdout and "nothing changed" in again.stdout

    off = cli(home, "fallback", "off", "--by", "bob", "--reason", "v1 was fine: the rule engine lied")
    assert off.exit_code == 0, off.output
    with Platform(Workspace(home)) as platform:
        state = platform.serving.current()
        assert (state.fallback, state.changed_by, state.version) == (
            False,
            "person:bob",
            3,
        )  # v1 promoted; on; off
        assert [row[:3] for row in audit_rows(platform)][1:] == [
            ("person:bob", "disable_fallback_rules", "v1 was fine: the rule engine lied")
        ]
        row = scored(platform, small_world, 1)
        assert not row["used_fallback"] and row["model_version"] == 1

    noop = cli(home, "fallback", "off", "--by", "bob", "--reason", "again")
    assert noop.exit_code == 0 and "already off; nothing changed" in noop.stdout
    history = cli(home, "history", "--json")
    assert [(h["version"], h["changed_by"], h["fallback"]) for h in json.loads(history.stdout)][:2] == [
        (3, "person:bob", False),
        (2, "person:alice", True),
    ]
    with Platform(Workspace(home)) as platform:
        assert len(audit_rows(platform)) == 2  # the no-ops wrote nothing


def test_quarantine_and_release_impute_as_the_agents_action_does(home: Path, small_world: SmallWorld) -> None:
    quarantined = cli(home, "quarantine", FEATURE, "--by", "alice", "--reason", "terminal job late")
    assert quarantined.exit_code == 0, quarantined.output
    assert f"{FEATURE} is quarantined" in quarantined.stdout
    with Platform(Workspace(home)) as platform:
        profile = platform.registry.get(1).metadata.reference_profile or {}
        state = platform.serving.current()
        # The champion's reference: its mean, and its ranked surrogates (as `quarantine_feature` sets them).
        assert state.quarantined_features == {FEATURE: pytest.approx(profile["numeric"][FEATURE]["mean"])}
        expected_surrogates = profile.get("surrogates", {}).get(FEATURE, [])
        assert [s.model_dump() for s in state.quarantine_surrogates.get(FEATURE, [])] == expected_surrogates
        assert state.changed_by == "person:alice"
        assert audit_rows(platform) == [
            ("person:alice", "quarantine_feature", "terminal job late", "human", "applied")
        ]
        assert FEATURE in platform.scorer.status()["quarantined_features"]  # what the scorer imputes now

    shown = cli(home, "show", "--json")
    assert shown.exit_code == 0, shown.output
    assert FEATURE in json.loads(shown.stdout)["quarantined_features"]
    assert cli(home, "show").exit_code == 0

    again = cli(home, "quarantine", FEATURE, "--by", "alice", "--reason", "again")
    assert again.exit_code == 0 and "already quarantined" in again.stdout

    released = cli(home, "release", FEATURE, "--by", "carol", "--reason", "terminal job fixed")
    assert released.exit_code == 0, released.output
    with Platform(Workspace(home)) as platform:
        assert platform.serving.current().quarantined_features == {}
        assert audit_rows(platform)[-1] == (
            "person:carol",
            "release_feature",
            "terminal job fixed",
            "human",
            "applied",
        )
        assert platform.scorer.status()["quarantined_features"] == {}

    noop = cli(home, "release", FEATURE, "--by", "carol", "--reason", "again")
    assert noop.exit_code == 0 and "is not quarantined (quarantined: none); nothing changed" in noop.stdout


def test_a_constant_imputation_is_what_a_person_chose(home: Path) -> None:
    result = cli(
        home, "quarantine", FEATURE, "--value", "0.25", "--by", "alice", "--reason", "pin it", "--json"
    )
    assert result.exit_code == 0, result.output
    outcome = json.loads(result.stdout)
    assert outcome["changed"] is True and outcome["audit_id"]
    assert outcome["state"]["quarantined_features"] == {FEATURE: 0.25}
    assert outcome["state"]["quarantine_surrogates"] == {}


def test_thresholds_are_set_and_decide_the_next_row(home: Path, small_world: SmallWorld) -> None:
    result = cli(
        home, "thresholds", "--decline", "0", "--review", "0", "--by", "alice", "--reason", "block all"
    )
    assert result.exit_code == 0, result.output
    with Platform(Workspace(home)) as platform:
        state = platform.serving.current()
        assert (state.threshold, state.review_threshold, state.changed_by) == (0.0, 0.0, "person:alice")
        assert audit_rows(platform) == [("person:alice", "set_threshold", "block all", "human", "applied")]
        assert scored(platform, small_world)["decision"] == "decline"  # every score is >= 0

    same = cli(home, "thresholds", "--decline", "0", "--review", "0", "--by", "alice", "--reason", "again")
    assert same.exit_code == 0 and "already decline >= 0, review >= 0; nothing changed" in same.stdout
    with Platform(Workspace(home)) as platform:
        assert len(audit_rows(platform)) == 1


@pytest.mark.parametrize(
    "args,message",
    [
        (["thresholds", "--decline", "0.3", "--review", "0.5"], "must be at or below the decline threshold"),
        (["thresholds", "--decline", "1.5", "--review", "0.5"], "decline threshold must be between 0 and 1"),
        (["thresholds", "--decline", "0.5", "--review", "-0.1"], "review threshold must be between 0 and 1"),
        (["thresholds", "--decline", "nan", "--review", "0.1"], "between 0 and 1"),
        (["quarantine", "terminal_risk_8d"], "'terminal_risk_8d' is not a feature of the champion model v1"),
        (["release", "amount_typo"], "'amount_typo' is not a feature of the champion model v1"),
        (["quarantine", FEATURE, "--value", "inf"], "must be a finite number"),
    ],
)
def test_bad_input_exits_with_1_and_writes_nothing(home: Path, args: list[str], message: str) -> None:
    result = cli(home, *args, "--by", "alice", "--reason", "try")
    assert result.exit_code == 1, result.output
    assert message in " ".join(result.output.split())
    with Platform(Workspace(home)) as platform:
        assert platform.serving.current().version == 1 and audit_rows(platform) == []


def test_who_and_why_are_required(home: Path) -> None:
    bad_name = cli(home, "fallback", "on", "--by", "alice smith", "--reason", "x")
    assert bad_name.exit_code == 1 and "a name of 1-64 letters" in bad_name.output
    blank = cli(home, "fallback", "on", "--by", "alice", "--reason", "  ")
    assert blank.exit_code == 1 and "the reason must say why" in blank.output
    missing = cli(home, "fallback", "on", "--reason", "x")
    assert missing.exit_code == 2  # typer: a required option
    newline = cli(home, "fallback", "on", "--by", "alice\n", "--reason", "x")  # "$" matched before it
    assert newline.exit_code == 1 and "a name of 1-64 letters" in newline.output


def test_serving_commands_refuse_a_missing_workspace(tmp_path: Path) -> None:
    # They created one there: `serving show` printed a "v0, no champion" state and left a database behind.
    typo = tmp_path / "typo"
    for args in (["show"], ["history"], ["fallback", "on", "--by", "alice", "--reason", "x"]):
        result = cli(typo, *args)
        assert result.exit_code == 1 and "no workspace at" in " ".join(result.output.split()), result.output
    assert not typo.exists()


def test_fallback_off_is_refused_when_the_champion_does_not_verify(home: Path) -> None:
    assert cli(home, "fallback", "on", "--by", "alice", "--reason", "artifact suspect").exit_code == 0
    with Platform(Workspace(home)) as platform:
        path = platform.registry.get(1).artifact_path
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    refused = cli(home, "fallback", "off", "--by", "alice", "--reason", "looks fine")
    assert refused.exit_code == 1 and "fails the integrity check" in " ".join(refused.output.split())
    with Platform(Workspace(home)) as platform:
        assert platform.serving.current().fallback is True
        assert audit_rows(platform)[-1][1:] == ("disable_fallback_rules", "looks fine", "human", "refused")


def test_promoting_the_champion_again_says_so_and_points_at_the_fallback(home: Path) -> None:
    assert cli(home, "fallback", "on", "--by", "alice", "--reason", "v1 suspect").exit_code == 0
    result = runner.invoke(cli_app, ["models", "promote", "1", "--home", str(home)])
    assert result.exit_code == 0, result.output
    said = " ".join(result.stdout.split())
    assert "v1 is already the champion; nothing changed" in said and "champion is now" not in said
    assert "the fallback rules serve instead of it (serving state v2): v1 suspect" in said
    assert "selfheal serving fallback off" in said
    with Platform(Workspace(home)) as platform:
        assert platform.serving.current().version == 2


def test_status_names_the_command_that_acts(home: Path) -> None:
    assert cli(home, "fallback", "on", "--by", "alice", "--reason", "v1 suspect").exit_code == 0
    assert cli(home, "quarantine", FEATURE, "--by", "alice", "--reason", "late").exit_code == 0
    status = runner.invoke(cli_app, ["status", "--json", "--home", str(home)])
    attention = json.loads(status.stdout)["attention"]
    assert any("v1 suspect" in line and "selfheal serving fallback off" in line for line in attention)
    assert any(FEATURE in line and "selfheal serving release FEATURE" in line for line in attention)


# -- through the service ------------------------------------------------------------------------------


@pytest.fixture
def service(home: Path) -> Iterator[tuple[TestClient, Platform]]:
    with Platform(Workspace(home)) as platform:
        app = create_app(platform, ServiceConfig(token=TOKEN, flush_interval_s=0.05))
        with TestClient(app) as client:
            yield client, platform


ROUTES = [
    ("/v1/serving/fallback", {"on": True, "by": "alice", "reason": "r"}),
    ("/v1/serving/quarantine", {"feature": FEATURE, "by": "alice", "reason": "r"}),
    ("/v1/serving/release", {"feature": FEATURE, "by": "alice", "reason": "r"}),
    ("/v1/serving/thresholds", {"decline": 0.6, "review": 0.3, "by": "alice", "reason": "r"}),
]


@pytest.mark.parametrize(
    "path,raw",
    [
        ("/v1/serving/thresholds", '{"by": "z", "reason": "r", "decline": NaN, "review": 0.1}'),
        ("/v1/serving/fallback", '{"by": "z", "reason": "r", "on": Infinity}'),
        ("/v1/incidents/INC-1/chat", '{"message": NaN}'),
    ],
)
def test_nan_or_infinity_in_a_body_is_a_422_not_a_500(
    service: tuple[TestClient, Platform], path: str, raw: str
) -> None:
    # Python's JSON parser takes NaN and Infinity; FastAPI's own 422 echoed them and could not be written.
    client, platform = service
    response = client.post(path, content=raw, headers={**AUTH, "Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.json()["detail"] and audit_rows(platform) == []


@pytest.mark.parametrize("path,body", ROUTES, ids=[p for p, _ in ROUTES])
def test_serving_routes_need_the_token(
    service: tuple[TestClient, Platform], path: str, body: dict[str, Any]
) -> None:
    client, platform = service
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        response = client.post(path, json=body, headers=headers)
        assert response.status_code == 401, response.text
    assert platform.serving.current().version == 1 and audit_rows(platform) == []


def test_serving_routes_change_what_the_running_scorer_serves(
    service: tuple[TestClient, Platform], small_world: SmallWorld
) -> None:
    client, platform = service
    first, second, third = live_records(small_world, 3)
    on = client.post(
        "/v1/serving/fallback", json={"on": True, "by": "alice", "reason": "suspect"}, headers=AUTH
    )
    assert on.status_code == 200, on.text
    assert on.json()["changed"] is True and on.json()["state"]["fallback"] is True
    assert client.post("/v1/score", json=first).json()["used_fallback"] is True
    assert client.get("/v1/serving").json()["state"]["changed_by"] == "person:alice"

    again = client.post("/v1/serving/fallback", json={"on": True, "by": "alice", "reason": "x"}, headers=AUTH)
    assert again.status_code == 200 and again.json()["changed"] is False and again.json()["audit_id"] is None
    off = client.post(
        "/v1/serving/fallback", json={"on": False, "by": "bob", "reason": "fixed"}, headers=AUTH
    )
    assert off.status_code == 200 and off.json()["state"]["version"] == 3
    answer = client.post("/v1/score", json=second).json()
    assert answer["used_fallback"] is False and answer["model_version"] == 1

    block = {"decline": 0.0, "review": 0.0, "by": "alice", "reason": "block all"}
    assert client.post("/v1/serving/thresholds", json=block, headers=AUTH).status_code == 200
    assert client.post("/v1/score", json=third).json()["decision"] == "decline"

    inverted = client.post("/v1/serving/thresholds", json={**block, "review": 0.5}, headers=AUTH)
    assert inverted.status_code == 400 and "at or below the decline threshold" in inverted.json()["detail"]
    unknown = client.post(
        "/v1/serving/quarantine", json={"feature": "nope", "by": "a", "reason": "r"}, headers=AUTH
    )
    assert unknown.status_code == 400 and "not a feature of the champion" in unknown.json()["detail"]
    assert (
        client.post(
            "/v1/serving/fallback", json={"on": True, "by": "a b", "reason": "r"}, headers=AUTH
        ).status_code
        == 422
    )
    assert [row[:2] for row in audit_rows(platform)] == [
        ("person:alice", "enable_fallback_rules"),
        ("person:bob", "disable_fallback_rules"),
        ("person:alice", "set_threshold"),
    ]


def test_the_cli_goes_through_the_service_when_one_owns_the_workspace(
    service: tuple[TestClient, Platform], home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI's requests reach the in-process app over a relayed wire (`tests/test_service_process.py`
    runs the same against a real `selfheal serve`, which holds the file)."""
    client, platform = service

    def relay(request: httpx.Request) -> httpx.Response:
        answer = client.request(
            request.method, str(request.url), headers=dict(request.headers), content=request.content
        )
        return httpx.Response(answer.status_code, headers=answer.headers, content=answer.content)

    def discover(_home: Any = None, *, actor: str | None = None) -> ServiceClient:
        return ServiceClient(
            "http://testserver", token=TOKEN, actor=actor, transport=httpx.MockTransport(relay)
        )

    monkeypatch.setattr(selfheal.client, "discover_service", discover)
    result = cli(home, "quarantine", FEATURE, "--by", "alice", "--reason", "late")
    assert result.exit_code == 0, result.output
    assert platform.serving.current().changed_by == "person:alice"
    assert audit_rows(platform) == [("person:alice", "quarantine_feature", "late", "human", "applied")]
    shown = cli(home, "show", "--json")
    assert json.loads(shown.stdout) == views.serving(platform, platform.scorer.status())
    history = cli(home, "history", "--limit", "1", "--json")
    assert json.loads(history.stdout) == views.serving_history(platform, 1)
    refused = cli(home, "thresholds", "--decline", "0.5", "--review", "0.5", "--by", "a b", "--reason", "r")
    assert refused.exit_code == 1 and "a name of 1-64 letters" in refused.output
    noop = cli(home, "release", "amount", "--by", "alice", "--reason", "r")
    assert noop.exit_code == 0 and "amount is not quarantined" in noop.stdout
    unknown = cli(home, "release", "nope", "--by", "alice", "--reason", "r")
    assert unknown.exit_code == 1 and "not a feature of the champion" in unknown.output


def test_history_piped_keeps_reasons_readable(home: Path) -> None:
    # Off a terminal Rich used 80 columns: a long reason came out one word per line.
    reason = "the terminal feature job shipped nulls for six hours; released after the upstream fix"
    assert cli(home, "fallback", "on", "--by", "alice", "--reason", reason).exit_code == 0

    result = cli(home, "history")

    assert result.exit_code == 0, result.output
    assert "the terminal feature job shipped nulls for six hours;" in result.stdout  # on one line
