"""The service in process (FastAPI's TestClient): scoring answers, auth, the read API, metrics, hooks.

`tests/test_service_process.py` runs the same service as a real `selfheal serve` process over HTTP.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import socket
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from scorer.score import Scorer
from scorer.simulate import LABEL_COLUMNS
from scorer.validate import TIMESTAMP_REASON
from selfheal.app import Platform
from selfheal.cli import app as cli_app
from selfheal.cli_serve import _listen
from selfheal.client import ServiceClient, discover_service
from selfheal.service import views
from selfheal.service.app import create_app
from selfheal.service.config import TOKEN_ENV, ServiceConfig, resolve_token, token_path
from selfheal.service.discovery import read_record, remove_record, service_file, write_record
from selfheal.service.engine import EngineStopped, JobOutcome, ScoringEngine, canonical_id
from selfheal.service.hooks import ChatMessage, Decision, PeriodicJob, Scheduler, ServiceHooks
from selfheal.service.metrics import Counter, Histogram, ServiceMetrics
from selfheal.service.runtime import ServiceRuntime
from store import Workspace
from tests.conftest import HISTORY_DAYS, FullDisk, SmallWorld
from tools.pagers import Delivery, OutboxPager, Page

TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def live_records(small_world: SmallWorld, n: int) -> list[dict[str, Any]]:
    """The first ``n`` transactions of the first live day, as JSON objects a client would send."""
    live = small_world.simulator.generate(HISTORY_DAYS, 1).drop(columns=list(LABEL_COLUMNS)).head(n)
    records: list[dict[str, Any]] = json.loads(live.to_json(orient="records", date_format="iso"))
    return records


def mutating_routes(app: Any) -> list[tuple[str, str]]:
    """(method, path) of every operation that can change something: all but GET/HEAD, scoring excepted.

    Read from the OpenAPI document, so a new route is in this list the moment it exists.
    """
    found = []
    for path, operations in app.openapi()["paths"].items():
        for method in operations:
            if method.upper() not in ("GET", "HEAD", "OPTIONS") and path != "/v1/score":
                found.append((method.upper(), path))
    return sorted(found)


def concrete(path: str) -> str:
    return path.replace("{version}", "1").replace("{incident_id}", "INC-1")


def state_snapshot(platform: Platform) -> dict[str, Any]:
    """Everything a mutating endpoint could change."""
    return {
        "serving": platform.serving.current().model_dump(),
        "serving_versions": platform.store.count("serving_state"),
        "aliases": platform.registry.aliases(),
        "alias_events": platform.store.count("model_aliases"),
        "audit": platform.store.count("audit_log"),
        "incidents": platform.store.query("SELECT * FROM incidents ORDER BY number").to_dict("records"),
        "events": platform.store.count("incident_events"),
        "pages": platform.store.count("pages"),
    }


def open_incident(platform: Platform, number: int, status: str = "open") -> str:
    incident_id = f"INC-{number}"
    at = pd.Timestamp("2018-05-20 10:00").to_pydatetime()
    platform.store.execute(
        "INSERT INTO incidents (incident_id, number, dedup_key, model_version, kind, subject, severity, status, "
        "title, opened_at, updated_at, first_breach_at, evidence) VALUES (?, ?, ?, 1, 'data_quality', "
        "'amount', 'high', ?, 'amount is null on 40 % of rows', ?, ?, ?, ?)",
        [incident_id, number, f"model:1|data_quality|amount|{number}", status, at, at, at,
         json.dumps({"metric": "null_share", "value": 0.4, "threshold": 0.05})],
    )
    platform.store.execute(
        "INSERT INTO incident_events VALUES (?, ?, 'opened', ?)", [incident_id, at, json.dumps({"value": 0.4})]
    )
    return incident_id


def record_failed_page(platform: Platform, incident_id: str) -> None:
    """A page for the incident in the outbox whose webhook delivery failed (as `dispatch` records it)."""
    outbox = OutboxPager(platform.store)
    page = Page(
        page_id=f"page-{incident_id}", incident_id=incident_id, dedup_key=f"key-{incident_id}", summary="s", severity="high"
    )
    outbox.send(page)
    outbox.record(page, Delivery(channel="webhook", ok=False, status=503, attempts=4, error="HTTP 503 after 4 attempts"))


@pytest.fixture
def service(platform: Platform) -> Iterator[tuple[TestClient, Platform]]:
    app = create_app(platform, ServiceConfig(token=TOKEN, flush_interval_s=0.05))
    with TestClient(app) as client:
        yield client, platform


def runtime_of(client: TestClient) -> ServiceRuntime:
    runtime: ServiceRuntime = client.app.state.runtime  # type: ignore[attr-defined]
    return runtime


# -- scoring ------------------------------------------------------------------------------------------


def test_one_good_transaction_is_scored_and_logged(service: tuple[TestClient, Platform], small_world: SmallWorld) -> None:
    client, platform = service
    record = live_records(small_world, 1)[0]
    response = client.post("/v1/score", json=record)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["transaction_id"] == str(record["transaction_id"])
    assert 0.0 <= body["score"] <= 1.0
    assert body["decision"] in ("approve", "review", "decline")
    assert body["model_version"] == 1 and body["used_fallback"] is False
    assert body["serving_state_version"] == platform.serving.current().version
    assert body["latency_ms"] > 0
    runtime_of(client).engine.flush()
    logged = platform.store.query("SELECT score, decision, model_version FROM predictions")
    assert logged.to_dict("records") == [{"score": pytest.approx(body["score"]), "decision": body["decision"],
                                          "model_version": 1}]


@pytest.mark.parametrize(
    "change,field,reason",
    [
        ({"amount": -3.0}, "amount", "amount is negative"),
        ({"amount": "lots"}, "amount", "amount must be a number"),
        ({"timestamp": "yesterday-ish"}, "timestamp", TIMESTAMP_REASON),
        ({"channel": "carrier pigeon"}, "channel", "channel must be one of card_present, online"),
        ({"customer_id": None}, "customer_id", "missing value for customer_id"),
    ],
)
def test_a_bad_transaction_answers_422_naming_field_and_reason_and_is_dead_lettered(
    service: tuple[TestClient, Platform], small_world: SmallWorld, change: dict[str, Any], field: str, reason: str
) -> None:
    client, platform = service
    record = {**live_records(small_world, 1)[0], **change}
    response = client.post("/v1/score", json=record)
    assert response.status_code == 422
    body = response.json()
    assert body["dead_lettered"] is True
    [error] = body["detail"]
    assert error["index"] == 0 and error["transaction_id"] == str(record["transaction_id"])
    assert error["field"] == field and error["reason"] == reason
    assert error["loc"] == ["body", field] and error["msg"] == reason
    runtime_of(client).engine.flush()
    dead = platform.store.query("SELECT transaction_id, reason, field, payload, source FROM dead_letters")
    assert len(dead) == 1
    row = dead.iloc[0]
    assert (row["transaction_id"], row["reason"], row["field"], row["source"]) == (
        str(record["transaction_id"]), reason, field, "api")
    assert json.loads(row["payload"]) == record
    assert platform.store.count("predictions") == 0


def test_a_json_value_that_is_not_an_object_is_dead_lettered_too(service: tuple[TestClient, Platform]) -> None:
    client, platform = service
    response = client.post("/v1/score", json="just a string")
    assert response.status_code == 422
    assert response.json()["detail"][0]["reason"] == "record is not a JSON object"
    runtime_of(client).engine.flush()
    assert platform.store.count("dead_letters") == 1


def test_malformed_json_is_fastapi_style_422_and_not_a_dead_letter(service: tuple[TestClient, Platform]) -> None:
    client, platform = service
    response = client.post("/v1/score", content=b'{"transaction_id": "t1", ', headers={"content-type": "application/json"})
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["type"] == "json_invalid" and error["loc"][0] == "body"
    runtime_of(client).engine.flush()
    assert platform.store.count("dead_letters") == 0 and platform.store.count("transactions") == 0


def test_a_batch_answers_every_row_in_order_and_conserves_rows(
    service: tuple[TestClient, Platform], small_world: SmallWorld
) -> None:
    client, platform = service
    good = live_records(small_world, 8)
    batch: list[Any] = [*good[:3], {**good[3], "amount": None}, 17, *good[4:6], dict(good[0]), *good[6:]]
    response = client.post("/v1/score", json=batch)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["rows_in"], body["scored"], body["dead_lettered"]) == (len(batch), 7, 3)
    results = body["results"]
    assert [r["index"] for r in results] == list(range(len(batch)))
    assert [r["status"] for r in results] == ["scored"] * 3 + ["dead_lettered"] * 2 + ["scored"] * 2 + [
        "dead_lettered"] + ["scored"] * 2
    assert results[3]["field"] == "amount" and results[3]["reason"] == "missing value for amount"
    assert results[4]["reason"] == "record is not a JSON object"
    assert results[7]["reason"] == "duplicate transaction_id in batch"
    for row, sent in zip(results, batch, strict=True):
        if row["status"] == "scored":
            assert row["transaction_id"] == str(sent["transaction_id"]) and 0 <= row["score"] <= 1
    runtime_of(client).engine.flush()
    store = platform.store
    assert store.count("transactions") == store.count("predictions") == 7
    assert store.count("transactions") + store.count("dead_letters") == len(batch)
    logged = dict(store.execute("SELECT transaction_id, score FROM predictions"))
    for row in results:
        if row["status"] == "scored":
            assert logged[row["transaction_id"]] == pytest.approx(row["score"])


def test_a_transaction_scored_twice_is_refused_the_second_time(
    service: tuple[TestClient, Platform], small_world: SmallWorld
) -> None:
    client, _ = service
    record = live_records(small_world, 1)[0]
    assert client.post("/v1/score", json=record).status_code == 200
    again = client.post("/v1/score", json=record)
    assert again.status_code == 422
    assert again.json()["detail"][0]["reason"] == "transaction_id already scored"


def test_batch_limits_and_empty_batches(platform: Platform, small_world: SmallWorld) -> None:
    app = create_app(platform, ServiceConfig(token=TOKEN, max_request_rows=3))
    with TestClient(app) as client:
        too_many = client.post("/v1/score", json=live_records(small_world, 4))
        assert too_many.status_code == 413 and "at most 3" in too_many.json()["detail"]
        empty = client.post("/v1/score", json=[])
        assert empty.status_code == 200 and empty.json()["rows_in"] == 0 and empty.json()["results"] == []
    assert platform.store.count("transactions") == platform.store.count("dead_letters") == 0


def test_shutdown_writes_every_buffered_row(platform: Platform, small_world: SmallWorld) -> None:
    # A long flush interval: only the shutdown flush can have written these rows.
    app = create_app(platform, ServiceConfig(token=TOKEN, flush_interval_s=3600, flush_rows=10_000))
    records = live_records(small_world, 5)
    with TestClient(app) as client:
        for record in records:
            assert client.post("/v1/score", json=record).status_code == 200
        assert client.post("/v1/score", json={"amount": 1}).status_code == 422
    assert platform.store.count("predictions") == 5 and platform.store.count("dead_letters") == 1


# -- the scoring engine -------------------------------------------------------------------------------


def test_requests_that_wait_are_scored_together_and_answered_separately(
    platform: Platform, small_world: SmallWorld
) -> None:
    records = live_records(small_world, 6)
    metrics = ServiceMetrics()

    async def main() -> list[JobOutcome]:
        engine = ScoringEngine(platform.scorer, metrics, coalesce_max_rows=100, flush_interval_s=0.05)
        engine.start()
        # Queued before the worker first runs: all four wait together.
        futures = [engine.submit(records[:1]), engine.submit(records[1:3]), engine.submit([{"amount": 5}]),
                   engine.submit(records[3:6])]
        outcomes = [await future for future in futures]
        await engine.stop()
        return outcomes

    outcomes = asyncio.run(main())
    assert len({o.batch_id for o in outcomes}) == 1 and {o.batch_rows for o in outcomes} == {7}
    assert metrics.scoring_calls.value(path="batch") == 1
    assert [r.transaction_id for r in outcomes[1].rows] == [str(r["transaction_id"]) for r in records[1:3]]
    assert [(r.index, r.scored, r.field) for r in outcomes[2].rows] == [(0, False, "transaction_id")]
    assert [r.index for r in outcomes[3].rows] == [0, 1, 2] and all(r.scored for r in outcomes[3].rows)
    assert platform.store.count("predictions") == 6 and platform.store.count("dead_letters") == 1


def test_waiting_single_transactions_take_the_single_path_until_there_are_enough_for_a_batch(
    platform: Platform, small_world: SmallWorld
) -> None:
    records = live_records(small_world, 5)
    metrics = ServiceMetrics()

    async def main() -> tuple[list[JobOutcome], list[JobOutcome]]:
        engine = ScoringEngine(platform.scorer, metrics, batch_path_min_rows=3, flush_interval_s=3600)
        engine.start()
        few = [engine.submit([records[0]], single=True), engine.submit([{"amount": 1}], single=True)]
        first = [await future for future in few]
        many = [engine.submit([record], single=True) for record in records[1:5]]
        second = [await future for future in many]
        await engine.stop()
        return first, second

    first, second = asyncio.run(main())
    assert [o.batch_id for o in first] == [None, None] and metrics.scoring_calls.value(path="single") == 2
    assert first[0].rows[0].scored and first[0].serving_state_version == platform.serving.current().version
    assert (first[1].rows[0].scored, first[1].rows[0].field) == (False, "transaction_id")
    assert len({o.batch_id for o in second}) == 1 and second[0].batch_rows == 4
    assert metrics.scoring_calls.value(path="batch") == 1
    assert [o.rows[0].transaction_id for o in second] == [str(r["transaction_id"]) for r in records[1:5]]
    assert platform.store.count("predictions") == 5 and platform.store.count("dead_letters") == 1


def test_coalescing_stops_at_the_row_limit_and_stopping_scores_what_was_accepted(
    platform: Platform, small_world: SmallWorld
) -> None:
    records = live_records(small_world, 7)

    async def main() -> list[JobOutcome]:
        engine = ScoringEngine(platform.scorer, ServiceMetrics(), coalesce_max_rows=3, flush_interval_s=3600)
        engine.start()
        futures = [engine.submit(records[:1]), engine.submit(records[1:3]), engine.submit(records[3:4]),
                   engine.submit(records[4:7])]
        await engine.stop()  # right away: every accepted job is still scored, and the buffer written
        with pytest.raises(EngineStopped):
            engine.submit(records[:1])
        return [future.result() for future in futures]

    outcomes = asyncio.run(main())
    assert [o.batch_rows for o in outcomes] == [3, 3, 1, 3]
    assert outcomes[0].batch_id == outcomes[1].batch_id != outcomes[2].batch_id != outcomes[3].batch_id
    assert platform.store.count("predictions") == 7


def test_two_waiting_requests_with_the_same_id_are_not_merged(platform: Platform, small_world: SmallWorld) -> None:
    """Merged, the second caller's row was dead-lettered as a "duplicate in batch" of a request it never
    sent; it now waits for the next batch and gets "already scored", as if it had come a moment later."""
    first, second, third = live_records(small_world, 3)

    async def main() -> list[JobOutcome]:
        engine = ScoringEngine(platform.scorer, ServiceMetrics(), coalesce_max_rows=100, flush_interval_s=3600)
        engine.start()
        futures = [engine.submit([first, second]), engine.submit([third, {**first, "amount": 99}]),
                   engine.submit([{**third}])]  # fmt: skip
        outcomes = [await future for future in futures]
        await engine.stop()
        return outcomes

    outcomes = asyncio.run(main())
    assert outcomes[0].batch_id != outcomes[1].batch_id  # the second repeats the first's id: not merged
    assert [r.scored for r in outcomes[1].rows] == [True, False]
    assert outcomes[1].rows[1].reason == "transaction_id already scored"
    assert outcomes[2].rows[0].reason == "transaction_id already scored"  # repeats the second's id
    assert platform.store.count("predictions") == 3
    reasons = platform.store.query("SELECT reason FROM dead_letters")["reason"].tolist()
    assert reasons == ["transaction_id already scored"] * 2


def test_a_failed_forced_log_write_is_logged_and_the_engine_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    class FailingOnce:
        """A scorer whose first log write fails (a full disk, a locked file)."""

        def __init__(self) -> None:
            self.flushes = 0
            self.failed = threading.Event()

        def flush(self) -> int:
            self.flushes += 1
            if self.flushes == 1:
                self.failed.set()
                raise RuntimeError("disk full")
            return 0

    scorer = FailingOnce()

    async def main() -> None:
        engine = ScoringEngine(cast(Scorer, scorer), ServiceMetrics(), flush_interval_s=0.01)
        engine.start()
        # Idle, the worker forces a write; wait (on a thread, not the loop) until it has been tried.
        assert await asyncio.get_running_loop().run_in_executor(None, scorer.failed.wait, 60)
        await engine.stop()  # the failure did not stop the worker; stopping writes again

    with caplog.at_level(logging.WARNING, logger="selfheal.service.engine"):
        asyncio.run(main())
    [failure] = [r for r in caplog.records if "forced scoring-log write failed" in r.getMessage()]
    assert "disk full" in failure.getMessage() and failure.exc_info is None  # the text; no stack (gh-106905)
    assert scorer.flushes >= 2


def test_canonical_ids_match_what_the_validator_stores(service: tuple[TestClient, Platform], small_world: SmallWorld) -> None:
    client, platform = service
    base = live_records(small_world, 3)
    sent = [{**base[0], "transaction_id": 987654321}, {**base[1], "transaction_id": "  padded-id "},
            {**base[2], "transaction_id": 12.0}]
    body = client.post("/v1/score", json=sent).json()
    assert [r["transaction_id"] for r in body["results"]] == ["987654321", "padded-id", "12"]
    assert [canonical_id(r["transaction_id"]) for r in sent] == ["987654321", "padded-id", "12"]
    runtime_of(client).engine.flush()
    assert sorted(platform.store.query("SELECT transaction_id FROM predictions")["transaction_id"]) == [
        "12", "987654321", "padded-id"]


# -- auth ---------------------------------------------------------------------------------------------


def test_every_mutating_endpoint_answers_401_without_the_token_and_changes_nothing(
    service: tuple[TestClient, Platform],
) -> None:
    client, platform = service
    open_incident(platform, 1)
    routes = mutating_routes(client.app)  # type: ignore[arg-type]
    assert {path for _, path in routes} >= {
        "/v1/models/{version}/promote", "/v1/models/rollback", "/v1/incidents/{incident_id}/approve",
        "/v1/incidents/{incident_id}/deny", "/v1/incidents/{incident_id}/chat",
    }
    before = state_snapshot(platform)
    bodies: list[dict[str, Any]] = [
        {"json": {"reason": "try", "to_version": 1, "message": "hi", "note": "x"}},
        {"content": b"{not json"},  # refused before the body is parsed: 401, not 422
    ]
    for method, path in routes:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}, {"Authorization": "Basic x"}):
            for body in bodies:
                response = client.request(method, concrete(path), headers=headers, **body)
                assert response.status_code == 401, (method, path, headers, response.text)
                assert response.headers["www-authenticate"].startswith("Bearer")
    assert state_snapshot(platform) == before


def test_promote_and_rollback_go_through_the_audited_action_tools(
    service: tuple[TestClient, Platform],
) -> None:
    client, platform = service
    registry = platform.registry
    loaded = registry.load(1)
    v2 = registry.register(loaded.booster, loaded.metadata, actor="test", reason="another version").version
    headers = {**AUTH, "X-Selfheal-Actor": "alice"}
    promoted = client.post(f"/v1/models/{v2}/promote", json={"reason": "beats v1 on last week"}, headers=headers)
    assert promoted.status_code == 200, promoted.text
    assert promoted.json()["status"] == "applied" and promoted.json()["to_version"] == v2
    assert registry.alias("champion") == v2
    scored = client.post("/v1/score", json={"transaction_id": "after-promote", "timestamp": "2018-05-20T10:00:00",
                                            "customer_id": "1", "terminal_id": "2", "amount": 10})
    assert scored.json()["model_version"] == v2  # the scorer serves the new champion at once
    rolled = client.post("/v1/models/rollback", json={"reason": "v2 declines too much"}, headers=headers)
    assert rolled.status_code == 200 and rolled.json()["to_version"] == 1
    assert registry.alias("champion") == 1
    retried = client.post("/v1/models/rollback", json={"reason": "again", "to_version": 1}, headers=headers)
    assert retried.status_code == 200 and retried.json()["repeat"] is True  # idempotent: no second effect
    refused = client.post("/v1/models/1/promote", json={"reason": "again"}, headers=headers)
    assert refused.status_code == 409 and "already the champion" in refused.json()["detail"]
    audit = platform.store.query("SELECT actor, action, approval, result FROM audit_log ORDER BY rowid")
    assert list(audit["actor"]) == ["api:alice"] * 3
    assert list(audit["action"]) == ["promote_model", "rollback_model", "promote_model"]
    assert set(audit["approval"]) == {"human"}
    assert [json.loads(r)["status"] for r in audit["result"]] == ["applied", "applied", "refused"]
    bad_actor = client.post("/v1/models/rollback", json={"reason": "x"}, headers={**AUTH, "X-Selfheal-Actor": "a b"})
    assert bad_actor.status_code == 400
    unknown_incident = client.post("/v1/models/rollback", json={"reason": "x", "incident_id": "INC-99"}, headers=AUTH)
    assert unknown_incident.status_code == 404
    # An unknown version is a 404, as a GET of it is; it is not an action, so nothing more is audited.
    assert client.get("/v1/models/42").status_code == 404
    unknown_promote = client.post("/v1/models/42/promote", json={"reason": "x"}, headers=AUTH)
    assert unknown_promote.status_code == 404 and "42" in unknown_promote.json()["detail"]
    unknown_rollback = client.post("/v1/models/rollback", json={"reason": "x", "to_version": 42}, headers=AUTH)
    assert unknown_rollback.status_code == 404
    assert len(platform.store.query("SELECT action FROM audit_log")) == 3


def test_responder_endpoints_answer_503_until_a_responder_is_wired(service: tuple[TestClient, Platform]) -> None:
    client, platform = service
    incident = open_incident(platform, 1)
    for path, body in (("approve", {"note": "ok"}), ("deny", {}), ("chat", {"message": "why?"})):
        response = client.post(f"/v1/incidents/{incident}/{path}", json=body, headers=AUTH)
        assert response.status_code == 503 and "responder not available" in response.json()["detail"]
    steps = client.get(f"/v1/incidents/{incident}/steps")
    assert steps.status_code == 503 and "responder not available" in steps.json()["detail"]
    assert client.get("/healthz").json()["responder"] is False


def test_responder_hooks_receive_who_decided_and_why(platform: Platform) -> None:
    decisions: list[Decision] = []
    messages: list[ChatMessage] = []

    def decide(decision: Decision) -> dict[str, Any]:
        decisions.append(decision)
        if decision.decision == "deny" and decision.note == "twice":
            raise ValueError("nothing is waiting for approval")
        return {"status": "resumed", "decision": decision.decision}

    def chat(message: ChatMessage) -> dict[str, Any]:
        messages.append(message)
        return {"answer": f"{message.incident_id}: because"}

    hooks = ServiceHooks(decide=decide, chat=chat, steps=lambda incident: [{"n": 1, "incident": incident}])
    incident = open_incident(platform, 7)
    with TestClient(create_app(platform, ServiceConfig(token=TOKEN), hooks=hooks)) as client:
        headers = {**AUTH, "X-Selfheal-Actor": "bob"}
        approved = client.post("/v1/incidents/7/approve", json={"note": "checked", "action": 0}, headers=headers)
        assert approved.status_code == 200 and approved.json() == {"status": "resumed", "decision": "approve"}
        assert client.post(f"/v1/incidents/{incident}/deny", json={"note": "twice"}, headers=headers).status_code == 409
        unknown = client.post("/v1/incidents/INC-8/approve", json={}, headers=headers)
        assert unknown.status_code == 404 and unknown.json() == {"detail": "no incident 'INC-8'"}
        answer = client.post(f"/v1/incidents/{incident}/chat", json={"message": "why?"}, headers=headers)
        assert answer.json() == {"answer": "INC-7: because"}
        assert client.get("/v1/incidents/inc-7/steps").json() == [{"n": 1, "incident": "INC-7"}]
        assert client.get("/healthz").json()["responder"] is True
    assert decisions == [
        Decision("INC-7", "approve", "api:bob", "checked", 0), Decision("INC-7", "deny", "api:bob", "twice", None)
    ]
    assert messages == [ChatMessage("INC-7", "api:bob", "why?")]


# -- the read API -------------------------------------------------------------------------------------


def test_read_api_serves_incidents_actions_pages_and_reports(service: tuple[TestClient, Platform]) -> None:
    client, platform = service
    incident = open_incident(platform, 3)
    open_incident(platform, 4, status="resolved")
    listed = client.get("/v1/incidents").json()
    assert [i["incident_id"] for i in listed] == ["INC-3", "INC-4"] and "evidence" not in listed[0]
    assert [i["incident_id"] for i in client.get("/v1/incidents", params={"active": True}).json()] == ["INC-3"]
    assert [i["incident_id"] for i in client.get("/v1/incidents", params={"status": "resolved"}).json()] == ["INC-4"]
    detail = client.get("/v1/incidents/3").json()
    assert detail["evidence"]["value"] == 0.4 and detail["timeline"][0]["event"] == "opened"
    assert client.get("/v1/incidents/INC-99").status_code == 404
    assert client.get("/v1/incidents/../../etc").status_code == 404

    client.post("/v1/models/rollback", json={"reason": "x", "to_version": 1, "incident_id": incident}, headers=AUTH)
    actions = client.get(f"/v1/incidents/{incident}/actions").json()
    assert [(a["action"], a["result"]["status"], a["incident_id"]) for a in actions] == [
        ("rollback_model", "refused", "INC-3")]
    assert client.get("/v1/actions", params={"action": "rollback_model"}).json() == actions
    assert client.get("/v1/actions", params={"actor": actions[0]["actor"]}).json() == actions
    assert client.get("/v1/actions", params={"actor": "person:nobody"}).json() == []
    assert client.get(f"/v1/incidents/{incident}/pages").json() == [] and client.get("/v1/pages").json() == []
    record_failed_page(platform, incident)
    assert [(p["channel"], p["status"]) for p in client.get("/v1/pages", params={"incident_id": "3"}).json()] == [
        ("outbox", "recorded"), ("webhook", "failed")]
    (failed,) = client.get("/v1/pages", params={"failed": True}).json()
    assert (failed["incident_id"], failed["channel"], failed["error"]) == (incident, "webhook", "HTTP 503 after 4 attempts")
    assert client.get("/v1/incidents/INC-99/actions").status_code == 404

    missing = client.get(f"/v1/incidents/{incident}/report")
    assert missing.status_code == 404 and "no md report for INC-3" in missing.json()["detail"]
    reports = platform.workspace.reports_dir
    (reports / "INC-3.md").write_text("# INC-3\nfixed\n")
    (reports / "INC-3.html").write_text("<h1>INC-3</h1>")
    markdown = client.get(f"/v1/incidents/{incident}/report")
    assert markdown.status_code == 200 and markdown.text == "# INC-3\nfixed\n"
    assert markdown.headers["content-type"].startswith("text/markdown")
    html = client.get("/v1/incidents/3/report", params={"format": "html"})
    assert html.text == "<h1>INC-3</h1>" and html.headers["content-type"].startswith("text/html")
    assert client.get("/v1/incidents/3/report", params={"format": "pdf"}).status_code == 422


def test_read_api_serves_models_serving_runbooks_and_dead_letters(service: tuple[TestClient, Platform]) -> None:
    client, _ = service
    models = client.get("/v1/models").json()
    assert models["aliases"]["champion"] == 1 and models["models"][0]["aliases"] == ["champion"]
    model = client.get("/v1/models/1").json()
    assert model["integrity"]["ok"] is True and "reference_profile" not in model["metadata"]
    assert model["metadata"]["has_reference_profile"] is True
    assert client.get("/v1/models/42").status_code == 404
    serving = client.get("/v1/serving").json()
    assert serving["champion_version"] == 1 and serving["fallback"] is False
    history = client.get("/v1/serving/history").json()
    assert history[0]["champion_version"] == 1
    runbooks = client.get("/v1/runbooks").json()
    assert "bad_model_deploy" in {r["id"] for r in runbooks}
    runbook = client.get("/v1/runbooks/bad_model_deploy").json()
    assert runbook["id"] == "bad_model_deploy" and runbook["body"]
    assert "did you mean" in client.get("/v1/runbooks/bad_model_deploi").json()["detail"]
    client.post("/v1/score", json={"transaction_id": "dl-1", "amount": 3})
    [dead] = client.get("/v1/dead-letters").json()  # visible at once: the endpoint flushes the buffer
    assert dead["transaction_id"] == "dl-1" and dead["field"] == "timestamp"


# -- health, metrics, OpenAPI -------------------------------------------------------------------------


def test_healthz_says_what_serves(service: tuple[TestClient, Platform]) -> None:
    client, platform = service
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["workspace"] == str(platform.workspace.home)
    assert health["model_version"] == 1 and health["fallback"] is False and health["pid"] == os.getpid()
    assert health["queued_rows"] == 0  # idle: nothing waits for the scorer


def test_metrics_count_what_was_scored(service: tuple[TestClient, Platform], small_world: SmallWorld) -> None:
    client, platform = service
    open_incident(platform, 1)
    open_incident(platform, 2, status="resolved")  # not active: not counted
    record_failed_page(platform, "INC-1")  # counted: its incident is still open
    record_failed_page(platform, "INC-2")
    records = live_records(small_world, 4)
    for record in records[:2]:
        client.post("/v1/score", json=record)
    client.post("/v1/score", json={**records[2], "amount": -1})
    client.post("/v1/score", json=[records[3], {"x": 1}])
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = parse_exposition(response.text)
    decisions = sum(v for (name, _), v in samples.items() if name == "selfheal_decisions_total")
    assert decisions == 3
    assert samples[("selfheal_dead_letters_total", 'field="amount"')] == 1
    assert samples[("selfheal_dead_letters_total", 'field="transaction_id"')] == 1
    assert samples[("selfheal_score_request_duration_seconds_count", 'kind="single"')] == 3
    assert samples[("selfheal_score_request_duration_seconds_count", 'kind="batch"')] == 1
    assert samples[("selfheal_score_request_duration_seconds_bucket", 'kind="single",le="+Inf"')] == 3
    assert samples[("selfheal_score_requests_total", 'kind="single",status="422"')] == 1
    assert samples[("selfheal_fallback_active", "")] == 0
    assert samples[("selfheal_champion_version", "")] == 1
    assert samples[("selfheal_open_incidents", 'status="open"')] == 1
    assert samples[("selfheal_open_incidents", 'status="escalated"')] == 0
    assert samples[("selfheal_pages_unreached", "")] == 1
    assert ("selfheal_agent_runs_total", "") not in samples  # labelled: nothing until the responder counts
    runtime_of(client).metrics.agent_runs.inc(outcome="mitigated")
    assert parse_exposition(client.get("/metrics").text)[("selfheal_agent_runs_total", 'outcome="mitigated"')] == 1


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")


def parse_exposition(text: str) -> dict[tuple[str, str], float]:
    """(name, labels) -> value; fails on any line that is not valid text exposition."""
    samples: dict[tuple[str, str], float] = {}
    typed: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge", "histogram") and name not in typed
            typed.add(name)
            continue
        match = _SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        name, labels, value = match.groups()
        assert name.removesuffix("_bucket").removesuffix("_sum").removesuffix("_count") in typed
        samples[(name, labels or "")] = float(value)
    return samples


def test_exposition_of_counters_and_histograms() -> None:
    counter = Counter("x_total", "help", ("reason",))
    counter.inc(reason='say "hi"\n')
    assert counter.lines()[-1] == 'x_total{reason="say \\"hi\\"\\n"} 1'
    with pytest.raises(ValueError):
        counter.inc(-1, reason="r")
    histogram = Histogram("t_seconds", "help", buckets=(0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 7.0):
        histogram.observe(value)
    assert histogram.lines()[2:] == [
        't_seconds_bucket{le="0.1"} 2', 't_seconds_bucket{le="1"} 3', 't_seconds_bucket{le="+Inf"} 4',
        "t_seconds_sum 7.65", "t_seconds_count 4",
    ]


def test_openapi_documents_scoring_and_the_token(service: tuple[TestClient, Platform]) -> None:
    client, _ = service
    schema = client.get("/openapi.json").json()
    score = schema["paths"]["/v1/score"]["post"]
    body = score["requestBody"]["content"]["application/json"]["schema"]
    assert body["oneOf"][1]["type"] == "array"
    assert {"200", "413", "422", "503"} <= set(score["responses"])
    assert "security" not in score
    for method, path in mutating_routes(client.app):
        operation = schema["paths"][path][method.lower()]
        assert operation["security"] == [{"HTTPBearer": []}], path
        assert "401" in operation["responses"], path
    assert client.get("/docs").status_code == 404  # the docs page would need a CDN


# -- scheduler ----------------------------------------------------------------------------------------


def test_scheduler_runs_due_jobs_and_survives_a_failing_one(service: tuple[TestClient, Platform]) -> None:
    client, _ = service
    runtime = runtime_of(client)
    seen: list[str] = []

    def failing(_runtime: ServiceRuntime) -> None:
        raise RuntimeError("monitor hour failed")

    jobs = [PeriodicJob("hourly", 3600, lambda r: seen.append(str(r.platform.workspace.home))),
            PeriodicJob("broken", 60, failing)]
    scheduler = Scheduler(runtime, jobs)
    assert scheduler.run_due(now=0.0) == ["hourly", "broken"]
    assert scheduler.run_due(now=100.0) == ["broken"]
    assert seen == [str(runtime.platform.workspace.home)]
    assert runtime.metrics.job_runs.value(job="hourly", outcome="ok") == 1
    assert runtime.metrics.job_runs.value(job="broken", outcome="error") == 2


# -- token and discovery ------------------------------------------------------------------------------


def test_token_comes_from_the_environment_or_a_private_file(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path / "ws")
    from_env = resolve_token(workspace, {TOKEN_ENV: " from-env "})
    assert (from_env.value, from_env.kind) == ("from-env", "env") and not token_path(workspace).exists()
    generated = resolve_token(workspace, {})
    assert generated.kind == "generated" and len(generated.value) >= 40
    mode = stat.S_IMODE(token_path(workspace).stat().st_mode)
    assert mode == 0o600
    again = resolve_token(workspace, {})
    assert (again.value, again.kind) == (generated.value, "file")
    with pytest.raises(ValueError):
        resolve_token(workspace, {TOKEN_ENV: "  "})
    config = ServiceConfig.for_workspace(workspace)
    assert config.token.get_secret_value() == generated.value and config.host == "127.0.0.1"
    assert generated.value not in repr(config)


def test_discovery_ignores_missing_and_stale_service_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[httpx.Client] = []

    class CountedClient(httpx.Client):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            opened.append(self)

    monkeypatch.setattr(httpx, "Client", CountedClient)
    workspace = Workspace(tmp_path / "ws").ensure()
    assert read_record(workspace) is None and discover_service(workspace.home) is None
    assert opened == []  # no service file: no HTTP client at all
    write_record(workspace, "http://127.0.0.1:1", "test")
    assert read_record(workspace) is not None  # this process is alive...
    assert discover_service(workspace.home) is None  # ...but nothing answers at that URL
    assert len(opened) == 1 and opened[0].is_closed  # the probe went through the one client, now closed
    stale = json.loads(service_file(workspace).read_text()) | {"pid": 2**22 + 12345}
    service_file(workspace).write_text(json.dumps(stale))
    assert read_record(workspace) is None
    remove_record(workspace)  # not ours (another pid): left alone
    assert service_file(workspace).exists()
    write_record(workspace, "http://127.0.0.1:1", "test")
    remove_record(workspace)
    assert not service_file(workspace).exists()


@pytest.fixture
def wide_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's tables and lines at 200 columns, so a phrase is never cut by a wrap or a cell border."""
    from rich.console import Console

    import selfheal.cli

    monkeypatch.setattr(selfheal.cli, "out", Console(width=200))


