"""Pages that never reached a channel are sent to it again: at most once an hour, for a day.

A page's first delivery already retries briefly (`tools.pagers.transport`: a few attempts over seconds).
A channel that is down for longer (PagerDuty's outage, a Slack webhook rotated by mistake, the network
of the machine) leaves the outbox row ``failed``, and without this module nobody would ever hear of the
incident. `redeliver`, which the hourly loop runs (`agent.autopilot`), resends the latest failed delivery of
each (page, channel) through the configured pager of that channel and records the result in the outbox,
like any delivery. What it does **not** resend, and why:

- a delivery refused as final (an HTTP 4xx other than 408/429: the channel said the page itself is
  invalid, and the same bytes get the same answer);
- a delivery that failed less than `RETRY_INTERVAL` ago (the hourly loop may catch up many hours at once);
- a page older than `GIVE_UP_AFTER` (a day-old page is news to nobody; it stays listed as failed, which
  `selfheal`'s status and the outbox show);
- a trigger whose incident has a later ``resolve`` page: re-sending it would page someone about an incident
  that is over;
- a ``resolve`` whose trigger never reached that channel: there is nothing there to resolve;
- a ``resolve`` followed by a new trigger (the incident reopened): it would close the new alert, which
  shares its dedup key;
- a channel that is no longer configured.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from tools.pagers.base import Delivery, Pager
from tools.pagers.outbox import OutboxPager, OutboxRow
from tools.pagers.transport import FINAL_MARKER

RETRY_INTERVAL: Final = timedelta(hours=1)
GIVE_UP_AFTER: Final = timedelta(days=1)


@dataclass(frozen=True)
class Redelivery:
    """One failed delivery looked at again: ``delivery`` is None when it was not resent (``skipped`` says why)."""

    page_id: str
    incident_id: str
    channel: str
    delivery: Delivery | None
    skipped: str | None = None


def redeliver(outbox: OutboxPager, pagers: Sequence[Pager], *, now: datetime) -> list[Redelivery]:
    """Resend what is due (see the module docstring); returns every failed delivery looked at.

    Args:
        outbox: The workspace's outbox (its clock stamps the new rows).
        pagers: The configured pagers; a failed channel is resent through the one of the same name.
        now: The loop's "now" (simulated time in evals).
    """
    by_channel = {pager.name: pager for pager in pagers if not isinstance(pager, OutboxPager)}
    looked_at: list[Redelivery] = []
    for failed in outbox.failed_deliveries():
        why = _why_not(failed, outbox, by_channel, now)
        if why is not None:
            looked_at.append(Redelivery(failed.page_id, failed.incident_id, failed.channel, None, why))
            continue
        page = failed.page()
        pager = by_channel[failed.channel]
        try:
            delivery = pager.send(page)
        except Exception as error:  # a broken pager must not stop the others (as in `dispatch`)
            delivery = Delivery(channel=pager.name, ok=False, error=f"pager raised {type(error).__name__}: {error}")
        outbox.record(page, delivery)
        looked_at.append(Redelivery(failed.page_id, failed.incident_id, failed.channel, delivery))
    return looked_at


def _why_not(failed: OutboxRow, outbox: OutboxPager, pagers: dict[str, Pager], now: datetime) -> str | None:
    if failed.error and FINAL_MARKER in failed.error:
        return "refused as final by the channel"
    if failed.channel not in pagers:
        return f"channel {failed.channel} is no longer configured"
    if now - failed.recorded_at < RETRY_INTERVAL:
        return "failed less than an hour ago"
    page = failed.page()
    if now - page.timestamp > GIVE_UP_AFTER:
        return "older than a day: left as failed"
    rows = outbox.rows(incident_id=failed.incident_id)
    if page.action == "trigger":
        sent_at = min(r.recorded_at for r in rows if r.page_id == failed.page_id)
        resolved = any(
            r.dedup_key == page.dedup_key and r.action == "resolve" and r.channel == "outbox" and r.recorded_at >= sent_at
            for r in rows
        )  # fmt: skip
        if resolved:
            return "the incident was resolved since"
    elif page.action == "resolve":
        reached = any(
            r.dedup_key == page.dedup_key and r.action == "trigger" and r.channel == failed.channel
            and r.status == "delivered"
            for r in rows
        )  # fmt: skip
        if not reached:
            return f"its trigger never reached {failed.channel}"
        resolved_at = min(r.recorded_at for r in rows if r.page_id == failed.page_id)
        reopened = any(
            r.dedup_key == page.dedup_key and r.action == "trigger" and r.channel == "outbox"
            and r.recorded_at > resolved_at
            for r in rows
        )  # fmt: skip
        if reopened:  # the same dedup key: resolving now would close the new episode's live alert
            return "the incident was paged again since"
    return None
