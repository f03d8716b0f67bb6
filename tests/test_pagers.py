"""Pagers: payloads within PagerDuty's and Slack's documented limits, hostile text made inert, and real
HTTP delivery (with retries, and without them where they would be wrong) against a local receiver."""

from __future__ import annotations

import io
import json
import math
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.incidents import Incident
from store import Store
from tools.pagers import (
    PAGERDUTY_SEVERITY,
    ConsolePager,
    Delivery,
    Link,
    OutboxPager,
    Page,
    Pager,
    PagerConfig,
    PagerDutyPager,
    RetryPolicy,
    SlackPager,
    WebhookPager,
    build_pagers,
    dispatch,
    escape,
    pagerduty_dedup_key,
    pagerduty_event,
    slack_message,
)
from tools.pagers.console import render_console
from tools.pagers.pagerduty import (
    DEDUP_KEY_MAX_CHARS,
    EVENT_MAX_BYTES,
    SEVERITIES,
    SUMMARY_MAX_CHARS,
    event_size,
)
from tools.pagers.redelivery import redeliver
from tools.pagers.slack import FIELD_MAX_CHARS, HEADER_MAX_CHARS, SECTION_TEXT_MAX_CHARS

FAST = RetryPolicy(max_attempts=4, initial_wait_s=0.01, max_wait_s=0.05, max_retry_after_s=5, timeout_s=2)
ROUTING_KEY = "R0123456789abcdef0123456789abcde"
HOSTILE = (
    "<!channel> <!here> <@U123> <!subteam^S1|ops> <http://evil.example|click me> &lt;!everyone&gt; *bold*"
)
T0 = datetime(2024, 3, 4, 10, 30)


def make_page(**changes: Any) -> Page:
    values: dict[str, Any] = {
        "page_id": "page-1",
        "incident_id": "INC-7",
        "dedup_key": "model:1|data_quality|terminal_risk_7d",
        "summary": "terminal_risk_7d is null in 38% of rows since 09:00",
        "severity": "high",
        "component": "terminal_risk_7d",
        "group": "model:1",
        "class": "data_quality",
        "custom_details": {"null_rate": 0.38, "threshold": 0.02, "rows": 12_000},
        "links": [Link(href="https://selfheal.example/incidents/INC-7", text="incident report")],
        "body": "*What happened*: the feature job stopped writing.\nQuarantined: yes.",
        "timestamp": T0,
    }
    values.update(changes)
    return Page.model_validate(values)


# -- a local HTTP receiver, scripted per test ------------------------------------------------------


@dataclass
class Reply:
    status: int
    body: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: Any


class Receiver:
    """An HTTP server on 127.0.0.1 that answers each POST with the next scripted reply."""

    def __init__(self) -> None:
        self.script: list[Reply] = []
        self.requests: list[Received] = []
        self.exhausted = False
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length)
                receiver.requests.append(Received(self.path, dict(self.headers), json.loads(raw)))
                if receiver.script:
                    reply = receiver.script.pop(0)
                else:  # fail loudly rather than answer something made up
                    receiver.exhausted = True
                    reply = Reply(418, "script exhausted")
                time.sleep(reply.delay_s)
                payload = reply.body.encode()
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and left

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()
    assert not server.exhausted, "a pager sent more requests than the test scripted"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "pages.duckdb") as opened:
        yield opened


def accepted() -> Reply:
    return Reply(202, '{"status":"success","message":"Event processed","dedup_key":"k"}')


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- the page and PagerDuty's documented limits ----------------------------------------------------


def test_severity_maps_onto_pagerdutys_four() -> None:
    assert PAGERDUTY_SEVERITY == {"low": "info", "medium": "warning", "high": "error", "critical": "critical"}
    assert set(PAGERDUTY_SEVERITY.values()) == set(SEVERITIES)
    for ours, theirs in PAGERDUTY_SEVERITY.items():
        event = pagerduty_event(make_page(severity=ours), ROUTING_KEY)
        assert event["payload"]["severity"] == theirs