def test_cli_reads_the_workspace_file_when_no_service_runs(
    small_world: SmallWorld, tmp_path: Path, wide_cli: None
) -> None:
    home = tmp_path / "workspace"
    shutil.copytree(small_world.template, home)
    with Platform(Workspace(home)) as platform:
        open_incident(platform, 3)
        open_incident(platform, 4)
        record_failed_page(platform, "INC-4")
        at = pd.Timestamp("2018-05-20 11:00").to_pydatetime()
        platform.store.execute(  # INC-4's investigation waits for a person
            "INSERT INTO agent_runs (thread_id, incident_id, attempt, planner, status, started_at, updated_at) "
            "VALUES ('INC-4/1', 'INC-4', 1, 'deterministic', 'waiting_approval', ?, ?)",
            [at, at],
        )
        expected = views.incident_detail(platform, "INC-3")
    runner = CliRunner()
    listed = runner.invoke(cli_app, ["incidents", "list", "--json", "--home", str(home)])
    assert listed.exit_code == 0, listed.output
    assert [(i["incident_id"], i["unreached_pages"]) for i in json.loads(listed.stdout)] == [("INC-3", 0), ("INC-4", 1)]
    table = runner.invoke(cli_app, ["incidents", "list", "--home", str(home)])
    said = " ".join(table.output.split())
    assert "not investigated" in said and "waiting_approval" in said  # INC-3's and INC-4's investigations
    assert "Waiting for your approval: INC-4." in said
    assert "A page reached no one for INC-4" in said
    shown = runner.invoke(cli_app, ["incidents", "show", "3", "--json", "--home", str(home)])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout) == expected  # the document the API serves
    missing = runner.invoke(cli_app, ["incidents", "show", "INC-9", "--home", str(home)])
    assert missing.exit_code == 1 and "no incident 'INC-9'" in missing.output


