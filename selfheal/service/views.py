"""What the read API returns, built from a `Platform`: one function per resource, JSON-able dicts.

The service's routes return these, and the CLI returns the same ones when it opens the workspace file
itself (no service running), so ``selfheal incidents show INC-3 --json`` prints the same document either
way. No web framework is imported here.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, Final, Literal

from monitor.incidents import ACTIVE_STATUSES, IncidentManager
from scorer.errors import ScorerError, UnknownModelVersionError
from scorer.serving import ServingState
from selfheal.app import Platform
from store.spill import spill_files
from tools.audit import ActionLog, finite
from tools.pagers.outbox import OutboxPager

_INCIDENT_ID: Final = re.compile(r"^(?:INC-)?(\d{1,9})$", re.IGNORECASE)
ReportFormat = Literal["md", "html"]


class NotFound(KeyError):
    """The resource does not exist (the API answers 404 with the message)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "not found"


def normalise_incident_id(incident_id: str) -> str:
    """``INC-7``, ``inc-7`` or ``7`` -> ``INC-7``.

    Raises:
        NotFound: Not an incident id (also what keeps report paths inside the reports folder).
    """
    match = _INCIDENT_ID.match(incident_id.strip())
    if match is None:
        raise NotFound(f"no incident {incident_id!r}: ids look like INC-7")
    return f"INC-{int(match.group(1))}"


def existing_incident(platform: Platform, incident_id: str) -> str:
    """The normalised id of an incident that exists (``7`` -> ``INC-7``).

    Raises:
        NotFound: Not an incident id, or no such incident.
    """
    key = normalise_incident_id(incident_id)
    try:
        IncidentManager(platform.store).get(key)
    except KeyError as error:
        raise NotFound(f"no incident {incident_id!r}") from error
    return key


# -- incidents ----------------------------------------------------------------------------------------


def incident_list(platform: Platform, status: str | None = None, *, active_only: bool = False) -> list[dict[str, Any]]:
    """Incidents, oldest first, without their evidence (``incident_detail`` has it).

    Each carries ``unreached_pages``: how many of its pages no channel delivered while it is unresolved
    (`OutboxPager.unreached_pages`), so every list a person reads says when a page reached no one.
    """
    incidents = IncidentManager(platform.store).list(status, active_only=active_only)
    unreached = OutboxPager(platform.store).unreached_pages()
    listed = []
    for incident in incidents:
        item = incident.model_dump(mode="json", exclude={"evidence"})
        item["unreached_pages"] = unreached.get(incident.incident_id, 0)
        listed.append(finite(item))
    return listed


def incident_detail(platform: Platform, incident_id: str) -> dict[str, Any]:
    """One incident with its evidence and its timeline."""
    manager = IncidentManager(platform.store)
    key = normalise_incident_id(incident_id)
    try:
        incident = manager.get(key)
    except KeyError as error:
        raise NotFound(f"no incident {incident_id!r}") from error
    events = manager.events(incident.incident_id)
    payload = incident.model_dump(mode="json")
    payload["timeline"] = [
        {"at": str(e.recorded_at), "event": e.event, "detail": _json_or_text(e.detail)} for e in events.itertuples()
    ]
    return finite(payload)


def incident_actions(platform: Platform, incident_id: str) -> list[dict[str, Any]]:
    """Audit-log rows for one incident (applied and refused actions), in the order they were written."""
    key = existing_incident(platform, incident_id)
    return actions(platform, incident_id=key)


def incident_pages(platform: Platform, incident_id: str) -> list[dict[str, Any]]:
    """Outbox rows (pages and delivery results) for one incident."""
    key = existing_incident(platform, incident_id)
    return pages(platform, incident_id=key)


def report_path(reports_dir: Path, incident_id: str, fmt: ReportFormat) -> Path:
    """The written report of an incident, in a workspace's reports folder (no database needed).

    Raises:
        NotFound: Not an incident id, or no report has been written for it (yet).
    """
    key = normalise_incident_id(incident_id)
    path = reports_dir / f"{key}.{fmt}"
    if not path.is_file():
        raise NotFound(f"no {fmt} report for {key} yet")
    return path


# -- investigations -----------------------------------------------------------------------------------


