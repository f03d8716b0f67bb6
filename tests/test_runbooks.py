"""Runbooks: the shipped ones lint clean and cover every root cause, the linter catches each class of
mistake at the right line, expressions never run anything outside their whitelist, parse and render
round-trip, the evidence vocabulary matches what the monitor's checks emit, and the CLI works."""

from __future__ import annotations

import re
import shutil
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.main import get_command
from typer.testing import CliRunner

from monitor.checks import CHECKS, CheckContext
from monitor.counts import SCORE_SUBJECT, SubjectCounts, WindowCounts
from monitor.findings import INCIDENT_KINDS, ROOT_CAUSES, Finding
from monitor.incidents import Incident, IncidentManager, _evidence
from monitor.profile import ReferenceProfile
from selfheal.app import Platform
from selfheal.cli_runbooks import runbooks_app
from tools.context import ToolContext
from tools.registry import call_tool
from tools.runbooks import (
    EVIDENCE_FIELDS,
    NAMESPACE_FIELDS,
    ExpressionError,
    Runbook,
    RunbookError,
    RunbookLibrary,
    build_scope,
    check_expression,
    evaluate,
    lint_file,
    lint_paths,
    lint_text,
    load_tools,
    parse_runbook,
    read_runbook,
    render,
    render_runbook,
    runbook_template,
)
from tools.runbooks.expressions import FUNCTION_NAMES, MAX_SIZE
from tools.runbooks.library import SHIPPED_RUNBOOKS
from tools.runbooks.model import FrontMatter, Triggers, Verification
from tools.runbooks.parser import MAX_RUNBOOK_BYTES
from tools.runbooks.templates import is_template

BAD = Path(__file__).parent / "fixtures" / "runbooks_bad"
runner = CliRunner()

# -- the shipped runbooks -------------------------------------------------------------------------------


def test_shipped_runbooks_lint_clean() -> None:
    problems = lint_paths([SHIPPED_RUNBOOKS])
    assert problems == [], "\n".join(map(str, problems))


# DESIGN 5: the page column, and the incident kinds each root cause usually shows as.
DESIGN_5 = {
    "feature_pipeline_break": ("always", {"data_quality"}),
    "schema_change": ("always", {"data_quality"}),
    "upstream_volume_drop": ("always", {"volume"}),
    "benign_seasonal_shift": ("never", set()),
    "population_shift": ("never", {"data_drift"}),
    "new_fraud_pattern": ("if_unverified", {"performance_decay", "prediction_drift"}),
    "bad_model_deploy": ("if_unverified", {"performance_decay", "prediction_drift"}),
    "slow_model_deploy": ("if_unverified", {"latency"}),
    "corrupted_artifact": ("if_unverified", {"model_integrity"}),
    "threshold_misconfig": ("if_unverified", {"prediction_drift"}),
    "label_pipeline_stall": ("always", {"label_freshness"}),
}


def test_shipped_runbooks_cover_every_root_cause_as_design_5_says() -> None:
    library = RunbookLibrary.load(SHIPPED_RUNBOOKS)
    assert set(DESIGN_5) == set(ROOT_CAUSES) - {"none"}
    for cause, (paging, kinds) in DESIGN_5.items():
        runbooks = library.for_root_cause(cause)
        assert runbooks, f"no runbook for {cause}"
        for runbook in runbooks:
            assert runbook.paging == paging, runbook.id
            assert kinds <= set(runbook.triggers.kinds), runbook.id
            assert runbook.steps, f"{runbook.id} has no machine steps"
            # Paging "always" runbooks say so in a page step; others never page on their own.
            pages = [s for s in runbook.steps if s.name == "page"]
            assert bool(pages) == (paging == "always"), runbook.id


def test_rollbacks_and_fallbacks_are_where_design_5_puts_them() -> None:
    library = RunbookLibrary.load(SHIPPED_RUNBOOKS)
    actions = {r.id: {s.name for s in r.steps if s.block == "action"} for r in library}
    assert (
        "rollback_model" in actions["bad_model_deploy"] and "rollback_model" in actions["slow_model_deploy"]
    )
    assert {"enable_fallback_rules", "rollback_model"} <= actions["corrupted_artifact"]
    assert {"quarantine_feature", "enable_fallback_rules"} <= actions["feature_pipeline_break"]
    assert actions["threshold_misconfig"] >= {"set_threshold"}
    assert {"retrain_model", "promote_model"} <= actions["new_fraud_pattern"]
    for quiet in ("upstream_volume_drop", "label_pipeline_stall", "benign_seasonal_shift"):
        assert actions[quiet] <= {"add_note", "page"}, quiet


# -- the linter catches each class of mistake -----------------------------------------------------------

# fixture -> (line, code, words the message must contain); None: the file itself is fine.
EXPECTED = {
    "unknown_tool.md": (27, "unknown-tool", "unknown tool 'quality_reprot' (did you mean 'quality_report'?)"),
    "unknown_action.md": (38, "unknown-action", "unknown action 'quarantine_features'"),
    "bad_arguments.md": (40, "bad-arguments", "quarantine_feature takes no argument 'window_days'"),
    "bad_expression.md": (41, "bad-expression", "incomplete expression"),
    "unsafe_expression.md": (41, "unsafe-expression", "attribute '__class__' is not allowed"),
    "unknown_evidence_field.md": (41, "unknown-evidence-field", "evidence field 'null_rate' does not exist"),
    "unknown_incident_kind.md": (6, "unknown-incident-kind", "unknown incident kind 'data_qualty'"),
    "action_not_allowed.md": (
        38,
        "action-not-allowed",
        "action 'enable_fallback_rules' is used but not allowed",
    ),
    "missing_section.md": (17, "missing-section", "missing required section '## Verify'"),
    "missing_field.md": (2, "missing-field", "missing required field 'paging'"),
    "duplicate_id_a.md": None,
    "duplicate_id_b.md": (2, "duplicate-id", "duplicate id 'duplicate_id': also used by"),
}