def test_cli_lists_pages_and_the_deliveries_that_never_got_through(small_world: SmallWorld, tmp_path: Path) -> None:
    home = tmp_path / "workspace"
    shutil.copytree(small_world.template, home)
    with Platform(Workspace(home)) as platform:
        for number in (3, 4):
            record_failed_page(platform, open_incident(platform, number))
    runner = CliRunner()
    failed = runner.invoke(cli_app, ["pages", "list", "--failed", "--json", "--home", str(home)])
    assert failed.exit_code == 0, failed.output
    assert [(p["incident_id"], p["channel"]) for p in json.loads(failed.stdout)] == [("INC-3", "webhook"), ("INC-4", "webhook")]
    one = runner.invoke(cli_app, ["pages", "list", "--incident", "4", "--json", "--home", str(home)])
    assert [(p["channel"], p["status"]) for p in json.loads(one.stdout)] == [("outbox", "recorded"), ("webhook", "failed")]
    table = runner.invoke(cli_app, ["pages", "list", "--failed", "--home", str(home)])
    assert "503" in table.output and "2 deliveries never got through" in table.output  # cells wrap at 80 columns


def test_cli_prints_record_text_as_text(small_world: SmallWorld, tmp_path: Path, wide_cli: None) -> None:
    """Titles and a remote server's error text are data: Rich markup in them (a closing tag that closes
    nothing raised MarkupError) and emoji codes are printed as they are."""
    home = tmp_path / "workspace"
    shutil.copytree(small_world.template, home)
    with Platform(Workspace(home)) as platform:
        open_incident(platform, 3)
        platform.store.execute("UPDATE incidents SET title = 'amount [/] :skull: [link=http://x]y' WHERE incident_id = 'INC-3'")
        outbox = OutboxPager(platform.store)
        page = Page(page_id="p-3", incident_id="INC-3", dedup_key="k-3", summary="s", severity="high")
        outbox.send(page)
        outbox.record(page, Delivery(channel="webhook", ok=False, status=404, error="HTTP 404: no route [/hooks/abc]"))
    runner = CliRunner()
    shown = runner.invoke(cli_app, ["incidents", "show", "INC-3", "--home", str(home)])
    assert shown.exit_code == 0, shown.output
    assert "INC-3 amount [/] :skull: [link=http://x]y" in shown.output
    pages = runner.invoke(cli_app, ["pages", "list", "--failed", "--home", str(home)])
    assert pages.exit_code == 0, pages.output
    assert "no route [/hooks/abc]" in pages.output


