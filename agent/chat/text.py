"""Small formatters the answers share: times, durations, action calls, and record text made inert."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from typing import Any

import pandas as pd

MAX_QUOTE = 300


def when(moment: Any) -> str:
    """``2018-05-16 13:00`` (minutes are enough for an hourly platform), or ``-`` when absent."""
    if moment is None or (not isinstance(moment, str) and pd.isna(moment)):
        return "-"
    if isinstance(moment, str):
        try:
            moment = datetime.fromisoformat(moment)
        except ValueError:
            return moment
    return pd.Timestamp(moment).strftime("%Y-%m-%d %H:%M")


def duration(delta: timedelta | None) -> str:
    """``25 h 30 min``, ``45 min``, or ``-``."""
    if delta is None:
        return "-"
    minutes = round(delta.total_seconds() / 60)
    sign = "-" if minutes < 0 else ""
    hours, rest = divmod(abs(minutes), 60)
    if hours and rest:
        return f"{sign}{hours} h {rest} min"
    return f"{sign}{hours} h" if hours else f"{sign}{rest} min"


def minutes(delta: timedelta | None) -> int | None:
    return None if delta is None else round(delta.total_seconds() / 60)


def call(action: str, args: dict[str, Any] | None) -> str:
    """``rollback_model(to_version=1)``."""
    inside = ", ".join(f"{key}={_value(value)}" for key, value in (args or {}).items())
    return f"{action}({inside})"


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str):
        return quote(value, 80)
    return json.dumps(value, default=str)


def number(value: Any) -> str:
    """Floats to 4 significant digits (what the record holds, shown without noise)."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def quote(text: Any, limit: int = MAX_QUOTE) -> str:
    """Record text (agent notes, reasons, merchant names, page summaries) shown as inert inline text: one line,
    bounded, with the characters that make links, HTML or code escaped, so it can never link or run itself
    in a page that renders the answer."""
    flat = re.sub(r"\s+", " ", str(text)).strip()
    if len(flat) > limit:
        flat = flat[: limit - 1] + "…"
    # Backslashes and backticks escaped (no code spans), bars (a bar in a value would split a /sql table's
    # cell), "<" only where it could open a tag (so "<= 240" reads as written), and a link needs "](", so
    # escaping that parenthesis is enough to break it.
    flat = re.sub(r"([\\`|])", r"\\\1", flat)
    return re.sub(r"<(?=[A-Za-z/!?])", r"\\<", flat).replace("](", "]\\(")


def bullets(lines: list[str]) -> str:
    return "\n".join(f"- {line}" for line in lines)