@pytest.fixture(scope="module")
def bad_problems() -> dict[str, list[Any]]:
    problems = lint_paths([BAD])
    by_file: dict[str, list[Any]] = {path.name: [] for path in BAD.glob("*.md")}
    for problem in problems:
        by_file[Path(problem.path).name].append(problem)
    return by_file


def test_every_bad_fixture_has_an_expectation(bad_problems: dict[str, list[Any]]) -> None:
    assert set(bad_problems) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bad_fixture_is_caught_with_the_right_message_and_line(
    name: str, bad_problems: dict[str, list[Any]]
) -> None:
    expected = EXPECTED[name]
    found = bad_problems[name]
    if expected is None:
        assert found == []
        return
    line, code, words = expected
    assert [(p.line, p.code) for p in found] == [(line, code)], "\n".join(map(str, found))
    assert words in found[0].message
    assert re.fullmatch(rf".*{re.escape(name)}:{line}: .+ \[{code}\]", str(found[0]))


def _shipped_text(runbook_id: str = "corrupted_artifact") -> str:
    return (SHIPPED_RUNBOOKS / f"{runbook_id}.md").read_text()


@pytest.mark.parametrize(
    "old,new,code",
    [
        ("tool: list_models", "action: list_models", "syntax"),  # the key must match the fence
        ("```tool\ntool: list_models", "```action\naction: list_models", "wrong-block"),
        ("  add_note: auto", "  add_note: sometimes", "front-matter"),
        ("  within: 2h", "  within: soon", "front-matter"),
        ("  check: model_integrity\n  within", "  check: model_integrty\n  within", "unknown-check"),
        ("root_cause: corrupted_artifact", "root_cause: gremlins", "unknown-root-cause"),
        (
            "  disable_fallback_rules: auto\n",
            "  disable_fallback_rules: auto\n  sql: auto\n",
            "unknown-action",
        ),
        ('when: "not serving.fallback"', 'when: "not serving.falback"', "unknown-field"),
        ('when: "not serving.fallback"', 'when: "results.missing"', "unknown-field"),
        ('when: "not serving.fallback"', 'when: "item"', "bad-expression"),
        ('when: "not serving.fallback"', "when: \"__import__('os').system('true')\"", "unsafe-expression"),
        ('{to_version: "{{ model.last_verified_version }}"}', "{to_version: two}", "bad-arguments"),
        ('{to_version: "{{ model.last_verified_version }}"}', "{}", "bad-arguments"),
        (
            '{to_version: "{{ model.last_verified_version }}"}',
            '{to_version: "{{ model.version"}',
            "bad-expression",
        ),
        ("## Decide", "## Decide\n\n<FILL IN: the rule>", "unfilled-template"),
    ],
)
def test_each_edit_of_a_clean_runbook_is_reported(old: str, new: str, code: str) -> None:
    text = _shipped_text()
    assert old in text
    problems = lint_text(text.replace(old, new, 1), "corrupted_artifact.md")
    assert problems and {p.code for p in problems} == {code}, "\n".join(map(str, problems))


def test_problem_lines_point_at_the_offending_key() -> None:
    text = _shipped_text().replace('when: "not serving.fallback"', 'when: "serving.nope"', 1)
    (problem,) = lint_text(text, "x.md")
    assert text.splitlines()[problem.line - 1].startswith("when:")


# -- expressions ---------------------------------------------------------------------------------------

SCOPE = {
    "evidence": {
        "features": ["amount", "terminal_risk_7d"],
        "value": 0.3,
        "problems": {"amount": {"null_rate": 0.4}},
    },
    "serving": {"threshold": 0.5, "fallback": False, "previous_threshold": None},
    "model": {"importance": {"amount": 0.05, "terminal_risk_7d": 0.3}, "version": 2, "previous_version": 1},
    "incident": {"incident_id": "INC-3"},
    "results": {},
}


@pytest.mark.parametrize(
    "expression,value",
    [
        ("len(evidence.features) <= 2 and importance(evidence.features) < 0.2", False),
        ("importance('amount')", 0.05),
        ("importance(evidence.features[:1])", 0.05),
        ("evidence.problems['amount'].null_rate > 0.3", True),
        ("'recall' in evidence and evidence.recall < 0.5", False),
        ("serving.previous_threshold is None", True),
        ("model.version - 1 if model.previous_version else None", 1),
        ("max([1, 2, evidence.value]) + abs(-1)", 3),
        ("round(evidence.value * 100, 1)", 30.0),
        ("evidence.features + ['x']", ["amount", "terminal_risk_7d", "x"]),
        ("not serving.fallback and 1 < 2 < 3", True),
        ("sorted(evidence.features)[-1]", "terminal_risk_7d"),
    ],
)
def test_expressions_evaluate_over_plain_data(expression: str, value: Any) -> None:
    assert evaluate(expression, SCOPE) == value