def test_client_speaks_the_api(service: tuple[TestClient, Platform], small_world: SmallWorld) -> None:
    client, platform = service
    open_incident(platform, 5)
    def relay(request: httpx.Request) -> httpx.Response:  # the wire between the client and the app
        answer = client.request(request.method, str(request.url), headers=dict(request.headers), content=request.content)
        return httpx.Response(answer.status_code, headers=answer.headers, content=answer.content)

    api = ServiceClient("http://testserver", token=TOKEN, actor="carol", transport=httpx.MockTransport(relay))
    with api:
        assert api.health()["workspace"] == str(platform.workspace.home)
        assert [i["incident_id"] for i in api.incidents()] == ["INC-5"]
        assert api.incident("INC-5")["timeline"][0]["event"] == "opened"
        scored = api.score(live_records(small_world, 1)[0])
        assert scored["model_version"] == 1
        assert api.get("/v1/models")["aliases"]["champion"] == 1
        from selfheal.client import ServiceError

        with pytest.raises(ServiceError) as refused:
            api.promote(1, reason="already champion")
        assert refused.value.status_code == 409
    assert platform.store.query("SELECT actor FROM audit_log")["actor"].tolist() == ["api:carol"]


def test_the_listening_socket_says_tcp_so_responses_are_not_delayed() -> None:
    # asyncio sets TCP_NODELAY only on sockets whose proto is IPPROTO_TCP; without it every answer waited
    # ~40 ms for the client's delayed ACK (measured: /healthz p50 48 ms instead of ~3 ms).
    listener = _listen("127.0.0.1", 0)
    try:
        assert listener.proto == socket.IPPROTO_TCP
        assert listener.getsockname()[0] == "127.0.0.1"
    finally:
        listener.close()


