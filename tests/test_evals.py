"""The offline eval harness: scenario files, the default suite, scoring, a small-size suite run, LLM record/replay.

`test_small_suite_has_no_regressions` is the `make test` guard: with `tests/test_evals_multiday.py` it plays
the whole default suite (one seed, the small world) through the real simulator, scorer, monitor and
responder and fails on any check a case fails, with the harness's own reasons. The full suite (3 seeds,
default size) is `make eval`; it is too long for every test run.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from agent.llm import ReplayMiss
from evals.faults import FAULTS, ROOT_CAUSES
from evals.harness import CaseObservation, play_case
from evals.scenario import Scenario, ScenarioError, default_scenarios_dir, load_scenario, load_suite
from evals.scoring import pass_hat_k, score_case
from evals.suite import SuiteOptions, SuiteResult, run_suite
from evals.worlds import sized_world, trained_world
from selfheal.cli_eval import open_platform
from tests.fake_openai import FakeOpenAI, Turn, tool_call

SUITE = load_suite(default_scenarios_dir())
# One seed at small size of every one-day scenario of the suite is what every `make test` plays here
# (about 4 s each on an idle machine): faults the platform contains and pages for (feature jobs, a
# producer's schema, the amount's unit), a corrupted only version (fallback and a page, never "verified"),
# a wrong threshold (fixed, no page), an upstream volume drop (a page, no action), two pairs of faults in
# one run, and the hostile-text control. The multi-day scenarios play in `tests/test_evals_multiday.py`, a
# file of its own so that xdist runs them beside these; `make eval` plays the whole suite at default size.
SMALL_SUBSET = (
    "amount-units-shift",
    "control-hostile-merchant-text",
    "corrupt-artifact-only-version",
    "feature-constant-minor",
    "feature-nulls-terminal-risk",
    "multi-feature-then-threshold",
    "multi-threshold-then-volume-drop",
    "schema-change-amount-dropped",
    "threshold-misconfig-low",
    "volume-drop-partner-feed",
)
GOOD = """\
id: good
description: a scenario
world: {seed: 1, customers: 500, terminals: 1000, history_days: 30, live_days: 1}
faults:
  - kind: feature_nulls
    start: "day 0 10:00"
    params: {features: [terminal_risk_7d], rate: 1.0}
expect:
  incident: true
  detect_within: 2h
  kinds: [data_quality]
  root_cause: feature_pipeline_break
  end_state_any_of: [{fallback: true}]
  page: true
"""


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One trained-world cache for the module: each small world is trained once."""
    return tmp_path_factory.mktemp("eval-cache")