@pytest.mark.parametrize(
    "expression,unsafe",
    [
        ("__import__('os').system('true')", True),
        ("open('/etc/passwd')", True),
        ("evidence.__class__", True),
        ("evidence['__class__']", True),
        ("evidence.features.copy()", True),
        ("(lambda: 1)()", True),
        ("[x for x in evidence.features]", True),
        ("f'{evidence}'", True),
        ("(x := 1)", True),
        ("2 ** 10", True),
        ("{'a': 1}", True),
        ("os", False),
        ("len(evidence, key=1)", False),
        ("1 +", False),
        ("", False),
    ],
)
def test_unsafe_or_invalid_expressions_are_refused_before_running(expression: str, unsafe: bool) -> None:
    with pytest.raises(ExpressionError) as caught:
        check_expression(expression)
    assert caught.value.unsafe == unsafe


@pytest.mark.parametrize(
    "expression",
    [
        "'%999999999d' % 1",  # text formatting would build a gigabyte
        "'x' * 100000000",
        "round(5, -1000000000)",  # 10**(10**9)
        "evidence.big + evidence.big",
        "evidence.n * evidence.n * evidence.n * evidence.n",
        "evidence.missing",
        "evidence.features[5]",
        "min([])",
        "1 / 0",
        "evidence.features.amount",
    ],
)
def test_evaluation_refuses_what_would_be_huge_or_fails_cleanly(expression: str) -> None:
    names = {"evidence": {"big": "x" * (MAX_SIZE // 2 + 1), "n": 10**9, "features": ["a"]}}
    with pytest.raises(ExpressionError):
        evaluate(expression, names)


def test_evaluation_has_a_step_budget() -> None:
    expression = " + ".join(["evidence.n"] * 50)
    assert evaluate(expression, {"evidence": {"n": 1}}) == 50
    with pytest.raises(ExpressionError, match="budget"):
        evaluate(expression, {"evidence": {"n": 1}}, max_steps=20)


def test_templates_keep_types_when_whole_and_make_text_when_mixed() -> None:
    assert render("{{ model.previous_version }}", SCOPE) == 1
    assert render("v{{ model.previous_version }} of {{ incident.incident_id }}", SCOPE) == "v1 of INC-3"
    assert render({"a": ["{{ evidence.value }}", 2], "b": "plain"}, SCOPE) == {"a": [0.3, 2], "b": "plain"}


class _Canary:
    """An object in the scope that records any attribute an expression manages to read from it."""

    touched: list[str] = []  # noqa: RUF012 -- shared on purpose: the test reads it

    def __getattribute__(self, name: str) -> Any:
        if not name.startswith("__"):  # isinstance() legitimately reads __class__
            _Canary.touched.append(name)
        return object.__getattribute__(self, name)


_EVENTS: list[str] = []
_RECORDING: list[bool] = [False]


def _audit(event: str, _args: Any) -> None:
    if _RECORDING[0]:
        _EVENTS.append(event)


sys.addaudithook(_audit)  # audit hooks cannot be removed; this one only records while a test asks it to

_ATTRS = ["features", "value", "obj", "keys", "_private", "__class__", "__globals__", "__subclasses__", "mro"]
_CALLS = [*sorted(FUNCTION_NAMES), "eval", "exec", "getattr", "open", "__import__", "type", "vars", "print"]


def _leaf() -> st.SearchStrategy[tuple[str, bool]]:
    safe = st.sampled_from(
        ["evidence", "serving", "model", "item", "1", "0", "2.5", "'x'", "None", "True", "[]"]
    )
    bad = st.sampled_from(["os", "sys", "open", "__import__", "x", "b'x'", "...", "1j"])
    return st.one_of(safe.map(lambda s: (s, False)), bad.map(lambda s: (s, True)))


def _combine(children: st.SearchStrategy[tuple[str, bool]]) -> st.SearchStrategy[tuple[str, bool]]:
    def attr(c: tuple[str, bool], name: str) -> tuple[str, bool]:
        return f"({c[0]}).{name}", c[1] or name.startswith("_")

    def call(name: str, args: list[tuple[str, bool]]) -> tuple[str, bool]:
        return f"{name}({', '.join(a[0] for a in args)})", name not in FUNCTION_NAMES or any(
            a[1] for a in args
        )

    def binary(a: tuple[str, bool], op: str, b: tuple[str, bool]) -> tuple[str, bool]:
        return f"({a[0]}) {op} ({b[0]})", a[1] or b[1] or op == "**"

    return st.one_of(
        st.builds(attr, children, st.sampled_from(_ATTRS)),
        st.builds(call, st.sampled_from(_CALLS), st.lists(children, max_size=2)),
        st.builds(
            binary,
            children,
            st.sampled_from(["+", "-", "*", "%", "**", "==", "<", "in", "and", "or"]),
            children,
        ),
        st.builds(lambda a, b: (f"({a[0]})[{b[0]}]", a[1] or b[1]), children, children),
        st.builds(lambda a: (f"not ({a[0]})", a[1]), children),
        st.builds(lambda a: (f"(lambda: {a[0]})", True), children),
        st.builds(lambda a: (f"[y for y in {a[0]}]", True), children),
        st.builds(lambda a: (f"f'{{{a[0]}}}'", True), children),
        st.builds(
            lambda a, b, c: (f"({a[0]}) if ({b[0]}) else ({c[0]})", a[1] or b[1] or c[1]),
            children,
            children,
            children,
        ),
    )


EXPRESSIONS = st.recursive(_leaf(), _combine, max_leaves=8)


def _run_guarded(text: str) -> None:
    names = {
        "evidence": {"features": ["amount"], "value": 1.0, "obj": _Canary()},
        "serving": {},
        "model": {},
        "item": "a",
    }
    _Canary.touched.clear()
    _EVENTS.clear()
    _RECORDING[0] = True
    try:
        evaluate(text, names)
    except ExpressionError:
        pass
    finally:
        _RECORDING[0] = False
    assert set(_EVENTS) <= {"compile"}, _EVENTS  # ast.parse compiles to a tree; nothing else may happen
    assert _Canary.touched == []


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(EXPRESSIONS)
def test_random_expressions_never_reach_outside_the_whitelist(case: tuple[str, bool]) -> None:
    text, forbidden = case
    if forbidden:
        with pytest.raises(ExpressionError):
            check_expression(text)  # refused before anything is evaluated
    _run_guarded(text)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="evidncmoal_.()[]'\"+-*/%<>=!:, 0123456789_fxlambdimportsyt{}", max_size=60))
def test_random_text_is_refused_or_evaluated_without_side_effects(text: str) -> None:
    _run_guarded(text)


# -- parse and render ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(SHIPPED_RUNBOOKS.glob("*.md")), ids=lambda p: p.stem)
def test_shipped_runbooks_round_trip(path: Path) -> None:
    first = parse_runbook(path.read_text(), path)
    text = render_runbook(first)
    again = parse_runbook(text, path)
    assert again.front_matter() == first.front_matter() and again.body == first.body
    # Lines move (the front matter is re-rendered), nothing else does.
    assert [s.model_dump(exclude={"line"}) for s in again.steps] == [
        s.model_dump(exclude={"line"}) for s in first.steps
    ]
    assert [(s.key, s.title, s.text) for s in again.sections] == [
        (s.key, s.title, s.text) for s in first.sections
    ]
    assert render_runbook(again) == text


_ACTIONS = ["add_note", "page", "rollback_model", "set_threshold", "enable_fallback_rules"]


@settings(max_examples=60, deadline=None)
@given(
    id=st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True),
    title=st.text(
        st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=3, max_size=60
    ).filter(lambda t: t.strip() == t and len(t) >= 3),
    kinds=st.lists(st.sampled_from(INCIDENT_KINDS), min_size=1, max_size=3, unique=True),
    actions=st.dictionaries(st.sampled_from(_ACTIONS), st.sampled_from(["auto", "human"]), max_size=4),
    paging=st.sampled_from(["always", "if_unverified", "never"]),
    within=st.from_regex(r"[1-9][0-9]{0,2}[mhd]", fullmatch=True),
)
def test_front_matter_round_trips(
    id: str, title: str, kinds: list[str], actions: dict[str, Any], paging: str, within: str
) -> None:
    front = FrontMatter(
        id=id,
        title=title,
        root_cause="none",
        triggers=Triggers(kinds=kinds),
        severity="medium",
        actions=actions,
        verification=Verification(check="volume", within=within),
        paging=paging,  # type: ignore[arg-type]
    )
    runbook = Runbook(**front.model_dump(), body="\n## Investigate\n\nLook.")
    parsed = parse_runbook(render_runbook(runbook))
    assert FrontMatter.model_validate(parsed.front_matter()) == front
    assert parsed.body == runbook.body