# -- hostile requests (found by an exploratory pass over the service) ---------------------------------


def test_a_lone_surrogate_is_dead_lettered_and_later_rows_are_still_logged(
    service: tuple[TestClient, Platform], small_world: SmallWorld
) -> None:
    """JSON may spell "\\ud800"; no UTF-8 store can hold it. It used to be scored, then every later log
    write failed on its chunk, so rows answered 200 afterwards were never stored."""
    client, platform = service
    first, second, third = live_records(small_world, 3)
    body = json.dumps({**first, "transaction_id": "\ud800"})  # json.dumps escapes it as the client would

    single = client.post("/v1/score", content=body, headers={"content-type": "application/json"})
    batch = client.post(
        "/v1/score", content=json.dumps([second, {**third, "customer_id": "c\udc00"}]),
        headers={"content-type": "application/json"},
    )

    assert single.status_code == 422, single.text
    assert single.json()["detail"][0]["reason"] == "transaction_id is not valid Unicode text (a lone surrogate)"
    rows = batch.json()["results"]
    assert batch.status_code == 200 and [r["status"] for r in rows] == ["scored", "dead_lettered"]
    assert rows[1]["reason"] == "customer_id is not valid Unicode text (a lone surrogate)"
    runtime_of(client).engine.flush()
    assert platform.store.count("predictions") == 1 and platform.store.count("dead_letters") == 2
    payloads = platform.store.query("SELECT payload FROM dead_letters")["payload"].tolist()
    assert any("\\ud800" in p for p in payloads)  # kept, escaped


