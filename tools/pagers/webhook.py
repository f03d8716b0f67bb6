"""A generic JSON webhook: the page itself, as JSON, POSTed to a URL of your choice.

For anything that is neither PagerDuty nor Slack (an internal alert router, Opsgenie or Teams through
their own adapters, a test receiver). The body is `Page.to_json()` plus a `schema` tag so a receiver can
tell versions apart; the same retry rules as every remote pager apply.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Final

import httpx

from tools.pagers.base import Delivery, Page
from tools.pagers.transport import RetryPolicy, post_json

SCHEMA: Final = "selfheal.page/v1"


class WebhookPager:
    """POSTs each page as JSON to one URL."""

    name = "webhook"

    def __init__(
        self,
        url: str,
        *,
        policy: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not url:
            raise ValueError("a webhook pager needs a URL")
        self._url = url
        self.policy = policy or RetryPolicy()
        self._transport = transport
        self._sleep = sleep

    def __repr__(self) -> str:  # webhook URLs often embed a token
        return "WebhookPager(url=<secret>)"

    def send(self, page: Page) -> Delivery:
        return post_json(
            self.name,
            self._url,
            webhook_body(page),
            self.policy,
            transport=self._transport,
            sleep=self._sleep,
        )


def webhook_body(page: Page) -> dict[str, Any]:
    """The JSON body: the page's fields, `class_` as `class`, plus the schema tag."""
    return {"schema": SCHEMA, **page.to_json()}
