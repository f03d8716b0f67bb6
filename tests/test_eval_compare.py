"""`selfheal eval compare`: which cases got better or worse, said plainly, and files it cannot read refused.

(Found by an exploratory pass: a results file of another shape ended in a KeyError traceback, a case that
failed before and after for other reasons, or that only one run played, did not show, and a drop from
100 % to 0 % read "-1".)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from evals.report import compare_table, load_results, option_differences
from selfheal.cli import app

runner = CliRunner()


def _case(scenario: str, seed: int, failing: tuple[str, ...] = ()) -> dict[str, Any]:
    checks = {name: {"passed": name not in failing, "why": "because"} for name in ("detected", "end_state", "page")}
    return {"id": scenario, "seed": seed, "passed": not failing, "checks": checks}


def _results(cases: list[dict[str, Any]], **options: Any) -> dict[str, Any]:
    summary = {"root_cause_accuracy": sum(c["passed"] for c in cases) / len(cases), "forbidden_actions": 0}
    return {"summary": summary, "options": {"size": "small", "planner": "deterministic", **options}, "cases": cases}


def _text(before: dict[str, Any], after: dict[str, Any]) -> str:
    console = Console(width=200, record=True)
    console.print(compare_table(before, after, ("before.json", "after.json")))
    return console.export_text()


def _row(text: str, start: str) -> str:
    return next(line for line in text.splitlines() if line.strip("│ ").startswith(start))


def test_every_case_whose_checks_changed_is_shown_with_what_changed() -> None:
    before = _results([_case("a", 7), _case("b", 7, ("page",)), _case("c", 7, ("end_state",)), _case("d", 7)])
    after = _results([_case("a", 7, ("end_state",)), _case("b", 7), _case("c", 7, ("page",)), _case("d", 7)])

    text = _text(before, after)

    assert "now fails: end_state" in _row(text, "a seed 7")
    assert "now passes" in _row(text, "b seed 7")
    # failed before and after, for another reason: a verdict-only comparison said nothing
    assert "now fails: page" in _row(text, "c seed 7") and "passes: end_state" in _row(text, "c seed 7")
    assert "d seed 7" not in text


def test_cases_only_one_run_played_are_listed() -> None:
    text = _text(_results([_case("a", 7), _case("b", 7)]), _results([_case("a", 7), _case("c", 7)]))

    assert "only in before.json" in _row(text, "b seed 7")
    assert "only in after.json" in _row(text, "c seed 7")


def test_a_share_changes_in_percentage_points() -> None:
    text = _text(_results([_case("a", 7)]), _results([_case("a", 7, ("page",))]))

    assert "-100 pts" in _row(text, "root_cause_accuracy")


def test_runs_made_differently_are_named() -> None:
    before = _results([_case("a", 7)])
    after = _results([_case("a", 7)], size="default", runbooks_dir="/tmp/mine")

    assert option_differences(before, after) == [
        "size: small vs default",
        "runbooks_dir: - vs /tmp/mine",
    ]


@pytest.mark.parametrize(
    "content",
    [
        '{"summary": {}, "cases": [{"id": "x"}]}',  # cases of another shape (no seed, no verdict)
        '{"summary": [], "cases": []}',
        '{"summary": {}, "cases": {}}',
        '{"summary": {}, "cases": [{"id": "x", "seed": 7, "passed": true, "checks": []}]}',
    ],
)
def test_a_results_file_of_another_shape_is_refused_by_name(tmp_path: Path, content: str) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps(_results([_case("a", 7)])))
    odd = tmp_path / "odd.json"
    odd.write_text(content)

    with pytest.raises(ValueError, match=r"odd\.json: not an eval results file"):
        load_results(odd)
    result = runner.invoke(app, ["eval", "compare", str(good), str(odd)])

    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output


# -- which runbooks a run used ----------------------------------------------------------------------------


def _recorded_options(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *args: str) -> dict[str, Any]:
    from evals.suite import SuiteOptions, SuiteResult

    def played(scenarios: list[Any], options: SuiteOptions) -> SuiteResult:  # no world is built
        return SuiteResult(options=options, cases=[], summary={}, wall_seconds=0.0)

    monkeypatch.setattr("selfheal.cli_eval._run_with_progress", played)
    out = tmp_path / "r.json"
    result = runner.invoke(app, ["eval", "run", "--only", "threshold-misconfig-low", "--json", str(out), *args])
    assert result.exit_code == 0, result.output
    options: dict[str, Any] = json.loads(out.read_text())["options"]
    return options


def test_a_run_records_the_runbooks_it_used(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # A runbook edit is proved by two runs with two folders; the results said "runbooks_dir": null for both.
    shipped = Path(__file__).resolve().parents[1] / "runbooks"
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "threshold_misconfig.md").write_text((shipped / "threshold_misconfig.md").read_text())

    assert _recorded_options(monkeypatch, tmp_path, "--runbooks", str(mine))["runbooks_dir"] == str(mine)
    monkeypatch.setenv("SELFHEAL_RUNBOOKS", str(mine))
    assert _recorded_options(monkeypatch, tmp_path)["runbooks_dir"] == str(mine)
    monkeypatch.delenv("SELFHEAL_RUNBOOKS")
    assert _recorded_options(monkeypatch, tmp_path)["runbooks_dir"] == str(shipped)


def test_a_run_with_runbooks_that_do_not_load_stops_before_any_world(tmp_path: Path) -> None:
    books = tmp_path / "books"
    books.mkdir()
    (books / "x.md").write_text("---\nid: x\n---\n")

    result = runner.invoke(app, ["eval", "run", "--only", "threshold-misconfig-low", "--runbooks", str(books)])

    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output
    said = " ".join(result.output.split())
    assert "x.md:2: missing required field 'title'" in said and "selfheal runbooks lint" in said


def test_the_leaderboard_row_stays_one_markdown_line_when_piped(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Off a terminal the console is 80 columns wide and wrapped the row (and its header) mid-table.
    from evals.suite import SuiteOptions, SuiteResult

    def played(scenarios: list[Any], options: SuiteOptions) -> SuiteResult:
        return SuiteResult(options=options, cases=[], summary={"runs": 1, "detection_recall": 1.0}, wall_seconds=0.0)

    monkeypatch.setattr("selfheal.cli_eval._run_with_progress", played)
    result = runner.invoke(app, ["eval", "run", "--only", "threshold-misconfig-low", "--size", "small"])

    lines = result.output.splitlines()
    header = lines.index(next(line for line in lines if line.startswith("| planner |")))
    assert lines[header].endswith("| tokens |")
    assert lines[header + 2].startswith("| deterministic | small | 1 | 100 % |") and lines[header + 2].endswith(" |")