def test_absurd_numbers_deep_nesting_and_huge_bodies_are_refused_without_a_500(
    platform: Platform, small_world: SmallWorld
) -> None:
    app = create_app(platform, ServiceConfig(token=TOKEN, flush_interval_s=0.05, max_request_bytes=64 * 1024))
    good, other = live_records(small_world, 2)
    huge_amount = json.dumps([good, {**other, "amount": 0}]).replace('"amount": 0', '"amount": ' + "9" * 400)
    with TestClient(app) as client:
        numbers = client.post("/v1/score", content=huge_amount, headers={"content-type": "application/json"})
        nested = client.post("/v1/score", content="[" * 30_000 + "]" * 30_000, headers={"content-type": "application/json"})
        big = client.post("/v1/score", json={**good, "note": "x" * 100_000})

        assert numbers.status_code == 200, numbers.text
        rows = numbers.json()["results"]
        assert rows[0]["status"] == "scored" and rows[1]["reason"] == "amount is infinite"
        assert nested.status_code == 422 and "nested too deeply" in nested.text
        assert big.status_code == 413 and "larger than 65,536 bytes" in big.text
        runtime_of(client).engine.flush()
    assert platform.store.count("predictions") == 1 and platform.store.count("dead_letters") == 1


def test_an_unknown_incident_status_filter_is_a_422(service: tuple[TestClient, Platform]) -> None:
    client, _ = service
    assert client.get("/v1/incidents?status=bogus").status_code == 422
    assert client.get("/v1/incidents?status=open").status_code == 200