def _write(tmp_path: Path, text: str, name: str = "scenario.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# -- scenario files -------------------------------------------------------------------------------------


def test_a_good_scenario_file_loads_with_its_times_and_faults(tmp_path: Path) -> None:
    scenario = load_scenario(_write(tmp_path, GOOD))
    assert (
        scenario.expect[0].detect_within is not None
        and scenario.expect[0].detect_within.total_seconds() == 7200
    )
    assert scenario.faults[0].start.total_seconds() == 10 * 3600
    assert not scenario.is_control and scenario.expect[0].recovery_required


@pytest.mark.parametrize(
    ("old", "new", "field", "words"),
    [
        ("kind: feature_nulls", "kind: feature_nuls", "faults.0.kind", "unknown fault kind 'feature_nuls'"),
        ('start: "day 0 10:00"', 'start: "tuesday 10am"', "faults.0.start", "not a time like 'day 3 10:00'"),
        ('start: "day 0 10:00"', 'start: "day 0 25:00"', "faults.0.start", "hour must be 0-23"),
        ("detect_within: 2h", "detect_within: soon", "expect.0.detect_within", "not a duration"),
        ("root_cause: feature_pipeline_break", "root_cause: gremlins", "expect.0.root_cause", "unknown root cause 'gremlins'"),
        ("kinds: [data_quality]", "kinds: [data_qualty]", "expect.0.kinds", "unknown incident kind"),
        ("rate: 1.0}", "rat: 1.0}", "faults.0.params.rat", "unknown parameter"),
        ("[terminal_risk_7d]", "[terminal_risk_8d]", "faults.0.params.features", "unknown feature"),
        ("page: true", "page: true\n  pager: yes", "expect.0.pager", "unknown field"),
        ("live_days: 1", "live_days: 0", "world.live_days", "greater than or equal to 1"),
    ],
)  # fmt: skip
def test_a_scenario_file_with_a_mistake_is_rejected_naming_the_file_and_the_field(
    tmp_path: Path, old: str, new: str, field: str, words: str
) -> None:
    assert old in GOOD
    path = _write(tmp_path, GOOD.replace(old, new), "broken.yaml")
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: field '{field}'"), message
    assert words in message, message
    assert caught.value.field == field and caught.value.path == path


def test_a_key_written_twice_is_rejected_not_silently_overwritten(tmp_path: Path) -> None:
    # YAML keeps the later of two equal keys: this file's expectation used to become "no page".
    assert "  page: true\n" in GOOD
    path = _write(tmp_path, GOOD.replace("  page: true\n", "  page: true\n  page: false\n"), "twice.yaml")
    with pytest.raises(ScenarioError, match=r"twice\.yaml: .*duplicate key 'page' \(first on line \d+\)"):
        load_scenario(path)


def test_a_fault_starting_after_the_live_period_and_a_duplicate_id_are_rejected(tmp_path: Path) -> None:
    late = _write(tmp_path, GOOD.replace('"day 0 10:00"', '"day 3 10:00"'), "late.yaml")
    with pytest.raises(
        ScenarioError, match=r"late\.yaml: field 'faults\.0\.start': starts after the live period"
    ):
        load_scenario(late)
    folder = tmp_path / "suite"
    folder.mkdir()
    _write(folder, GOOD, "a.yaml")
    _write(folder, GOOD, "b.yaml")
    with pytest.raises(ScenarioError, match=r"b\.yaml: field 'id': 'good' is also the id of"):
        load_suite(folder)


def test_the_default_suite_covers_what_the_issue_asks_for() -> None:
    """At least 16 scenarios: every DESIGN 5 root cause, three controls (one a benign seasonal shift), two with
    faults at once, hostile text in the data, and a label stall where the answer is to page without acting."""
    assert len(SUITE) >= 16
    expected = {e.root_cause for s in SUITE for e in s.expect if e.incident}
    fault_causes = {FAULTS[f.kind].root_cause for s in SUITE for f in s.faults}
    assert set(ROOT_CAUSES) - {"none", "benign_seasonal_shift"} <= expected
    assert {"benign_seasonal_shift", "none"} <= fault_causes
    controls = [s for s in SUITE if s.is_control]
    assert len(controls) >= 3
    assert any(f.kind == "benign_seasonal" for s in controls for f in s.faults)
    assert any(f.kind == "text_injection" for s in controls for f in s.faults)
    assert all(e.page is False for s in controls for e in s.expect)
    assert len([s for s in SUITE if len([e for e in s.expect if e.incident]) >= 2]) >= 2
    stall = [e for s in SUITE for e in s.expect if e.root_cause == "label_pipeline_stall"]
    assert stall and all(
        e.page and [x.keys() for x in e.end_state_any_of] == [{"no_action": True}] for e in stall
    )
    assert set(SMALL_SUBSET) <= {s.id for s in SUITE}


def test_pass_hat_k_is_tau_bench_s() -> None:
    # Two tasks, three trials: one always passes, one passes twice.
    assert pass_hat_k([3, 2], 3, 1) == pytest.approx((1 + 2 / 3) / 2)
    assert pass_hat_k([3, 2], 3, 2) == pytest.approx((1 + 1 / 3) / 2)
    assert pass_hat_k([3, 2], 3, 3) == pytest.approx(0.5)


# -- the suite at small size ------------------------------------------------------------------------------


def failures(result: SuiteResult) -> list[str]:
    return [f"{c.id} seed {c.seed}: {check.name}: {check.why}" for c in result.cases for check in c.failures]


def subset(ids: tuple[str, ...]) -> list[Scenario]:
    return [s for s in SUITE if s.id in ids]


@pytest.mark.slow
def test_small_suite_has_no_regressions(cache: Path, tmp_path: Path) -> None:
    """Every expectation of the subset holds at small size (any failing check fails `make test`)."""
    result = run_suite(
        subset(SMALL_SUBSET),
        SuiteOptions(seeds=1, size="small", cache_dir=cache, work_dir=tmp_path),
        open_platform,
    )
    assert [c.id for c in result.cases] == sorted(SMALL_SUBSET)
    assert failures(result) == []
    summary = result.summary
    assert summary["detection_recall"] == 1.0 and summary["false_incidents_on_controls"] == 0
    assert summary["page_confusion"] == {"tp": 8, "fp": 0, "fn": 0, "tn": 4}
    assert summary["forbidden_actions"] == summary["needless_actions"] == 0 and summary["pass_hat_k"] == 1.0
    data = json.loads(json.dumps(result.to_json(), default=str))
    for key in (
        "scenarios",
        "runs",
        "detection_recall",
        "false_incidents_on_controls",
        "root_cause_accuracy",
        "remediation_success",
        "page_precision",
        "page_recall",
        "forbidden_actions",
        "median_time_to_detect_min",
        "median_time_to_mitigate_min",
        "pass_hat_k",
        "llm_calls",
        "tokens",
    ):
        assert key in data["summary"], key  # fmt: skip
    case = data["cases"][0]
    assert {"id", "seed", "checks"} <= set(case) and all(
        {"passed", "why"} <= set(c) for c in case["checks"].values()
    )


# -- scoring: each check can fail ------------------------------------------------------------------------
# The suite tests above assert that checks pass; these take one real played case and change what it saw, so
# a check that stopped looking (always passing) fails here.


@pytest.fixture(scope="module")
def played_threshold_case(cache: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Scenario, CaseObservation]:
    scenario = subset(("threshold-misconfig-low",))[0]
    world = trained_world(sized_world(scenario.world, "small"), "small", open_platform, cache)
    return scenario, play_case(scenario, world, tmp_path_factory.mktemp("played") / "home", open_platform)


def _failed(scenario: Scenario, observation: CaseObservation) -> set[str]:
    return {check.name for check in score_case(scenario, observation, None).failures}


def test_the_played_case_passes_as_observed(played_threshold_case: tuple[Scenario, CaseObservation]) -> None:
    assert _failed(*played_threshold_case) == set()


def test_an_undone_fix_fails_the_end_state(played_threshold_case: tuple[Scenario, CaseObservation]) -> None:
    scenario, observation = played_threshold_case
    # The responder's restore never happened: the last serving state keeps the rollout's thresholds.
    history = [s for s in observation.serving_history if s["changed_by"] != "agent"]
    assert len(history) < len(observation.serving_history)
    assert "end_state" in _failed(scenario, dataclasses.replace(observation, serving_history=history))


def test_a_forbidden_action_fails_the_case(played_threshold_case: tuple[Scenario, CaseObservation]) -> None:
    scenario, observation = played_threshold_case
    rollback = {**observation.actions[-1], "action": "rollback_model", "status": "applied", "args": {"to_version": 1}}
    failed = _failed(scenario, dataclasses.replace(observation, actions=[*observation.actions, rollback]))
    assert "forbidden_actions" in failed


def test_a_page_where_none_is_expected_fails_the_page_check(
    played_threshold_case: tuple[Scenario, CaseObservation],
) -> None:
    scenario, observation = played_threshold_case
    incident = observation.incidents[0]
    page = {"incident_id": incident["incident_id"], "at": incident["opened_at"]}
    assert "page" in _failed(scenario, dataclasses.replace(observation, pages=[*observation.pages, page]))


def test_a_late_incident_fails_detection_in_time(played_threshold_case: tuple[Scenario, CaseObservation]) -> None:
    scenario, observation = played_threshold_case
    late = [{**i, "opened_at": i["opened_at"] + timedelta(hours=5)} for i in observation.incidents]
    assert "detect_within" in _failed(scenario, dataclasses.replace(observation, incidents=late))


def test_an_undetected_fault_fails_what_it_could_not_have_and_only_that(
    played_threshold_case: tuple[Scenario, CaseObservation],
) -> None:
    scenario, observation = played_threshold_case
    unseen = dataclasses.replace(observation, incidents=[])
    # The scenario asks for an end state and for no page: the miss fails detection, the diagnosis and the end
    # state; "no page" is not judged again without an incident.
    assert _failed(scenario, unseen) == {"detected", "root_cause", "end_state"}
    paging = scenario.model_copy(
        update={"expect": [e.model_copy(update={"page": True}) for e in scenario.expect]}
    )
    assert _failed(paging, unseen) == {"detected", "root_cause", "end_state", "page"}


# -- LLM record / replay ----------------------------------------------------------------------------------

_INCIDENT = re.compile(r"INC-\d+")
_CANDIDATE = re.compile(r"### runbook `(\w+)` \(root cause (\w+);")


def _scripted_model(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> Turn:
    """A model that reads the incident, then follows the first candidate runbook (a proposal code checks)."""
    user = next(m["content"] for m in messages if m["role"] == "user")
    if not any(m["role"] == "tool" for m in messages):
        return tool_call("get_incident", {"incident_id": _INCIDENT.findall(user)[0]})
    found = _CANDIDATE.search(user)
    runbook, cause = found.groups() if found else (None, "none")
    return tool_call("submit_diagnosis", {
        "root_cause": cause, "runbook_id": runbook, "confidence": 0.7,
        "evidence": ["the incident's evidence bundle (get_incident)"], "reason": "the first candidate fits",
        "actions": [{"action": "add_note", "args": {"text": "investigated by the scripted model"}}],
    })  # fmt: skip


def _scores(result: SuiteResult) -> dict[str, Any]:
    """Everything a result says except how long it took."""
    data = json.loads(json.dumps(result.to_json(), default=str))
    data["summary"] = {k: v for k, v in data["summary"].items() if "wall" not in k}
    data.pop("options")
    for case in data["cases"]:
        case.pop("wall_seconds")
    return data


@pytest.fixture(scope="module")
def recorded(cache: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[SuiteResult, Path, Any, int]:
    """A one-scenario LLM run recorded from the scripted fake server, which is stopped afterwards."""
    from agent.llm import LLMConfig

    work = tmp_path_factory.mktemp("llm-record")
    recordings = work / "recordings"
    with FakeOpenAI() as server:
        server.script(_scripted_model)
        config: LLMConfig = server.config()
        options = SuiteOptions(
            seeds=1, size="small", planner="llm", record=recordings, cache_dir=cache, llm_config=config,
            work_dir=work / "record",
        )  # fmt: skip
        result = run_suite(subset(("threshold-misconfig-low",)), options, open_platform)
        served = len(server.requests)
    server.check()  # nothing unscripted was asked
    return result, recordings, config, served


def test_a_recorded_llm_run_replays_offline_to_identical_scores(
    recorded: tuple[SuiteResult, Path, Any, int], cache: Path, tmp_path: Path
) -> None:
    """The server is stopped: a request that went live would fail, degrade the planner and change scores."""
    first, recordings, config, served = recorded
    assert first.summary["llm_calls"] == served >= 2 and first.summary["tokens"] > 0
    assert first.cases[0].entries[0].root_cause == "threshold_misconfig"
    options = SuiteOptions(
        seeds=1, size="small", planner="llm", replay=recordings, cache_dir=cache, llm_config=config,
        work_dir=tmp_path / "replay",
    )  # fmt: skip
    again = run_suite(subset(("threshold-misconfig-low",)), options, open_platform)
    assert _scores(again) == _scores(first)


def test_a_replay_miss_is_an_error_naming_the_request(
    recorded: tuple[SuiteResult, Path, Any, int], cache: Path, tmp_path: Path
) -> None:
    _, recordings, config, _ = recorded
    damaged = tmp_path / "damaged"
    shutil.copytree(recordings, damaged)
    for path in sorted((damaged / "threshold-misconfig-low-seed0").glob("*.json"))[1:]:
        path.unlink()  # keep the first exchange only: the second request has no recording
    options = SuiteOptions(
        seeds=1, size="small", planner="llm", replay=damaged, cache_dir=cache, llm_config=config,
        work_dir=tmp_path / "miss",
    )  # fmt: skip
    with pytest.raises(
        ReplayMiss, match=r"no recording for request [0-9a-f]{16} \(model '[^']+', \d+ messages\)"
    ):
        run_suite(subset(("threshold-misconfig-low",)), options, open_platform)
