"""The agent's read tools: compact, numeric views of incidents, monitor windows, models and serving state.

Every tool here is ``kind="read", risk="none"``: it changes nothing. Window reports read what the monitor
already stored (hourly count vectors in ``monitor_counts``/``monitor_windows`` added up with
`monitor.counts.sum_windows`, verdicts in ``monitor_findings``) and compare with the serving model's
`ReferenceProfile` through `monitor.stats`, so the agent sees the monitor's numbers, not a second opinion.
Windows are ``last_24h``, ``last_7d``, ``last_90m`` or ``START/END`` in ISO time.

Text that comes from the data (incident titles, audit reasons, runbook bodies) is returned as data: it is
never an instruction and cannot widen what the agent may do.
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd

from monitor.checks import categorical_pair, feature_problems, numeric_pair
from monitor.counts import SCORE_SUBJECT, WindowCounts, load_windows, sum_windows
from monitor.estimated import window_estimate
from monitor.profile import NumericProfile, ReferenceProfile
from monitor.runner import Monitor
from monitor.stats import CATEGORICAL_STATS, NUMERIC_STATS, BinnedPair, evaluate, top_shifted_bins
from scorer.errors import ScorerError
from scorer.metrics import auc_roc, average_precision
from scorer.serving import ServingState, as_naive_utc
from tools.context import ToolContext
from tools.errors import ToolRetry
from tools.registry import tool
from tools.runbooks import RunbookError, RunbookLibrary, default_runbooks_dir, read_runbook
from tools.runbooks.linter import runbook_files

__all__ = ["compact", "parse_window"]

MAX_WINDOW: Final = timedelta(days=90)
MAX_LIST: Final = 20
TOP_FEATURES: Final = 10
_RELATIVE = re.compile(r"^last_(\d+)(m|h|d)$")
_UNITS: Final = {"m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1)}


# -- helpers --------------------------------------------------------------------------------------


def parse_window(window: str, now: datetime) -> tuple[datetime, datetime]:
    """``(start, end)`` of a window: ``last_<n>m|h|d`` ending at ``now``, or ``START/END`` in ISO time.

    Raises:
        ToolRetry: The text is not a window, is empty or backwards, or is longer than 90 days.
    """
    text = window.strip()
    match = _RELATIVE.match(text)
    if match:
        end = as_naive_utc(now)
        start = end - int(match.group(1)) * _UNITS[match.group(2)]
    elif text.count("/") == 1:
        try:
            start, end = (as_naive_utc(pd.Timestamp(part.strip()).to_pydatetime()) for part in text.split("/"))
        except ValueError as error:
            raise ToolRetry(f"window {window!r}: {error}; use e.g. 2018-06-01T00:00/2018-06-02T00:00") from error
    else:
        raise ToolRetry(f"window {window!r} is not understood; use last_24h, last_7d, last_90m or START/END (ISO)")
    if start >= end:
        raise ToolRetry(f"window {window!r} is empty or backwards: start must be before end")
    if end - start > MAX_WINDOW:
        raise ToolRetry(f"window {window!r} is longer than {MAX_WINDOW.days} days; ask for a shorter one")
    return start, end


def compact(value: Any, depth: int = 0) -> Any:
    """JSON-able data with floats to 4 significant digits, NaN as None, and long lists and dicts cut."""
    if isinstance(value, bool | None | str | int) and not isinstance(value, np.integer):
        return value
    if isinstance(value, float | np.floating):
        number = float(value)
        return None if not math.isfinite(number) else float(f"{number:.4g}")
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, datetime | pd.Timestamp):
        return pd.Timestamp(value).isoformat()
    if depth > 5:
        return "..."
    if isinstance(value, dict):
        items = list(value.items())
        out = {str(k): compact(v, depth + 1) for k, v in items[:40]}
        if len(items) > 40:
            out["_cut"] = f"{len(items) - 40} more keys"
        return out
    if isinstance(value, list | tuple | np.ndarray):
        items = list(value)
        cut = [compact(v, depth + 1) for v in items[:MAX_LIST]]
        return [*cut, f"... {len(items) - MAX_LIST} more"] if len(items) > MAX_LIST else cut
    return str(value)


def _window_info(start: datetime, end: datetime) -> dict[str, str]:
    return {"start": start.isoformat(), "end": end.isoformat()}


def _findings(ctx: ToolContext, start: datetime, end: datetime, kinds: tuple[str, ...]) -> list[dict[str, Any]]:
    """The monitor's stored verdicts in the window, one summary per (cadence, check, subject)."""
    frame = ctx.store.query(
        "SELECT cadence, check_name, subject, count(*) AS windows, count(*) FILTER (WHERE breached) AS breaches, "
        "max(value) AS worst, arg_max(value, window_end) AS last_value, arg_max(threshold, window_end) AS threshold, "
        "arg_max(breached, window_end) AS last_breached, max(window_end) AS last_window_end, "
        "arg_max(evidence, window_end) AS last_evidence FROM monitor_findings "
        f"WHERE window_start >= ? AND window_end <= ? AND kind IN ({', '.join('?' * len(kinds))}) "
        "GROUP BY ALL ORDER BY breaches DESC, check_name",
        [start, end, *kinds],
    )
    out = []
    for row in frame.to_dict("records"):
        evidence = json.loads(row.pop("last_evidence"))
        row["last_features"] = evidence.get("features", [])[:10]
        out.append(compact(row))
    return out


