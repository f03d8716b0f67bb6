"""How a suite's results are shown: a Rich table per case, the summary, a leaderboard row, a comparison."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

from rich.console import Console
from rich.table import Table

__all__ = ["COMPARED", "compare_table", "leaderboard_row", "load_results", "print_results"]

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
    console.print(leaderboard_header(), markup=False, highlight=False)
    console.print(leaderboard_row(data), markup=False, highlight=False)


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
    return data


def compare_table(before: dict[str, Any], after: dict[str, Any], names: tuple[str, str]) -> Table:
    """Summary numbers side by side with the change, better in green and worse in red; then the cases
    whose pass/fail differs."""
    table = Table(title=f"{names[0]} -> {names[1]}")
    for column in ("metric", names[0], names[1], "change"):
        table.add_column(column, justify="right" if column != "metric" else "left")
    for key, direction in COMPARED.items():
        a, b = before["summary"].get(key), after["summary"].get(key)
        change = ""
        if isinstance(a, int | float) and isinstance(b, int | float) and a != b:
            better = (b - a) * direction > 0
            colour = "green" if better else "red"
            change = f"[{colour}]{b - a:+.4g}[/{colour}]"
        show = _pct if key in _PERCENT else _num
        table.add_row(key, show(a), show(b), change)
    passed_before = {(c["id"], c["seed"]): c["passed"] for c in before["cases"]}
    for case in after["cases"]:
        was = passed_before.get((case["id"], case["seed"]))
        if was is not None and was != case["passed"]:
            verdict = "[green]now passes[/green]" if case["passed"] else "[red]now fails[/red]"
            table.add_row(f"{case['id']} seed {case['seed']}", "pass" if was else "fail",
                          "pass" if case["passed"] else "fail", verdict)  # fmt: skip
    return table