def test_trigger_event_has_the_documented_shape() -> None:
    page = make_page()
    event = pagerduty_event(page, ROUTING_KEY)
    assert event["routing_key"] == ROUTING_KEY
    assert event["event_action"] == "trigger"
    assert event["dedup_key"] == "model:1|data_quality|terminal_risk_7d"
    payload = event["payload"]
    assert payload["summary"] == page.summary
    assert payload["source"] == "selfheal"
    assert payload["timestamp"] == "2024-03-04T10:30:00.000Z"
    assert (payload["component"], payload["group"], payload["class"]) == (
        "terminal_risk_7d",
        "model:1",
        "data_quality",
    )
    assert event["links"] == [{"href": "https://selfheal.example/incidents/INC-7", "text": "incident report"}]
    # custom_details round-trip through JSON unchanged, plus who/what we are
    details = json.loads(json.dumps(event))["payload"]["custom_details"]
    assert {k: details[k] for k in page.custom_details} == page.custom_details
    assert details["incident_id"] == "INC-7" and details["selfheal_severity"] == "high"
    assert details["details"] == page.body


def test_summary_is_cut_to_1024_characters_with_a_visible_marker() -> None:
    event = pagerduty_event(make_page(summary="x" * 5000), ROUTING_KEY)
    summary = event["payload"]["summary"]
    assert len(summary) == SUMMARY_MAX_CHARS == 1024
    assert summary.endswith("… [truncated]")
    exact = pagerduty_event(make_page(summary="y" * 1024), ROUTING_KEY)["payload"]["summary"]
    assert exact == "y" * 1024  # at the limit nothing is cut


def test_long_dedup_keys_stay_within_255_and_still_correlate() -> None:
    short = "model:1|data_drift|amount"
    assert pagerduty_dedup_key(short) == short
    long_a, long_b = "k" * 300 + "a", "k" * 300 + "b"
    cut_a = pagerduty_dedup_key(long_a)
    assert len(cut_a) == DEDUP_KEY_MAX_CHARS == 255
    assert cut_a == pagerduty_dedup_key(long_a)  # stable: trigger and resolve agree
    assert cut_a != pagerduty_dedup_key(long_b)  # distinct keys stay distinct
    resolve = pagerduty_event(make_page(dedup_key=long_a, action="resolve"), ROUTING_KEY)
    assert resolve["dedup_key"] == cut_a


def test_acknowledge_and_resolve_carry_only_the_documented_fields() -> None:
    for action in ("acknowledge", "resolve"):
        event = pagerduty_event(make_page(action=action), ROUTING_KEY)
        assert event == {
            "routing_key": ROUTING_KEY,
            "event_action": action,
            "dedup_key": make_page().dedup_key,
        }


def test_oversized_details_are_cut_to_fit_512_kb_as_valid_json() -> None:
    page = make_page(custom_details={"evidence": "z" * 900_000, "nested": {"a": [1, 2, 3]}})
    event = pagerduty_event(page, ROUTING_KEY)
    assert event_size(event) <= EVENT_MAX_BYTES
    details = json.loads(json.dumps(event))["payload"]["custom_details"]
    assert details["truncated"] is True and details["incident_id"] == "INC-7"
    assert "512 KB" in details["note"] and details["excerpt"].endswith("… [truncated]")


def test_page_details_are_normalised_to_plain_json() -> None:
    import numpy as np

    page = make_page(
        custom_details={
            "nan": math.nan,
            "inf": -math.inf,
            "when": T0,
            "np": np.float32(0.5),
            "arr": np.arange(3),
        }
    )
    assert page.custom_details == {
        "nan": None,
        "inf": None,
        "when": "2024-03-04T10:30:00",
        "np": 0.5,
        "arr": [0, 1, 2],
    }
    json.dumps(pagerduty_event(page, ROUTING_KEY), allow_nan=False)  # strict JSON: PagerDuty rejects NaN


def test_page_validation_rejects_what_no_channel_could_send() -> None:
    with pytest.raises(ValueError, match="severity"):
        make_page(severity="sev1")
    with pytest.raises(ValueError, match="action"):
        make_page(action="snooze")
    with pytest.raises(ValueError, match="http"):
        Link(href="javascript:alert(1)", text="x")
    aware = make_page(timestamp=datetime(2024, 3, 4, 12, 30, tzinfo=UTC) + timedelta(hours=0))
    assert aware.timestamp == datetime(2024, 3, 4, 12, 30)  # stored as naive UTC like every other time