def _monitor(ctx: ToolContext) -> Monitor:
    return ctx.monitor or Monitor(ctx.store, ctx.registry, ctx.serving, clock=ctx.clock)


def _monitored(ctx: ToolContext, start: datetime, end: datetime) -> tuple[ReferenceProfile, WindowCounts, list[Any]] | None:
    """The summed hourly counts of the window for its latest model version, and that version's profile."""
    hour_start = pd.Timestamp(start).floor("h").to_pydatetime()
    versions = ctx.store.query(
        "SELECT model_version FROM monitor_windows WHERE cadence = 'hour' AND window_start >= ? AND window_end <= ? "
        "GROUP BY ALL ORDER BY max(window_end) DESC",
        [hour_start, end],
    )["model_version"].tolist()
    versions = [None if pd.isna(v) else int(v) for v in versions]
    monitor = _monitor(ctx)  # one monitor, so its profile cache serves every version tried
    for version in versions:
        profile = monitor.profile(version)
        windows = load_windows(ctx.store, hour_start, end, version)
        if profile is not None and windows:
            return profile, sum_windows(windows), versions
    return None


def _pair(profile: ReferenceProfile, subject: str, window: WindowCounts) -> tuple[BinnedPair, dict[str, Any]] | None:
    counts = window.subjects.get(subject)
    if counts is None:
        return None
    if subject in profile.categorical:
        return categorical_pair(profile.categorical[subject], counts), dict(CATEGORICAL_STATS)
    numeric = profile.score if subject == SCORE_SUBJECT else profile.numeric[subject]
    pair = numeric_pair(numeric, counts)
    return pair, dict(NUMERIC_STATS)


def _top_bins(pair: BinnedPair, edges: list[float] | None, labels: list[str] | None = None) -> list[dict[str, Any]]:
    """The monitor's most shifted bins, each named by its category or its interval."""
    bins = top_shifted_bins(pair)
    for entry in bins:
        i = entry["bin"]
        if labels is not None:
            entry["bin"] = labels[i] if i < len(labels) else "OTHER"
        elif edges is not None:
            low = "-inf" if i == 0 else f"{edges[i - 1]:.4g}"
            entry["bin"] = f"({low}, {edges[i]:.4g}]" if i < len(edges) else f"({edges[-1]:.4g}, inf)"
        else:
            entry["bin"] = str(i)
    return bins


def _no_data(start: datetime, end: datetime) -> dict[str, Any]:
    return {"window": _window_info(start, end), "hours": 0, "note": "the monitor has no hourly windows in this window"}


# -- incidents ------------------------------------------------------------------------------------


