"""`selfheal serve` as a real process: HTTP on a free loopback port, auth, discovery, conservation on disk.

One service process for the module (startup imports the whole platform: seconds, not milliseconds); the
tests run in file order against it, and the last one stops it and opens the workspace file to check that
every row posted is in the store, scored or dead-lettered.
"""

from __future__ import annotations

import json
import shutil
import signal
import stat
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from selfheal.app import Platform
from selfheal.cli import app as cli_app
from selfheal.client import discover_service
from selfheal.service.config import read_token_file, token_path
from selfheal.service.discovery import ServiceRecord, service_file
from store import Workspace
from tests.conftest import SmallWorld
from tests.service_process import serve_process
from tests.test_service import concrete, live_records


@dataclass
class Served:
    process: subprocess.Popen[str]
    home: Path
    record: ServiceRecord
    http: httpx.Client
    token: str
    posted: list[Any] = field(default_factory=list)  # every row sent to /v1/score, in order
    stderr: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def served(small_world: SmallWorld, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    home = tmp_path_factory.mktemp("served") / "workspace"
    shutil.copytree(small_world.template, home)
    with serve_process(home, "--flush-interval", "0.1") as served:
        token = read_token_file(token_path(Workspace(home)))
        with httpx.Client(base_url=served.record.url, timeout=60) as http:
            yield Served(served.process, home, served.record, http, token, stderr=served.stderr)


def _listening_addresses(port: int) -> set[str]:
    """Local addresses (hex, as /proc/net/tcp spells them) with a socket listening on ``port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, _remote, state = line.split()[1:4]
            address, hex_port = local.split(":")
            if int(hex_port, 16) == port and state == "0A":  # 0A = LISTEN
                found.add(address)
    return found


def test_serve_binds_loopback_by_default_and_writes_discovery_and_token(served: Served) -> None:
    url = httpx.URL(served.record.url)
    assert url.host == "127.0.0.1" and url.port
    assert served.record.pid == served.process.pid
    if Path("/proc/net/tcp").exists():
        assert _listening_addresses(url.port) == {"0100007F"}  # 127.0.0.1, and nothing else
    mode = stat.S_IMODE(token_path(Workspace(served.home)).stat().st_mode)
    assert mode == 0o600 and len(served.token) >= 40
    assert served.token not in "".join(served.stderr)  # its path is printed, never the token
    assert str(token_path(Workspace(served.home))) in "".join(served.stderr)
    health = served.http.get("/healthz").json()
    assert health["workspace"] == str(served.home.resolve()) and health["model_version"] == 1


def test_scores_good_transactions_and_answers_422_for_bad_ones(
    served: Served, small_world: SmallWorld
) -> None:
    records = live_records(small_world, 12)
    for record in records[:5]:
        response = served.http.post("/v1/score", json=record)
        served.posted.append(record)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["transaction_id"] == str(record["transaction_id"]) and 0 <= body["score"] <= 1
        assert body["decision"] in ("approve", "review", "decline") and body["model_version"] == 1
    bad = {**records[5], "amount": "NaN-ish"}
    response = served.http.post("/v1/score", json=bad)
    served.posted.append(bad)
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert (error["index"], error["transaction_id"], error["field"], error["reason"]) == (
        0,
        str(bad["transaction_id"]),
        "amount",
        "amount must be a number",
    )
    batch = [
        *records[6:9],
        {"transaction_id": "no-time", "customer_id": "1", "terminal_id": "2", "amount": 3},
        records[9],
        records[0],
    ]  # the last one was scored already
    response = served.http.post("/v1/score", json=batch)
    served.posted.extend(batch)
    assert response.status_code == 200
    body = response.json()
    assert (body["scored"], body["dead_lettered"]) == (4, 2)
    assert [r["status"] for r in body["results"]] == ["scored"] * 3 + [
        "dead_lettered",
        "scored",
        "dead_lettered",
    ]
    assert body["results"][3]["field"] == "timestamp"
    assert body["results"][5]["reason"] == "transaction_id already scored"
    # Concurrent singles (coalesced or not, each gets its own answer).
    with httpx.Client(base_url=served.record.url, timeout=60) as other:
        answers: dict[str, int] = {}
        threads = [
            threading.Thread(
                target=lambda r=r: answers.__setitem__(
                    str(r["transaction_id"]), other.post("/v1/score", json=r).status_code
                )
            )
            for r in records[10:12]
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    served.posted.extend(records[10:12])
    assert answers == {str(r["transaction_id"]): 200 for r in records[10:12]}
    metrics = served.http.get("/metrics").text
    assert 'selfheal_dead_letters_total{field="amount"} 1' in metrics


def test_every_mutating_endpoint_needs_the_token_and_changes_nothing_without_it(served: Served) -> None:
    http = served.http
    before = (
        http.get("/v1/serving/history").json(),
        http.get("/v1/actions").json(),
        http.get("/v1/models").json(),
    )
    paths = http.get("/openapi.json").json()["paths"]
    mutating = [(m.upper(), p) for p, ops in paths.items() for m in ops if m != "get" and p != "/v1/score"]
    assert len(mutating) >= 5
    for method, path in mutating:
        for headers in ({}, {"Authorization": "Bearer not-the-token"}):
            response = http.request(
                method, concrete(path), json={"reason": "r", "to_version": 1, "message": "m"}, headers=headers
            )
            assert response.status_code == 401, (method, path, response.text)
    after = (
        http.get("/v1/serving/history").json(),
        http.get("/v1/actions").json(),
        http.get("/v1/models").json(),
    )
    assert after == before
    # With the token the same door opens (and refuses what the action refuses).
    response = http.post(
        "/v1/models/1/promote", json={"reason": "r"}, headers={"Authorization": f"Bearer {served.token}"}
    )
    assert response.status_code == 409 and "already the champion" in response.json()["detail"]


def test_cli_reads_go_through_the_running_service(served: Served) -> None:
    client = discover_service(served.home)
    assert client is not None and client.base_url == served.record.url
    client.close()
    runner = CliRunner()
    # The service holds the DuckDB file: opening it here would fail, so success means the API answered.
    listed = runner.invoke(cli_app, ["incidents", "list", "--json", "--home", str(served.home)])
    assert listed.exit_code == 0, listed.output
    assert json.loads(listed.stdout) == []
    shown = runner.invoke(cli_app, ["incidents", "show", "INC-3", "--home", str(served.home)])
    assert shown.exit_code == 1 and "no incident 'INC-3'" in shown.output


def test_cli_models_commands_go_through_the_running_service(served: Served) -> None:
    """They opened the DuckDB file themselves, which the service holds: every one failed with "held by
    another process" while the API could answer."""
    runner = CliRunner()
    home = ["--home", str(served.home)]
    listed = runner.invoke(cli_app, ["models", "list", "--json", *home])
    assert listed.exit_code == 0, listed.output
    assert json.loads(listed.stdout) == served.http.get("/v1/models").json()
    assert [m["version"] for m in json.loads(listed.stdout)["models"]] == [1]
    table = runner.invoke(cli_app, ["models", "list", *home])
    assert table.exit_code == 0 and "champion" in table.stdout
    shown = runner.invoke(cli_app, ["models", "show", "1", *home])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["integrity"]["ok"] is True
    missing = runner.invoke(cli_app, ["models", "show", "9", *home])
    assert missing.exit_code == 1 and "Traceback" not in missing.output
    again = runner.invoke(cli_app, ["models", "promote", "1", *home])
    assert again.exit_code == 0 and "v1 is already the champion" in again.stdout, again.output
    refused = runner.invoke(cli_app, ["models", "rollback", *home])  # one model: nothing to roll back to
    assert refused.exit_code == 1 and "no previous model" in " ".join(refused.output.split()), refused.output


def test_cli_serving_changes_go_through_the_running_service(served: Served) -> None:
    """The service holds the DuckDB file: `selfheal serving` changes it through the admin API, and the
    running scorer serves the change at once."""
    runner = CliRunner()
    home = ["--home", str(served.home)]
    on = runner.invoke(cli_app, ["serving", "fallback", "on", "--by", "alice", "--reason", "v1 suspect", *home])
    assert on.exit_code == 0, on.output
    serving = served.http.get("/v1/serving").json()
    assert serving["fallback"] is True and serving["fallback_reason"] == "v1 suspect"
    assert serving["state"]["changed_by"] == "person:alice"
    off = runner.invoke(cli_app, ["serving", "fallback", "off", "--by", "bob", "--reason", "fixed", "--json", *home])
    assert off.exit_code == 0, off.output
    assert json.loads(off.stdout)["state"]["fallback"] is False
    serving = served.http.get("/v1/serving").json()
    assert serving["fallback"] is False and serving["model_version"] == 1
    noop = runner.invoke(cli_app, ["serving", "fallback", "off", "--by", "bob", "--reason", "again", *home])
    assert noop.exit_code == 0 and "already off" in noop.stdout
    actions = served.http.get("/v1/actions").json()
    assert [(a["actor"], a["action"]) for a in actions][-2:] == [
        ("person:alice", "enable_fallback_rules"), ("person:bob", "disable_fallback_rules")]
    shown = runner.invoke(cli_app, ["serving", "show", *home])
    assert shown.exit_code == 0 and "model v1" in shown.stdout
    # The service's 422 reads as the CLI's own errors do, not as a list of Pydantic dicts.
    empty = runner.invoke(cli_app, ["serving", "fallback", "on", "--by", "bob", "--reason", "", *home])
    said = " ".join(empty.output.split())
    assert empty.exit_code == 1 and "reason: String should have at least 1 character" in said, empty.output
    assert "string_too_short" not in said


def test_shutdown_removes_discovery_and_every_posted_row_is_on_disk(served: Served) -> None:
    served.process.send_signal(signal.SIGTERM)
    assert served.process.wait(timeout=60) == 0, "".join(served.stderr)
    assert not service_file(Workspace(served.home)).exists()
    with Platform(Workspace(served.home)) as platform:
        store = platform.store
        transactions, predictions = store.count("transactions"), store.count("predictions")
        dead = store.query("SELECT transaction_id, reason FROM dead_letters ORDER BY received_at, rowid")
    assert transactions == predictions == 11
    assert transactions + len(dead) == len(served.posted) == 14
    assert list(dead["reason"]) == [
        "amount must be a number",
        "missing field timestamp",
        "transaction_id already scored",
    ]
