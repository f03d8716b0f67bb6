"""PagerDuty Events API v2: trigger, acknowledge and resolve alerts keyed by the incident's dedup key.

The payload follows PagerDuty's "Send an Alert Event" reference and stays inside its documented limits:

| limit | value | what we do |
|---|---|---|
| `payload.summary` | 1024 characters | cut, ending with a visible "… [truncated]" |
| `dedup_key` | 255 characters | longer keys keep a prefix plus a hash of the whole key, so trigger, acknowledge and resolve still correlate |
| `payload.severity` | critical, error, warning, info | our low/medium/high/critical map onto info/warning/error/critical |
| `event_action` | trigger, acknowledge, resolve | the page's action |
| whole event | 512 KB | oversized `custom_details` are replaced by a valid-JSON excerpt that says so |

Responses (same reference): 202 accepted; 400 invalid event, never retried; 429 and 5xx retried after a
while (see `tools.pagers.transport`). Acknowledge and resolve events carry only the routing key, the dedup
key and the action, as in the reference's examples.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from typing import Any, Final

import httpx

from tools.pagers.base import Delivery, Page, truncate
from tools.pagers.transport import RetryPolicy, post_json

DEFAULT_EVENTS_URL: Final = "https://events.pagerduty.com/v2/enqueue"
SUMMARY_MAX_CHARS: Final = 1024
DEDUP_KEY_MAX_CHARS: Final = 255
EVENT_MAX_BYTES: Final = 512 * 1024
SEVERITIES: Final = ("critical", "error", "warning", "info")
EVENT_ACTIONS: Final = ("trigger", "acknowledge", "resolve")
CLIENT_NAME: Final = "selfheal"


class PagerDutyPager:
    """Sends pages to one PagerDuty service (one routing key)."""

    name = "pagerduty"

    def __init__(
        self,
        routing_key: str,
        *,
        url: str = DEFAULT_EVENTS_URL,
        policy: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not routing_key:
            raise ValueError("a PagerDuty pager needs a routing key")
        self._routing_key = routing_key
        self.url = url
        self.policy = policy or RetryPolicy()
        self._transport = transport
        self._sleep = sleep

    def __repr__(self) -> str:  # the routing key is a credential: keep it out of logs
        return f"PagerDutyPager(url={self.url!r})"

    def send(self, page: Page) -> Delivery:
        event = pagerduty_event(page, self._routing_key)
        return post_json(
            self.name, self.url, event, self.policy, transport=self._transport, sleep=self._sleep
        )


def pagerduty_event(page: Page, routing_key: str) -> dict[str, Any]:
    """The Events API v2 body for `page`, within PagerDuty's documented limits."""
    event: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": page.action,
        "dedup_key": pagerduty_dedup_key(page.dedup_key),
    }
    if page.action != "trigger":
        return event
    details = {
        **page.custom_details,
        "incident_id": page.incident_id,
        "selfheal_severity": page.severity,
        "page_id": page.page_id,
    }
    if page.body:
        details["details"] = page.body
    payload: dict[str, Any] = {
        "summary": truncate(page.summary, SUMMARY_MAX_CHARS),
        "source": page.source,
        "severity": page.pagerduty_severity,
        "timestamp": page.timestamp.isoformat(timespec="milliseconds") + "Z",
        "custom_details": details,
    }
    for key, value in (("component", page.component), ("group", page.group), ("class", page.class_)):
        if value:
            payload[key] = value
    event["payload"] = payload
    if page.links:
        event["links"] = [{"href": link.href, "text": link.text} for link in page.links]
    event["client"] = CLIENT_NAME
    return _within_size(event)


def pagerduty_dedup_key(key: str) -> str:
    """`key` if it fits in 255 characters, else a prefix plus a hash of the whole key (stable, unique)."""
    if len(key) <= DEDUP_KEY_MAX_CHARS:
        return key
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return f"{key[: DEDUP_KEY_MAX_CHARS - len(digest) - 1]}#{digest}"


def event_size(event: dict[str, Any]) -> int:
    """Bytes of the event as sent (compact UTF-8 JSON, as httpx encodes it)."""
    return len(json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode())


def _within_size(event: dict[str, Any]) -> dict[str, Any]:
    # Leave room for HTTP framing differences; PagerDuty counts the body.
    budget = EVENT_MAX_BYTES - 1024
    if event_size(event) <= budget:
        return event
    payload = event["payload"]
    details_text = json.dumps(payload["custom_details"], ensure_ascii=False)
    keep = len(details_text)
    while keep > 0:
        keep //= 2
        payload["custom_details"] = {
            "truncated": True,
            "note": "custom_details exceeded PagerDuty's 512 KB event limit; "
            "the full page is in the selfheal outbox (table pages)",
            "incident_id": payload["custom_details"].get("incident_id"),
            "page_id": payload["custom_details"].get("page_id"),
            "excerpt": truncate(details_text, keep),
        }
        if event_size(event) <= budget:
            return event
    event.pop("links", None)  # only links could still be too big: they are the least useful part
    return event