@tool(kind="read", risk="none")
def get_incident(ctx: ToolContext, incident_id: str) -> dict[str, Any]:
    """Show one incident: kind, subject, severity, status, evidence numbers and its timeline.

    Args:
        incident_id: The incident, e.g. "INC-3" (or just 3).
    """
    try:
        incident = ctx.incidents.get(incident_id)
    except KeyError as error:
        recent = [i.incident_id for i in ctx.incidents.list()][-10:]
        raise ToolRetry(f"no incident {incident_id!r}; recent incidents: {', '.join(recent) or 'none'}") from error
    events = ctx.incidents.events(incident.incident_id)
    timeline = [
        {"at": row.recorded_at, "event": row.event, "detail": json.loads(row.detail)} for row in events.itertuples()
    ]
    data = incident.model_dump(exclude={"evidence"})
    return compact(
        {
            **data,
            "evidence": incident.evidence,
            "event_counts": events["event"].value_counts().to_dict(),
            # The first events say how it started, the last what happened since.
            "timeline": timeline if len(timeline) <= 12 else [*timeline[:4], f"... {len(timeline) - 12} events", *timeline[-8:]],
        }
    )


@tool(kind="read", risk="none")
def similar_incidents(ctx: ToolContext, incident_id: str) -> dict[str, Any]:
    """Past incidents of the same kind and subject, how they ended, and the actions the audit log records for them.

    Args:
        incident_id: The incident to compare with, e.g. "INC-3".
    """
    try:
        incident = ctx.incidents.get(incident_id)
    except KeyError as error:
        raise ToolRetry(f"no incident {incident_id!r}") from error
    frame = ctx.store.query(
        "SELECT incident_id, status, severity, opened_at, closed_at, model_version, root_cause, summary FROM incidents "
        "WHERE kind = ? AND subject = ? AND incident_id <> ? ORDER BY opened_at DESC LIMIT 10",
        [incident.kind, incident.subject, incident.incident_id],
    )
    past = []
    fixes: dict[str, int] = {}
    for row in frame.to_dict("records"):
        actions = ctx.store.query(
            "SELECT recorded_at, actor, action, args, result FROM audit_log WHERE incident_id = ? ORDER BY recorded_at",
            [row["incident_id"]],
        )
        row["actions"] = actions_done = [
            {"at": a.recorded_at, "actor": a.actor, "action": a.action, "args": _json_or_text(a.args), "result": _json_or_text(a.result)}
            for a in actions.itertuples()
        ]
        past.append({k: (None if not isinstance(v, list) and pd.isna(v) else v) for k, v in row.items()})
        if row["status"] in ("resolved", "mitigated"):
            for action in {a["action"] for a in actions_done}:
                fixes[action] = fixes.get(action, 0) + 1
    return compact(
        {"incident_id": incident.incident_id, "kind": incident.kind, "subject": incident.subject,
         "similar": past, "actions_in_resolved_or_mitigated": fixes}
    )


def _json_or_text(text: Any) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return text


# -- monitor windows ------------------------------------------------------------------------------


@tool(kind="read", risk="none")
def drift_report(ctx: ToolContext, window: str, feature: str | None = None) -> dict[str, Any]:
    """Feature drift in a window: the monitor's drift verdicts and, per feature, PSI, JS, KS and Wasserstein/IQR against the model's reference profile.

    Args:
        window: "last_24h", "last_7d" or "START/END" in ISO time.
        feature: One feature (or channel, mcc, country) to detail with its most changed bins; all when omitted.
    """
    start, end = parse_window(window, ctx.clock())
    found = _monitored(ctx, start, end)
    if found is None:
        return {**_no_data(start, end), "findings": _findings(ctx, start, end, ("data_drift", "prediction_drift"))}
    profile, counts, versions = found
    subjects = [*profile.numeric, *profile.categorical]
    if feature is not None and feature not in subjects:
        raise ToolRetry(f"no drift subject {feature!r}; subjects: {', '.join(subjects)}")
    rows = []
    for name in [feature] if feature else subjects:
        built = _pair(profile, name, counts)
        if built is None:
            continue
        pair, stats = built
        subject = counts.subjects[name]
        reference: Any = profile.numeric.get(name) or profile.categorical[name]
        ref_null = reference.null_rate if isinstance(reference, NumericProfile) else reference.counts[-1] / max(reference.rows, 1)
        entry: dict[str, Any] = {"feature": name, "importance": profile.importance.get(name, 0.0), "rows": subject.rows,
                                 "null_rate": subject.nulls / max(subject.rows, 1), "reference_null_rate": ref_null}
        entry.update({stat: evaluate(stat, pair) for stat in stats})
        if feature:
            edges = reference.edges if isinstance(reference, NumericProfile) else None
            labels = None if isinstance(reference, NumericProfile) else reference.categories
            entry["top_bins"] = _top_bins(pair, edges, labels)
        rows.append(entry)
    rows.sort(key=lambda r: -r["psi"])
    return compact(
        {"window": _window_info(counts.start, counts.end), "model_version": profile.model_version,
         "versions_in_window": versions, "rows": counts.rows,
         "features": rows[:TOP_FEATURES], "features_not_shown": max(0, len(rows) - TOP_FEATURES),
         "psi_scale": "0.1 moderate, 0.25 major (the monitor's verdict also weighs sample size)",
         "findings": _findings(ctx, start, end, ("data_drift", "prediction_drift"))}
    )


