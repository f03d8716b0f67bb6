"""Telling people: `page` (one page per incident, through the pager outbox) and `add_note` (the timeline).

Neither changes what serves, and neither can be taken back (a sent page stays sent, a note is history),
so their audit rows carry no inverse. Their text comes from the agent and may quote transaction data:
it is stored and shown as data, bounded in length, never interpreted.
"""

from __future__ import annotations

from typing import Any, Final, Literal

from monitor.incidents import Incident
from tools.audit import Effect, bounded_text, canonical_json, idempotency_key, run_action
from tools.context import ToolContext
from tools.errors import ToolRefused, ToolRetry
from tools.pagers import OutboxPager, Page, Pager, dispatch
from tools.registry import tool

__all__ = ["MAX_NOTE_CHARS", "add_note", "page", "page_for_approval"]

MAX_NOTE_CHARS: Final = 2000
MAX_SUMMARY_CHARS: Final = 1024  # PagerDuty's limit for a summary
MAX_DETAILS_CHARS: Final = 4000
MAX_BODY_CHARS: Final = 6000

Severity = Literal["low", "medium", "high", "critical"]


@tool(kind="action", risk="low")
def page(
    ctx: ToolContext,
    summary: str,
    severity: Severity,
    details: dict[str, Any] | None = None,
    body: str = "",
) -> dict[str, Any]:
    """Page the on-call human about this incident: only when a human must act now.

    One page per incident: a second call returns the first page unchanged. The page is recorded in the
    outbox (table pages) before any channel delivers it.

    Args:
        summary: One line saying what is wrong and what the human must do.
        severity: How urgent it is.
        details: Numbers and facts that support the summary (JSON object).
        body: The markdown summary for the human: what broke, evidence, what was done, what to do next.
    """
    # The key ignores the text: one page per incident, however the agent words a second one.
    return _send_page(ctx, summary, severity, details, body, key_args={})


def page_for_approval(
    ctx: ToolContext, summary: str, severity: Severity, details: dict[str, Any] | None = None, body: str = ""
) -> dict[str, Any]:
    """Page the on-call human that an investigation waits for their approval; once per incident.

    The responder's approval step calls it, not the planner (it is no tool): a run paused for a person
    used to wait without telling anyone. It is a page of its own beside the incident's one `page`, so
    the page that says how the incident ended still goes out; both carry the incident's dedup key, so a
    pager such as PagerDuty shows them as one alert. Audited as a ``page`` action.
    """
    return _send_page(ctx, summary, severity, details, body, key_args={"approval": True})


def _send_page(
    ctx: ToolContext,
    summary: str,
    severity: Severity,
    details: dict[str, Any] | None,
    body: str,
    *,
    key_args: dict[str, Any],
) -> dict[str, Any]:
    text = bounded_text(summary, MAX_SUMMARY_CHARS)
    if not text:
        raise ToolRetry("page needs a summary: it is the one line the on-call engineer reads first")
    facts = _bounded_details(details or {})
    markdown = bounded_text(body, MAX_BODY_CHARS)
    args = {"summary": text, "severity": severity, "details": facts, "body": markdown}

    def apply() -> Effect:
        incident = _incident(ctx, "page")
        message = Page.from_incident(incident, summary=text, details=facts, body=markdown, timestamp=ctx.clock())
        # The page id follows from the incident (and the kind of page), so a replayed eval records the same page.
        page_id = f"page-{idempotency_key(incident.incident_id, 'page', key_args)[:16]}"
        message = message.model_copy(update={"page_id": page_id, "severity": severity})
        deliveries = dispatch(message, _pagers(ctx))
        ctx.incidents.add_event(
            incident.incident_id,
            "page",
            {"actor": ctx.actor, "page_id": page_id, "severity": severity, "summary": text},
            at=ctx.clock(),
        )
        return Effect(
            result={
                "page_id": page_id,
                "incident_id": incident.incident_id,
                "severity": severity,
                "deliveries": [{"channel": d.channel, "ok": d.ok, "error": d.error} for d in deliveries],
                "delivered_remotely": any(d.ok for d in deliveries if d.channel != OutboxPager.name),
            }
        )

    return run_action(ctx, "page", args, apply, key_args=key_args)


@tool(kind="action", risk="none")
def add_note(ctx: ToolContext, text: str) -> dict[str, Any]:
    """Add a note to this incident's timeline (what was seen, decided or suggested, for the report).

    Args:
        text: The note, at most 2000 characters (longer text is cut).
    """
    note = bounded_text(text, MAX_NOTE_CHARS)
    if not note:
        raise ToolRetry("add_note needs some text")

    def apply() -> Effect:
        incident = _incident(ctx, "add_note")
        ctx.incidents.add_event(
            incident.incident_id, "note", {"actor": ctx.actor, "text": note}, at=ctx.clock()
        )
        return Effect(result={"incident_id": incident.incident_id, "note": note, "cut": note != text.strip()})

    return run_action(ctx, "add_note", {"text": note}, apply, atomic=True)


def _incident(ctx: ToolContext, action: str) -> Incident:
    if not ctx.incident_id:
        raise ToolRefused(f"{action} needs an incident: it is recorded on one incident's timeline")
    try:
        return ctx.incidents.get(ctx.incident_id)
    except KeyError as error:
        raise ToolRefused(f"{action}: there is no incident {ctx.incident_id!r}") from error


def _pagers(ctx: ToolContext) -> list[Pager]:
    """The pagers the composition root configured (``ctx.extras["pagers"]``), always with an outbox."""
    configured = list(ctx.extras.get("pagers") or [])
    if not any(isinstance(p, OutboxPager) for p in configured):
        configured.insert(0, OutboxPager(ctx.store, clock=ctx.clock))
    return configured


def _bounded_details(details: dict[str, Any]) -> dict[str, Any]:
    """Details as given when small, else their JSON text cut (the full evidence is on the incident)."""
    text = canonical_json(details)
    if len(text) <= MAX_DETAILS_CHARS:
        return details
    return {"details_cut": bounded_text(text, MAX_DETAILS_CHARS)}