def investigations(platform: Platform, incident_id: str) -> list[dict[str, Any]]:
    """The responder's runs for one incident, oldest first: status, outcome, what a run waits for, and its
    whole state (diagnosis, plan, steps, verification, page decision), from ``agent_runs``."""
    from agent.run_records import agent_runs

    key = existing_incident(platform, incident_id)
    return [_run_view(run) for run in agent_runs(platform.store, incident_id=key)]


def runs(platform: Platform, incident_id: str | None = None) -> list[dict[str, Any]]:
    """The responder's runs (without their state), oldest first; one incident's when given."""
    from agent.run_records import agent_runs

    key = existing_incident(platform, incident_id) if incident_id else None
    return [_run_view(run) for run in agent_runs(platform.store, incident_id=key, with_state=False)]


def _run_view(run: dict[str, Any]) -> dict[str, Any]:
    return finite({k: (str(v) if k in ("started_at", "updated_at") else v) for k, v in run.items()})  # type: ignore[no-any-return]


def latest_investigations(platform: Platform) -> dict[str, dict[str, Any]]:
    """Each investigated incident's latest run (without its state), by incident id."""
    return {str(run["incident_id"]): run for run in runs(platform)}  # oldest first: the latest one wins


def investigation_text(run: Mapping[str, Any] | None) -> str:
    """Where an incident's latest investigation stands, in the words every list uses."""
    if not run:
        return "not investigated"
    return str(run.get("status")) + (f" ({run['outcome']})" if run.get("outcome") else "")


def incidents_whose_run(
    incidents: Sequence[Mapping[str, Any]], latest: Mapping[str, Mapping[str, Any]], status: str
) -> list[str]:
    """The ids of the incidents (in the order given) whose latest investigation has this status."""
    return [i["incident_id"] for i in incidents if (latest.get(i["incident_id"]) or {}).get("status") == status]


def pending_approval(platform: Platform, incident_id: str) -> dict[str, Any] | None:
    """What the incident's latest investigation waits for a person to approve, or None (`pending_of`)."""
    return pending_of(investigations(platform, incident_id))


def pending_of(investigated: list[dict[str, Any]]) -> dict[str, Any] | None:
    """What the latest of an incident's runs (`investigations`, oldest first) waits for a person to approve.

    ``actions`` are the plan's entries that wait, each with its ``index`` in the plan.
    """
    if not investigated or investigated[-1]["status"] != "waiting_approval":
        return None
    latest = investigated[-1]
    plan = (latest.get("state") or {}).get("plan") or []
    waiting = [i for i, a in enumerate(plan) if a.get("approval") == "human" and a.get("status") == "planned"]
    return {
        "thread_id": latest["thread_id"],
        "actions": [{"index": i, **{k: plan[i].get(k) for k in ("action", "args", "why")}} for i in waiting],
    }


def chat_requests(platform: Platform, incident_id: str) -> list[dict[str, Any]]:
    """Actions asked for in chat that wait for a person's decision (`agent.chat.requests`), oldest first."""
    from agent.chat.requests import open_requests  # the chat package; imported when first read

    return finite([  # type: ignore[no-any-return]
        {"audit_id": r.audit_id, "action": r.action, "args": r.args, "asked_by": r.actor,
         "asked_at": r.recorded_at.isoformat(), "why": r.reason}
        for r in open_requests(platform.store, normalise_incident_id(incident_id))
    ])  # fmt: skip


# -- actions and pages --------------------------------------------------------------------------------


def actions(
    platform: Platform, *, incident_id: str | None = None, action: str | None = None, actor: str | None = None
) -> list[dict[str, Any]]:
    """Audit-log rows, optionally for one incident, action and/or actor (``agent``, ``person:ana``, ...)."""
    log = ActionLog(platform.store, platform.serving.clock)
    rows = log.rows(incident_id=incident_id, action=action, actor=actor)
    return [finite(r.model_dump(mode="json")) for r in rows]


def pages(platform: Platform, *, incident_id: str | None = None, failed: bool = False) -> list[dict[str, Any]]:
    """Outbox rows (one ``recorded`` row per page, then one per channel per delivery attempt); with
    ``failed``, only the latest failure of each (page, channel) never delivered since."""
    outbox = OutboxPager(platform.store)
    if failed:
        rows = [r for r in outbox.failed_deliveries() if incident_id is None or r.incident_id == incident_id]
    else:
        rows = outbox.rows(incident_id=incident_id)
    out = []
    for row in rows:
        item = row.model_dump(mode="json")
        item["payload"] = _json_or_text(item["payload"])
        out.append(item)
    return finite(out)  # type: ignore[no-any-return]