def test_page_from_an_incident_carries_its_key_severity_and_evidence() -> None:
    incident = Incident(
        incident_id="INC-3",
        number=3,
        dedup_key="model:2|latency|p99",
        model_version=2,
        kind="latency",
        subject="p99",
        severity="critical",
        status="escalated",
        title="p99 latency 480 ms > 50 ms",
        opened_at=T0,
        updated_at=T0,
        closed_at=None,
        first_breach_at=T0,
        evidence={"value": 480.0, "threshold": 50.0},
        root_cause="slow_model_deploy",
    )
    page = Page.from_incident(incident, body="rollback failed verification", timestamp=T0)
    assert (page.dedup_key, page.severity, page.class_, page.component, page.group) == (
        "model:2|latency|p99",
        "critical",
        "latency",
        "p99",
        "model:2",
    )
    assert page.summary == incident.title
    assert page.custom_details["evidence"] == {"value": 480.0, "threshold": 50.0}
    assert page.custom_details["root_cause"] == "slow_model_deploy"
    assert pagerduty_event(page, ROUTING_KEY)["payload"]["severity"] == "critical"


# -- Slack: hostile text is inert ------------------------------------------------------------------


def _texts(message: dict[str, Any]) -> list[str]:
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "text" and isinstance(value, str):
                    found.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(message)
    return found


def test_slack_message_escapes_mentions_and_disguised_links() -> None:
    page = make_page(
        summary=f"drift on {HOSTILE}",
        body=f"merchant_name contained {HOSTILE}",
        component=HOSTILE,
        links=[Link(href="https://selfheal.example/r?a=1|<!channel>", text=HOSTILE)],
    )
    message = slack_message(page)
    raw = json.dumps(message)
    for control in ("<!channel>", "<!here>", "<@U123>", "<!subteam", "<http://evil", "<!everyone"):
        assert control not in raw
    assert "&lt;!channel&gt;" in message["text"]
    assert "&amp;lt;!everyone&amp;gt;" in message["text"]  # already-escaped data stays literal
    assert message["link_names"] is False and message["unfurl_links"] is False
    # the only `<` in the whole message opens the one link we built, with its `|` percent-encoded
    link_text = next(t for t in _texts(message) if t.startswith("• <"))
    assert link_text.startswith("• <https://selfheal.example/r?a=1%7C%3C!channel%3E|&lt;!channel&gt;")
    assert sum(t.count("<") for t in _texts(message)) == 1


def test_slack_message_respects_block_kit_limits() -> None:
    page = make_page(summary="<" * 400, body="&" * 10_000, dedup_key="k" * 5000)
    message = slack_message(page)
    header, fields = message["blocks"][0], message["blocks"][1]["fields"]
    assert header["type"] == "header" and len(header["text"]["text"]) <= HEADER_MAX_CHARS
    assert header["text"]["text"].endswith("… [truncated]")
    assert len(fields) <= 10 and all(len(f["text"]) <= FIELD_MAX_CHARS for f in fields)
    sections = [b for b in message["blocks"] if b["type"] == "section" and "text" in b]
    assert all(len(b["text"]["text"]) <= SECTION_TEXT_MAX_CHARS for b in sections)
    body = sections[0]["text"]["text"]
    assert body.startswith("&amp;&amp;") and "&am…" not in body  # never cut inside an entity
    assert message["blocks"][-1]["type"] == "context"


@settings(max_examples=150, deadline=None)
@given(st.text(min_size=1, max_size=400))
def test_any_text_in_a_slack_message_is_escaped(text: str) -> None:
    message = slack_message(make_page(summary=text, body=text, source=text or "s", links=[]))
    for value in _texts(message):
        assert "<" not in value and ">" not in value
    unescaped = escape(text).replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    assert unescaped == text


@settings(max_examples=100, deadline=None)
@given(summary=st.text(min_size=1, max_size=3000), key=st.text(min_size=1, max_size=600))
def test_any_pagerduty_event_is_within_limits(summary: str, key: str) -> None:
    event = pagerduty_event(make_page(summary=summary, dedup_key=key), ROUTING_KEY)
    assert len(event["payload"]["summary"]) <= SUMMARY_MAX_CHARS
    assert len(event["dedup_key"]) <= DEDUP_KEY_MAX_CHARS
    assert event["payload"]["severity"] in SEVERITIES
    json.dumps(event, allow_nan=False)