@tool(kind="read", risk="none")
def quality_report(ctx: ToolContext, window: str) -> dict[str, Any]:
    """Data quality in a window: volume against the baseline, dead letters by reason, null rates, impossible and stuck values per feature.

    Args:
        window: "last_24h", "last_7d" or "START/END" in ISO time.
    """
    start, end = parse_window(window, ctx.clock())
    findings = _findings(ctx, start, end, ("data_quality", "error_rate", "volume", "model_integrity"))
    found = _monitored(ctx, start, end)
    if found is None:
        return {**_no_data(start, end), "findings": findings}
    profile, counts, _ = found
    hours = pd.date_range(counts.start, counts.end, freq="h", inclusive="left")
    expected = float(sum(profile.expected_volume(h) for h in hours))
    problems = {}
    for name, reference in profile.numeric.items():
        subject = counts.subjects.get(name)
        if subject is None or subject.rows == 0:
            continue
        # The monitor's own rules (it used fixed cut-offs of its own: a stuck share of 0.95 whatever the
        # hour's size, which the monitor no longer calls stuck on the handbook's data).
        broken = feature_problems(
            name, reference, subject, counts.invalid_range.get(name, 0), counts.beyond_reference.get(name, 0)
        )
        if broken:
            problems[name] = {"null_rate": subject.nulls / subject.rows, "reference_null_rate": reference.null_rate,
                              **broken}  # fmt: skip
    reasons = sorted(counts.dead_letter_reasons.items(), key=lambda kv: -kv[1])
    return compact(
        {"window": _window_info(counts.start, counts.end), "hours": len(hours), "rows_scored": counts.rows,
         "expected_rows": expected, "volume_ratio": counts.rows / expected if expected else None,
         "dead_letters": counts.scalars.get("dead_letters", 0.0), "dead_letter_reasons": dict(reasons[:10]),
         "fallback_rows": counts.scalars.get("fallback_rows", 0.0),
         "invalid_scores": counts.scalars.get("invalid_scores", 0.0),
         "model_load_failures": counts.scalars.get("model_load_failures", 0.0),
         "feature_problems": problems, "findings": findings}
    )