def test_filters_on_an_unknown_incident_are_404_and_healthz_answers_head(service: tuple[TestClient, Platform]) -> None:
    client, _ = service
    for path in ("/v1/pages?incident_id=INC-77", "/v1/actions?incident_id=INC-77", "/v1/actions?incident_id=",
                 "/v1/runs?incident_id=INC-77"):  # fmt: skip
        response = client.get(path)
        assert response.status_code == 404 and "no incident" in response.json()["detail"], path
    assert client.head("/healthz").status_code == 200


def test_a_score_body_not_sent_as_json_is_a_415_and_nothing_is_logged(
    service: tuple[TestClient, Platform], small_world: SmallWorld
) -> None:
    """/v1/score needs no token, and a browser posts form, text/plain or untyped bodies cross-site without a
    preflight: a page the user visits could feed their local scorer. Only JSON's media types get in."""
    client, platform = service
    first, second, third = live_records(small_world, 3)
    refused = {
        "text/plain": client.post("/v1/score", content=json.dumps(first), headers={"content-type": "text/plain"}),
        "form": client.post("/v1/score", content=json.dumps(first),
                            headers={"content-type": "application/x-www-form-urlencoded"}),  # curl -d's default
        "none": client.post("/v1/score", content=json.dumps(first)),
        "multipart": client.post("/v1/score", files={"f": ("t.json", json.dumps(first))}),
    }
    with_charset = client.post("/v1/score", content=json.dumps(second),
                               headers={"content-type": "Application/JSON; charset=utf-8"})
    json_suffix = client.post("/v1/score", content=json.dumps(third),
                              headers={"content-type": "application/vnd.selfheal+json"})

    assert {kind: r.status_code for kind, r in refused.items()} == dict.fromkeys(refused, 415)
    assert "Content-Type: application/json" in refused["none"].json()["detail"]
    assert with_charset.status_code == 200 and json_suffix.status_code == 200
    runtime_of(client).engine.flush()
    assert platform.store.count("predictions") == 2 and platform.store.count("dead_letters") == 0


