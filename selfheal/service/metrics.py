"""Prometheus text exposition (format 0.0.4), written by hand: three metric types, no dependency.

Counters and histograms live in memory and count since the process started (what Prometheus expects:
it computes rates and notices restarts). Gauges that describe the workspace (fallback on or off, open
incidents) are read at scrape time by `ServiceMetrics.render`'s caller and passed in, so they are never
stale. Every update takes a lock: handlers, the scoring worker and the scheduler update from different
threads.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Final

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
# Seconds. Dense below 10 ms, where the single-transaction aim sits, then coarse up to big batches.
LATENCY_BUCKETS: Final = (0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

LabelValues = tuple[str, ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{name}="{_escape(value)}"' for name, value in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    return repr(int(value)) if float(value).is_integer() and abs(value) < 2**53 else repr(float(value))


class _Metric:
    kind: str = ""

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = ()) -> None:
        self.name = name
        self.help = help_text
        self.label_names = tuple(labels)
        self._lock = threading.Lock()

    def _key(self, labels: Mapping[str, str]) -> LabelValues:
        if set(labels) != set(self.label_names):
            raise ValueError(f"{self.name} takes labels {self.label_names}, got {sorted(labels)}")
        return tuple(str(labels[name]) for name in self.label_names)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]

    def lines(self) -> list[str]:
        raise NotImplementedError


class Counter(_Metric):
    """A count that only goes up."""

    kind = "counter"

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = ()) -> None:
        super().__init__(name, help_text, labels)
        self._values: dict[LabelValues, float] = {}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        if amount < 0:
            raise ValueError("a counter never goes down")
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        with self._lock:
            return self._values.get(self._key(labels), 0.0)

    def lines(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        if not items and not self.label_names:
            items = [((), 0.0)]
        return [*self.header(), *(f"{self.name}{_labels(self.label_names, k)} {_number(v)}" for k, v in items)]


class Gauge(_Metric):
    """A value read at scrape time."""

    kind = "gauge"

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = ()) -> None:
        super().__init__(name, help_text, labels)
        self._values: dict[LabelValues, float] = {}

    def set(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = float(value)

    def replace(self, values: Iterable[tuple[Mapping[str, str], float]]) -> None:
        """Set every labelled value at once (label sets absent from ``values`` disappear)."""
        fresh = {self._key(labels): float(value) for labels, value in values}
        with self._lock:
            self._values = fresh

    def lines(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        return [*self.header(), *(f"{self.name}{_labels(self.label_names, k)} {_number(v)}" for k, v in items)]


class Histogram(_Metric):
    """Observations counted into cumulative buckets, with their sum and count."""

    kind = "histogram"

    def __init__(
        self, name: str, help_text: str, labels: Sequence[str] = (), buckets: Sequence[float] = LATENCY_BUCKETS
    ) -> None:
        super().__init__(name, help_text, labels)
        self.buckets = tuple(sorted(buckets))
        self._series: dict[LabelValues, tuple[list[int], list[float]]] = {}  # counts per bucket (+Inf last), [sum]

    def observe(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            counts, total = self._series.setdefault(key, ([0] * (len(self.buckets) + 1), [0.0]))
            for i, bound in enumerate(self.buckets):
                if value <= bound:
                    counts[i] += 1
                    break
            else:
                counts[-1] += 1
            total[0] += value

    def count(self, **labels: str) -> int:
        with self._lock:
            series = self._series.get(self._key(labels))
            return sum(series[0]) if series else 0

    def lines(self) -> list[str]:
        with self._lock:
            items = sorted((k, (list(c), s[0])) for k, (c, s) in self._series.items())
        out = self.header()
        for key, (counts, total) in items:
            cumulative = 0
            for bound, count in zip([*self.buckets, math.inf], counts, strict=True):
                cumulative += count
                le = f'le="{_number(bound)}"'
                out.append(f"{self.name}_bucket{_labels(self.label_names, key, le)} {cumulative}")
            out.append(f"{self.name}_sum{_labels(self.label_names, key)} {_number(total)}")
            out.append(f"{self.name}_count{_labels(self.label_names, key)} {cumulative}")
        return out


class ServiceMetrics:
    """Every metric the service exposes on ``GET /metrics``.

    The responder (agent/) reports its runs with ``agent_runs.inc(outcome=...)``; periodic jobs are
    counted by the scheduler.
    """

    def __init__(self) -> None:
        self.score_latency = Histogram(
            "selfheal_score_request_duration_seconds",
            "Server time of POST /v1/score, from body received to answer ready (includes queueing).",
            labels=("kind",),
        )
        self.score_requests = Counter(
            "selfheal_score_requests_total", "POST /v1/score requests by kind and HTTP status.", ("kind", "status")
        )
        self.decisions = Counter(
            "selfheal_decisions_total", "Scored transactions by decision.", labels=("decision",)
        )
        self.dead_letters = Counter(
            "selfheal_dead_letters_total", "Rows dead-lettered by the scorer, by the field that failed.", ("field",)
        )
        self.scoring_calls = Counter(
            "selfheal_scorer_calls_total",
            "Scorer calls by path: single (score_one) or batch (score_batch; coalesced requests count once).",
            labels=("path",),
        )
        self.fallback = Gauge("selfheal_fallback_active", "1 when fallback rules serve instead of a model.")
        self.champion = Gauge("selfheal_champion_version", "Model version serving (absent under fallback).")
        self.serving_state = Gauge("selfheal_serving_state_version", "Current serving-state version.")
        self.open_incidents = Gauge(
            "selfheal_open_incidents", "Incidents not yet resolved, by status.", labels=("status",)
        )
        self.pages_unreached = Gauge(
            "selfheal_pages_unreached",
            "Trigger pages of unresolved incidents that no paging channel delivered (redelivery gives up after a day).",
        )
        self.agent_runs = Counter(
            "selfheal_agent_runs_total", "Responder runs on incidents, by outcome.", labels=("outcome",)
        )
        self.job_runs = Counter(
            "selfheal_scheduler_job_runs_total", "Periodic job runs, by job and outcome.", ("job", "outcome")
        )
        self.queued_rows = Gauge("selfheal_score_queue_rows", "Rows waiting for the scorer right now.")
        self.log_write_failures = Gauge(
            "selfheal_log_write_failures", "Failed writes of the scoring log since the service started."
        )
        self.log_unwritten_chunks = Gauge(
            "selfheal_log_unwritten_chunks", "Chunks of scoring-log rows kept in memory for the next write."
        )
        self.log_spilled_files = Gauge(
            "selfheal_log_spilled_files", "Chunks of scoring-log rows set aside in log-spill/ after failed writes."
        )

    def all(self) -> list[_Metric]:
        return [
            self.score_latency,
            self.score_requests,
            self.decisions,
            self.dead_letters,
            self.scoring_calls,
            self.fallback,
            self.champion,
            self.serving_state,
            self.open_incidents,
            self.pages_unreached,
            self.agent_runs,
            self.job_runs,
            self.queued_rows,
            self.log_write_failures,
            self.log_unwritten_chunks,
            self.log_spilled_files,
        ]

    def render(self) -> str:
        """The text exposition of every metric."""
        lines: list[str] = []
        for metric in self.all():
            lines += metric.lines()
        return "\n".join(lines) + "\n"
