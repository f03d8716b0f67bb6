"""What a page is, what a delivery reports, and the one-method protocol every pager follows.

A `Page` is channel-neutral: the PagerDuty, Slack and webhook pagers each render it into their own payload
and bound it to their own documented limits. Everything in a page that came from incident data (summary,
body, custom details) is untrusted text: renderers escape or bound it, never interpret it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final, Literal, Protocol, runtime_checkable
from uuid import uuid4

from pydantic import BaseModel, ConfigDict, Field, field_validator

from monitor.incidents import Incident
from scorer.serving import as_naive_utc, utc_now

PageAction = Literal["trigger", "acknowledge", "resolve"]
IncidentSeverity = Literal["low", "medium", "high", "critical"]
PagerDutySeverity = Literal["info", "warning", "error", "critical"]

# Our incident severities onto PagerDuty's four (Events API v2, `payload.severity`).
PAGERDUTY_SEVERITY: Final[dict[str, PagerDutySeverity]] = {
    "low": "info",
    "medium": "warning",
    "high": "error",
    "critical": "critical",
}

TRUNCATION_MARKER: Final = "… [truncated]"


class Link(BaseModel):
    """A link attached to a page (a report, a dashboard, a runbook)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    href: str = Field(description="an http(s) URL")
    text: str = Field("", description="what the link is for")

    @field_validator("href")
    @classmethod
    def _http_only(cls, href: str) -> str:
        # Only web links: a `javascript:` or `file:` href has no business in a page.
        if not href.startswith(("https://", "http://")):
            raise ValueError(f"link href must be an http(s) URL, got {href[:40]!r}")
        return href


class Page(BaseModel):
    """A request for a human's attention about one incident, before any channel renders it."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    page_id: str = Field(default_factory=lambda: f"page-{uuid4().hex}", description="unique per page")
    incident_id: str = Field(min_length=1)
    dedup_key: str = Field(min_length=1, description="the incident's dedup key: PagerDuty correlates on it")
    action: PageAction = "trigger"
    summary: str = Field(min_length=1, description="one line; PagerDuty keeps at most 1024 characters")
    severity: IncidentSeverity
    source: str = Field("selfheal", min_length=1, description="the affected system")
    component: str | None = None
    group: str | None = None
    class_: str | None = Field(None, alias="class", description="the kind of problem (the incident kind)")
    custom_details: dict[str, Any] = Field(default_factory=dict)
    links: list[Link] = Field(default_factory=list)
    body: str = Field("", description="markdown for the humans reading the page")
    timestamp: datetime = Field(default_factory=utc_now, description="naive UTC")

    @field_validator("custom_details", mode="before")
    @classmethod
    def _json_details(cls, details: Any) -> Any:
        # Normalised to plain JSON at the door, so every channel serialises the same thing and a NaN in
        # the evidence cannot make a payload invalid JSON.
        return jsonable(details) if isinstance(details, Mapping) else details

    @field_validator("timestamp")
    @classmethod
    def _naive_utc(cls, timestamp: datetime) -> datetime:
        return as_naive_utc(timestamp)

    @property
    def pagerduty_severity(self) -> PagerDutySeverity:
        return PAGERDUTY_SEVERITY[self.severity]

    def to_json(self) -> dict[str, Any]:
        """The page as plain JSON (`class_` appears as `class`)."""
        return self.model_dump(mode="json", by_alias=True)

    @classmethod
    def from_incident(
        cls,
        incident: Incident,
        *,
        summary: str | None = None,
        action: PageAction = "trigger",
        body: str = "",
        links: list[Link] | None = None,
        details: Mapping[str, Any] | None = None,
        source: str = "selfheal",
        timestamp: datetime | None = None,
    ) -> Page:
        """A page about a stored incident; its dedup key, severity and kind come from the incident."""
        severity = incident.severity if incident.severity in PAGERDUTY_SEVERITY else "high"
        custom: dict[str, Any] = {
            "incident_id": incident.incident_id,
            "kind": incident.kind,
            "subject": incident.subject,
            "model_version": incident.model_version,
            "status": incident.status,
            "root_cause": incident.root_cause,
            "opened_at": incident.opened_at,
            "evidence": incident.evidence,
        }
        custom.update(details or {})
        return cls(
            incident_id=incident.incident_id,
            dedup_key=incident.dedup_key,
            action=action,
            summary=summary or incident.title,
            severity=severity,  # type: ignore[arg-type]  # checked against the mapping above
            source=source,
            component=incident.subject,
            group=f"model:{incident.model_version}" if incident.model_version is not None else "model:none",
            class_=incident.kind,
            custom_details=custom,
            links=links or [],
            body=body,
            timestamp=timestamp or utc_now(),
        )


class Delivery(BaseModel):
    """What happened when one pager tried to deliver one page."""

    model_config = ConfigDict(extra="forbid")

    channel: str
    ok: bool
    status: int | None = Field(None, description="the last HTTP status, if a response came back")
    attempts: int = Field(0, ge=0, description="requests made (0 when nothing was sent)")
    response_excerpt: str = ""
    error: str | None = None


@runtime_checkable
class Pager(Protocol):
    """A channel that can deliver a page. `send` reports failures in the `Delivery`; it does not raise."""

    name: str

    def send(self, page: Page) -> Delivery: ...


def truncate(text: str, limit: int, marker: str = TRUNCATION_MARKER) -> str:
    """`text` cut to at most `limit` characters, ending with a visible marker when it was cut."""
    if len(text) <= limit:
        return text
    if limit <= len(marker):
        return text[:limit]
    return text[: limit - len(marker)] + marker


def jsonable(value: Any) -> Any:
    """`value` as plain JSON data: string keys, finite numbers (NaN/inf become None), unknowns as text."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(item) for item in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if callable(getattr(value, "tolist", None)):  # numpy scalars and arrays
        try:
            return jsonable(value.tolist())
        except (TypeError, ValueError):
            pass
    return str(value)