# -- models and serving -------------------------------------------------------------------------------


def models(platform: Platform) -> dict[str, Any]:
    """Registered models, newest first, with aliases and metrics (reference profiles left out: large)."""
    aliases = platform.registry.aliases()
    named: dict[int, list[str]] = {}
    for alias, version in aliases.items():
        if version is not None:
            named.setdefault(version, []).append(alias)
    listed = []
    for model in reversed(platform.registry.list()):
        meta = model.metadata
        listed.append(
            {
                "version": model.version,
                "created_at": model.created_at.isoformat(),
                "aliases": named.get(model.version, []),
                "training_window": meta.training_window.model_dump(mode="json"),
                "metrics": meta.metrics,
                "features": len(meta.feature_columns),
                "has_reference_profile": meta.reference_profile is not None,
                "sha256": model.sha256,
            }
        )
    return finite({"models": listed, "aliases": aliases})


def existing_model(platform: Platform, version: int) -> int:
    """`version` when such a model is registered (its artifact may still fail its check: that is a 409).

    Raises:
        NotFound: No model with that version.
    """
    try:
        platform.registry.get(version)
    except UnknownModelVersionError as error:
        raise NotFound(str(error)) from error
    return version


def model_detail(platform: Platform, version: int) -> dict[str, Any]:
    """One model's metadata (without its reference profile) and whether its artifact verifies."""
    try:
        model = platform.registry.get(version)
        check = platform.registry.verify(version)
    except ScorerError as error:
        raise NotFound(str(error)) from error
    payload = model.model_dump(mode="json", exclude={"metadata": {"reference_profile"}})
    payload["metadata"]["has_reference_profile"] = model.metadata.reference_profile is not None
    payload["aliases"] = [a for a, v in platform.registry.aliases().items() if v == version]
    payload["integrity"] = check.model_dump(mode="json")
    return finite(payload)  # type: ignore[no-any-return]


def serving_history(platform: Platform, limit: int = 50) -> list[dict[str, Any]]:
    """Serving-state versions, newest first: who changed what, when and why."""
    return [serving_state(s) for s in platform.serving.history(limit=limit)]


def serving_state(state: ServingState) -> dict[str, Any]:
    """One serving-state version as JSON (what the history lists and every serving change returns)."""
    return finite(state.model_dump(mode="json"))  # type: ignore[no-any-return]


def serving(platform: Platform, scorer_status: Mapping[str, Any]) -> dict[str, Any]:
    """What serves now (`Scorer.status`: the champion, or the fallback rules and why, thresholds,
    quarantined features) with the serving-state version it read: who made it, when and why.

    The scorer's word on what serves is the one that counts: a champion whose artifact fails its check
    is not served even while the state names it.
    """
    state = platform.serving.get(int(scorer_status["serving_state_version"]))
    return finite({**scorer_status, "state": serving_state(state)})  # type: ignore[no-any-return]


# -- runbooks -----------------------------------------------------------------------------------------


def runbooks(folder: Path | None) -> list[dict[str, Any]]:
    """Every runbook's front matter (``RunbookError`` if some file does not parse: lint says why)."""
    from tools.runbooks import RunbookLibrary  # its linter loads the monitor's checks (and SciPy)

    return [finite(r.front_matter()) for r in RunbookLibrary.load(folder)]


def runbook_detail(folder: Path | None, runbook_id: str) -> dict[str, Any]:
    from tools.runbooks import RunbookLibrary

    library = RunbookLibrary.load(folder)
    try:
        runbook = library.get(runbook_id)
    except KeyError as error:
        raise NotFound(str(error.args[0])) from error
    return finite({"id": runbook.id, "front_matter": runbook.front_matter(), "body": runbook.body})


# -- status -------------------------------------------------------------------------------------------

STATUS_WINDOW: Final = timedelta(hours=24)