def test_scoring_answers_while_the_log_cannot_be_written_and_healthz_says_so(
    service: tuple[TestClient, Platform], small_world: SmallWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failing disk used to turn every later score request into a 503 for rows already scored (and a
    retry into "already scored"). The rows now wait in the writer; /healthz and /metrics show it."""
    client, platform = service
    records = live_records(small_world, 4)
    disk = FullDisk(platform.store, monkeypatch)
    answers = [client.post("/v1/score", json=records[0]), client.post("/v1/score", json=records[1:])]
    runtime_of(client).engine._forced_flush()  # what the idle timer does: logs the failure, raises nothing

    assert [a.status_code for a in answers] == [200, 200]
    health = client.get("/healthz").json()
    assert health["status"] == "degraded" and "disk full" in health["log"]["last_error"]
    samples = parse_exposition(client.get("/metrics").text)
    assert samples[("selfheal_log_unwritten_chunks", "")] >= 1 and samples[("selfheal_log_write_failures", "")] >= 1
    assert platform.store.count("predictions") == 0
    disk.full = False
    runtime_of(client).engine.flush()
    assert platform.store.count("predictions") == 4
    assert client.get("/healthz").json()["status"] == "ok"


def test_set_aside_log_rows_load_through_the_service_that_owns_the_workspace(
    service: tuple[TestClient, Platform],
) -> None:
    """`selfheal load-spills` cannot open a database the service holds; the service loads them, once."""
    from datetime import datetime

    from store.spill import spill_folder, write_spill_file

    client, platform = service
    folder = spill_folder(platform.store)
    folder.mkdir(parents=True, exist_ok=True)
    when = datetime(2018, 5, 20, 10, 0)
    row = {"transaction_id": "spilled-1", "is_fraud": 1, "label_time": when, "received_at": when}
    write_spill_file(folder / "chunk-test.jsonl", [("labels", row)])
    before = platform.store.count("labels")

    assert client.post("/v1/log-spills/load", json={}).status_code == 401  # a change: token only
    loaded = client.post("/v1/log-spills/load", json={}, headers=AUTH)
    again = client.post("/v1/log-spills/load", json={}, headers=AUTH)

    assert loaded.status_code == 200, loaded.text
    assert loaded.json() == [{"file": "chunk-test.jsonl", "status": "loaded", "rows": {"labels": 1}, "error": None}]
    assert again.json() == []  # moved to log-spill/loaded/: nothing left to load
    assert platform.store.count("labels") == before + 1


# -- status --------------------------------------------------------------------------------------------


def test_status_says_what_serves_and_what_needs_a_person(
    small_world: SmallWorld, tmp_path: Path, wide_cli: None
) -> None:
    """`selfheal status` from the workspace file; the service's /v1/status gives the same document."""
    from datetime import datetime

    from store.spill import spill_folder, write_spill_file

    home = tmp_path / "workspace"
    shutil.copytree(small_world.template, home)
    runner = CliRunner()
    calm = runner.invoke(cli_app, ["status", "--check", "--home", str(home)])
    assert calm.exit_code == 0, calm.output
    assert "model v1" in calm.output and "nothing needs a person" in calm.output

    with Platform(Workspace(home)) as platform:
        records = live_records(small_world, 4)
        platform.scorer.score_batch([*records, {**records[0], "transaction_id": "bad", "amount": -1}])
        platform.serving.quarantine_feature("terminal_risk_7d", 0.1, actor="agent", reason="INC-4")
        platform.serving.update(actor="agent", reason="[bold]feature job broke[/] :skull: (INC-4)\\", fallback=True,
                                fallback_reason="features [x] broken")
        open_incident(platform, 4)
        record_failed_page(platform, "INC-4")
        at = pd.Timestamp("2018-05-20 11:00").to_pydatetime()
        platform.store.execute(
            "INSERT INTO agent_runs (thread_id, incident_id, attempt, planner, status, started_at, updated_at) "
            "VALUES ('INC-4/1', 'INC-4', 1, 'deterministic', 'waiting_approval', ?, ?)",
            [at, at],
        )
        folder = spill_folder(platform.store)
        folder.mkdir(parents=True, exist_ok=True)
        row = {"transaction_id": "s1", "is_fraud": 1, "label_time": datetime(2018, 5, 20), "received_at": at}
        write_spill_file(folder / "chunk-test.jsonl", [("labels", row)])
        expected = views.status(platform)

    assert expected["serving"]["fallback"] is True and expected["serving"]["quarantined_features"] == ["terminal_risk_7d"]
    assert expected["incidents"]["waiting_approval"] == ["INC-4"] and expected["incidents"]["unreached_pages"] == ["INC-4"]
    assert expected["log_spill_files"] == 1 and expected["models"]["champion"] == 1
    assert expected["last_day"] == {"scored": 4, "scored_by_fallback": 0, "dead_letters": 1}  # scored just now
    assert expected["last_scored_at"] is not None
    assert [line.split(":")[0] for line in expected["attention"]] == [
        "the fallback rules score instead of model v1",
        "quarantined features",
        "waiting for approval",
        "a page reached no one",
        "1 scoring-log file(s) set aside in log-spill/ (selfheal load-spills)",
    ]
    as_json = runner.invoke(cli_app, ["status", "--json", "--home", str(home)])
    assert _without_now(json.loads(as_json.stdout)) == _without_now(expected)  # "now": this workspace's real clock
    told = runner.invoke(cli_app, ["status", "--check", "--home", str(home)])
    assert told.exit_code == 2, told.output  # something needs a person
    said = " ".join(told.output.split())
    assert "the fallback rules;" in said and "[bold]feature job broke[/] :skull: (INC-4)\\ " in said  # data, as is
    assert "needs a person: - the fallback rules score instead of model v1: features [x] broken" in said

    with Platform(Workspace(home)) as platform:
        app = create_app(platform, ServiceConfig(token=TOKEN, flush_interval_s=0.05))
        with TestClient(app) as client:
            served = client.get("/v1/status").json()
    assert _without_now(served) == _without_now(expected)


def _without_now(status: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in status.items() if k != "now"}


def test_labels_arrive_through_the_api_applied_or_refused_with_their_reason(
    service: tuple[TestClient, Platform], small_world: SmallWorld
) -> None:
    """A team scoring through the service had no way to send the chargebacks that came in later."""
    client, platform = service
    records = live_records(small_world, 3)
    assert client.post("/v1/score", json=records).status_code == 200
    labels = [
        {"transaction_id": records[0]["transaction_id"], "is_fraud": 1, "label_time": "2018-05-20T10:00:00"},
        {"transaction_id": records[1]["transaction_id"], "is_fraud": "false"},
        {"transaction_id": "never-scored", "is_fraud": True},
        {"transaction_id": records[2]["transaction_id"], "is_fraud": "maybe"},
        "not a label",
    ]
    before = platform.store.count("labels")

    assert client.post("/v1/labels", json=labels).status_code == 401  # labels move what the model sees
    answer = client.post("/v1/labels", json=labels, headers=AUTH)

    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["received"], body["applied"], body["scored"], body["refused"]) == (5, 3, 2, 2)
    assert [(r["row"], r["reason"]) for r in body["refusals"]] == [
        (3, "is_fraud must be 0 or 1 (or true / false)"), (4, "a label is an object with transaction_id and is_fraud")]
    runtime_of(client).engine.flush()
    stored = platform.store.query("SELECT transaction_id, is_fraud, label_time FROM labels ORDER BY is_fraud, transaction_id")
    assert platform.store.count("labels") == before + 3
    assert stored["label_time"].notna().all()  # dated when they arrived where the sender gave no time
