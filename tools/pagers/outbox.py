"""The outbox: every page and every channel's delivery result, in the store's `pages` table.

The outbox is the default pager and always runs first, so a page exists in the store before any network
call is made: when PagerDuty is down, Slack rejects the message or the process dies mid-send, nothing is
lost, and `failed_deliveries()` says which pages never reached which channel. Rows are append-only: one
`recorded` row per page (channel `outbox`), then one `delivered` or `failed` row per channel per attempt to
dispatch it.

`dispatch` is the one way to page: outbox first, then every other pager, each result recorded.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Final, Literal

import pandas as pd
from pydantic import BaseModel

from monitor.incidents import ACTIVE_STATUSES
from scorer.serving import utc_now
from store import Store, where_equal
from tools.pagers.base import Delivery, Page, Pager
from tools.pagers.console import ConsolePager

logger = logging.getLogger(__name__)

OutboxStatus = Literal["recorded", "delivered", "failed"]
ERROR_MAX_CHARS: Final = 1000


class OutboxRow(BaseModel):
    """One row of the `pages` table."""

    page_id: str
    recorded_at: datetime
    incident_id: str
    dedup_key: str
    action: str
    severity: str
    summary: str
    payload: str
    channel: str
    status: OutboxStatus
    attempts: int
    error: str | None

    def page(self) -> Page:
        """The page this row recorded."""
        return Page.model_validate_json(self.payload)


class OutboxPager:
    """Records pages and delivery results in the store; its own `send` never fails for network reasons."""

    name = "outbox"

    def __init__(self, store: Store, clock: Callable[[], datetime] | None = None) -> None:
        self.store = store
        self.clock = clock or utc_now

    def send(self, page: Page) -> Delivery:
        self._write(page, channel=self.name, status="recorded", attempts=0, error=None)
        return Delivery(channel=self.name, ok=True, attempts=0)

    def record(self, page: Page, delivery: Delivery) -> None:
        """Record what one channel did with `page`."""
        error = delivery.error
        if error and delivery.response_excerpt:
            error = f"{error}; response: {delivery.response_excerpt}"
        status: OutboxStatus = "delivered" if delivery.ok else "failed"
        self._write(page, channel=delivery.channel, status=status, attempts=delivery.attempts, error=error)

    def rows(self, *, incident_id: str | None = None, page_id: str | None = None) -> list[OutboxRow]:
        """Outbox rows in the order they were recorded, optionally for one incident or page."""
        clause, params = where_equal(incident_id=incident_id, page_id=page_id)
        return self._select(f"SELECT * FROM pages{clause} ORDER BY recorded_at, rowid", params)

    def failed_deliveries(self) -> list[OutboxRow]:
        """The latest failure of each (page, channel) that was never delivered since: what to resend."""
        return self._select(
            "SELECT * EXCLUDE (latest) FROM ("
            "  SELECT *, row_number() OVER (PARTITION BY page_id, channel ORDER BY recorded_at DESC, rowid DESC)"
            "  AS latest FROM pages WHERE channel <> ?"
            ") WHERE latest = 1 AND status = 'failed' ORDER BY recorded_at",
            [self.name],
        )

    def unreached_pages(self) -> dict[str, int]:
        """Trigger pages of unresolved incidents that reached no one, counted per incident.

        The case nobody would hear of: every remote channel (PagerDuty, Slack, a webhook) failed, and after
        a day redelivery gives up. The console only counts when it is the only channel a page went to (the
        demo, a terminal): with a remote channel configured, text on a process's standard error is not a
        page anyone is sure to see. Not counted: a page only the outbox recorded (no channel to reach);
        ``resolve`` and ``acknowledge`` pages (they ask no one to act); a trigger sent before the incident's
        latest ``resolve`` page (an episode that is over; redelivery does not resend it either,
        `tools.pagers.redelivery`); any page of a resolved incident.
        """
        active = ", ".join("?" for _ in ACTIVE_STATUSES)
        local = (self.name, ConsolePager.name)
        frame = self.store.query(
            "WITH resolved AS ("
            # When each resolve page was recorded (its outbox row), as redelivery reads it: later delivery
            # attempts of an old resolve must not hide a newer episode's trigger.
            "  SELECT incident_id, max(recorded_at) AS at FROM pages WHERE action = 'resolve' AND channel = ?"
            "  GROUP BY incident_id"
            "), triggers AS ("
            "  SELECT p.page_id, any_value(p.incident_id) AS incident_id, min(p.recorded_at) AS first_at,"
            "    bool_or(p.channel NOT IN (?, ?)) AS remote_tried,"
            "    bool_or(p.channel NOT IN (?, ?) AND p.status = 'delivered') AS remote_delivered,"
            "    bool_or(p.status = 'delivered') AS delivered"
            "  FROM pages p JOIN incidents i ON i.incident_id = p.incident_id"
            f"  WHERE p.channel <> ? AND p.action = 'trigger' AND i.status IN ({active})"
            "  GROUP BY p.page_id"
            ") SELECT t.incident_id, count(*) AS pages FROM triggers t LEFT JOIN resolved r USING (incident_id)"
            " WHERE NOT (CASE WHEN remote_tried THEN remote_delivered ELSE delivered END)"
            "   AND (r.at IS NULL OR t.first_at > r.at)"
            " GROUP BY t.incident_id ORDER BY t.incident_id",
            [self.name, *local, *local, self.name, *ACTIVE_STATUSES],
        )
        return {str(row.incident_id): int(row.pages) for row in frame.itertuples()}

    def _select(self, sql: str, params: list[Any]) -> list[OutboxRow]:
        frame = self.store.query(sql, params)
        records = frame.astype(object).where(frame.notna(), None).to_dict("records")
        return [OutboxRow.model_validate({str(k): v for k, v in record.items()}) for record in records]

    def _write(
        self, page: Page, *, channel: str, status: OutboxStatus, attempts: int, error: str | None
    ) -> None:
        self.store.append(
            "pages",
            pd.DataFrame(
                {
                    "page_id": [page.page_id],
                    "recorded_at": [self.clock()],
                    "incident_id": [page.incident_id],
                    "dedup_key": [page.dedup_key],
                    "action": [page.action],
                    "severity": [page.severity],
                    "summary": [page.summary],
                    "payload": [json.dumps(page.to_json())],
                    "channel": [channel],
                    "status": [status],
                    "attempts": [attempts],
                    "error": [error[:ERROR_MAX_CHARS] if error else None],
                }
            ),
        )


def dispatch(page: Page, pagers: Sequence[Pager]) -> list[Delivery]:
    """Send `page` through every pager, outboxes first, and record each result in every outbox.

    A pager that raises (a bug in a renderer, say) is recorded as a failed delivery and the others still
    run: one broken channel must not silence the rest. An outbox that cannot write raises, because then
    the page could be lost without trace.
    """
    outboxes = [p for p in pagers if isinstance(p, OutboxPager)]
    others = [p for p in pagers if not isinstance(p, OutboxPager)]
    deliveries = [outbox.send(page) for outbox in outboxes]
    for pager in others:
        try:
            delivery = pager.send(page)
        except Exception as error:
            logger.exception("pager %s raised while sending %s", pager.name, page.page_id)
            delivery = Delivery(
                channel=pager.name, ok=False, error=f"pager raised {type(error).__name__}: {error}"
            )
        for outbox in outboxes:
            outbox.record(page, delivery)
        deliveries.append(delivery)
    return deliveries
