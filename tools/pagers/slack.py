"""Slack incoming webhook: a Block Kit message whose every piece of incident data is inert text.

Slack reads `<...>` in message text as control sequences: `<!channel>` and `<!here>` ping everyone,
`<@U123>` pings a person, `<!subteam^S1>` a user group, `<http://evil|click>` disguises a link. Slack's own
formatting reference says to escape exactly three characters, `&` -> `&amp;`, `<` -> `&lt;`,
`>` -> `&gt;`, and then none of those sequences can form. So all dynamic text is escaped (ampersand
first, so an already-escaped `&lt;!channel&gt;` in the data stays literal too); the only angle brackets
in a message are the links we build ourselves from validated http(s) URLs. We also send
`link_names: false` (plain `@channel` words are not turned into mentions) and no unfurling.

Block Kit limits honoured: header text 150 characters, section text 3000, at most 10 section fields of
2000 characters each, at most 10 context elements, 50 blocks per message.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Final

import httpx

from tools.pagers.base import TRUNCATION_MARKER, Delivery, Link, Page
from tools.pagers.transport import RetryPolicy, post_json

HEADER_MAX_CHARS: Final = 150
SECTION_TEXT_MAX_CHARS: Final = 3000
FIELD_MAX_CHARS: Final = 2000
MAX_FIELDS: Final = 10
MAX_BLOCKS: Final = 50
MAX_LINKS: Final = 10

_ACTION_LABEL: Final = {"trigger": "PAGE", "acknowledge": "ACKNOWLEDGED", "resolve": "RESOLVED"}


class SlackPager:
    """Posts pages to one Slack incoming webhook (the URL is the credential)."""

    name = "slack"

    def __init__(
        self,
        webhook_url: str,
        *,
        policy: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not webhook_url:
            raise ValueError("a Slack pager needs a webhook URL")
        self._url = webhook_url
        self.policy = policy or RetryPolicy()
        self._transport = transport
        self._sleep = sleep

    def __repr__(self) -> str:  # the webhook URL is a credential: keep it out of logs
        return "SlackPager(url=<secret>)"

    def send(self, page: Page) -> Delivery:
        message = slack_message(page)
        return post_json(
            self.name, self._url, message, self.policy, transport=self._transport, sleep=self._sleep
        )


def escape(text: str) -> str:
    """Slack's three control characters as entities: data can then never ping, link or format a mention."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def escape_within(text: str, limit: int) -> str:
    """`text` escaped and at most `limit` characters long, never cutting through an entity."""
    escaped = escape(text)
    if len(escaped) <= limit:
        return escaped
    keep = limit - len(TRUNCATION_MARKER)
    if keep <= 0:
        return TRUNCATION_MARKER[:limit]
    pieces: list[str] = []
    used = 0
    for character in text:  # whole entities only: a cut `&am` would show as junk
        piece = escape(character)
        if used + len(piece) > keep:
            break
        pieces.append(piece)
        used += len(piece)
    return "".join(pieces) + TRUNCATION_MARKER


def slack_message(page: Page) -> dict[str, Any]:
    """The incoming-webhook body for `page`: fallback text plus header, fields, body, links and context."""
    label = _ACTION_LABEL[page.action]
    headline = f"{label} [{page.severity.upper()}] {page.incident_id}: {page.summary}"
    fields = [
        ("Severity", f"{page.severity} (PagerDuty: {page.pagerduty_severity})"),
        ("Incident", page.incident_id),
        ("Action", page.action),
        ("Source", page.source),
        ("Kind", page.class_ or "-"),
        ("Component", page.component or "-"),
        ("Group", page.group or "-"),
        ("Dedup key", page.dedup_key),
    ][:MAX_FIELDS]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": escape_within(headline, HEADER_MAX_CHARS)}},
        {
            "type": "section",
            "fields": [
                {
                    "type": "mrkdwn",
                    "text": f"*{name}*\n{escape_within(value, FIELD_MAX_CHARS - len(name) - 3)}",
                }
                for name, value in fields
            ],
        },
    ]
    if page.body:
        blocks.append(
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": escape_within(page.body, SECTION_TEXT_MAX_CHARS)},
            }
        )
    links = _links(page.links[:MAX_LINKS])
    if links:  # Slack rejects a section with empty text
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": links}})
    blocks.append(
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": escape_within(f"selfheal · {page.page_id} · {page.timestamp.isoformat()}Z", 300),
                }
            ],
        }
    )
    return {
        # The notification and accessibility fallback; mrkdwn-parsed like any message text, so escaped too.
        "text": escape_within(headline, SECTION_TEXT_MAX_CHARS),
        "blocks": blocks[:MAX_BLOCKS],
        "link_names": False,
        "unfurl_links": False,
        "unfurl_media": False,
    }


def _links(links: list[Link]) -> str:
    lines: list[str] = []
    used = 0
    for link in links:
        # `|` and `>` would end the URL part of `<url|text>`; percent-encoding keeps the URL equivalent.
        href = link.href.replace("|", "%7C").replace(">", "%3E").replace("<", "%3C")
        line = f"• <{href}|{escape_within(link.text or link.href, 200)}>"
        if used + len(line) + 1 > SECTION_TEXT_MAX_CHARS:
            break  # whole links only: a cut one would be a broken `<...` sequence
        lines.append(line)
        used += len(line) + 1
    return "\n".join(lines)
