"""Read tools: one conformance suite over every registered read tool, a schema snapshot, and behaviour.

The seeded workspace is the trained small world played live for a day and a bit through the real scorer
with the monitor after every hour, and a terminal-risk feature outage in the middle, so the store holds
predictions, labels, hourly and daily findings and a data-quality incident. A second model version, an
older incident of the same kind with audit rows, a serving change and two runbook files are added on top.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import tools.sql  # noqa: F401  (registers sql and describe_tables)
from selfheal.app import Platform
from tests.conftest import SmallWorld
from tests.incident_worlds import feature_outage
from tools.context import ToolContext
from tools.errors import ToolRetry
from tools.read import compact, parse_window
from tools.registry import call_tool, openai_tool_schemas, registered_tools
from tools.runbooks.library import SHIPPED_RUNBOOKS

if importlib.util.find_spec("tools.actions") is not None:  # written in parallel; snapshot covers it when present
    importlib.import_module("tools.actions")

SNAPSHOT = Path(__file__).parent / "snapshots" / "tool_schemas.json"
HOURS = 27  # crosses one midnight, so daily drift checks ran once
FAULT = (8, 14)  # live hours of the terminal-risk outage
HOUR = timedelta(hours=1)

@dataclass
class Seeded:
    ctx: ToolContext
    platform: Platform
    live_start: datetime
    incident_id: str
    past_incident_id: str


@pytest.fixture(scope="module")
def seeded(small_world: SmallWorld, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    world = feature_outage(
        small_world, tmp_path_factory.mktemp("read-tools") / "workspace", feature="terminal_risk_7d", outage=FAULT, days=2
    )
    list(world.play(HOURS))
    platform, monitor, clock, start, home = world.platform, world.monitor, world.clock, world.live_start, world.platform.workspace.home
    incident = next(i for i in monitor.incidents.list() if i.kind == "data_quality")
    _seed_history(platform, incident.incident_id, start)
    runbooks = home / "runbooks"
    shutil.copytree(SHIPPED_RUNBOOKS, runbooks)
    # A broken user runbook must not hide the others.
    (runbooks / "half_written.md").write_text("---\nid: half_written\n---\nnot done\n")
    ctx = ToolContext(
        store=platform.store, registry=platform.registry, serving=platform.serving, incidents=monitor.incidents,
        clock=clock, scorer=platform.scorer, monitor=monitor, runbooks_dir=runbooks,
    )
    yield Seeded(ctx, platform, start, incident.incident_id, "INC-900")
    platform.close()


def _seed_history(platform: Platform, incident_id: str, start: datetime) -> None:
    """A second model version, a past incident like the live one with what was done, a serving change."""
    v1 = platform.registry.get(1)
    meta = v1.metadata.model_copy(
        update={"params": {**v1.metadata.params, "max_depth": 9}, "metrics": {**v1.metadata.metrics, "auc": 0.5}}
    )
    platform.registry.register(platform.registry.load(1).booster, meta, actor="test", reason="a challenger", alias="challenger")
    store = platform.store
    live = store.query("SELECT * FROM incidents WHERE incident_id = ?", [incident_id])
    past = live.assign(
        incident_id="INC-900", number=900, status="resolved", opened_at=start - timedelta(days=20),
        closed_at=start - timedelta(days=19), root_cause="feature_pipeline_break", summary="quarantined the feature",
    )
    store.append("incidents", past)
    store.append(
        "audit_log",
        pd.DataFrame(
            {
                "audit_id": ["a1"], "recorded_at": [start - timedelta(days=20)], "actor": ["agent"],
                "action": ["quarantine_feature"], "incident_id": ["INC-900"],
                "args": [json.dumps({"feature": "terminal_risk_7d"})], "result": [json.dumps({"ok": True})],
                "reason": ["nulls"], "approval": ["not_required"], "idempotency_key": ["k1"], "inverse": [None],
            }
        ),
    )
    platform.serving.update(actor="test", reason="tighter threshold", threshold=0.6)


def _examples(seeded: Seeded) -> dict[str, dict[str, Any]]:
    """Arguments for every read tool: a read tool without an example here fails the conformance test."""
    window = f"{seeded.live_start.isoformat()}/{(seeded.live_start + HOURS * HOUR).isoformat()}"
    return {
        "sql": {"query": "SELECT decision, count(*) AS n FROM predictions GROUP BY ALL ORDER BY 1"},
        "describe_tables": {},
        "get_incident": {"incident_id": seeded.incident_id},
        "similar_incidents": {"incident_id": seeded.incident_id},
        "drift_report": {"window": window},
        "quality_report": {"window": "last_24h"},
        "performance_report": {"window": "last_7d"},
        "score_distribution": {"window": window},
        "latency_report": {"window": "last_24h"},
        "list_models": {},
        "get_model": {"version": 1},
        "diff_models": {"a": 1, "b": 2},
        "serving_state": {},
        "serving_history": {},
        "get_runbook": {"runbook_id": "feature_pipeline_break"},
        "search_runbooks": {"text": "data_quality terminal_risk_7d null"},
    }


READ_TOOLS = sorted(name for name, spec in registered_tools().items() if spec.kind == "read")


def test_every_tool_the_issue_names_is_registered_as_a_read_tool() -> None:
    named = {
        "sql", "describe_tables", "get_incident", "drift_report", "quality_report", "performance_report",
        "score_distribution", "latency_report", "list_models", "get_model", "diff_models", "serving_state",
        "serving_history", "similar_incidents", "get_runbook", "search_runbooks",
    }
    assert named <= set(READ_TOOLS)


@pytest.mark.parametrize("name", READ_TOOLS)
def test_read_tool_conformance(seeded: Seeded, name: str) -> None:
    """Documented, typed, riskless, and it runs on the seeded store returning compact JSON."""
    spec = registered_tools()[name]
    assert spec.kind == "read" and spec.risk == "none"
    assert len(spec.description) > 20, "the description is what the model reads"
    schema = spec.json_schema()
    assert schema.get("additionalProperties") is False
    for prop, body in schema.get("properties", {}).items():
        assert body.get("description"), f"{name}.{prop} has no description"
    examples = _examples(seeded)
    assert name in examples, f"add example arguments for read tool {name}"
    counts_before = {t: seeded.ctx.store.count(t) for t in ("predictions", "audit_log", "serving_state", "incidents")}
    result = call_tool(name, seeded.ctx, examples[name])
    json.dumps(result.data, allow_nan=False)  # strictly JSON: no NaN, no objects
    assert not result.truncated, f"{name} output is {len(result.content)} chars: make it more compact"
    assert {t: seeded.ctx.store.count(t) for t in counts_before} == counts_before
    with pytest.raises(ToolRetry):
        call_tool(name, seeded.ctx, {**examples[name], "unexpected": 1})


def test_tool_schemas_match_the_snapshot() -> None:
    """What the model sees; regenerate with SELFHEAL_UPDATE_SNAPSHOTS=1 after a deliberate change."""
    current = json.dumps(openai_tool_schemas(), indent=2, sort_keys=True) + "\n"
    if os.environ.get("SELFHEAL_UPDATE_SNAPSHOTS") == "1":
        SNAPSHOT.parent.mkdir(parents=True, exist_ok=True)
        SNAPSHOT.write_text(current)
    assert SNAPSHOT.exists(), f"no snapshot: run with SELFHEAL_UPDATE_SNAPSHOTS=1 to write {SNAPSHOT}"
    assert json.loads(SNAPSHOT.read_text()) == json.loads(current), (
        "tool schemas changed: review the difference, then run with SELFHEAL_UPDATE_SNAPSHOTS=1"
    )


# -- behaviour ------------------------------------------------------------------------------------


def test_windows_parse_relative_and_absolute_and_refuse_nonsense() -> None:
    now = datetime(2018, 6, 2, 12)
    assert parse_window("last_24h", now) == (datetime(2018, 6, 1, 12), now)
    assert parse_window("last_7d", now)[0] == datetime(2018, 5, 26, 12)
    assert parse_window("last_90m", now)[0] == datetime(2018, 6, 2, 10, 30)
    assert parse_window("2018-06-01T00:00/2018-06-02T00:00", now) == (datetime(2018, 6, 1), datetime(2018, 6, 2))
    for bad, message in [
        ("yesterday", "not understood"),
        ("2018-06-02/2018-06-01", "backwards"),
        ("2018-13-01/2018-06-01", "window"),
        ("last_200d", "longer than 90 days"),
    ]:
        with pytest.raises(ToolRetry, match=message):
            parse_window(bad, now)


def test_compact_rounds_and_cuts() -> None:
    assert compact({"x": 0.123456789, "n": float("nan"), "l": list(range(30))}) == {
        "x": 0.1235, "n": None, "l": [*range(20), "... 10 more"]
    }


def test_get_incident_shows_evidence_and_timeline(seeded: Seeded) -> None:
    data = call_tool("get_incident", seeded.ctx, {"incident_id": seeded.incident_id}).data
    assert data["kind"] == "data_quality" and "terminal_risk_7d" in data["evidence"]["features"]
    assert data["timeline"][0]["event"] == "opened"
    assert data["event_counts"]["opened"] == 1
    with pytest.raises(ToolRetry, match="no incident 'INC-404'"):
        call_tool("get_incident", seeded.ctx, {"incident_id": "INC-404"})


def test_similar_incidents_finds_the_past_one_and_what_fixed_it(seeded: Seeded) -> None:
    data = call_tool("similar_incidents", seeded.ctx, {"incident_id": seeded.incident_id}).data
    assert [i["incident_id"] for i in data["similar"]] == [seeded.past_incident_id]
    past = data["similar"][0]
    assert past["root_cause"] == "feature_pipeline_break"
    assert past["actions"][0]["args"] == {"feature": "terminal_risk_7d"}
    assert data["actions_in_resolved_or_mitigated"] == {"quarantine_feature": 1}


def test_quality_report_names_the_broken_feature(seeded: Seeded) -> None:
    start = seeded.live_start + FAULT[0] * HOUR
    window = f"{start.isoformat()}/{(start + 4 * HOUR).isoformat()}"
    data = call_tool("quality_report", seeded.ctx, {"window": window}).data
    assert data["hours"] == 4
    problem = data["feature_problems"]["terminal_risk_7d"]
    assert problem["null_rate"] == 1.0 and problem["reference_null_rate"] < 0.05
    assert any(f["check_name"] == "feature_quality" and f["breaches"] >= 1 for f in data["findings"])


def test_drift_report_details_one_feature_and_refuses_unknown_ones(seeded: Seeded) -> None:
    window = f"{seeded.live_start.isoformat()}/{(seeded.live_start + 24 * HOUR).isoformat()}"
    data = call_tool("drift_report", seeded.ctx, {"window": window, "feature": "amount"}).data
    (amount,) = data["features"]
    assert amount["feature"] == "amount" and {"psi", "js", "ks", "wasserstein_iqr"} <= set(amount)
    assert len(amount["top_bins"]) == 5
    assert any(f["check_name"] == "data_drift" and f["cadence"] == "day" for f in data["findings"])
    everything = call_tool("drift_report", seeded.ctx, {"window": window}).data
    psis = [f["psi"] for f in everything["features"]]
    assert psis == sorted(psis, reverse=True)
    with pytest.raises(ToolRetry, match="no drift subject 'amout'"):
        call_tool("drift_report", seeded.ctx, {"window": window, "feature": "amout"})


def test_a_window_without_monitoring_says_so(seeded: Seeded) -> None:
    data = call_tool("drift_report", seeded.ctx, {"window": "2001-01-01/2001-01-02"}).data
    assert data["hours"] == 0 and "no hourly windows" in data["note"]


def test_models_are_listed_and_diffed(seeded: Seeded) -> None:
    listed = call_tool("list_models", seeded.ctx, {}).data
    assert [m["version"] for m in listed["models"]] == [2, 1]
    assert listed["aliases"]["champion"] == 1 and listed["aliases"]["challenger"] == 2
    model = call_tool("get_model", seeded.ctx, {"version": 1}).data
    assert model["integrity"]["ok"] is True and "champion" in model["aliases"]
    diff = call_tool("diff_models", seeded.ctx, {"a": 1, "b": 2}).data
    assert diff["params"]["max_depth"]["b"] == 9
    assert diff["metrics"]["auc"]["b"] == 0.5 and diff["metrics"]["auc"]["b_minus_a"] < 0
    assert "training_window" in diff["same"] and diff["features_only_in_b"] == []
    with pytest.raises(ToolRetry, match="no model v7"):
        call_tool("get_model", seeded.ctx, {"version": 7})


def test_serving_state_and_history(seeded: Seeded) -> None:
    state = call_tool("serving_state", seeded.ctx, {}).data
    assert state["threshold"] == 0.6 and state["champion_version"] == 1
    history = call_tool("serving_history", seeded.ctx, {}).data
    newest = history["changes"][0]
    assert newest["reason"] == "tighter threshold" and set(newest["changed"]) == {"threshold"}


def test_runbooks_are_read_and_searched(seeded: Seeded) -> None:
    book = call_tool("get_runbook", seeded.ctx, {"runbook_id": "feature_pipeline_break"}).data
    assert book["front_matter"]["triggers"]["kinds"] == ["data_quality"]
    assert "quarantine_feature" in book["front_matter"]["actions"] and "## Investigate" in book["body"]
    found = call_tool("search_runbooks", seeded.ctx, {"text": "slow model deploy latency"}).data
    assert found["runbooks"][0]["id"] == "slow_model_deploy"
    assert found["unreadable_files"] == ["half_written.md"]
    with pytest.raises(ToolRetry, match="did you mean 'feature_pipeline_break'"):
        call_tool("get_runbook", seeded.ctx, {"runbook_id": "feature_pipeline_brake"})


def test_performance_report_counts_labelled_predictions(seeded: Seeded) -> None:
    data = call_tool("performance_report", seeded.ctx, {"window": "last_7d"}).data
    assert data["predictions"] > 0 and data["labelled"] + data["unlabelled"] == data["predictions"]
    assert "recall_at_review" in data["champion_reference"]


def test_latency_and_scores_are_reported_per_version(seeded: Seeded) -> None:
    latency = call_tool("latency_report", seeded.ctx, {"window": "last_24h"}).data
    assert latency["by_model_version"][0]["model_version"] == 1 and latency["hours"] == 24
    scores = call_tool("score_distribution", seeded.ctx, {"window": "last_24h"}).data
    assert scores["serving"]["threshold"] == 0.6
    assert {"psi", "js", "ks", "wasserstein_iqr"} <= set(scores["score_drift"])