@tool(kind="read", risk="none")
def performance_report(ctx: ToolContext, window: str) -> dict[str, Any]:
    """Model performance on the labelled transactions of a window (labels arrive days later): recall, precision, AUC, AP against the reference; and the champion's recall estimated from calibrated scores on every row, labelled or not.

    Args:
        window: "last_7d" or "START/END" in ISO time; labels exist only for transactions old enough.
    """
    start, end = parse_window(window, ctx.clock())
    frame = ctx.store.query(
        "SELECT p.model_version, p.score, p.decision, l.is_fraud FROM predictions p "
        "LEFT JOIN labels l USING (transaction_id) WHERE p.timestamp >= ? AND p.timestamp < ?",
        [start, end],
    )
    labelled = frame.dropna(subset=["is_fraud"])
    by_version = []
    for version, group in labelled.groupby(labelled["model_version"].fillna(-1)):
        fraud = group["is_fraud"].astype(int).to_numpy()
        flagged = (group["decision"] != "approve").to_numpy()
        frauds = int(fraud.sum())
        both = 0 < frauds < len(fraud)
        by_version.append({
            "model_version": None if version == -1 else int(version), "labelled": len(group), "frauds": frauds,
            "recall_at_review": (flagged & (fraud == 1)).sum() / frauds if frauds else None,
            "precision_at_review": (flagged & (fraud == 1)).sum() / max(int(flagged.sum()), 1),
            "auc": auc_roc(fraud, group["score"]) if both else None,
            "average_precision": average_precision(fraud, group["score"]) if both else None,
        })
    state = ctx.serving.current()
    reference: dict[str, float] = {}
    estimated = None
    if state.champion_version is not None:
        profile = _monitor(ctx).profile(state.champion_version)
        reference = dict(profile.performance) if profile is not None else {}
        if profile is not None:  # on all rows, labelled or not
            estimated = window_estimate(ctx.store, profile, state.champion_version, start, end)
    return compact(
        {"window": _window_info(start, end), "predictions": len(frame), "labelled": len(labelled),
         "unlabelled": len(frame) - len(labelled), "by_model_version": by_version,
         "champion_reference": reference, "champion_estimated_before_labels": estimated,
         "findings": _findings(ctx, start, end, ("performance_decay",))}
    )


@tool(kind="read", risk="none")
def score_distribution(ctx: ToolContext, window: str) -> dict[str, Any]:
    """Scores and decisions in a window: quantiles, alert and decline rates by model version, and score drift against the reference.

    Args:
        window: "last_24h", "last_7d" or "START/END" in ISO time.
    """
    start, end = parse_window(window, ctx.clock())
    frame = ctx.store.query(
        "SELECT model_version, used_fallback, count(*) AS rows, avg(score) AS mean, "
        "quantile_cont(score, [0.5, 0.9, 0.99]) AS p50_p90_p99, avg((decision <> 'approve')::INT) AS alert_rate, "
        "avg((decision = 'decline')::INT) AS decline_rate FROM predictions "
        "WHERE timestamp >= ? AND timestamp < ? GROUP BY ALL ORDER BY model_version NULLS FIRST, used_fallback",
        [start, end],
    )
    state = ctx.serving.current()
    result: dict[str, Any] = {
        "window": _window_info(start, end), "by_model_version": frame.to_dict("records"),
        "serving": {"threshold": state.threshold, "review_threshold": state.review_threshold, "fallback": state.fallback},
        "findings": _findings(ctx, start, end, ("prediction_drift",)),
    }
    found = _monitored(ctx, start, end)
    if found is not None:
        profile, counts, _ = found
        built = _pair(profile, SCORE_SUBJECT, counts)
        if built is not None:
            pair, stats = built
            result["reference"] = {"model_version": profile.model_version, "alert_rate": profile.alert_rate,
                                   "decline_rate": profile.decline_rate, "threshold": profile.threshold,
                                   "review_threshold": profile.review_threshold}
            result["score_drift"] = {stat: evaluate(stat, pair) for stat in stats}
            result["score_drift"]["top_bins"] = _top_bins(pair, profile.score.edges)
    return compact(result)


@tool(kind="read", risk="none")
def latency_report(ctx: ToolContext, window: str) -> dict[str, Any]:
    """Scoring latency in a window: p50/p95/p99 by model version, the worst hours, and the reference p99.

    Args:
        window: "last_24h", "last_7d" or "START/END" in ISO time.
    """
    start, end = parse_window(window, ctx.clock())
    frame = ctx.store.query(
        "SELECT model_version, used_fallback, count(*) AS rows, "
        "quantile_cont(latency_ms, [0.5, 0.95, 0.99]) AS p50_p95_p99_ms, max(latency_ms) AS max_ms "
        "FROM predictions WHERE timestamp >= ? AND timestamp < ? GROUP BY ALL ORDER BY model_version NULLS FIRST",
        [start, end],
    )
    hours = ctx.store.query(
        "SELECT window_start, model_version, stats FROM monitor_windows WHERE cadence = 'hour' "
        "AND window_start >= ? AND window_end <= ? ORDER BY window_start",
        [pd.Timestamp(start).floor("h").to_pydatetime(), end],
    )
    hourly = []
    for row in hours.itertuples():
        scalars = json.loads(row.stats)["scalars"]
        hourly.append({"hour": row.window_start, "model_version": row.model_version,
                       "p50_ms": scalars.get("latency_p50_ms"), "p99_ms": scalars.get("latency_p99_ms")})
    worst = sorted(hourly, key=lambda h: -(h["p99_ms"] if h["p99_ms"] is not None and math.isfinite(h["p99_ms"]) else -1))
    state = ctx.serving.current()
    profile = _monitor(ctx).profile(state.champion_version)
    return compact(
        {"window": _window_info(start, end), "by_model_version": frame.to_dict("records"),
         "hours": len(hourly), "worst_hours": worst[:5], "last_hours": hourly[-6:],
         "reference_p99_ms": profile.latency_ms_p99 if profile is not None else None,
         "findings": _findings(ctx, start, end, ("latency",))}
    )