def test_console_rendering_neutralises_terminal_escapes() -> None:
    stream = io.StringIO()
    delivery = ConsolePager(stream).send(make_page(summary="ok \x1b[2J\x1b]0;pwned\x07 \u202etxt.exe"))
    assert delivery.ok and delivery.channel == "console"
    printed = stream.getvalue()
    assert "\x1b" not in printed and "\x07" not in printed and "\u202e" not in printed
    assert "INC-7" in printed and "incident report: https://selfheal.example/incidents/INC-7" in printed
    assert printed == render_console(make_page(summary="ok ?[2J?]0;pwned? ?txt.exe"))


# -- delivery over real HTTP -----------------------------------------------------------------------


def pagerduty(receiver: Receiver, policy: RetryPolicy = FAST) -> PagerDutyPager:
    return PagerDutyPager(ROUTING_KEY, url=f"{receiver.url}/v2/enqueue", policy=policy)


def test_pagerduty_accepted_first_time(receiver: Receiver) -> None:
    receiver.script = [accepted()]
    delivery = pagerduty(receiver).send(make_page())
    assert delivery == Delivery(
        channel="pagerduty",
        ok=True,
        status=202,
        attempts=1,
        response_excerpt='{"status":"success","message":"Event processed","dedup_key":"k"}',
    )
    (request,) = receiver.requests
    assert request.path == "/v2/enqueue" and request.headers["Content-Type"] == "application/json"
    assert request.body == pagerduty_event(make_page(), ROUTING_KEY)


def test_429_then_202_is_delivered_on_the_second_attempt(receiver: Receiver) -> None:
    receiver.script = [Reply(429, '{"status":"throttled"}', {"Retry-After": "0"}), accepted()]
    delivery = pagerduty(receiver).send(make_page())
    assert (delivery.ok, delivery.status, delivery.attempts) == (True, 202, 2)
    assert len(receiver.requests) == 2 and receiver.requests[0].body == receiver.requests[1].body


def test_500_500_202_is_delivered_on_the_third_attempt(receiver: Receiver) -> None:
    receiver.script = [Reply(500, "oops"), Reply(502, "bad gateway"), accepted()]
    delivery = pagerduty(receiver).send(make_page())
    assert (delivery.ok, delivery.status, delivery.attempts) == (True, 202, 3)


def test_400_is_not_retried_and_the_error_is_recorded(receiver: Receiver, store: Store) -> None:
    body = '{"status":"invalid event","message":"Event object is invalid","errors":["Length of summary"]}'
    receiver.script = [Reply(400, body)]
    deliveries = dispatch(make_page(), [OutboxPager(store), pagerduty(receiver)])
    remote = deliveries[-1]
    assert (remote.ok, remote.status, remote.attempts) == (False, 400, 1)
    assert (
        remote.error == "HTTP 400 (final: not retried)"
        and "Event object is invalid" in remote.response_excerpt
    )
    assert len(receiver.requests) == 1
    failed = OutboxPager(store).failed_deliveries()
    assert [(r.channel, r.status, r.attempts) for r in failed] == [("pagerduty", "failed", 1)]
    assert "HTTP 400" in (failed[0].error or "") and "Event object is invalid" in (failed[0].error or "")


def test_persistent_5xx_stops_after_the_configured_attempts(receiver: Receiver) -> None:
    receiver.script = [Reply(503, "down")] * 3
    delivery = pagerduty(receiver, FAST.model_copy(update={"max_attempts": 3})).send(make_page())
    assert (delivery.ok, delivery.status, delivery.attempts) == (False, 503, 3)
    assert delivery.error == "HTTP 503 after 3 attempts"


def test_retry_after_is_honoured_when_short_and_not_waited_when_long(receiver: Receiver) -> None:
    waits: list[float] = []
    receiver.script = [Reply(429, "", {"Retry-After": "2"}), accepted()]
    pager = PagerDutyPager(ROUTING_KEY, url=receiver.url, policy=FAST, sleep=waits.append)
    assert pager.send(make_page()).attempts == 2
    assert waits == [2.0]

    waits.clear()
    receiver.script = [Reply(429, "", {"Retry-After": "3600"})]
    delivery = pager.send(make_page())
    assert (delivery.ok, delivery.attempts, waits) == (False, 1, [])
    assert "retry after 3600s" in (delivery.error or "")


