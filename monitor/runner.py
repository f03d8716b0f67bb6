"""The monitor loop: count each hour once, run hourly checks, and at midnight the daily ones.

`Monitor.run_hour(start)` is what a live loop calls at the end of every hour; `Monitor.run(since, until)`
replays a span (the CLI's ``selfheal monitor run``). Daily checks add up the day's stored hourly counts
for the serving model, so a day is never rescanned.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from monitor.checks import CHECKS, CheckContext
from monitor.counts import WindowCounts, count_window, load_windows, save_window, sum_windows
from monitor.findings import Cadence, Finding
from monitor.incidents import IncidentChange, IncidentManager, IncidentRules
from monitor.profile import ReferenceProfile
from monitor.thresholds import NoDriftBootstrap
from scorer.errors import ScorerError
from scorer.registry import ModelRegistry
from scorer.serving import ServingStateStore
from store import Store

HOUR = timedelta(hours=1)


class MonitorConfig(BaseModel):
    """How the monitor runs."""

    label_delay_days: int = Field(7, ge=1)
    rules: IncidentRules = Field(default_factory=IncidentRules)
    history_hours: int = Field(72, ge=1, description="hourly windows kept for trailing baselines")


class MonitorReport(BaseModel):
    """What one monitor pass over a span did."""

    hours: int = 0
    days: int = 0
    findings: int = 0
    breaches: int = 0
    changes: list[IncidentChange] = Field(default_factory=list)


class Monitor:
    """Runs the registered checks over hourly and daily windows and maintains incidents."""

    def __init__(
        self,
        store: Store,
        registry: ModelRegistry,
        serving: ServingStateStore,
        *,
        config: MonitorConfig | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.serving = serving
        self.config = config or MonitorConfig()
        self.clock = clock or datetime.now
        self.incidents = IncidentManager(store, self.config.rules, clock=self.clock)
        self._profiles: dict[int, ReferenceProfile | None] = {}
        self._nulls: dict[int | None, dict[str, NoDriftBootstrap]] = {}  # per model version, per subject
        self._naturals: dict[int | None, dict[str, dict[str, float]]] = {}
        self._history: deque[WindowCounts] = deque(maxlen=self.config.history_hours)
        self._history_loaded = False
        self._probes: dict[tuple[int, int], dict[str, float]] = {}

    def profile(self, version: int | None) -> ReferenceProfile | None:
        """The reference profile to judge a model version's traffic by (cached).

        A version registered without a profile (a hot-fix pushed by hand, a deploy outside the training
        pipeline) is judged against the newest earlier version that has one: the features are the same,
        and its scores *should* look like the reference's -- a bad deploy is exactly when they do not.
        """
        if version is None:
            return None
        if version not in self._profiles:
            self._profiles[version] = self._own_profile(version)
            if self._profiles[version] is None:
                earlier = (self._own_profile(v) for v in range(version - 1, 0, -1))
                self._profiles[version] = next((p for p in earlier if p is not None), None)
        return self._profiles[version]

    def _own_profile(self, version: int) -> ReferenceProfile | None:
        try:
            payload = self.registry.get(version).metadata.reference_profile
        except ScorerError:
            return None
        return None if payload is None else ReferenceProfile.model_validate(payload)

    def run(self, since: datetime, until: datetime) -> MonitorReport:
        """Evaluate every whole hour in [since, until)."""
        report = MonitorReport()
        for start in _hours(since, until):
            self._run_hour(start, report)
        return report

    def run_hour(self, start: datetime) -> MonitorReport:
        """Evaluate the hour starting at ``start`` (and its day, when the hour ends at midnight)."""
        report = MonitorReport()
        self._run_hour(pd.Timestamp(start).floor("h").to_pydatetime(), report)
        return report

    def _run_hour(self, start: datetime, report: MonitorReport) -> None:
        end = start + HOUR
        version = self.serving.current().champion_version
        profile = self.profile(version)
        if profile is None:
            return  # nothing to compare with until a profiled model serves
        self._load_history(start)
        window = count_window(self.store, profile, start, end)
        window.model_version = version
        window.scalars.update(self._model_cost(version, start, end))
        save_window(self.store, window, "hour", self.clock())
        self._evaluate(profile, window, "hour", report)
        self._history.append(window)
        report.hours += 1
        if pd.Timestamp(end).hour == 0:
            day = load_windows(self.store, end - timedelta(days=1), end, version)
            if day:
                self._evaluate(profile, sum_windows(day), "day", report)
                report.days += 1

    def _model_cost(self, version: int | None, start: datetime, end: datetime) -> dict[str, float]:
        """Predict cost of the serving model against the one it replaced, timed on the same logged rows.

        Measured once per (model, predecessor) pair, on the first window the model serves with enough rows.
        """
        previous = self.registry.alias("previous")
        if version is None or previous is None or previous == version:
            return {}
        key = (version, previous)
        if key not in self._probes:
            rows = self.store.query(
                "SELECT * FROM predictions WHERE timestamp >= ? AND timestamp < ? LIMIT 2000", [start, end]
            )
            if len(rows) < 50:
                return {}
            try:
                self._probes[key] = probe_predict_cost(self.registry, version, previous, rows)
            except ScorerError:
                return {}  # an artifact that does not verify is the integrity check's business
        return self._probes[key]

    def evaluate_check(self, name: str, since: datetime, until: datetime) -> list[Finding]:
        """Re-run one check on the stored hours in [since, until) of the serving model; incidents untouched.

        What verification after a remediation needs: did the check come back under its threshold on data
        that arrived *after* the action? An hourly check is run on each stored hour, a daily check once on
        the hours added up (its thresholds follow the sample size, so a part of a day is judged fairly).
        Hours the monitor has not counted yet are not there: the caller waits for them.

        Raises:
            KeyError: No check of that name.
        """
        if name not in CHECKS:
            raise KeyError(f"no monitor check {name!r}; checks: {', '.join(sorted(CHECKS))}")
        registered = CHECKS[name]
        version = self.serving.current().champion_version
        profile = self.profile(version)
        if profile is None:
            return []
        # Up to `until`, as the live loop would have it by then: loading only up to `since` would leave
        # the span's own hours out of every later hour's history, here and in every later `run_hour`.
        self._load_history(until)
        windows = load_windows(self.store, since, until, version)
        if not windows:
            return []
        if registered.cadence == "hour":
            return [
                finding
                for window in windows
                for finding in registered.run(
                    self._context(profile, window, "hour", [w for w in self._history if w.start < window.start])
                )
            ]
        return registered.run(self._context(profile, sum_windows(windows), registered.cadence, list(self._history)))

    def _context(
        self, profile: ReferenceProfile, window: WindowCounts, cadence: Cadence, history: list[WindowCounts]
    ) -> CheckContext:
        return CheckContext(
            profile=profile,
            window=window,
            cadence=cadence,
            now=window.end,
            store=self.store,
            history=history,
            label_delay_days=self.config.label_delay_days,
            nulls=self._nulls.setdefault(profile.model_version, {}),
            naturals=self._naturals.setdefault(profile.model_version, {}),
        )

    def _evaluate(self, profile: ReferenceProfile, window: WindowCounts, cadence: Cadence, report: MonitorReport) -> None:
        context = self._context(profile, window, cadence, list(self._history))
        findings: list[Finding] = []
        for registered in CHECKS.values():
            if registered.cadence == cadence:
                findings += registered.run(context)
        changes = self.incidents.process(
            findings, window_start=window.start, window_end=window.end, cadence=cadence, model_version=window.model_version
        )
        report.findings += len(findings)
        report.breaches += sum(f.breached for f in findings)
        report.changes += changes

    def _load_history(self, start: datetime) -> None:
        """After a restart, rebuild the trailing hourly windows from the store (once)."""
        if self._history_loaded:
            return
        self._history_loaded = True
        since = start - timedelta(hours=self.config.history_hours)
        frame = self.store.query(
            "SELECT DISTINCT model_version FROM monitor_windows WHERE cadence = 'hour' AND window_start >= ?", [since]
        )
        windows: list[WindowCounts] = []
        for version in frame["model_version"].tolist():
            windows += load_windows(self.store, since, start, None if pd.isna(version) else int(version))
        for window in sorted(windows, key=lambda w: w.start):
            self._history.append(window)


def probe_predict_cost(registry: ModelRegistry, version: int, previous: int, rows: pd.DataFrame) -> dict[str, float]:
    """Per-row predict time of two model versions on the same rows (best of five runs each)."""
    timings = {}
    for label, candidate in (("current", version), ("previous", previous)):
        loaded = registry.load(candidate)
        matrix = rows[loaded.metadata.feature_columns].to_numpy(dtype=np.float32)
        best = float("inf")
        for _ in range(5):
            started = time.perf_counter()
            loaded.booster.inplace_predict(matrix)
            best = min(best, time.perf_counter() - started)
        timings[label] = best * 1000.0 / len(matrix)
    return {
        "model_cost_ratio": timings["current"] / max(timings["previous"], 1e-9),
        "probe_ms_per_row": timings["current"],
        "previous_probe_ms_per_row": timings["previous"],
    }


def _hours(since: datetime, until: datetime) -> Iterator[datetime]:
    start = pd.Timestamp(since).ceil("h").to_pydatetime()
    while start + HOUR <= until:
        yield start
        start += HOUR
