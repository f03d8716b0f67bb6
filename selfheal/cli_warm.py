"""The warning `selfheal serve`, `run` and `score` print when the feature windows start short of history."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console

if TYPE_CHECKING:  # the scorer loads when a command starts scoring
    from scorer.history import HistoryCoverage


def short_history_warning(coverage: HistoryCoverage) -> str | None:
    """What to tell a user whose workspace holds less history than the longest feature window reaches
    back (None: enough, or nothing at all, as in a workspace that has not scored yet)."""
    if not coverage.short:
        return None
    held = round(coverage.held_days)
    holds = "less than a day" if held == 0 else f"{held} day{'s' if held != 1 else ''}"
    return (
        f"feature windows need {coverage.needed_days} days of history; the workspace holds {holds}: "
        "the first days' features (transactions per customer and terminal, terminal fraud rates) will be "
        "low, and the monitor may read them as broken. Give the workspace the transactions before these, "
        "with labels, once: `selfheal run FILE --warm-from HISTORY` keeps them for every later start "
        "(`selfheal train --data HISTORY` keeps its training data too)."
    )


def warn_if_short(coverage: HistoryCoverage, console: Console) -> None:
    """Print `short_history_warning` (if any) on ``console`` (stderr in the commands)."""
    warning = short_history_warning(coverage)
    if warning is not None:
        console.print(f"[yellow]warning:[/yellow] {warning}")
