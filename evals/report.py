"""How a suite's results are shown: a Rich table per case, the summary, a leaderboard row, a comparison."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

from rich.console import Console
from rich.table import Table

__all__ = ["COMPARED", "compare_table", "leaderboard_row", "load_results", "option_differences", "print_results"]

# Summary numbers a comparison shows, and which way is better (+1 higher, -1 lower).
COMPARED: Final[dict[str, int]] = {
    "detection_recall": 1,
    "false_incidents_on_controls": -1,
    "root_cause_accuracy": 1,
    "remediation_success": 1,
    "page_precision": 1,
    "page_recall": 1,
    "forbidden_actions": -1,
    "needless_actions": -1,
    "median_time_to_detect_min": -1,
    "median_time_to_mitigate_min": -1,
    "pass_hat_k": 1,
    "llm_calls": -1,
    "tokens": -1,
    "cost_usd": -1,
}
LEADERBOARD_COLUMNS: Final = (
    "planner", "size", "runs", "detection_recall", "root_cause_accuracy", "remediation_success",
    "page_precision", "page_recall", "false_incidents_on_controls", "forbidden_actions", "pass_hat_k", "tokens",
)  # fmt: skip


def _pct(value: Any) -> str:
    return "-" if value is None else f"{100 * float(value):.0f} %"


def _num(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def print_results(data: dict[str, Any], console: Console) -> None:
    """The cases (one row per scenario and seed, failing checks with why) and the summary."""
    table = Table(title="eval cases", show_lines=False)
    for column in ("scenario", "seed", "result", "detect", "root cause", "page", "steps", "failing checks"):
        table.add_column(column, overflow="fold")
    for case in data["cases"]:
        entries = case["entries"]
        detect = ", ".join(
            "-" if e["minutes_to_detect"] is None else f"{e['minutes_to_detect']:.0f}m"
            for e in entries
            if e["expected_incident"]
        )
        causes = ", ".join(str(e["root_cause"]) for e in entries if e["expected_incident"])
        paged = ", ".join("yes" if e["paged"] else "no" for e in entries)
        failing = "; ".join(f"{name}: {c['why']}" for name, c in case["checks"].items() if not c["passed"])
        table.add_row(
            case["id"], str(case["seed"]), "[green]pass[/green]" if case["passed"] else "[red]FAIL[/red]",
            detect or "-", causes or "-", paged, str(case["steps"]), failing,
        )  # fmt: skip
    console.print(table)
    summary = data["summary"]
    totals = Table(title="summary")
    totals.add_column("metric")
    totals.add_column("value", justify="right")
    for key, value in summary.items():
        shown = (
            _pct(value)
            if key in _PERCENT
            else _num(value)
            if not isinstance(value, dict)
            else json.dumps(value)
        )
        totals.add_row(key, shown)
    console.print(totals)
    console.print("leaderboard row:")
    # Markdown lines to paste: never wrapped at the console's width (80 columns when piped).
    console.print(leaderboard_header(), markup=False, highlight=False, soft_wrap=True)
    console.print(leaderboard_row(data), markup=False, highlight=False, soft_wrap=True)


_PERCENT: Final = {
    "detection_recall", "root_cause_accuracy", "remediation_success", "page_precision", "page_recall", "pass_hat_k",
}  # fmt: skip


def leaderboard_header() -> str:
    names = " | ".join(LEADERBOARD_COLUMNS)
    return f"| {names} |\n|{'---|' * len(LEADERBOARD_COLUMNS)}"


def leaderboard_row(data: dict[str, Any]) -> str:
    """One markdown table row for a leaderboard (header: `leaderboard_header`)."""
    summary, options = data["summary"], data.get("options", {})
    values = []
    for column in LEADERBOARD_COLUMNS:
        if column in ("planner", "size"):
            values.append(str(options.get(column, "-")))
        elif column in _PERCENT:
            values.append(_pct(summary.get(column)))
        else:
            values.append(_num(summary.get(column)))
    return "| " + " | ".join(values) + " |"


def load_results(path: Path) -> dict[str, Any]:
    """A results file written by ``selfheal eval run --json``.

    Raises:
        ValueError: The file is not such a results file.
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not a readable results file: {error}") from error
    if not isinstance(data, dict) or "summary" not in data or "cases" not in data:
        raise ValueError(f"{path}: not an eval results file (no summary / cases)")
    problem = _shape_problem(data)
    if problem is not None:  # another version's file, or a hand-edited one: refused here, not as a KeyError
        raise ValueError(f"{path}: not an eval results file ({problem})")
    return data


