"""The incident report: written when an incident closes, as markdown and as one self-contained HTML file.

    data.py      `build_report_data`: what happened, gathered once from the store and the responder's state
    document.py  one small document model: the sections every format shows, charts drawn by `agent.charts`
    render.py    `render_markdown` and `render_html`: that document as text, untrusted text made inert

Output is deterministic for the same store, state and ``now`` (only the generated-at line moves).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from agent.report.data import (
    FeatureDrift,
    MetricSeries,
    ReportData,
    ScoreDistribution,
    TimelineEntry,
    build_report_data,
)
from agent.report.render import md_text, render_html, render_markdown
from scorer.registry import ModelRegistry
from store import Store

__all__ = [
    "FeatureDrift",
    "MetricSeries",
    "ReportData",
    "ReportPaths",
    "ScoreDistribution",
    "TimelineEntry",
    "build_report_data",
    "md_text",
    "render_html",
    "render_markdown",
    "write_report",
]

_INCIDENT_ID = re.compile(r"^INC-\d+$")


@dataclass(frozen=True)
class ReportPaths:
    markdown: Path
    html: Path


def write_report(
    store: Store,
    registry: ModelRegistry,
    incident_id: str,
    state: Mapping[str, Any] | None,
    out_dir: Path,
    *,
    now: datetime,
) -> ReportPaths:
    """Write ``<out_dir>/INC-n.md`` and ``<out_dir>/INC-n.html`` (normally the workspace's reports dir).

    Args:
        store: The workspace database.
        registry: The model registry (reference profiles live in model metadata).
        incident_id: The incident, e.g. "INC-7".
        state: The responder's graph state (plain dicts), or None to report from the store alone.
        out_dir: Where to write; created if missing.
        now: The generated-at time (platform clock), the only thing that differs between two runs.

    Raises:
        KeyError: There is no such incident.
    """
    data = build_report_data(store, registry, incident_id, state, now=now)
    name = data.incident.incident_id
    if not _INCIDENT_ID.match(name):  # the file name comes from the store: never let it leave out_dir
        raise ValueError(f"refusing to write a report named {name!r}")
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = ReportPaths(markdown=out_dir / f"{name}.md", html=out_dir / f"{name}.html")
    paths.markdown.write_text(render_markdown(data), encoding="utf-8")
    paths.html.write_text(render_html(data), encoding="utf-8")
    return paths