def test_a_timeout_is_retried(receiver: Receiver) -> None:
    receiver.script = [Reply(202, "late", delay_s=0.6), accepted()]
    policy = FAST.model_copy(update={"timeout_s": 0.2})
    delivery = pagerduty(receiver, policy).send(make_page())
    assert (delivery.ok, delivery.attempts) == (True, 2)


def test_connection_refused_is_recorded_in_the_outbox_without_crashing(store: Store) -> None:
    dead = f"http://127.0.0.1:{free_port()}/hooks/T000/B000/secret-token"
    config = PagerConfig(
        pagerduty_routing_key=ROUTING_KEY,  # type: ignore[arg-type]  # pydantic wraps it in SecretStr
        pagerduty_url=dead,
        slack_webhook_url=dead,  # type: ignore[arg-type]
        console=False,
        retry=FAST.model_copy(update={"max_attempts": 2}),
    )
    deliveries = dispatch(make_page(), build_pagers(config, store))
    assert [(d.channel, d.ok, d.attempts) for d in deliveries] == [
        ("outbox", True, 0),
        ("pagerduty", False, 2),
        ("slack", False, 2),
    ]
    assert all("ConnectError" in (d.error or "") for d in deliveries[1:])
    assert all("secret-token" not in (d.error or "") for d in deliveries)  # the URL is the credential
    rows = OutboxPager(store).rows(incident_id="INC-7")
    assert [(r.channel, r.status) for r in rows] == [
        ("outbox", "recorded"),
        ("pagerduty", "failed"),
        ("slack", "failed"),
    ]
    assert rows[0].page() == make_page()  # the whole page survives, ready to resend