def _shape_problem(data: dict[str, Any]) -> str | None:
    """What a comparison needs that the file lacks, or None."""
    if not isinstance(data["summary"], dict):
        return "summary is not a mapping"
    if not isinstance(data["cases"], list):
        return "cases is not a list"
    for index, case in enumerate(data["cases"]):
        if not isinstance(case, dict):
            return f"case {index} is not a mapping"
        wanted = {"id": str, "seed": int, "passed": bool, "checks": dict}
        for key, kind in wanted.items():
            if not isinstance(case.get(key), kind):
                return f"case {index} has no {kind.__name__} {key!r}"
    return None


# What the runs were made with; two runs that differ here are not comparing the responder alone.
COMPARED_OPTIONS: Final = ("size", "planner", "seeds", "runbooks_dir", "replay")


def option_differences(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """``"size: small vs default"`` for each option the two runs were made with differently."""
    a, b = before.get("options") or {}, after.get("options") or {}
    return [
        f"{key}: {_num(a.get(key))} vs {_num(b.get(key))}" for key in COMPARED_OPTIONS if a.get(key) != b.get(key)
    ]


def _failing(case: dict[str, Any]) -> set[str]:
    return {name for name, check in case["checks"].items() if not (isinstance(check, dict) and check.get("passed"))}


def _case_change(was: dict[str, Any], now: dict[str, Any]) -> str | None:
    """How a case's checks changed between two runs (None: they did not)."""
    failing_before, failing_after = _failing(was), _failing(now)
    if was["passed"] == now["passed"] and failing_before == failing_after:
        return None
    if now["passed"] and not was["passed"]:
        return "[green]now passes[/green]"
    parts = []
    if failing_after - failing_before:
        parts.append(f"[red]now fails: {', '.join(sorted(failing_after - failing_before))}[/red]")
    if failing_before - failing_after:
        parts.append(f"[green]passes: {', '.join(sorted(failing_before - failing_after))}[/green]")
    return "; ".join(parts) or ("[red]now fails[/red]" if was["passed"] else "[green]now passes[/green]")


def compare_table(before: dict[str, Any], after: dict[str, Any], names: tuple[str, str]) -> Table:
    """Summary numbers side by side with the change (shares in percentage points), better in green and
    worse in red; then every case whose checks changed (with which ones), and the cases only one run played."""
    table = Table(title=f"{names[0]} -> {names[1]}")
    for column in ("metric", names[0], names[1], "change"):
        table.add_column(column, justify="right" if column != "metric" else "left")
    for key, direction in COMPARED.items():
        a, b = before["summary"].get(key), after["summary"].get(key)
        change = ""
        if isinstance(a, int | float) and isinstance(b, int | float) and a != b:
            better = (b - a) * direction > 0
            colour = "green" if better else "red"
            delta = f"{100 * (b - a):+.0f} pts" if key in _PERCENT else f"{b - a:+.4g}"
            change = f"[{colour}]{delta}[/{colour}]"
        show = _pct if key in _PERCENT else _num
        table.add_row(key, show(a), show(b), change)
    cases_before = {(c["id"], c["seed"]): c for c in before["cases"]}
    cases_after = {(c["id"], c["seed"]): c for c in after["cases"]}
    for case_key in sorted(cases_before.keys() | cases_after.keys()):
        was, now = cases_before.get(case_key), cases_after.get(case_key)
        label = f"{case_key[0]} seed {case_key[1]}"
        if was is None or now is None:
            only = names[1] if was is None else names[0]
            played = was or now
            verdict = "pass" if played and played["passed"] else "fail"
            table.add_row(label, "-" if was is None else verdict, "-" if now is None else verdict, f"only in {only}")
            continue
        case_change = _case_change(was, now)
        if case_change is not None:
            table.add_row(label, "pass" if was["passed"] else "fail", "pass" if now["passed"] else "fail", case_change)
    return table