def test_parse_records_sections_steps_and_lines() -> None:
    runbook = parse_runbook(_shipped_text("feature_pipeline_break"), "feature_pipeline_break.md")
    assert [s.key for s in runbook.sections if s.key] == [
        "when it applies", "investigate", "decide", "remediate", "verify", "escalate",
    ]  # fmt: skip
    quarantine = next(s for s in runbook.steps if s.name == "quarantine_feature")
    assert quarantine.section == "remediate" and quarantine.for_each == "evidence.features"
    text_line = _shipped_text("feature_pipeline_break").splitlines()[quarantine.line - 1]
    assert text_line == "```action"
    assert runbook.approval("quarantine_feature") == "auto"
    with pytest.raises(KeyError):
        runbook.approval("rollback_model")


def test_a_broken_runbook_does_not_parse_and_says_where() -> None:
    with pytest.raises(RunbookError) as caught:
        parse_runbook("# no front matter\n", "x.md")
    assert str(caught.value).startswith("x.md:1: no YAML front matter")


def test_an_action_step_its_front_matter_does_not_allow_does_not_parse() -> None:
    # The responder loads runbooks by parsing them: a step outside the allowlist used to load and then
    # crash the investigation's plan node with a KeyError (runbook.approval) instead of being refused here.
    text = _shipped_text("threshold_misconfig").replace("  set_threshold: auto\n", "", 1)
    with pytest.raises(RunbookError) as caught:
        parse_runbook(text, "threshold_misconfig.md")
    (problem,) = caught.value.problems
    assert problem.code == "action-not-allowed" and "'set_threshold'" in problem.message
    assert text.splitlines()[problem.line - 1] == "action: set_threshold"
    assert lint_text(text, "threshold_misconfig.md") == [problem]  # said once, not twice


def test_broken_front_matter_does_not_also_report_every_action_as_not_allowed() -> None:
    text = _shipped_text("threshold_misconfig").replace("severity: high", "severity: [high", 1)
    assert [p.code for p in lint_text(text, "threshold_misconfig.md")] == ["syntax"]


@pytest.mark.parametrize(
    "old,new",
    [
        # a later key silently replaced the earlier one: here a person's approval became automatic
        ("  set_threshold: auto\n", "  set_threshold: human\n  add_note: auto\n  set_threshold: auto\n"),
        ("tool: serving_history\n", "tool: serving_history\ntool: score_distribution\n"),
    ],
)
def test_a_key_written_twice_is_refused_not_silently_overwritten(old: str, new: str) -> None:
    text = _shipped_text("threshold_misconfig")
    assert old in text
    edited = text.replace(old, new, 1)
    problems = lint_text(edited, "threshold_misconfig.md")
    assert [p.code for p in problems] == ["syntax"], "\n".join(map(str, problems))
    assert "duplicate key" in problems[0].message
    repeated = new.splitlines()[-1]
    assert edited.splitlines()[problems[0].line - 1] == repeated
    with pytest.raises(RunbookError):
        parse_runbook(edited, "threshold_misconfig.md")


