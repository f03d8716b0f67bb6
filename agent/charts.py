"""Inline SVG charts for the incident report: no JavaScript, no fonts, no images, no dependencies.

The report must open offline, years later, in any browser, and be attached to a ticket as one file, so
every chart is a plain ``<svg>`` string. Each chart carries ``data-chart="<id>"`` (what the browser test
and a reader's tooling look for) and a ``<title>``; a chart without data is still an ``<svg>`` with the
same marker plus ``data-empty="true"`` and says why (`no_data`), so a missing chart is never silent.

All text that reaches an SVG goes through `html.escape`: labels can come from incident data (feature
names, merchant names) and the SVG is parsed as HTML. Output is deterministic: fixed sizes, fixed colours,
numbers formatted with a fixed precision.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

__all__ = [
    "Line",
    "Marker",
    "TimelineEvent",
    "bar_chart",
    "line_chart",
    "no_data",
    "paired_histogram",
    "timeline_chart",
]

WIDTH = 760
PALETTE = ("#1f5fa8", "#d9822b", "#3a9a5b", "#8a4fb5")
SPAN_FILL = "#f4d6d6"
MARKER = "#b42318"
MUTED = "#6b7280"
GRID = "#e5e7eb"
FONT = 'font-family="system-ui, sans-serif"'  # generic family: nothing to download
LEFT, RIGHT, TOP, BOTTOM = 64, 20, 40, 44


@dataclass(frozen=True)
class Line:
    """One series of a line chart: ``(time, value)`` points, NaN for a gap."""

    label: str
    points: Sequence[tuple[datetime, float]]


@dataclass(frozen=True)
class Marker:
    """A vertical marker at an instant (an action), with a short label."""

    at: datetime
    label: str


@dataclass(frozen=True)
class TimelineEvent:
    """A dot on a timeline lane; ``detail`` becomes its hover text."""

    at: datetime
    lane: str
    label: str
    detail: str = ""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def fmt(value: float | None) -> str:
    """A number as people read it in a chart: 3 significant digits, NaN and None as a dash."""
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:.3g}"


def _open(chart: str, title: str, height: int, *, empty: bool = False) -> str:
    flag = ' data-empty="true"' if empty else ""
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" data-chart="{_e(chart)}"{flag} role="img" '
        f'width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" {FONT} font-size="11">'
        f"<title>{_e(title)}</title>"
        f'<text x="{LEFT}" y="20" font-size="14" font-weight="600" fill="#111827">{_e(title)}</text>'
    )


def no_data(chart: str, title: str, why: str) -> str:
    """A marked placeholder saying why a chart has no data (never an empty gap in the report)."""
    body = _open(chart, title, 90, empty=True)
    body += (
        f'<rect x="{LEFT}" y="32" width="{WIDTH - LEFT - RIGHT}" height="46" rx="4" fill="#f9fafb" '
        f'stroke="#9ca3af" stroke-dasharray="4 3"/>'
        f'<text x="{LEFT + 12}" y="60" font-size="12" fill="#374151">No data: {_e(why)}</text>'
    )
    return body + "</svg>"


# -- axes -------------------------------------------------------------------------------------------


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2, 5 x 10^k steps) covering [low, high]."""
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        high = low + 1.0
    raw = (high - low) / max(count - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = math.floor(low / step) * step
    ticks, value = [], first
    while value < high + step * 0.5:
        ticks.append(round(value, 12))
        value += step
    return ticks


@dataclass(frozen=True)
class _TimeAxis:
    start: datetime
    end: datetime
    x0: float
    x1: float

    def x(self, at: datetime) -> float:
        total = (self.end - self.start).total_seconds() or 1.0
        share = (at - self.start).total_seconds() / total
        return round(self.x0 + min(max(share, 0.0), 1.0) * (self.x1 - self.x0), 2)

    def ticks(self, y: float) -> str:
        out = []
        for at in _time_ticks(self.start, self.end):
            x = self.x(at)
            anchor = "start" if x < self.x0 + 40 else "end" if x > self.x1 - 40 else "middle"
            label = f"{at:%m-%d}" if at.hour == 0 else f"{at:%m-%d %H:%M}"
            out.append(
                f'<line x1="{x}" y1="{y}" x2="{x}" y2="{y + 4}" stroke="{MUTED}"/>'
                f'<text x="{x}" y="{y + 16}" text-anchor="{anchor}" fill="{MUTED}">{label}</text>'
            )
        return "".join(out)


def _time_ticks(start: datetime, end: datetime, most: int = 7) -> list[datetime]:
    """Ticks on whole hours (1, 2, 3, 6, 12 h) or midnights, at most `most` of them; else the two ends."""
    hours = (end - start).total_seconds() / 3600
    step = next((s for s in (1, 2, 3, 6, 12, 24, 48, 168, 336, 720) if hours / s <= most - 1), 720)
    at = start.replace(minute=0, second=0, microsecond=0)
    while at < start or (at.hour % step if step < 24 else at.hour) != 0:
        at += timedelta(hours=1)
    ticks: list[datetime] = []
    while at <= end and len(ticks) <= most:
        ticks.append(at)
        at += timedelta(hours=step)
    return ticks or [start, end]


def _span(axis: _TimeAxis, span: tuple[datetime, datetime] | None, top: float, bottom: float, *, label_y: float) -> str:
    if span is None:
        return ""
    x0, x1 = axis.x(span[0]), axis.x(span[1])
    return (
        f'<rect data-role="incident-span" x="{x0}" y="{top}" width="{max(x1 - x0, 1.5)}" height="{bottom - top}" '
        f'fill="{SPAN_FILL}"/>'
        f'<text x="{x0 + 3}" y="{label_y}" fill="{MARKER}" font-size="10">incident</text>'
    )


def _legend(labels: Sequence[str], y: float) -> str:
    out, x = [], float(LEFT)
    for i, label in enumerate(labels):
        colour = PALETTE[i % len(PALETTE)]
        out.append(
            f'<rect x="{x}" y="{y - 9}" width="10" height="10" fill="{colour}"/>'
            f'<text x="{x + 14}" y="{y}" fill="#374151">{_e(label)}</text>'
        )
        x += 24 + 7 * len(label)
    return "".join(out)


# -- charts -----------------------------------------------------------------------------------------


def line_chart(
    chart: str,
    title: str,
    lines: Sequence[Line],
    *,
    start: datetime,
    end: datetime,
    span: tuple[datetime, datetime] | None = None,
    threshold: float | None = None,
    markers: Sequence[Marker] = (),
    height: int = 280,
) -> str:
    """Values over time with the incident span shaded, a dashed threshold and action markers."""
    bottom = height - BOTTOM
    axis = _TimeAxis(start, end, LEFT, WIDTH - RIGHT)
    values = [v for line in lines for _, v in line.points if math.isfinite(v)]
    if threshold is not None and math.isfinite(threshold):
        values.append(threshold)
    ticks = nice_ticks(min([0.0, *values]), max([1e-9, *values]))
    low, high = ticks[0], ticks[-1]

    def y(value: float) -> float:
        return round(bottom - (value - low) / ((high - low) or 1.0) * (bottom - TOP), 2)

    out = [_open(chart, title, height), _span(axis, span, TOP, bottom, label_y=TOP + 11)]
    for tick in ticks:
        out.append(
            f'<line x1="{LEFT}" y1="{y(tick)}" x2="{WIDTH - RIGHT}" y2="{y(tick)}" stroke="{GRID}"/>'
            f'<text x="{LEFT - 6}" y="{y(tick) + 4}" text-anchor="end" fill="{MUTED}">{fmt(tick)}</text>'
        )
    out.append(f'<line x1="{LEFT}" y1="{bottom}" x2="{WIDTH - RIGHT}" y2="{bottom}" stroke="{MUTED}"/>')
    out.append(axis.ticks(bottom))
    if threshold is not None and math.isfinite(threshold):
        out.append(
            f'<line data-role="threshold" x1="{LEFT}" y1="{y(threshold)}" x2="{WIDTH - RIGHT}" y2="{y(threshold)}" '
            f'stroke="{MARKER}" stroke-dasharray="6 4"/>'
            f'<text x="{WIDTH - RIGHT - 4}" y="{y(threshold) - 4}" text-anchor="end" fill="{MARKER}">'
            f"threshold {fmt(threshold)}</text>"
        )
    for i, line in enumerate(lines):
        colour = PALETTE[i % len(PALETTE)]
        for segment in _segments(line.points):
            points = " ".join(f"{axis.x(t)},{y(v)}" for t, v in segment)
            out.append(f'<polyline data-series="{_e(line.label)}" points="{points}" fill="none" stroke="{colour}" stroke-width="2"/>')
            out.extend(f'<circle cx="{axis.x(t)}" cy="{y(v)}" r="2.5" fill="{colour}"/>' for t, v in segment)
    for j, marker in enumerate(markers):
        x = axis.x(marker.at)
        label_y = TOP + 24 + 12 * (j % 3)  # stagger labels of actions close in time
        out.append(
            f'<line data-role="action" x1="{x}" y1="{TOP}" x2="{x}" y2="{bottom}" stroke="{MARKER}" stroke-width="1.5"/>'
            f'<text x="{x + 3}" y="{label_y}" fill="{MARKER}">{_e(marker.label)}</text>'
        )
    out.append(_legend([line.label for line in lines], height - 6))
    return "".join(out) + "</svg>"


def _segments(points: Sequence[tuple[datetime, float]]) -> list[list[tuple[datetime, float]]]:
    """Runs of finite points: a missing window is a gap in the line, not a zero."""
    runs: list[list[tuple[datetime, float]]] = [[]]
    for at, value in sorted(points, key=lambda p: p[0]):
        if math.isfinite(value):
            runs[-1].append((at, value))
        elif runs[-1]:
            runs.append([])
    return [run for run in runs if run]


def bar_chart(
    chart: str,
    title: str,
    bars: Sequence[tuple[str, float, bool]],
    *,
    guides: Sequence[tuple[float, str]] = (),
) -> str:
    """Horizontal bars ``(label, value, highlighted)``, largest first as given, with dashed guide lines."""
    row, label_width = 20, 190
    height = TOP + 12 + row * len(bars) + 34
    x0, x1 = LEFT + label_width - 60, WIDTH - RIGHT - 50
    finite = [v for _, v, _ in bars if math.isfinite(v)] + [g for g, _ in guides]
    top_value = max([1e-9, *finite])

    def x(value: float) -> float:
        return round(x0 + max(value, 0.0) / top_value * (x1 - x0), 2)

    out = [_open(chart, title, height)]
    bottom = TOP + 6 + row * len(bars)
    for value, label in guides:
        out.append(
            f'<line x1="{x(value)}" y1="{TOP}" x2="{x(value)}" y2="{bottom}" stroke="{MUTED}" stroke-dasharray="4 3"/>'
            f'<text x="{x(value)}" y="{bottom + 14}" text-anchor="middle" fill="{MUTED}">{_e(label)}</text>'
        )
    for i, (label, value, highlighted) in enumerate(bars):
        top = TOP + 6 + i * row
        colour = PALETTE[1] if highlighted else PALETTE[0]
        width = max(x(value) - x0, 0.0) if math.isfinite(value) else 0.0
        out.append(
            f'<text x="{x0 - 6}" y="{top + 13}" text-anchor="end" fill="#111827">{_e(label)}</text>'
            f'<rect x="{x0}" y="{top + 2}" width="{round(width, 2)}" height="{row - 6}" fill="{colour}"/>'
            f'<text x="{x0 + width + 4}" y="{top + 13}" fill="#374151">{fmt(value)}</text>'
        )
    out.append(f'<line x1="{x0}" y1="{TOP}" x2="{x0}" y2="{bottom}" stroke="{MUTED}"/>')
    out.append(_legend(["feature", "named by the incident"], height - 6))
    return "".join(out) + "</svg>"


def paired_histogram(chart: str, title: str, bins: Sequence[str], series: Sequence[tuple[str, Sequence[float]]]) -> str:
    """Shares per bin for two or three distributions side by side (reference first)."""
    height = 300
    bottom = height - BOTTOM - 16
    x0, x1 = LEFT, WIDTH - RIGHT
    values = [v for _, shares in series for v in shares if math.isfinite(v)]
    ticks = nice_ticks(0.0, max([1e-9, *values]))
    high = ticks[-1]
    slot = (x1 - x0) / max(len(bins), 1)
    bar = max(slot * 0.8 / max(len(series), 1), 1.0)

    def y(value: float) -> float:
        return round(bottom - value / (high or 1.0) * (bottom - TOP), 2)

    out = [_open(chart, title, height)]
    for tick in ticks:
        out.append(
            f'<line x1="{x0}" y1="{y(tick)}" x2="{x1}" y2="{y(tick)}" stroke="{GRID}"/>'
            f'<text x="{x0 - 6}" y="{y(tick) + 4}" text-anchor="end" fill="{MUTED}">{fmt(tick)}</text>'
        )
    for s, (label, shares) in enumerate(series):
        colour = PALETTE[s % len(PALETTE)]
        for i, share in enumerate(shares):
            if not math.isfinite(share):
                continue
            left = round(x0 + i * slot + slot * 0.1 + s * bar, 2)
            out.append(
                f'<rect data-series="{_e(label)}" x="{left}" y="{y(share)}" width="{round(bar, 2)}" '
                f'height="{round(bottom - y(share), 2)}" fill="{colour}"/>'
            )
    every = max(1, math.ceil(len(bins) / 12))  # at most ~12 bin labels fit under the axis
    for i, label in enumerate(bins):
        if i % every == 0:
            out.append(
                f'<text x="{round(x0 + (i + 0.5) * slot, 2)}" y="{bottom + 14}" text-anchor="middle" '
                f'fill="{MUTED}" font-size="9">{_e(label)}</text>'
            )
    out.append(f'<line x1="{x0}" y1="{bottom}" x2="{x1}" y2="{bottom}" stroke="{MUTED}"/>')
    out.append(f'<text x="{x1}" y="{bottom + 30}" text-anchor="end" fill="{MUTED}">bins: upper edge (share of rows)</text>')
    out.append(_legend([label for label, _ in series], height - 6))
    return "".join(out) + "</svg>"


def timeline_chart(
    chart: str,
    title: str,
    events: Sequence[TimelineEvent],
    *,
    start: datetime,
    end: datetime,
    lanes: Sequence[str],
    span: tuple[datetime, datetime] | None = None,
) -> str:
    """Events on lanes (monitor, actions, pages, people) over time, the incident span shaded."""
    lane_height = 34
    height = TOP + lane_height * len(lanes) + BOTTOM
    bottom = TOP + lane_height * len(lanes)
    axis = _TimeAxis(start, end, LEFT + 50, WIDTH - RIGHT)
    out = [_open(chart, title, height), _span(axis, span, TOP, bottom, label_y=bottom - 4)]
    for i, lane in enumerate(lanes):
        y = TOP + lane_height * i + lane_height / 2
        out.append(
            f'<line x1="{axis.x0}" y1="{y}" x2="{axis.x1}" y2="{y}" stroke="{GRID}"/>'
            f'<text x="{axis.x0 - 8}" y="{y + 4}" text-anchor="end" fill="#111827">{_e(lane)}</text>'
        )
    labelled: dict[str, float] = {}
    for event in sorted(events, key=lambda e: e.at):  # stable: the caller's order breaks ties (first labelled)
        if event.lane not in lanes:
            continue
        row = lanes.index(event.lane)
        y = TOP + lane_height * row + lane_height / 2
        x = axis.x(event.at)
        colour = PALETTE[row % len(PALETTE)]
        out.append(
            f'<circle data-event="{_e(event.label)}" cx="{x}" cy="{y}" r="4.5" fill="{colour}" stroke="#fff">'
            f"<title>{_e(f'{event.at:%m-%d %H:%M} {event.label}: {event.detail}')}</title></circle>"
        )
        # Label a dot only when the lane's previous label is far enough away to stay readable.
        if x - labelled.get(event.lane, -1e9) > 90:
            out.append(f'<text x="{x + 6}" y="{y - 7}" fill="#374151" font-size="10">{_e(event.label[:24])}</text>')
            labelled[event.lane] = x
    out.append(f'<line x1="{axis.x0}" y1="{bottom}" x2="{axis.x1}" y2="{bottom}" stroke="{MUTED}"/>')
    out.append(axis.ticks(bottom))
    return "".join(out) + "</svg>"