def test_nothing_is_sent_unless_configured(
    receiver: Receiver, store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    # An endpoint alone is not a configuration: without a routing key PagerDuty is never contacted.
    env = {"SELFHEAL_PAGERDUTY_URL": f"{receiver.url}/v2/enqueue", "SELFHEAL_SLACK_WEBHOOK_URL": "  "}
    config = PagerConfig.from_env(env)
    assert config.channels == []
    pagers = build_pagers(config, store)
    assert [p.name for p in pagers] == ["outbox", "console"]
    deliveries = dispatch(make_page(), pagers)
    assert all(d.ok for d in deliveries)
    assert receiver.requests == []
    assert "=== PAGE TRIGGER [HIGH] INC-7 ===" in capsys.readouterr().err
    assert [(r.channel, r.status) for r in OutboxPager(store).rows()] == [
        ("outbox", "recorded"),
        ("console", "delivered"),
    ]


def test_every_configured_channel_delivers_and_is_recorded(receiver: Receiver, store: Store) -> None:
    receiver.script = [accepted(), Reply(200, "ok"), Reply(200, "")]
    env = {
        "SELFHEAL_PAGERDUTY_ROUTING_KEY": ROUTING_KEY,
        "SELFHEAL_PAGERDUTY_URL": f"{receiver.url}/v2/enqueue",
        "SELFHEAL_SLACK_WEBHOOK_URL": f"{receiver.url}/services/T0/B0/x",
        "SELFHEAL_WEBHOOK_URL": f"{receiver.url}/hook",
    }
    config = PagerConfig.from_env(env, console=False, retry=FAST)
    assert config.channels == ["pagerduty", "slack", "webhook"]
    assert ROUTING_KEY not in repr(config) and "/services/" not in repr(config)
    clock = iter([T0 + timedelta(seconds=i) for i in range(10)])
    page = make_page(summary=f"fraud alerts dropped {HOSTILE}")
    deliveries = dispatch(page, build_pagers(config, store, clock=lambda: next(clock)))
    assert [(d.channel, d.ok, d.status) for d in deliveries] == [
        ("outbox", True, None),
        ("pagerduty", True, 202),
        ("slack", True, 200),
        ("webhook", True, 200),
    ]
    by_path = {r.path: r.body for r in receiver.requests}
    assert by_path["/v2/enqueue"]["routing_key"] == ROUTING_KEY
    assert "<!channel>" not in json.dumps(by_path["/services/T0/B0/x"])
    hook = by_path["/hook"]
    assert hook.pop("schema") == "selfheal.page/v1" and Page.model_validate(hook) == page
    rows = OutboxPager(store).rows(page_id=page.page_id)
    assert [(r.channel, r.status, r.recorded_at) for r in rows] == [
        ("outbox", "recorded", T0),
        ("pagerduty", "delivered", T0 + timedelta(seconds=1)),
        ("slack", "delivered", T0 + timedelta(seconds=2)),
        ("webhook", "delivered", T0 + timedelta(seconds=3)),
    ]
    assert OutboxPager(store).failed_deliveries() == []


def test_slack_rejection_is_final_and_a_later_success_clears_it(receiver: Receiver, store: Store) -> None:
    receiver.script = [Reply(400, "invalid_payload"), Reply(200, "ok")]
    pagers: list[Pager] = [OutboxPager(store), SlackPager(f"{receiver.url}/services/x", policy=FAST)]
    first = dispatch(make_page(), pagers)[-1]
    assert (first.ok, first.attempts, first.response_excerpt) == (False, 1, "invalid_payload")
    assert [r.channel for r in OutboxPager(store).failed_deliveries()] == ["slack"]
    assert dispatch(make_page(), pagers)[-1].ok  # resent: the same page id, now delivered
    assert OutboxPager(store).failed_deliveries() == []


class _BrokenPager:
    name = "broken"

    def send(self, page: Page) -> Delivery:
        raise RuntimeError("renderer bug")


def test_a_raising_pager_does_not_silence_the_others(
    receiver: Receiver, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.script = [Reply(204)]
    deliveries = dispatch(
        make_page(), [OutboxPager(store), _BrokenPager(), WebhookPager(receiver.url, policy=FAST)]
    )
    assert [(d.channel, d.ok) for d in deliveries] == [("outbox", True), ("broken", False), ("webhook", True)]
    assert deliveries[1].error == "pager raised RuntimeError: renderer bug"
    assert "renderer bug" in caplog.text
    assert [r.channel for r in OutboxPager(store).failed_deliveries()] == ["broken"]


def test_the_outbox_survives_a_reopen_and_exports_by_time(tmp_path: Path) -> None:
    path = tmp_path / "durable.duckdb"
    with Store(path) as first:
        assert first.schema_version() >= 3 and "pages" in first.tables()
        OutboxPager(first, clock=lambda: T0).send(make_page())
    with Store(path) as reopened:
        (row,) = OutboxPager(reopened).rows()
        assert (row.page_id, row.status, row.severity, row.dedup_key) == (
            "page-1",
            "recorded",
            "high",
            "model:1|data_quality|terminal_risk_7d",
        )
        out = tmp_path / "pages.parquet"
        assert reopened.export("pages", out, since=T0, until=T0 + timedelta(seconds=1)) == 1
        assert reopened.export("pages", tmp_path / "none.parquet", since=T0 + timedelta(seconds=1)) == 0


# -- redelivery of pages that never reached a channel ---------------------------------------------


class _Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def _failed_then(store: Store, receiver: Receiver, first: list[Reply], page: Page | None = None) -> tuple[OutboxPager, Pager, _Clock]:
    """``page`` dispatched to a webhook that answers ``first``; returns the outbox, the pager and its clock."""
    clock = _Clock(T0)
    outbox = OutboxPager(store, clock=clock)
    hook = WebhookPager(f"{receiver.url}/hook", policy=FAST.model_copy(update={"max_attempts": len(first)}))
    receiver.script = list(first)
    assert not dispatch(page or make_page(), [outbox, hook])[-1].ok
    return outbox, hook, clock


def test_a_failed_page_is_sent_again_an_hour_later_and_then_counts_as_delivered(
    receiver: Receiver, store: Store
) -> None:
    outbox, hook, clock = _failed_then(store, receiver, [Reply(503, "down"), Reply(503, "down")])
    clock.now = T0 + timedelta(minutes=30)
    (early,) = redeliver(outbox, [outbox, hook], now=clock.now)
    assert early.delivery is None and early.skipped == "failed less than an hour ago"
    assert len(receiver.requests) == 2  # nothing sent

    receiver.script = [Reply(200, "ok")]
    clock.now = T0 + timedelta(hours=1)
    (resent,) = redeliver(outbox, [outbox, hook], now=clock.now)
    assert resent.delivery is not None and resent.delivery.ok and resent.channel == "webhook"
    assert receiver.requests[-1].body == receiver.requests[0].body  # the same page, byte for byte
    assert [(r.channel, r.status) for r in outbox.rows()] == [
        ("outbox", "recorded"),
        ("webhook", "failed"),
        ("webhook", "delivered"),
    ]
    assert outbox.failed_deliveries() == [] and redeliver(outbox, [outbox, hook], now=clock.now) == []


def test_what_is_not_sent_again(receiver: Receiver, store: Store) -> None:
    # Refused as final: the same bytes would get the same answer.
    outbox, hook, clock = _failed_then(store, receiver, [Reply(400, "invalid")])
    clock.now = T0 + timedelta(hours=2)
    (refused,) = redeliver(outbox, [outbox, hook], now=clock.now)
    assert refused.skipped == "refused as final by the channel"
    # The channel is no longer configured.
    store.execute("DELETE FROM pages")
    outbox, hook, clock = _failed_then(store, receiver, [Reply(503, "down")])
    clock.now = T0 + timedelta(hours=2)
    (gone,) = redeliver(outbox, [outbox], now=clock.now)
    assert gone.skipped == "channel webhook is no longer configured"
    # A day later nobody needs the page: it stays listed as failed.
    (late,) = redeliver(outbox, [outbox, hook], now=T0 + timedelta(days=1, minutes=1))
    assert late.skipped == "older than a day: left as failed" and len(outbox.failed_deliveries()) == 1
    # The incident was resolved since: re-sending the trigger would page someone about nothing.
    resolve = make_page(page_id="page-2", action="resolve", summary="resolved", timestamp=T0 + timedelta(hours=1))
    clock.now = T0 + timedelta(hours=1)
    receiver.script = [Reply(503, "down")]
    dispatch(resolve, [outbox, hook])
    clock.now = T0 + timedelta(hours=3)
    looked_at = {r.page_id: r.skipped for r in redeliver(outbox, [outbox, hook], now=clock.now)}
    # ... and its resolve is not sent either: the trigger never reached the webhook.
    assert looked_at == {"page-1": "the incident was resolved since", "page-2": "its trigger never reached webhook"}
    assert len(receiver.requests) == 3  # the three first attempts; nothing was sent again


def test_the_hourly_loop_sends_failed_pages_again(receiver: Receiver, store: Store) -> None:
    from types import SimpleNamespace

    from agent.autopilot import Autopilot

    outbox, hook, clock = _failed_then(store, receiver, [Reply(503, "down")])
    receiver.script = [Reply(200, "ok")]
    clock.now = T0 + timedelta(hours=1)
    runtime = SimpleNamespace(store=store, clock=clock, pagers=[outbox, hook])
    responder = SimpleNamespace(runtime=runtime, wake_due=lambda end: [])
    monitor = SimpleNamespace(run_hour=lambda start: SimpleNamespace(changes=[]))
    events = Autopilot(monitor, responder).after_hour(clock.now)  # type: ignore[arg-type]
    assert [(e.what, e.incident_id, e.detail) for e in events] == [("redelivered", "INC-7", "webhook: ok")]
    assert outbox.failed_deliveries() == []


# -- pages that reached no one -----------------------------------------------------------------------


def _incident(store: Store, incident_id: str, status: str = "open") -> None:
    """A bare incidents row: enough for the outbox to tell open incidents from resolved ones."""
    number = int(incident_id.split("-")[1])
    store.execute(
        "INSERT INTO incidents (incident_id, number, dedup_key, kind, subject, severity, status, title,"
        " opened_at, updated_at, first_breach_at, evidence) VALUES (?, ?, ?, 'data_quality', 'f', 'high', ?,"
        " 't', ?, ?, ?, '{}')",
        [incident_id, number, f"key-{number}", status, T0, T0, T0],
    )


def test_a_page_that_reached_no_one_is_counted_until_delivered_or_resolved(
    receiver: Receiver, store: Store
) -> None:
    for incident_id in ("INC-7", "INC-8", "INC-9"):
        _incident(store, incident_id)
    clock = _Clock(T0)
    outbox = OutboxPager(store, clock=clock)
    console = ConsolePager(io.StringIO())
    hook = WebhookPager(f"{receiver.url}/hook", policy=FAST.model_copy(update={"max_attempts": 1}))
    receiver.script = [Reply(503, "down"), Reply(503, "down")]
    # The webhook failed; the console printed it, but a process's stderr is no page when a remote
    # channel is configured.
    dispatch(make_page(), [outbox, console, hook])
    # Only the console was configured: that is where pages go (the demo, a terminal).
    dispatch(make_page(page_id="page-2", incident_id="INC-8"), [outbox, console])
    # Only the outbox: no channel to reach.
    dispatch(make_page(page_id="page-3", incident_id="INC-8"), [outbox])
    # A broken remote channel alone reached no one either.
    dispatch(make_page(page_id="page-4", incident_id="INC-8"), [outbox, _BrokenPager()])
    # A page of an incident that is then resolved.
    dispatch(make_page(page_id="page-5", incident_id="INC-9"), [outbox, hook])
    assert outbox.unreached_pages() == {"INC-7": 1, "INC-8": 1, "INC-9": 1}

    store.execute("UPDATE incidents SET status = 'resolved' WHERE incident_id = 'INC-9'")
    assert outbox.unreached_pages() == {"INC-7": 1, "INC-8": 1}

    receiver.script = [Reply(200, "ok"), Reply(200, "ok")]  # page-1 and page-5 (its incident has no resolve page)
    clock.now = T0 + timedelta(hours=1)
    looked_at = redeliver(outbox, [outbox, console, hook], now=clock.now)
    assert {r.page_id: r.delivery.ok for r in looked_at if r.delivery is not None} == {"page-1": True, "page-5": True}
    assert outbox.unreached_pages() == {"INC-8": 1}


def test_only_triggers_of_the_current_episode_count_as_unreached(receiver: Receiver, store: Store) -> None:
    """A failed resolve page asks no one to act; a trigger sent before the incident's latest resolve belongs to
    an episode that is over (the incident reopened since). A console that fails, alone, reached no one."""
    _incident(store, "INC-7")
    clock = _Clock(T0)
    outbox = OutboxPager(store, clock=clock)
    hook = WebhookPager(f"{receiver.url}/hook", policy=FAST.model_copy(update={"max_attempts": 1}))
    receiver.script = [Reply(503, "down")] * 3
    dispatch(make_page(page_id="first"), [outbox, hook])  # episode 1: its trigger fails ...
    clock.now = T0 + timedelta(hours=2)
    dispatch(make_page(page_id="over", action="resolve", timestamp=clock.now), [outbox, hook])  # ... so does its resolve
    assert outbox.unreached_pages() == {}  # reopened, but nothing of the new episode was paged yet
    clock.now = T0 + timedelta(hours=5)
    dispatch(make_page(page_id="second", timestamp=clock.now), [outbox, hook])  # episode 2: fails too
    assert outbox.unreached_pages() == {"INC-7": 1}

    closed = io.StringIO()
    closed.close()  # writing to it raises: the console failed
    dispatch(make_page(page_id="third", timestamp=clock.now), [outbox, ConsolePager(closed)])
    assert outbox.unreached_pages() == {"INC-7": 2}


def test_a_reopened_incident_keeps_its_new_alert(receiver: Receiver, store: Store) -> None:
    """Episode 1 paged and its resolve failed; the incident reopened and the new trigger failed too. The
    hourly loop resends the new trigger but not the old resolve (same dedup key: it would close the new
    alert), and retrying the old resolve never hides the new trigger from `unreached_pages`."""
    _incident(store, "INC-7")
    clock = _Clock(T0)
    outbox = OutboxPager(store, clock=clock)
    hook = WebhookPager(f"{receiver.url}/hook", policy=FAST.model_copy(update={"max_attempts": 1}))
    receiver.script = [Reply(200, "ok"), Reply(503, "down"), Reply(503, "down")]
    dispatch(make_page(page_id="first"), [outbox, hook])
    clock.now = T0 + timedelta(hours=2)
    dispatch(make_page(page_id="over", action="resolve", timestamp=clock.now), [outbox, hook])
    clock.now = T0 + timedelta(hours=3)
    dispatch(make_page(page_id="second", timestamp=clock.now), [outbox, hook])
    assert outbox.unreached_pages() == {"INC-7": 1}

    receiver.script = [Reply(503, "still down")]  # only the new trigger is sent again
    clock.now = T0 + timedelta(hours=4, minutes=1)
    looked_at = {r.page_id: r.skipped or "sent" for r in redeliver(outbox, [outbox, hook], now=clock.now)}
    assert looked_at == {"over": "the incident was paged again since", "second": "sent"}
    assert len(receiver.requests) == 4
    assert outbox.unreached_pages() == {"INC-7": 1}