def test_a_runbook_saved_with_a_byte_order_mark_reads_like_any_other(tmp_path: Path) -> None:
    # Windows editors start UTF-8 files with a BOM; the file was refused as "must start with '---'".
    path = tmp_path / "threshold_misconfig.md"
    path.write_bytes(b"\xef\xbb\xbf" + _shipped_text("threshold_misconfig").encode())
    assert lint_file(path) == []
    assert read_runbook(path).id == "threshold_misconfig"


def test_a_huge_runbook_file_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "threshold_misconfig.md"
    path.write_text(_shipped_text("threshold_misconfig") + "lorem ipsum\n" * (MAX_RUNBOOK_BYTES // 12 + 1))
    (problem,) = lint_file(path)
    assert problem.code == "too-large" and problem.path == str(path)
    assert f"{path.stat().st_size} bytes" in problem.message
    with pytest.raises(RunbookError):
        read_runbook(path)


# -- the evidence vocabulary is what the monitor emits ---------------------------------------------------


def _checks_on_a_synthetic_window(platform: Platform, *, threshold_rollout: bool = True) -> dict[str, list[Finding]]:
    """Run every registered check once on a window built from the reference itself (so all of them speak)."""
    profile = ReferenceProfile.model_validate(platform.registry.get(1).metadata.reference_profile)
    start = (pd.Timestamp(profile.window_end).floor("D") + pd.Timedelta(days=10, hours=12)).to_pydatetime()

    def window(at: datetime) -> WindowCounts:
        subjects = {
            name: SubjectCounts(
                np.asarray(p.reference_counts(None), dtype=np.int64), 0, sum(p.reference_counts(None))
            )
            for name, p in [*profile.numeric.items(), (SCORE_SUBJECT, profile.score)]
        }
        subjects |= {
            n: SubjectCounts(np.asarray(c.counts, dtype=np.int64), 0, sum(c.counts))
            for n, c in profile.categorical.items()
        }
        scalars = {
            "rows": 1000.0,
            "alerts": 20.0,
            "latency_p99_ms": 5.0,
            "latency_p50_ms": 1.0,
            "model_ms_per_row": 0.05,
            "model_cost_ratio": 1.0,
            "probe_ms_per_row": 0.01,
            "previous_probe_ms_per_row": 0.01,
            "labels_received": 3.0,
        }
        return WindowCounts(at, at + timedelta(hours=1), 1, subjects=subjects, scalars=scalars)

    # A labelled cohort a week back, so the performance check has matured labels to judge.
    cohort = pd.Timestamp(start) + pd.Timedelta(hours=1) - pd.Timedelta(days=7, hours=12)
    ids = [f"t{i}" for i in range(40)]
    platform.store.append(
        "predictions",
        pd.DataFrame(
            {
                "transaction_id": ids,
                "timestamp": [cohort] * 40,
                "scored_at": [cohort] * 40,
                "score": 0.1,
                "decision": ["decline"] * 5 + ["approve"] * 35,
                "model_version": 1,
                "serving_state_version": 1,
                "used_fallback": False,
                "latency_ms": 1.0,
                "batch_id": "b",
            }
        ),
    )
    platform.store.append(
        "labels",
        pd.DataFrame(
            {
                "transaction_id": ids,
                "is_fraud": [1] * 12 + [0] * 28,
                "label_time": cohort,
                "received_at": cohort,
            }
        ),
    )
    if threshold_rollout:  # two hours before the window, for the decision-policy check to judge
        clock, platform.serving.clock = platform.serving.clock, lambda: start - timedelta(hours=2)
        before = platform.serving.current()
        platform.serving.update(
            actor="deploy-bot", reason="config rollout", threshold=before.threshold,
            review_threshold=before.review_threshold / 2,
        )
        platform.serving.clock = clock
    history = [window(start - timedelta(hours=h)) for h in range(48, 0, -1)]
    ctx = CheckContext(
        profile=profile,
        window=window(start),
        cadence="hour",
        now=start,
        store=platform.store,
        history=history,
    )
    return {name: registered.run(ctx) for name, registered in CHECKS.items()}


def test_evidence_fields_are_exactly_what_every_check_emits(platform: Platform) -> None:
    emitted = _checks_on_a_synthetic_window(platform)
    assert set(EVIDENCE_FIELDS) == set(CHECKS)
    for name, findings in emitted.items():
        assert findings, f"check {name} emitted nothing on the synthetic window: extend it"
        kind, fields = EVIDENCE_FIELDS[name]
        for finding in findings:
            assert finding.kind == kind, name
            assert set(finding.evidence) == fields, name


def _incident(finding: Finding, at: datetime) -> Incident:
    return Incident(
        incident_id="INC-1", number=1, dedup_key="k", model_version=1, kind=finding.kind, subject=finding.subject,
        severity=finding.severity, status="open", title="t", opened_at=at, updated_at=at, closed_at=None,
        first_breach_at=at, evidence={**_evidence(finding), "peak_value": finding.value},
    )  # fmt: skip


def test_scope_fields_are_what_the_linter_accepts_and_every_shipped_expression_evaluates(
    platform: Platform,
) -> None:
    emitted = _checks_on_a_synthetic_window(platform)
    at = platform.serving.current().changed_at + timedelta(hours=5)
    library = RunbookLibrary.load(SHIPPED_RUNBOOKS)
    evaluated = 0
    for runbook in library:
        checks = runbook.triggers.checks or [
            c for c, (k, _) in EVIDENCE_FIELDS.items() if k in runbook.triggers.kinds
        ]
        for check_name in checks:
            scope = build_scope(_incident(emitted[check_name][0], at), platform.serving, platform.registry)
            for root in NAMESPACE_FIELDS:
                assert set(scope[root]) == NAMESPACE_FIELDS[root], root
            scope["results"] = {"retrain": {"challenger_version": 2, "beats_champion": True}}
            if runbook.triggers.when:
                evaluate(runbook.triggers.when, scope)
            for step in runbook.steps:
                items = evaluate(step.for_each, scope) if step.for_each else [None]
                for item in items[:1] or [None]:
                    names = {**scope, "item": item}
                    guard = evaluate(step.when, names) if step.when else True
                    if guard:
                        render(step.args, names)
                    evaluated += 1
    assert evaluated > 40


def test_threshold_runbook_restores_the_review_threshold_a_rollout_lowered_with_the_decline_one(
    platform: Platform,
) -> None:
    """A rollout of 0.0035 drags the review threshold down with it; restoring only the decline threshold
    left the review band flagging most traffic, so the alert rate never verified (the demo's INC-2)."""
    before = platform.serving.current()
    platform.serving.update(actor="deploy-bot", reason="rollout", threshold=0.0035, review_threshold=0.0035)
    at = platform.serving.current().changed_at + timedelta(hours=1)
    finding = _checks_on_a_synthetic_window(platform)["alert_rate"][0]
    scope = build_scope(_incident(finding, at), platform.serving, platform.registry)
    assert scope["serving"]["previous_threshold"] == before.threshold
    assert scope["serving"]["previous_review_threshold"] == before.review_threshold
    assert scope["serving"]["hours_since_threshold_change"] == 1.0
    remediate = next(
        s
        for s in RunbookLibrary.load(SHIPPED_RUNBOOKS).get("threshold_misconfig").steps
        if s.name == "set_threshold"
    )
    assert render(remediate.args, scope) == {
        "value": before.threshold,
        "review_threshold": before.review_threshold,
    }


def test_threshold_scope_ignores_changes_after_the_breach(platform: Platform) -> None:
    """A reopened incident is judged on the change before its breach: after the agent restored 0.5, the
    "previous threshold" must stay 0.5, not become the bad 0.0035 it replaced (the demo once flipped back)."""
    before = platform.serving.current()
    rollout = platform.serving.update(
        actor="deploy-bot", reason="rollout", threshold=0.0035, review_threshold=0.0035
    )
    platform.serving.update(
        actor="agent", reason="restore", threshold=before.threshold, review_threshold=before.review_threshold
    )
    finding = _checks_on_a_synthetic_window(platform, threshold_rollout=False)["alert_rate"][0]
    scope = build_scope(_incident(finding, rollout.changed_at), platform.serving, platform.registry)
    assert scope["serving"]["threshold"] == before.threshold  # what serves now
    assert scope["serving"]["previous_threshold"] == before.threshold  # what the breach's change replaced
    assert scope["serving"]["hours_since_threshold_change"] == 0.0


def test_shipped_read_steps_run_against_a_real_workspace(platform: Platform) -> None:
    """Every tool step whose arguments are fixed (SQL queries, report windows) runs as written."""
    load_tools()
    ctx = ToolContext(
        store=platform.store,
        registry=platform.registry,
        serving=platform.serving,
        incidents=IncidentManager(platform.store),
        clock=lambda: platform.serving.current().changed_at,
        runbooks_dir=SHIPPED_RUNBOOKS,
    )
    ran = set()
    for runbook in RunbookLibrary.load(SHIPPED_RUNBOOKS):
        for step in runbook.steps:
            if step.block == "tool" and not is_template(step.args) and not step.for_each:
                call_tool(step.name, ctx, step.args)  # raises on a refused query or bad window
                ran.add(step.name)
    assert {"sql", "quality_report", "drift_report", "performance_report", "serving_history"} <= ran


# -- the library ----------------------------------------------------------------------------------------


def test_library_finds_by_id_and_suggests_close_ids() -> None:
    library = RunbookLibrary.load(SHIPPED_RUNBOOKS)
    assert len(library) == len(library.ids()) >= 11
    assert library.get("schema_change").root_cause == "schema_change"
    with pytest.raises(KeyError, match="did you mean 'schema_change'"):
        library.get("schema_chang")


def test_search_ranks_by_title_triggers_and_body() -> None:
    library = RunbookLibrary.load(SHIPPED_RUNBOOKS)
    assert library.search("decision threshold alert rate")[0].runbook.id == "threshold_misconfig"
    assert library.search("sha256 artifact hash")[0].runbook.id == "corrupted_artifact"
    assert library.search("labels stopped")[0].runbook.id == "label_pipeline_stall"
    assert library.search("") == []


def _scope(
    evidence: dict[str, Any], serving: dict[str, Any] | None = None, model: dict[str, Any] | None = None
) -> dict[str, Any]:
    base_model = {"previous_version": None, "hours_since_promotion": None}
    base_serving = {"previous_threshold": None, "hours_since_threshold_change": None}
    return {
        "evidence": evidence,
        "serving": {**base_serving, **(serving or {})},
        "model": {**base_model, **(model or {})},
    }


def test_match_uses_kind_check_and_condition() -> None:
    library = RunbookLibrary.load(SHIPPED_RUNBOOKS)
    alert = {"check": "alert_rate", "value": 1.2}
    recent_threshold = {"previous_threshold": 0.5, "hours_since_threshold_change": 3}
    assert (
        library.match("prediction_drift", _scope(alert, serving=recent_threshold))[0].runbook.id
        == "threshold_misconfig"
    )
    recent_deploy = {"previous_version": 1, "hours_since_promotion": 20}
    best = library.match("prediction_drift", _scope(alert, model=recent_deploy))[0]
    assert best.runbook.id == "bad_model_deploy" and any("condition holds" in r for r in best.reasons)
    old_model = {"previous_version": 1, "hours_since_promotion": 900}
    drift = {"check": "score_drift", "value": 1.5}
    assert [m.runbook.id for m in library.match("prediction_drift", _scope(drift, model=old_model))] == [
        "new_fraud_pattern"
    ]
    assert [m.runbook.id for m in library.match("volume", _scope({"check": "volume"}))] == [
        "upstream_volume_drop"
    ]
    mild = {"check": "data_drift", "value": 1.4, "features": ["amount"]}
    assert [m.runbook.id for m in library.match("data_drift", _scope(mild))] == [
        "benign_seasonal_shift",
        "population_shift",
    ]
    # A condition over fields this scope lacks keeps the runbook, ranked lower, with the reason.
    unknown = library.match("latency", {"evidence": {"check": "latency"}})
    assert unknown[0].runbook.id == "slow_model_deploy" and "not evaluated" in unknown[0].reasons[-1]


# -- the template and the CLI ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", INCIDENT_KINDS)
def test_template_lints_clean_once_filled_in(kind: str) -> None:
    text = runbook_template("my_runbook", kind=kind)
    problems = lint_text(text, "my_runbook.md")
    assert problems and {p.code for p in problems} == {"unfilled-template"}
    filled = re.sub(r"<FILL IN:[^>]*>", "Filled in by the on-call engineer.", text)
    assert lint_text(filled, "my_runbook.md") == []


COMMANDS = sorted(get_command(runbooks_app).commands.items())  # type: ignore[attr-defined]


@pytest.mark.parametrize("name,command", COMMANDS, ids=[n for n, _ in COMMANDS])
def test_every_runbooks_command_has_help_with_an_example(name: str, command: Any) -> None:
    result = runner.invoke(runbooks_app, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example:" in (command.help or "")


def test_lint_help_shows_the_problem_format_it_prints() -> None:
    # Rich read "[code]" in the docstring as markup and dropped it from the help.
    result = CliRunner().invoke(runbooks_app, ["lint", "--help"])
    assert "`file:line: message [code]`" in result.output


def test_cli_list_and_show() -> None:
    result = runner.invoke(runbooks_app, ["list", "--json"])
    assert result.exit_code == 0, result.output
    assert {"feature_pipeline_break", "threshold_misconfig"} <= {
        r["id"] for r in __import__("json").loads(result.stdout)
    }
    result = runner.invoke(runbooks_app, ["list"])
    assert result.exit_code == 0 and "corrupted_artifact" in result.stdout
    result = runner.invoke(runbooks_app, ["show", "corrupted_artifact"])
    assert (
        result.exit_code == 0
        and "paging       if_unverified" in result.stdout
        and "## Escalate" in result.stdout
    )
    result = runner.invoke(runbooks_app, ["show", "corrupted_artifac"])
    assert result.exit_code == 1 and "did you mean 'corrupted_artifact'" in result.stderr


@pytest.fixture
def runbook_dir(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "runbooks"
    shutil.copytree(SHIPPED_RUNBOOKS, folder)
    yield folder


def test_cli_new_then_lint(runbook_dir: Path) -> None:
    result = runner.invoke(
        runbooks_app, ["new", "card_testing", "--dir", str(runbook_dir), "--kind", "data_drift"]
    )
    assert result.exit_code == 0, result.output
    path = runbook_dir / "card_testing.md"
    result = runner.invoke(runbooks_app, ["lint", str(runbook_dir)])
    assert result.exit_code == 1
    assert all(
        re.match(rf"{re.escape(str(path))}:\d+: .+\[unfilled-template\]$", line)
        for line in result.stdout.splitlines()
    )
    path.write_text(
        re.sub(r"<FILL IN:[^>]*>", "Card testing: many small amounts on few terminals.", path.read_text())
    )
    result = runner.invoke(runbooks_app, ["lint", str(runbook_dir)])
    assert result.exit_code == 0, result.output
    assert (
        runner.invoke(runbooks_app, ["new", "card_testing", "--dir", str(runbook_dir)]).exit_code == 1
    )  # exists
    assert runner.invoke(runbooks_app, ["new", "Bad-Id", "--dir", str(runbook_dir)]).exit_code == 2


def test_cli_new_writes_to_the_current_folder_not_the_library(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # It used to write into the library the responder loads (the shipped runbooks/ of an install), where
    # the unfilled template stopped `runbooks lint` and every investigation until it was filled in.
    monkeypatch.delenv("SELFHEAL_RUNBOOKS", raising=False)
    monkeypatch.chdir(tmp_path)
    shipped = sorted(SHIPPED_RUNBOOKS.glob("*.md"))

    result = runner.invoke(runbooks_app, ["new", "card_testing", "--kind", "data_drift"])

    assert result.exit_code == 0, result.output
    assert (tmp_path / "card_testing.md").is_file() and sorted(SHIPPED_RUNBOOKS.glob("*.md")) == shipped
    assert "move it into" in " ".join(result.output.split())


def test_cli_lint_reports_file_line_message_and_fails() -> None:
    result = runner.invoke(runbooks_app, ["lint", str(BAD)])
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert len(lines) == sum(1 for e in EXPECTED.values() if e is not None)
    assert all(re.match(r"^.+\.md:\d+: .+ \[[a-z-]+\]$", line) for line in lines)
    assert runner.invoke(runbooks_app, ["lint", str(SHIPPED_RUNBOOKS)]).exit_code == 0


def test_a_broken_feature_is_quarantined_also_when_the_fallback_rules_take_over() -> None:
    """The fallback rules read features too. A 30-day average stuck at 0 made the spending-spike rule fire on
    every card (99.8 % of transactions flagged in eval world seed 12, where that feature carries over 15 % of
    the model's gain and the runbook serves the rules); quarantined, the rules read its estimate instead."""
    from agent.runbook_steps import plan_from_runbook
    from scorer.rules import DEFAULT_RULES

    assert any("customer_avg_amount_30d" in rule.reads for rule in DEFAULT_RULES)
    runbook = RunbookLibrary.load(SHIPPED_RUNBOOKS).get("feature_pipeline_break")
    for importance, falls_back in ((0.05, False), (0.4, True)):
        scope: dict[str, Any] = {
            "evidence": {"features": ["customer_avg_amount_30d"], "worst": 0.0, "rows": 30, "problems": {}},
            "incident": {"incident_id": "INC-1", "first_breach_at": "2018-05-16T10:00:00"},
            "serving": {"fallback": False},
            "model": {"importance": {"customer_avg_amount_30d": importance}},
            "labels": {"matured": False},
            "results": {},
        }
        actions, _ = plan_from_runbook(runbook, scope)
        planned = [(a["action"], a["args"].get("feature")) for a in actions]
        assert planned[0] == ("quarantine_feature", "customer_avg_amount_30d"), planned
        assert (("enable_fallback_rules", None) in planned) is falls_back, planned


def test_an_important_feature_with_a_close_live_sibling_stays_on_the_model() -> None:
    """`uncovered_importance`: gain share x (1 - R^2) of the best sibling that is still live. World seed 12's
    30-day average (15 % of the gain, 7-day sibling R^2 0.87) is quarantined and the model kept; the same
    feature with its sibling broken too, or already quarantined, is not covered and the rules serve."""
    from agent.runbook_steps import plan_from_runbook

    runbook = RunbookLibrary.load(SHIPPED_RUNBOOKS).get("feature_pipeline_break")
    thirty, seven = "customer_avg_amount_30d", "customer_avg_amount_7d"
    model = {
        "importance": {thirty: 0.3, seven: 0.2},
        "surrogates": {thirty: [{"source": seven, "r2": 0.9}], seven: [{"source": thirty, "r2": 0.9}]},
    }

    def plan(broken: list[str], quarantined: list[str]) -> tuple[float, bool]:
        scope: dict[str, Any] = {
            "evidence": {"features": broken, "worst": 0.0, "rows": 30, "problems": {}},
            "incident": {"incident_id": "INC-1", "first_breach_at": "2018-05-16T10:00:00"},
            "serving": {"fallback": False, "quarantined_features": quarantined},
            "model": model,
            "labels": {"matured": False},
            "results": {},
        }
        actions, _ = plan_from_runbook(runbook, scope)
        uncovered = evaluate("uncovered_importance(evidence.features)", scope)
        return uncovered, any(a["action"] == "enable_fallback_rules" for a in actions)

    assert plan([thirty], []) == (pytest.approx(0.03), False)  # 0.3 x (1 - 0.9)
    assert plan([thirty, seven], []) == (pytest.approx(0.3), True)  # each sibling is broken too
    assert plan([thirty], [seven]) == (pytest.approx(0.3), True)  # the sibling is already imputed itself
    assert evaluate("importance(evidence.features)", {"evidence": {"features": [thirty]}, "model": model}) == 0.3


@pytest.mark.parametrize(
    "block,section",
    [
        # an example of the fix, written where a reader learns when the runbook applies: it used to be planned
        ("```action\naction: add_note\nargs: {text: example}\n```\n", "## When it applies"),
        ("```tool\ntool: serving_history\n```\n", "## Verify"),  # a read step that would never run
    ],
)
def test_a_step_outside_the_section_it_runs_from_does_not_parse(block: str, section: str) -> None:
    text = _shipped_text("threshold_misconfig")
    assert f"\n{section}\n" in text
    edited = text.replace(f"\n{section}\n", f"\n{section}\n\n{block}", 1)
    with pytest.raises(RunbookError) as caught:
        parse_runbook(edited, "threshold_misconfig.md")
    (problem,) = caught.value.problems
    assert problem.code == "step-out-of-place" and section.removeprefix("## ") in problem.message
    assert edited.splitlines()[problem.line - 1].startswith(("action:", "tool:"))
    assert lint_text(edited, "threshold_misconfig.md") == [problem]


def test_a_folder_named_like_a_runbook_is_not_one(tmp_path: Path) -> None:
    # `drafts.md/` beside the runbooks stopped the whole library ("cannot read it: Is a directory").
    folder = tmp_path / "runbooks"
    shutil.copytree(SHIPPED_RUNBOOKS, folder)
    (folder / "drafts.md").mkdir()
    assert len(RunbookLibrary.load(folder)) == len(RunbookLibrary.load(SHIPPED_RUNBOOKS))
    assert lint_paths([folder]) == []