def status(
    platform: Platform,
    *,
    incidents: Sequence[Mapping[str, Any]] | None = None,
    latest: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """One look at a workspace: what serves, the models, the last day's traffic, what needs a person.

    "The last day" is the 24 hours before the platform's clock (a demo's or an eval's simulated clock).
    ``attention`` lists, in words, what someone should look at; empty when nothing needs anyone. Waiting
    for approval: an investigation paused for a person, or an action asked for in chat that waits for one.

    Args:
        incidents, latest: `incident_list` and `latest_investigations`, when the caller has read them
            already (the web list): read here otherwise.
    """
    state = platform.serving.current()
    aliases = platform.registry.aliases()
    now = platform.clock()
    since = now - STATUS_WINDOW
    scored = platform.store.execute(
        "SELECT count(*), count(*) FILTER (WHERE used_fallback) FROM predictions WHERE scored_at > ?", [since]
    )[0]
    dead = int(platform.store.scalar("SELECT count(*) FROM dead_letters WHERE received_at > ?", [since]) or 0)
    last = platform.store.scalar("SELECT max(scored_at) FROM predictions")
    listed = incident_list(platform) if incidents is None else incidents
    active = [i for i in listed if i["status"] in ACTIVE_STATUSES]
    latest = latest_investigations(platform) if latest is None else latest
    waiting = {kind: incidents_whose_run(active, latest, kind) for kind in ("waiting_approval", "waiting_data")}
    # An action asked for in chat that its runbook puts behind a person waits for approval too.
    paused = set(waiting["waiting_approval"])
    waiting["waiting_approval"] = [
        i["incident_id"] for i in active if i["incident_id"] in paused or chat_requests(platform, i["incident_id"])
    ]
    unreached = [i["incident_id"] for i in active if i["unreached_pages"]]
    spilled = len(spill_files(platform.store))
    attention = []
    if state.champion_version is None:
        attention.append("no champion model: the fallback rules score (train one: selfheal train)")
    elif state.fallback:
        attention.append(
            f"the fallback rules score instead of model v{state.champion_version}: {state.fallback_reason} "
            "(when the cause is fixed: selfheal serving fallback off)"
        )
    if state.quarantined_features:
        attention.append(
            f"quarantined features: {', '.join(sorted(state.quarantined_features))} "
            "(when a feature's pipeline is fixed: selfheal serving release FEATURE)"
        )
    if waiting["waiting_approval"]:
        attention.append(f"waiting for approval: {', '.join(waiting['waiting_approval'])}")
    if unreached:
        attention.append(f"a page reached no one: {', '.join(unreached)} (selfheal pages list --failed)")
    if spilled:
        attention.append(f"{spilled} scoring-log file(s) set aside in log-spill/ (selfheal load-spills)")
    return finite(
        {
            "workspace": str(platform.workspace.home),
            "now": now.isoformat(),
            "serving": {
                "version": state.version,
                "champion_version": state.champion_version,
                "fallback": state.fallback or state.champion_version is None,
                "fallback_reason": state.fallback_reason,
                "threshold": state.threshold,
                "review_threshold": state.review_threshold,
                "quarantined_features": sorted(state.quarantined_features),
                "changed_at": state.changed_at.isoformat(),
                "changed_by": state.changed_by,
                "reason": state.reason,
            },
            "models": {"registered": len(platform.registry.list()), **aliases},
            "last_day": {
                "scored": int(scored[0]),
                "scored_by_fallback": int(scored[1] or 0),
                "dead_letters": dead,
            },
            "last_scored_at": None if last is None else str(last),
            "incidents": {
                "active": len(active),
                "by_status": dict(Counter(i["status"] for i in active)),
                **waiting,
                "unreached_pages": unreached,
            },
            "log_spill_files": spilled,
            "attention": attention,
        }
    )


# -- dead letters -------------------------------------------------------------------------------------


def dead_letters(platform: Platform, limit: int = 100) -> list[dict[str, Any]]:
    """The most recent dead letters, newest first."""
    frame = platform.store.query(
        "SELECT dead_letter_id, received_at, batch_id, source, transaction_id, reason, field, payload "
        "FROM dead_letters ORDER BY received_at DESC, rowid DESC LIMIT ?",
        [limit],
    )
    records = frame.astype(object).where(frame.notna(), None).to_dict("records")
    return [finite({str(k): (str(v) if k == "received_at" else v) for k, v in r.items()}) for r in records]


def _json_or_text(text: Any) -> Any:
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text