# -- models and serving ---------------------------------------------------------------------------


def _aliases_of(ctx: ToolContext) -> dict[int, list[str]]:
    named: dict[int, list[str]] = {}
    for alias, version in ctx.registry.aliases().items():
        if version is not None:
            named.setdefault(version, []).append(alias)
    return named


def _model(ctx: ToolContext, version: int) -> dict[str, Any]:
    try:
        model = ctx.registry.get(version)
    except ScorerError as error:
        raise ToolRetry(str(error)) from error
    meta = model.metadata
    profile = meta.reference_profile or {}
    importance = sorted((profile.get("importance") or {}).items(), key=lambda kv: -kv[1])
    return {
        "version": model.version, "created_at": model.created_at, "aliases": _aliases_of(ctx).get(version, []),
        "training_window": meta.training_window.model_dump(), "data_fingerprint": meta.data_fingerprint,
        "params": meta.params, "metrics": meta.metrics, "features": meta.feature_columns,
        "best_iteration": meta.best_iteration, "label_delay_days": meta.label_delay_days,
        "suggested_threshold": meta.suggested_threshold, "suggested_review_threshold": meta.suggested_review_threshold,
        "has_reference_profile": meta.reference_profile is not None, "top_importance": dict(importance[:8]),
        "sha256": model.sha256[:16], "notes": meta.notes,
    }


@tool(kind="read", risk="none")
def list_models(ctx: ToolContext) -> dict[str, Any]:
    """List registered model versions, newest first, with aliases, training window and metrics."""
    aliases = _aliases_of(ctx)
    models = [
        {"version": m.version, "created_at": m.created_at, "aliases": aliases.get(m.version, []),
         "training_window": m.metadata.training_window.model_dump(), "metrics": m.metadata.metrics,
         "has_reference_profile": m.metadata.reference_profile is not None}
        for m in reversed(ctx.registry.list())
    ]
    return compact({"models": models, "aliases": ctx.registry.aliases()})


@tool(kind="read", risk="none")
def get_model(ctx: ToolContext, version: int) -> dict[str, Any]:
    """Show one model version: params, metrics, features, training window, aliases and whether its artifact verifies.

    Args:
        version: The model version number, e.g. 2.
    """
    data = _model(ctx, version)
    check = ctx.registry.verify(version)
    data["integrity"] = {"ok": check.ok, "reason": check.reason}
    return compact(data)


@tool(kind="read", risk="none")
def diff_models(ctx: ToolContext, a: int, b: int) -> dict[str, Any]:
    """What differs between two model versions: params, metrics (with b minus a), features, training window, aliases.

    Args:
        a: The first version (usually the older one).
        b: The second version.
    """
    left, right = _model(ctx, a), _model(ctx, b)
    params = {k: {"a": left["params"].get(k), "b": right["params"].get(k)}
              for k in sorted(set(left["params"]) | set(right["params"])) if left["params"].get(k) != right["params"].get(k)}
    metrics = {}
    for key in sorted(set(left["metrics"]) | set(right["metrics"])):
        va, vb = left["metrics"].get(key), right["metrics"].get(key)
        metrics[key] = {"a": va, "b": vb, "b_minus_a": vb - va if va is not None and vb is not None else None}
    same = {k for k in ("training_window", "data_fingerprint", "label_delay_days", "best_iteration",
                        "suggested_threshold", "suggested_review_threshold", "aliases", "created_at")
            if left[k] == right[k]}
    other = {k: {"a": left[k], "b": right[k]} for k in ("training_window", "data_fingerprint", "label_delay_days",
             "best_iteration", "suggested_threshold", "suggested_review_threshold", "aliases", "created_at") if k not in same}
    return compact(
        {"a": a, "b": b, "params": params, "metrics": metrics,
         "features_only_in_a": [f for f in left["features"] if f not in right["features"]],
         "features_only_in_b": [f for f in right["features"] if f not in left["features"]],
         "feature_order_differs": [f for f in left["features"] if f in right["features"]]
         != [f for f in right["features"] if f in left["features"]],
         "other_differences": other, "same": sorted(same)}
    )


