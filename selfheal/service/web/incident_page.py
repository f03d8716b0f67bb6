"""The page of one incident: facts and evidence, the approval waiting (if any), timeline and charts, the
agent's investigations, the audit log, paging, and the chat pane.

A pure function of `IncidentView` (plain data the route gathers) to HTML built with `h` (escaped).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from selfheal.service.web.html import Raw, h, join, json_text, markdown, table
from selfheal.service.web.layout import badge, layout
from selfheal.service.web.layout import when as _when


@dataclass
class IncidentView:
    """What the incident page shows, gathered by the route (every field plain data)."""

    detail: Mapping[str, Any]  # views.incident_detail: the incident, its evidence and its events
    runs: Sequence[Mapping[str, Any]]  # views.investigations, oldest first
    pending: Mapping[str, Any] | None  # views.pending_approval
    actions: Sequence[Mapping[str, Any]]  # views.incident_actions: the audit log
    pages: Sequence[Mapping[str, Any]]  # views.incident_pages: the outbox
    reports: Mapping[str, str]  # format -> URL of a written report
    timeline: Sequence[Mapping[str, Any]] = field(
        default_factory=list
    )  # report data: monitor + actions + pages
    figures: Sequence[tuple[str, str]] = field(default_factory=list)  # (chart, SVG drawn by agent.charts)
    charts_error: str | None = None
    conversation: Sequence[Mapping[str, Any]] = field(default_factory=list)  # earlier chat turns
    chat_requests: Sequence[Mapping[str, Any]] = field(default_factory=list)  # views.chat_requests
    chat_available: bool = True


def incident_page(view: IncidentView) -> str:
    incident = view.detail
    key = str(incident["incident_id"])
    figures = dict(view.figures)
    facts = table(
        ("field", "value"),
        [
            ["status", badge(incident["status"], "status")],
            ["severity", badge(incident["severity"], "severity")],
            ["kind", incident["kind"]],
            ["subject", incident["subject"]],
            ["model version", str(incident.get("model_version"))],
            ["first breach", _when(incident.get("first_breach_at"))],
            ["opened", _when(incident.get("opened_at"))],
            ["closed", _when(incident.get("closed_at"))],
            ["root cause", incident.get("root_cause") or "–"],
        ],
        class_="facts",
    )
    report_links = [
        h("a", {"href": url, "class": "report-link"}, f"report ({fmt})") for fmt, url in view.reports.items()
    ]
    links = h(
        "p",
        {"class": "links"},
        report_links or h("span", {"class": "muted"}, "No report written yet."),
        " ",
        h("a", {"href": f"/v1/incidents/{key}"}, "JSON"),
    )
    body = join(
        h("h1", {"data-incident": key}, f"{key}: {incident['title']}"),
        links,
        _pending_section(key, view.pending),
        _chat_requests_section(key, view.chat_requests),
        h(
            "div",
            {"class": "columns"},
            facts,
            h(
                "section",
                {"id": "evidence"},
                h("h2", None, "Evidence"),
                table(
                    ("key", "value"),
                    [
                        [str(k), h("code", None, json_text(v))]
                        for k, v in sorted((incident.get("evidence") or {}).items())
                    ],
                ),
            ),
        ),
        _timeline_section(view, figures.get("timeline")),
        _charts_section(view),
        _investigations_section(view.runs),
        _actions_section(view.actions),
        _paging_section(view.runs, view.pages),
        _chat_section(key, view),
    )
    return layout(key, body, section="incidents")


def _pending_section(key: str, pending: Mapping[str, Any] | None) -> Raw | None:
    if not pending:
        return None
    rows = [
        [str(a["index"]), a["action"], h("code", None, json_text(a.get("args") or {})), a.get("why") or "–"]
        for a in pending["actions"]
    ]
    return h(
        "section",
        {"class": "pending", "id": "approval", "data-thread": pending["thread_id"]},
        h("h2", None, f"Waiting for approval ({pending['thread_id']})"),
        h(
            "p",
            None,
            "The runbook says a person decides on these actions. Approving runs them now; denying "
            "continues without them (and pages).",
        ),
        table(("#", "action", "arguments", "why"), rows),
        h(
            "form",
            {"class": "decision", "data-incident": key},
            h("label", None, "note ", h("input", {"name": "note", "size": "40", "maxlength": "2000"})),
            h("button", {"type": "button", "data-decision": "approve", "class": "approve"}, "Approve"),
            h("button", {"type": "button", "data-decision": "deny", "class": "deny"}, "Deny"),
            h("output", {"class": "decision-result", "aria-live": "polite"}, ""),
        ),
    )


def _chat_requests_section(key: str, requests: Sequence[Mapping[str, Any]]) -> Raw | None:
    """Actions asked for in chat that the runbook puts behind a person: one approve / deny form each."""
    if not requests:
        return None
    items = [
        h(
            "li",
            {"class": "chat-request"},
            h("code", {"class": "audit-id"}, str(r["audit_id"])),
            f" {r['action']} ",
            h("code", None, json_text(r.get("args") or {})),
            f" asked by {r.get('asked_by')} at {_when(r.get('asked_at'))}",
            h(
                "form",
                {"class": "decision", "data-incident": key, "data-request": str(r["audit_id"])},
                h("label", None, "note ", h("input", {"name": "note", "size": "40", "maxlength": "2000"})),
                h("button", {"type": "button", "data-decision": "approve", "class": "approve"}, "Approve"),
                h("button", {"type": "button", "data-decision": "deny", "class": "deny"}, "Deny"),
                h("output", {"class": "decision-result", "aria-live": "polite"}, ""),
            ),
        )
        for r in requests
    ]
    return h(
        "section",
        {"class": "pending", "id": "chat-requests"},
        h("h2", None, "Asked for in chat, waiting for a person"),
        h(
            "p",
            None,
            "The runbook says a person decides on these. Approving runs the action now, as you (its "
            "preconditions still apply); denying runs nothing.",
        ),
        h("ul", None, *items),
    )


def _timeline_section(view: IncidentView, svg: str | None) -> Raw:
    if view.timeline:
        rows = [
            [
                _when(t.get("at"))
                + (f" … {_when(t['until'])} (×{t['count']})" if t.get("count", 1) > 1 else ""),
                t.get("source", ""),
                t.get("event", ""),
                t.get("text", ""),
            ]
            for t in view.timeline
        ]
    else:  # the report data could not be gathered: the incident's own events still tell the story
        rows = [
            [_when(t.get("at")), "monitor", t.get("event", ""), h("code", None, json_text(t.get("detail")))]
            for t in view.detail.get("timeline") or []
        ]
    return h(
        "section",
        {"id": "timeline"},
        h("h2", None, "Timeline"),
        h("figure", None, Raw(svg)) if svg else None,
        table(("time", "source", "event", "detail"), rows, class_="timeline"),
    )


def _charts_section(view: IncidentView) -> Raw:
    drawn = [
        h("figure", {"data-chart": chart}, Raw(svg)) for chart, svg in view.figures if chart != "timeline"
    ]
    note = (
        h("p", {"class": "muted"}, f"Charts unavailable: {view.charts_error}") if view.charts_error else None
    )
    return h("section", {"id": "charts"}, h("h2", None, "Charts"), note, drawn)


def _investigations_section(runs: Sequence[Mapping[str, Any]]) -> Raw:
    if not runs:
        return h(
            "section",
            {"id": "investigations"},
            h("h2", None, "Agent"),
            h("p", {"class": "muted"}, "Not investigated yet."),
        )
    blocks = [_run_block(run) for run in reversed(runs)]  # the latest first: it is the one that counts
    return h("section", {"id": "investigations"}, h("h2", None, "Agent"), blocks)


def _run_block(run: Mapping[str, Any]) -> Raw:
    state = run.get("state") or {}
    diagnosis = state.get("diagnosis") or {}
    runbook = diagnosis.get("runbook_id")
    summary = table(
        ("field", "value"),
        [
            ["status", badge(run.get("status"), "run")],
            ["outcome", run.get("outcome") or "–"],
            ["planner", run.get("planner") or "–"],
            ["started", _when(run.get("started_at"))],
            ["root cause", diagnosis.get("root_cause") or "–"],
            [
                "runbook",
                h("a", {"href": f"/ui/runbooks/{runbook}"}, runbook) if runbook else "none (abstained)",
            ],
            ["confidence", f"{float(diagnosis.get('confidence') or 0):.2f}"],
            ["why", diagnosis.get("reason") or "–"],
        ],
        class_="facts",
    )
    evidence = h(
        "ul", {"class": "evidence"}, [h("li", None, str(item)) for item in diagnosis.get("evidence") or []]
    )
    plan = table(
        ("#", "action", "arguments", "approval", "status", "audit id", "decided by", "why"),
        [
            [
                str(i),
                a.get("action", ""),
                h("code", None, json_text(a.get("args") or {})),
                a.get("approval", ""),
                badge(a.get("status"), "plan"),
                h("code", None, a.get("audit_id") or "–"),
                a.get("decided_by") or "–",
                a.get("why") or "–",
            ]
            for i, a in enumerate(state.get("plan") or [])
        ],
        class_="plan",
    )
    verification = state.get("verification") or {}
    steps = table(
        ("#", "node", "kind", "name", "arguments", "ok", "output"),
        [
            [
                str(s.get("n", "")),
                s.get("node", ""),
                s.get("kind", ""),
                s.get("name", ""),
                h("code", None, json_text(s.get("args") or {}, 200)),
                "yes" if s.get("ok") else "no",
                h("code", None, json_text(s.get("error") or s.get("output") or s.get("note") or "", 300)),
            ]
            for s in state.get("steps") or []
        ],
        class_="steps",
    )
    return h(
        "article",
        {"class": "run", "data-thread": run.get("thread_id")},
        h("h3", None, f"Investigation {run.get('thread_id')}"),
        summary,
        evidence,
        h("h4", None, "Plan"),
        plan,
        h(
            "p",
            None,
            h("strong", None, "Verification: "),
            f"{verification.get('status')}: {verification.get('reason')}" if verification else "–",
        ),
        h("details", {"class": "steps"}, h("summary", None, f"{len(state.get('steps') or [])} steps"), steps),
    )


def _actions_section(actions: Sequence[Mapping[str, Any]]) -> Raw:
    rows = [
        [
            h("code", {"class": "audit-id"}, a.get("audit_id", "")),
            _when(a.get("recorded_at")),
            a.get("actor", ""),
            a.get("action", ""),
            h("code", None, json_text(a.get("args") or {})),
            str((a.get("result") or {}).get("status", "")),
            a.get("approval") or "–",
            a.get("reason") or "–",
        ]
        for a in actions
    ]
    return h(
        "section",
        {"id": "actions"},
        h("h2", None, "Actions (audit log)"),
        table(
            ("audit id", "time", "actor", "action", "arguments", "result", "approval", "reason"),
            rows,
            class_="actions",
        )
        if rows
        else h("p", {"class": "muted"}, "No actions were taken."),
    )


def _paging_section(runs: Sequence[Mapping[str, Any]], pages: Sequence[Mapping[str, Any]]) -> Raw:
    verdicts = []
    for run in reversed(runs):  # the latest investigation first
        decision = (run.get("state") or {}).get("page_decision") or {}
        if decision:
            verdicts.append(
                h(
                    "p",
                    {"class": "page-decision", "data-thread": run.get("thread_id")},
                    h("strong", None, "Page sent" if decision.get("sent") else "No page"),
                    f" ({decision.get('rule')}, {run.get('thread_id')}): {decision.get('reason')}",
                )
            )
    if not verdicts:
        verdicts.append(
            h(
                "p",
                {"class": "page-decision muted"},
                "No page decision yet (no investigation has reached it).",
            )
        )
    rows = [
        [
            h("code", None, p.get("page_id", "")),
            _when(p.get("recorded_at")),
            p.get("action", ""),
            p.get("channel", ""),
            p.get("status", ""),
            p.get("severity", ""),
            p.get("summary", ""),
        ]
        for p in pages
    ]
    return h(
        "section",
        {"id": "paging"},
        h("h2", None, "Paging"),
        verdicts,
        table(("page id", "time", "event", "channel", "status", "severity", "summary"), rows)
        if rows
        else None,
    )


def _chat_section(key: str, view: IncidentView) -> Raw:
    turns = []
    for turn in view.conversation:
        answer = turn.get("answer")
        turns.append(
            h(
                "div",
                {"class": "turn"},
                h(
                    "p",
                    {"class": "question"},
                    h("strong", None, f"{turn.get('actor') or 'someone'}: "),
                    turn.get("message", ""),
                ),
                h("div", {"class": "answer"}, markdown(str(answer)) if answer else None),
            )
        )
    unavailable = (
        None
        if view.chat_available
        else h("p", {"class": "muted"}, "The chat is not available in this service (agent.chat is missing).")
    )
    return h(
        "section",
        {"id": "chat", "data-incident": key},
        h("h2", None, "Ask about this incident"),
        unavailable,
        h("div", {"id": "chat-log", "aria-live": "polite"}, turns),
        h(
            "form",
            {"id": "chat-form", "data-incident": key},
            h(
                "textarea",
                {
                    "name": "message",
                    "rows": "2",
                    "maxlength": "2000",
                    "placeholder": "why did you roll back? what changed? /timeline",
                },
            ),
            h("button", {"type": "submit"}, "Ask"),
        ),
    )
