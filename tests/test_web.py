"""The incident review in headless Chromium, against `selfheal serve` running as a real process.

The workspace is a copy of the demo (three incidents, handled) where INC-1 and INC-3 were investigated
again with runbooks that make their actions wait for a person (`approval_runbooks`), plus INC-4, an
incident whose record text is hostile markup. One service and one browser for the module; tests run in
file order (the approval changes the workspace for the ones after it). Screenshots: test-artifacts/.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Dialog, Page, expect, sync_playwright
from typer.testing import CliRunner

from selfheal.app import Platform
from selfheal.cli import app as cli_app
from selfheal.service.config import read_token_file, token_path
from selfheal.service.discovery import ServiceRecord
from store import Workspace
from tests.browser import ARTIFACTS, CHROMIUM_ARGS, chromium_executable
from tests.conftest import DemoRun
from tests.service_process import serve_process
from tests.test_service_responder import approval_runbooks, pause_for_approval
from tools.pagers import Delivery, OutboxPager
from tools.pagers import Page as PagerPage

HOSTILE_TITLE = '<img src=x onerror="window.__pwned=1"> merchant <b>Acme</b>'
HOSTILE_MERCHANT = "</code><script>window.__pwned=2</script>"


@dataclass
class Site:
    url: str
    home: Path
    token: str
    record: ServiceRecord
    api: httpx.Client
    browser: Browser

    def open(self, path: str) -> Page:
        page = self.browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(self.url + path)
        return page


def _add_hostile_incident(home: Path) -> None:
    """INC-4, whose title, evidence and timeline carry markup (merchant names are untrusted input), and whose
    page no channel delivered."""
    at = datetime(2018, 5, 17, 10, 0)
    with Platform(Workspace(home)) as platform:
        platform.store.execute(
            "INSERT INTO incidents (incident_id, number, dedup_key, model_version, kind, subject, severity, status, "
            "title, opened_at, updated_at, first_breach_at, evidence) VALUES ('INC-4', 4, 'hostile', 1, "
            "'data_quality', 'merchant_name', 'low', 'open', ?, ?, ?, ?, ?)",
            [HOSTILE_TITLE, at, at, at, f'{{"merchant_name": "{HOSTILE_MERCHANT}"}}'],
        )
        platform.store.execute(
            "INSERT INTO incident_events VALUES ('INC-4', ?, 'opened', ?)",
            [at, '{"note": "<svg onload=window.__pwned=3>"}'],
        )
        # Its page reached no channel: the list warns about it, with the hostile title as text.
        page = PagerPage(page_id="page-INC-4", incident_id="INC-4", dedup_key="hostile", summary="s", severity="low")
        OutboxPager(platform.store).send(page)
        OutboxPager(platform.store).record(page, Delivery(channel="webhook", ok=False, status=503, error="HTTP 503"))


def _ask_in_chat_for_a_rollback(home: Path, runbooks: Path) -> None:
    """A chat request on INC-3 to serve v2 again, which its runbook puts behind a person (what an LLM asked
    for in chat leaves: tests/test_chat_llm.py drives that part)."""
    from agent.chat import ChatParts
    from tests.test_chat_requests import ask_to_serve_v2

    with Platform(Workspace(home)) as platform:
        ask_to_serve_v2(ChatParts.for_platform(platform, runbooks_dir=runbooks), actor="api:carol")


@pytest.fixture(scope="module")
def site(demo_run: DemoRun, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("web")
    home = root / "workspace"
    shutil.copytree(demo_run.home, home)
    runbooks = approval_runbooks(root / "runbooks")
    pause_for_approval(home, runbooks)
    _ask_in_chat_for_a_rollback(home, runbooks)
    _add_hostile_incident(home)
    with serve_process(
        home, "--runbooks", str(runbooks), "--planner", "deterministic", "--flush-interval", "0.1"
    ) as served:
        record = served.record
        ARTIFACTS.mkdir(exist_ok=True)
        with sync_playwright() as playwright, httpx.Client(base_url=record.url, timeout=60) as api:
            browser = playwright.chromium.launch(executable_path=chromium_executable(), args=CHROMIUM_ARGS)
            try:
                yield Site(
                    record.url, home, read_token_file(token_path(Workspace(home))), record, api, browser
                )
            finally:
                browser.close()


def sign_in(page: Page, site: Site, actor: str = "alice") -> None:
    """Paste the token and a name into the header's token panel (kept in this tab's sessionStorage)."""
    page.fill("#actor", actor)
    page.fill("#token", site.token)
    page.click("#token-panel button[type=submit]")
    expect(page.locator("#token-state")).to_have_text(f"token kept for this tab as {actor}")
    assert page.input_value("#token") == ""  # the field is emptied: only the tab's storage holds it


def cells(page: Page, table: str) -> list[list[str]]:
    rows = page.locator(f"{table} tbody tr")
    return [row.locator("td").all_inner_texts() for row in rows.all()]


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"web-{name}.png"), full_page=True)


# -- reading ------------------------------------------------------------------------------------------


def test_incident_list_shows_every_incident_with_status_and_severity(site: Site) -> None:
    page = site.open("/")
    assert page.url == site.url + "/ui/"
    listed = {row[0]: row for row in cells(page, "table.incidents")}
    incidents = site.api.get("/v1/incidents").json()
    assert set(listed) == {i["incident_id"] for i in incidents} == {"INC-1", "INC-2", "INC-3", "INC-4"}
    for incident in incidents:
        row = listed[incident["incident_id"]]
        assert (row[1], row[2], row[3]) == (incident["status"], incident["severity"], incident["kind"])
    assert listed["INC-1"][7] == "waiting_approval" and listed["INC-2"][7] == "done (mitigated)"
    assert page.locator("#pending-approvals li a").all_inner_texts() == ["INC-3", "INC-1"]
    assert page.locator("#unreached-pages li a").all_inner_texts() == ["INC-4"]
    serving = site.api.get("/v1/status").json()["serving"]  # what serves, said above the list
    scorer = "the fallback rules" if serving["fallback"] else f"model v{serving['champion_version']}"
    expect(page.locator("#serving")).to_contain_text(f"Serving {scorer}: review at {serving['review_threshold']:g}")
    assert HOSTILE_TITLE in page.locator("#unreached-pages li").inner_text()
    shot(page, "incident-list")
    page.close()


def test_an_incident_page_shows_its_timeline_charts_steps_actions_and_page(site: Site) -> None:
    page = site.open("/ui/")
    page.click("table.incidents a:text-is('INC-1')")
    page.wait_for_url("**/ui/incidents/INC-1")
    timeline = cells(page, "#timeline table")
    assert timeline[0][1:3] == ["monitor", "opened"] and "broken_features" in timeline[0][3]
    actions = site.api.get("/v1/incidents/INC-1/actions").json()
    for action in actions:  # every audited action is on the timeline, by its audit id
        assert any(action["audit_id"] in row[3] for row in timeline), action["audit_id"]
    shown_ids = page.locator("#actions code.audit-id").all_inner_texts()
    assert shown_ids == [a["audit_id"] for a in actions]
    charts = page.locator("svg[data-chart]")
    assert sorted(c.get_attribute("data-chart") or "" for c in charts.all()) == [
        "drift",
        "metric",
        "scores",
        "timeline",
    ]
    runs = page.locator("article.run")
    assert runs.count() == 2 and runs.first.get_attribute("data-thread") == "INC-1/2"
    steps = site.api.get("/v1/incidents/INC-1/steps").json()
    first_run_steps = [s for s in steps if s["thread_id"] == "INC-1/1"]
    assert page.locator("article.run[data-thread='INC-1/1'] table.steps tbody tr").count() == len(
        first_run_steps
    )
    expect(page.locator("#paging .page-decision").first).to_contain_text(
        "Page sent (runbook_always, INC-1/1)"
    )
    shot(page, "incident-INC-1")
    with page.expect_navigation():
        page.click("a.report-link:text-is('report (html)')")
    assert page.title().startswith("INC-1") and page.locator("section[data-section='Timeline']").count() == 1
    page.close()


def test_the_chat_pane_streams_an_answer_from_the_record(site: Site) -> None:
    page = site.open("/ui/incidents/INC-2")
    sign_in(page, site)
    page.fill("#chat-form textarea", "why did you change the threshold?")
    with page.expect_response("**/v1/incidents/INC-2/chat/stream") as streamed:
        page.click("#chat-form button[type=submit]")
    assert streamed.value.status == 200
    assert streamed.value.headers["content-type"].startswith("text/event-stream")
    turn = page.locator("#chat-log .turn").last
    expect(turn.locator(".meta")).to_contain_text("answered by router")
    answer = turn.locator(".answer").inner_text()
    assert "0.0035" in answer  # the threshold the rollout set, from the serving history
    assert turn.locator(".question").inner_text() == "alice: why did you change the threshold?"
    [threshold_change] = [
        a for a in site.api.get("/v1/incidents/INC-2/actions").json() if a["action"] == "set_threshold"
    ]
    expect(turn.locator(".meta")).to_contain_text(threshold_change["audit_id"])
    shot(page, "chat-INC-2")
    # The conversation persists: the page shows it after a reload, as api:alice asked it.
    page.reload()
    expect(page.locator("#chat-log .turn .question").last).to_have_text(
        "api:alice: why did you change the threshold?"
    )
    page.close()


# -- acting -------------------------------------------------------------------------------------------


def _quarantines(site: Site) -> list[dict[str, Any]]:
    return [
        a for a in site.api.get("/v1/incidents/INC-1/actions").json() if a["action"] == "quarantine_feature"
    ]


def test_approving_a_pending_action_from_the_page_runs_it(site: Site) -> None:
    page = site.open("/ui/incidents/INC-1")
    before = _quarantines(site)
    pending = cells(page, "#approval table")
    assert [row[1] for row in pending] == ["quarantine_feature", "quarantine_feature"]
    # Without the token the page says so and sends nothing.
    page.click("form.decision button[data-decision=approve]")
    expect(page.locator("output.decision-result")).to_contain_text("Paste the service token")
    assert _quarantines(site) == before
    shot(page, "approval-INC-1")
    sign_in(page, site)
    page.fill("form.decision input[name=note]", "null rates checked upstream")
    page.click("form.decision button[data-decision=approve]")
    expect(page.locator("output.decision-result")).to_contain_text("approved: INC-1/2 is")
    page.wait_for_load_state("load")
    expect(page.locator("#approval")).to_have_count(0)  # the page reloaded: nothing waits any more
    added = _quarantines(site)[len(before) :]
    assert len(added) == 2 and {a["approval"] for a in added} == {"human:api:alice"}
    plan = cells(page, "article.run[data-thread='INC-1/2'] table.plan")
    quarantined = [row for row in plan if row[1] == "quarantine_feature"]
    assert [row[4] for row in quarantined] == ["applied", "applied"]
    assert [row[5] for row in quarantined] == [a["audit_id"] for a in added]
    assert set(page.locator("#actions code.audit-id").all_inner_texts()) >= {a["audit_id"] for a in added}
    shot(page, "approved-INC-1")
    page.close()


def test_selfheal_deny_goes_through_the_running_service(site: Site) -> None:
    # The service holds the DuckDB file, so the command can only have succeeded through its API.
    result = CliRunner().invoke(
        cli_app, ["deny", "INC-3", "--by", "bob", "--note", "not now", "--home", str(site.home)]
    )
    assert result.exit_code == 0, result.output
    assert "INC-3/2: done (escalated)" in result.stdout and "rollback_model" in result.stdout
    assert "denied" in result.stdout
    page = site.open("/ui/incidents/INC-3")
    plan = cells(page, "article.run[data-thread='INC-3/2'] table.plan")
    [rollback] = [row for row in plan if row[1] == "rollback_model"]
    assert (rollback[4], rollback[6]) == ("denied", "api:bob")
    expect(page.locator("#paging .page-decision").first).to_contain_text("Page sent")
    carried_on = CliRunner().invoke(cli_app, ["investigate", "INC-3", "--home", str(site.home)])
    assert carried_on.exit_code == 0 and "INC-3/2: done (escalated)" in carried_on.stdout, carried_on.output
    listed = CliRunner().invoke(cli_app, ["runs", "--json", "--home", str(site.home)])
    assert listed.exit_code == 0, listed.output
    runs = json.loads(listed.stdout)
    assert runs == site.api.get("/v1/runs").json()
    assert [(r["thread_id"], r["status"]) for r in runs if r["incident_id"] == "INC-3"] == [
        ("INC-3/1", "done"),
        ("INC-3/2", "done"),
    ]
    again = CliRunner().invoke(cli_app, ["approve", "INC-3", "--by", "bob", "--home", str(site.home)])
    assert again.exit_code == 1 and "no investigation waiting for approval" in again.output
    page.close()


def test_the_page_sent_by_the_service_links_its_incident_review_page(site: Site) -> None:
    # The deny above made the service's responder page for INC-3: the link in that page's summary must open
    # this service's review of INC-3 (it used to name a route and a port nothing served).
    pages = site.api.get("/v1/incidents/INC-3/pages").json()
    bodies = [p["payload"]["body"] for p in pages if "**Report.**" in p["payload"].get("body", "")]
    assert bodies, json.dumps(pages)[-2000:]
    link = bodies[-1].split("**Report.**", 1)[1].split()[0]
    assert link == f"{site.url}/ui/incidents/INC-3"
    page = site.api.get(link)
    assert page.status_code == 200 and "INC-3" in page.text


def test_an_action_asked_for_in_chat_is_approved_from_the_page(site: Site) -> None:
    page = site.open("/ui/incidents/INC-3")
    requests = page.locator("#chat-requests li.chat-request")
    expect(requests).to_have_count(1)
    expect(requests.first).to_contain_text("rollback_model")
    expect(requests.first).to_contain_text("asked by api:carol")
    sign_in(page, site, actor="dana")
    requests.first.locator("input[name=note]").fill("v2's fix verified")
    requests.first.locator("button[data-decision=approve]").click()
    expect(requests.first.locator("output.decision-result")).to_contain_text("approved: rollback_model applied")
    page.wait_for_load_state("load")
    expect(page.locator("#chat-requests")).to_have_count(0)  # reloaded: nothing asked for waits any more
    rollbacks = site.api.get("/v1/actions", params={"incident_id": "INC-3", "action": "rollback_model"}).json()
    applied = [a for a in rollbacks if a["result"]["status"] == "applied" and a["approval"] == "human:api:dana"]
    assert len(applied) == 1 and applied[0]["args"] == {"to_version": 2}
    shot(page, "chat-request-INC-3")
    page.close()


# -- safety -------------------------------------------------------------------------------------------


def test_hostile_record_text_renders_as_text_and_runs_nothing(site: Site) -> None:
    dialogs: list[str] = []
    page = site.browser.new_page()

    def on_dialog(dialog: Dialog) -> None:  # alert(), confirm(): what injected script would show first
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    response = page.goto(site.url + "/ui/incidents/INC-4")
    assert response is not None and "script-src 'self'" in response.headers["content-security-policy"]
    expect(page.locator("h1")).to_have_text(f"INC-4: {HOSTILE_TITLE}")
    assert page.locator("main img, main script, main b, main svg[onload]").count() == 0
    assert HOSTILE_MERCHANT in page.locator("#evidence").inner_text()
    assert "<svg onload=window.__pwned=3>" in page.locator("#timeline").inner_text()
    assert page.evaluate("window.__pwned") is None and dialogs == []
    listed = site.open("/ui/")
    assert listed.locator("main img").count() == 0 and listed.evaluate("window.__pwned") is None
    shot(page, "hostile-INC-4")
    for path in ("/ui/", "/ui/incidents/INC-1", "/ui/runbooks", "/ui/static/app.js"):
        assert site.token not in site.api.get(path).text  # the token is never served
    page.close()
    listed.close()


def test_the_runbook_browser_lists_and_renders_runbooks(site: Site) -> None:
    page = site.open("/ui/runbooks")
    listed = [row[0] for row in cells(page, "table.runbooks")]
    assert listed == [r["id"] for r in site.api.get("/v1/runbooks").json()]
    page.click("table.runbooks a:text-is('feature_pipeline_break')")
    page.wait_for_url("**/ui/runbooks/feature_pipeline_break")
    body = site.api.get("/v1/runbooks/feature_pipeline_break").json()["body"]
    headings = [line.lstrip("#").strip() for line in body.splitlines() if line.startswith("## ")]
    assert (
        page.locator("article.runbook h2").all_inner_texts() == headings
    )  # markdown rendered, not shown raw
    # The service reads the runbooks it was started with: here quarantining needs a person.
    expect(page.locator("table.facts")).to_contain_text('"quarantine_feature": "human"')
    shot(page, "runbook")
    page.close()
