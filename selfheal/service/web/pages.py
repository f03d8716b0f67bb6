"""The list pages of the incident review: incidents, runbooks, one runbook (`incident_page` has the rest).

Pure functions from data (the read API's dicts, see `selfheal.service.views`) to HTML, built with
`selfheal.service.web.html.h`, which escapes every piece of text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from selfheal.service.views import incidents_whose_run, investigation_text
from selfheal.service.web.html import Raw, h, join, json_text, markdown, table
from selfheal.service.web.layout import badge, layout
from selfheal.service.web.layout import when as _when

# -- the incident list ------------------------------------------------------------------------------


def incident_list(
    incidents: Sequence[Mapping[str, Any]],
    runs: Mapping[str, Mapping[str, Any]],
    status: Mapping[str, Any] | None = None,
) -> str:
    """Every incident, newest first, with its status, severity and where its investigation stands.

    ``runs`` maps an incident id to its latest investigation (a row of ``agent_runs``); ``status`` is
    `views.status` (what serves and what needs a person), shown above the list when given.
    """
    newest_first = sorted(incidents, key=lambda i: i["number"], reverse=True)
    waiting_ids = set(incidents_whose_run(newest_first, runs, "waiting_approval"))
    waiting = [i for i in newest_first if i["incident_id"] in waiting_ids]
    rows = []
    for incident in newest_first:
        run = runs.get(incident["incident_id"]) or {}
        link = h("a", {"href": f"/ui/incidents/{incident['incident_id']}"}, incident["incident_id"])
        investigation = investigation_text(run)
        rows.append(
            [
                link,
                badge(incident["status"], "status"),
                badge(incident["severity"], "severity"),
                incident["kind"],
                incident["subject"],
                _when(incident["opened_at"]),
                run.get("root_cause") or "–",
                investigation,
                incident["title"],
            ]
        )
    notice = None
    if waiting:
        notice = h(
            "section",
            {"class": "pending", "id": "pending-approvals"},
            h("h2", None, "Waiting for your approval"),
            h(
                "ul",
                None,
                [
                    h(
                        "li",
                        None,
                        h("a", {"href": f"/ui/incidents/{i['incident_id']}"}, i["incident_id"]),
                        " ",
                        i["title"],
                    )
                    for i in waiting
                ],
            ),
        )
    body = join(
        h("h1", None, "Incidents"),
        None if status is None else _serving_summary(status),
        _unreached_notice(newest_first),
        notice,
        table(
            (
                "incident",
                "status",
                "severity",
                "kind",
                "subject",
                "opened",
                "root cause",
                "investigation",
                "title",
            ),
            rows,
            class_="incidents",
        )
        if rows
        else h("p", {"class": "muted"}, "No incidents yet."),
    )
    return layout("Incidents", body, section="incidents")


def _serving_summary(status: Mapping[str, Any]) -> Raw:
    """What serves now, in one line, and (highlighted) the fallback rules when they serve."""
    serving = status["serving"]
    scorer = "the fallback rules" if serving["fallback"] else f"model v{serving['champion_version']}"
    line = (
        f"Serving {scorer}: review at {serving['review_threshold']:g}, decline at {serving['threshold']:g}"
        f" (serving state v{serving['version']}, changed {serving['changed_at'][:16].replace('T', ' ')}"
        f" by {serving['changed_by']})."
    )
    if serving["quarantined_features"]:
        line += f" Quarantined: {', '.join(serving['quarantined_features'])}."
    day = status["last_day"]
    traffic = f"Last 24 h: {day['scored']:,} scored, {day['dead_letters']:,} dead-lettered."
    return h(
        "section",
        {"id": "serving", "class": "pending" if serving["fallback"] else None},
        h("p", None, line, " ", traffic),
    )


def _unreached_notice(incidents: Sequence[Mapping[str, Any]]) -> Raw | None:
    """A warning for unresolved incidents with a page no channel delivered (None: there are none)."""
    unpaged = [i for i in incidents if i.get("unreached_pages")]
    if not unpaged:
        return None
    return h(
        "section",
        {"class": "pending", "id": "unreached-pages"},
        h("h2", None, "Pages that reached no one"),
        h("p", None, "No paging channel delivered these incidents' pages; the service retries hourly for a day."),
        h(
            "ul",
            None,
            [
                h("li", None, h("a", {"href": f"/ui/incidents/{i['incident_id']}"}, i["incident_id"]), " ", i["title"])
                for i in unpaged
            ],
        ),
    )


# -- runbooks ---------------------------------------------------------------------------------------


def runbook_list(runbooks: Sequence[Mapping[str, Any]]) -> str:
    rows = [
        [
            h("a", {"href": f"/ui/runbooks/{r['id']}"}, r["id"]),
            r.get("title", ""),
            r.get("root_cause", ""),
            ", ".join((r.get("triggers") or {}).get("kinds") or []),
            ", ".join(f"{name}: {policy}" for name, policy in (r.get("actions") or {}).items()),
            str(r.get("paging", "–")),
        ]
        for r in runbooks
    ]
    body = join(
        h("h1", None, "Runbooks"),
        table(
            ("runbook", "title", "root cause", "triggers on", "actions (approval)", "paging"),
            rows,
            class_="runbooks",
        ),
    )
    return layout("Runbooks", body, section="runbooks")


def runbook_page(runbook: Mapping[str, Any]) -> str:
    front = runbook.get("front_matter") or {}
    facts = table(
        ("field", "value"),
        [[str(k), h("code", None, json_text(v, 600))] for k, v in front.items()],
        class_="facts",
    )
    body = join(
        h("p", None, h("a", {"href": "/ui/runbooks"}, "← all runbooks")),
        h("h1", None, f"{runbook['id']}: {front.get('title', '')}"),
        facts,
        h("article", {"class": "runbook"}, markdown(str(runbook.get("body") or ""))),
    )
    return layout(str(runbook["id"]), body, section="runbooks")
