"""Pagers: tell a human when the platform could not fix something on its own.

A `Page` (channel-neutral, about one incident) goes through `dispatch(page, pagers)`: the outbox records it
in the store's `pages` table first, then each configured channel delivers it and the outbox records how
that went. `build_pagers(PagerConfig.from_env(), store)` gives the outbox and the console always, plus
PagerDuty (Events API v2), Slack (incoming webhook) and a generic JSON webhook when their keys or URLs are
configured; nothing is sent anywhere otherwise.

    page = Page.from_incident(incident, summary="...", body="...")
    deliveries = dispatch(page, build_pagers(PagerConfig.from_env(), store))
"""

from tools.pagers.base import PAGERDUTY_SEVERITY, Delivery, Link, Page, PageAction, Pager, truncate
from tools.pagers.config import PagerConfig, build_pagers
from tools.pagers.console import ConsolePager, render_console
from tools.pagers.outbox import OutboxPager, OutboxRow, dispatch
from tools.pagers.pagerduty import PagerDutyPager, pagerduty_dedup_key, pagerduty_event
from tools.pagers.slack import SlackPager, escape, slack_message
from tools.pagers.transport import RetryPolicy, post_json
from tools.pagers.webhook import WebhookPager, webhook_body

__all__ = [
    "PAGERDUTY_SEVERITY",
    "ConsolePager",
    "Delivery",
    "Link",
    "OutboxPager",
    "OutboxRow",
    "Page",
    "PageAction",
    "Pager",
    "PagerConfig",
    "PagerDutyPager",
    "RetryPolicy",
    "SlackPager",
    "WebhookPager",
    "build_pagers",
    "dispatch",
    "escape",
    "pagerduty_dedup_key",
    "pagerduty_event",
    "post_json",
    "render_console",
    "slack_message",
    "truncate",
    "webhook_body",
]
