"""POST a JSON payload with bounded retries: the HTTP part every remote pager shares.

What is retried follows PagerDuty's documented retry table (Events API v2 overview), which is also what
Slack and ordinary webhooks mean by their codes: network errors, timeouts, 429 and 5xx are retried with
short exponential backoff and a bounded number of attempts; every other status is final. A 400 says the
payload is wrong and will be just as wrong the next time, so it is never retried. A `Retry-After` header is
honoured when it is short; when the server asks for longer than `max_retry_after_s` we stop and report,
because the page is safe in the outbox and a responder should not block for minutes.

Error texts never contain the URL: a Slack webhook URL is itself the secret.
"""

from __future__ import annotations

import functools
import ssl
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field
from tenacity import RetryCallState, Retrying, retry_if_exception_type, wait_exponential, wait_random

from tools.pagers.base import Delivery

RESPONSE_EXCERPT_CHARS = 500
FINAL_MARKER = "(final: not retried)"  # in a delivery's error: the channel refused this page for good


class RetryPolicy(BaseModel):
    """How hard a remote pager tries before it gives up (the page stays in the outbox either way)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_attempts: int = Field(4, ge=1, le=10, description="requests per page, the first included")
    initial_wait_s: float = Field(0.5, ge=0, description="backoff before the second attempt")
    max_wait_s: float = Field(8.0, ge=0, description="cap on any one backoff")
    max_retry_after_s: float = Field(30.0, ge=0, description="longest Retry-After we are willing to wait")
    timeout_s: float = Field(10.0, gt=0, description="connect/read/write timeout of one request")


class _RetryableStatus(Exception):
    """A 429 or 5xx response: worth another try."""

    def __init__(self, response: httpx.Response, retry_after: float | None) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.response = response
        self.retry_after = retry_after


def post_json(
    channel: str,
    url: str,
    payload: Mapping[str, Any],
    policy: RetryPolicy,
    *,
    transport: httpx.BaseTransport | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Delivery:
    """POST `payload` as JSON to `url` and report what happened; never raises for delivery failures.

    Args:
        channel: The pager's name, recorded in the delivery.
        url: Where to POST.
        payload: A JSON-able mapping.
        policy: Attempts, waits and timeouts.
        transport: An httpx transport to use instead of the network (tests, proxies).
        sleep: How to wait between attempts.
    """
    attempts = 0

    def attempt(client: httpx.Client) -> httpx.Response:
        nonlocal attempts
        attempts += 1
        response = client.post(url, json=payload)
        if response.status_code == 429 or response.status_code >= 500:
            raise _RetryableStatus(response, retry_after_seconds(response.headers))
        return response

    retrying = Retrying(
        stop=lambda state: _should_stop(state, policy),
        wait=_waiter(policy),
        retry=retry_if_exception_type((httpx.TransportError, _RetryableStatus)),
        sleep=sleep,
        reraise=True,
    )
    # Redirects are not followed: a redirected page could carry a routing key to another host.
    with httpx.Client(
        timeout=policy.timeout_s, follow_redirects=False, transport=transport, verify=_tls_context()
    ) as client:
        try:
            response = retrying(attempt, client)
        except _RetryableStatus as failure:
            status = failure.response.status_code
            reason = f"HTTP {status} after {attempts} attempt{'s' if attempts != 1 else ''}"
            if failure.retry_after is not None and failure.retry_after > policy.max_retry_after_s:
                reason += f"; the server asked to retry after {failure.retry_after:.0f}s, longer than we wait"
            return Delivery(
                channel=channel,
                ok=False,
                status=status,
                attempts=attempts,
                response_excerpt=_excerpt(failure.response),
                error=reason,
            )
        except httpx.TransportError as failure:
            return Delivery(
                channel=channel,
                ok=False,
                attempts=attempts,
                error=f"{type(failure).__name__} after {attempts} attempt{'s' if attempts != 1 else ''}: "
                f"{_without_url(str(failure), url)}",
            )
    ok = 200 <= response.status_code < 300
    return Delivery(
        channel=channel,
        ok=ok,
        status=response.status_code,
        attempts=attempts,
        response_excerpt=_excerpt(response),
        error=None if ok else f"HTTP {response.status_code} {FINAL_MARKER}",
    )


@functools.cache
def _tls_context() -> ssl.SSLContext:
    # Loading the CA bundle costs ~0.1 s; one context serves every client in the process.
    return httpx.create_ssl_context()


def _should_stop(state: RetryCallState, policy: RetryPolicy) -> bool:
    if state.attempt_number >= policy.max_attempts:
        return True
    failure = state.outcome.exception() if state.outcome is not None else None
    return (
        isinstance(failure, _RetryableStatus)
        and failure.retry_after is not None
        and failure.retry_after > policy.max_retry_after_s
    )


def _waiter(policy: RetryPolicy) -> Callable[[RetryCallState], float]:
    # Exponential from `initial_wait_s`, capped, plus a little jitter so many pagers do not retry in step.
    backoff = wait_exponential(multiplier=policy.initial_wait_s, max=policy.max_wait_s) + wait_random(
        0, policy.initial_wait_s / 2
    )

    def wait(state: RetryCallState) -> float:
        failure = state.outcome.exception() if state.outcome is not None else None
        if isinstance(failure, _RetryableStatus) and failure.retry_after is not None:
            return failure.retry_after  # already known to be <= max_retry_after_s (else we stopped)
        return float(backoff(state))

    return wait


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """How long a 429/503 response asks us to wait, in seconds, or None.

    Reads ``retry-after-ms`` (OpenAI-compatible servers), then ``retry-after`` as delta-seconds or an
    HTTP date. Used by the pagers and by the LLM client.
    """
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        value = value.strip()
        try:
            return max(0.0, float(value) / scale)
        except ValueError:
            pass
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            continue
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, (when - datetime.now(UTC)).total_seconds())
    return None


def _excerpt(response: httpx.Response) -> str:
    try:
        text = response.text
    except (UnicodeDecodeError, LookupError):
        text = repr(response.content[:RESPONSE_EXCERPT_CHARS])
    return text[:RESPONSE_EXCERPT_CHARS]


def _without_url(text: str, url: str) -> str:
    return text.replace(url, "<url>") if url else text