def _state(state: ServingState) -> dict[str, Any]:
    return state.model_dump()


@tool(kind="read", risk="none")
def serving_state(ctx: ToolContext) -> dict[str, Any]:
    """Show what serves now: champion version, fallback, thresholds, quarantined features, and the registry's aliases."""
    return compact({**_state(ctx.serving.current()), "aliases": ctx.registry.aliases()})


@tool(kind="read", risk="none")
def serving_history(ctx: ToolContext) -> dict[str, Any]:
    """The last serving-state changes, newest first: who changed what, when and why."""
    states = ctx.serving.history(limit=MAX_LIST + 1)
    changes = []
    for newer, older in zip(states, [*states[1:], None], strict=True):
        before = _state(older) if older is not None else {}
        after = _state(newer)
        changed = {k: {"from": before.get(k), "to": v} for k, v in after.items()
                   if k not in ("version", "changed_at", "changed_by", "reason") and before.get(k) != v}
        changes.append({"version": newer.version, "changed_at": newer.changed_at, "changed_by": newer.changed_by,
                        "reason": newer.reason, "changed": changed if older is not None else "first state"})
    return compact({"changes": changes[:MAX_LIST], "more": len(states) > MAX_LIST})


# -- runbooks -------------------------------------------------------------------------------------


def _library(ctx: ToolContext) -> tuple[RunbookLibrary, list[str]]:
    """The runbooks of ``ctx.runbooks_dir`` (default: the shipped ones), and the files that do not parse.

    Files are read one by one so that one broken user runbook does not hide the others from the agent.
    """
    folder = Path(ctx.runbooks_dir) if ctx.runbooks_dir is not None else default_runbooks_dir()
    runbooks, broken = [], []
    for path in runbook_files([folder]) if folder.is_dir() else []:
        try:
            runbooks.append(read_runbook(path))
        except RunbookError:
            broken.append(path.name)
    return RunbookLibrary(runbooks), broken


@tool(kind="read", risk="none")
def get_runbook(ctx: ToolContext, runbook_id: str) -> dict[str, Any]:
    """Show a runbook: its front matter (triggers, allowed actions and approvals, verification, paging) and its body.

    Args:
        runbook_id: The runbook's id, e.g. "feature_pipeline_break".
    """
    library, _ = _library(ctx)
    try:
        runbook = library.get(runbook_id)
    except KeyError as error:
        raise ToolRetry(str(error.args[0])) from error
    return {"id": runbook.id, "front_matter": runbook.front_matter(), "body": runbook.body}


@tool(kind="read", risk="none")
def search_runbooks(ctx: ToolContext, text: str) -> dict[str, Any]:
    """Find runbooks whose id, title, triggers or body match the words of a text, best first.

    Args:
        text: Words to look for, e.g. an incident kind and a feature: "data_quality terminal_risk_7d".
    """
    library, broken = _library(ctx)
    hits = library.search(text, limit=5)
    result: dict[str, Any] = {
        "runbooks": [
            {"id": h.runbook.id, "title": h.runbook.title, "root_cause": h.runbook.root_cause,
             "kinds": h.runbook.triggers.kinds, "score": h.score, "snippet": h.snippet}
            for h in hits
        ],
        "searched": len(library),
    }
    if broken:
        result["unreadable_files"] = broken  # `selfheal runbooks lint` says why
    return compact(result)
