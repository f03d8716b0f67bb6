"""The monitor's checks: data quality first, then drift, performance and operations.

Each check is a small function ``(CheckContext) -> list[Finding]`` registered with its cadence (hourly
checks see one hour's counts, daily checks the sum of the day's hours) in `CHECKS`. Every finding says
whether it breached and carries the numbers behind the verdict; thresholds combine a practical floor with
the no-drift behaviour for the window's sample size, so small windows do not cry wolf and huge ones do
not flag trivia.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from monitor.counts import SCORE_SUBJECT, SubjectCounts, WindowCounts
from monitor.findings import Cadence, Finding
from monitor.profile import CategoricalProfile, NumericProfile, ReferenceProfile
from monitor.stats import (
    CATEGORICAL_STATS,
    NUMERIC_STATS,
    BinnedPair,
    evaluate,
    top_shifted_bins,
    wilson_interval,
)
from monitor.thresholds import NoDriftBootstrap, benjamini_hochberg, binomial_upper_tail, decide_feature
from scorer.serving import ServingState, ServingStateStore
from store import Store

# Data-quality floors: how much worse than the reference a window must be, whatever the sample size.
NULL_RATE_FLOOR = 0.02
DEAD_LETTER_FLOOR = 0.01
STUCK_SHARE = 0.99
# ... and only when the reference puts so many of the hour's rows in that bin this rarely. A share alone
# ignores the hour's size and the bin's own reference share: the handbook's terminal_risk_30d is 0 for
# 89 % of rows, and a 100-row night hour reaches 99 % zeros by chance every few weeks (two false pages in
# a clean month of `selfheal run`). 1e-6 over ~15 features x 720 hours is about one chance a century.
STUCK_P_VALUE = 1e-6
BEYOND_REFERENCE_SHARE = 0.2
MIN_ROWS_QUALITY = 20
# Volume: a drop below this share of the seasonal expectation, and this many standard deviations.
VOLUME_DROP_SHARE = 0.6
VOLUME_Z = 4.0
# Alert rate: a relative change this large, outside a Wilson interval at this z (two-sided ~1e-4).
ALERT_RATE_FLOOR = 0.5
# The decision-policy check looks at threshold changes this recent.
POLICY_CHANGE_HOURS = 48
FALLBACK_SHARE = 0.5
ALERT_Z = 3.89
# Latency: p99 this many times the trailing baseline and at least this many ms above it. Per-row latency
# is a batch's wall time over its rows, so a busy machine preempting a 40-row night batch for 100 ms adds
# 2.5 ms a row: below 10 ms that is scheduler noise (it raised false incidents in the 30-day no-fault test
# under load), not a scorer that got slower for its callers.
LATENCY_RATIO = 3.0
LATENCY_MIN_EXTRA_MS = 10.0
# Performance on matured labels: recall of the alert policy this much below the reference, and this many
# noise units (the larger of the binomial spread and the reference's day-to-day spread of recall).
RECALL_DROP_FLOOR = 0.15
PERFORMANCE_Z = 4.0
MIN_FRAUDS = 8
DRIFT_FDR = 0.01
SCHEMA_REASONS = ("missing field", "must be a number", "must be a string", "must be text")


@dataclass
class CheckContext:
    """What a check may look at."""

    profile: ReferenceProfile
    window: WindowCounts
    cadence: Cadence
    now: datetime
    store: Store
    history: list[WindowCounts] = field(default_factory=list)  # earlier hourly windows, oldest first
    label_delay_days: int = 7
    nulls: dict[str, NoDriftBootstrap] = field(default_factory=dict)  # per subject, kept by the monitor
    naturals: dict[str, dict[str, float]] = field(default_factory=dict)  # per subject and day type

    def natural_for(self, subject: str, compute: Callable[[], dict[str, float]]) -> dict[str, float]:
        """The subject's natural daily excursion for this window's day type (computed once, then cached)."""
        key = _daytype_key(self, subject)
        if key not in self.naturals:
            self.naturals[key] = compute()
        return self.naturals[key]

    def null_for(self, subject: str, pair: BinnedPair) -> NoDriftBootstrap:
        """The subject's no-drift bootstrap (simulated once per reference, then cached by the caller)."""
        if subject not in self.nulls:
            self.nulls[subject] = NoDriftBootstrap(
                pair.ref, edges=pair.edges, lower=pair.lower, upper=pair.upper, scale=pair.scale
            )
        return self.nulls[subject]


Check = Callable[[CheckContext], list[Finding]]


@dataclass(frozen=True)
class RegisteredCheck:
    name: str
    cadence: Cadence
    run: Check


CHECKS: dict[str, RegisteredCheck] = {}


def check(name: str, cadence: Cadence) -> Callable[[Check], Check]:
    """Register a check function (the same door extensions use)."""

    def register(function: Check) -> Check:
        if not function.__doc__:
            raise ValueError(f"check {name} needs a docstring")
        CHECKS[name] = RegisteredCheck(name, cadence, function)
        return function

    return register


# -- data quality (hourly) ----------------------------------------------------------------------------


@check("schema", "hour")
def schema_check(ctx: CheckContext) -> list[Finding]:
    """Rows dead-lettered for a missing, renamed or retyped field."""
    window = ctx.window
    rows_in = window.rows + window.scalars.get("dead_letters", 0.0)
    schema = {k: n for k, n in window.dead_letter_reasons.items() if any(r in k for r in SCHEMA_REASONS)}
    bad = sum(schema.values())
    share = bad / rows_in if rows_in else 0.0
    fields = sorted({k.split(":")[0] for k in schema})
    breached = bad >= 5 and share > DEAD_LETTER_FLOOR
    return [
        Finding(
            check="schema", kind="data_quality", subject="schema", breached=breached, metric="schema_dead_letter_share",
            value=share, threshold=DEAD_LETTER_FLOOR, severity="high", features=fields,
            evidence={"rows_in": rows_in, "dead_lettered": bad, "reasons": schema},
        )
    ]


@check("feature_quality", "hour")
def feature_quality_check(ctx: CheckContext) -> list[Finding]:
    """Null rate, impossible values and stuck values per feature, against the reference."""
    broken: dict[str, dict[str, Any]] = {}
    worst = 0.0
    for name, reference in ctx.profile.numeric.items():
        counts = ctx.window.subjects.get(name)
        if counts is None or counts.rows < MIN_ROWS_QUALITY:
            continue
        problems = feature_problems(
            name, reference, counts, ctx.window.invalid_range.get(name, 0), ctx.window.beyond_reference.get(name, 0)
        )
        if problems:
            broken[name] = problems
            worst = max(worst, float(problems.get("null_rate_increase", 0.0)), float(problems.get("stuck_share", 0.0)))
    features = sorted(broken, key=lambda f: -ctx.profile.importance.get(f, 0.0))
    scores_bad = ctx.window.scalars.get("invalid_scores", 0.0)
    if scores_bad > 0:
        broken["score"] = {"invalid_scores": scores_bad}
    return [
        Finding(
            check="feature_quality", kind="data_quality", subject="features", breached=bool(broken),
            metric="broken_features", value=float(len(broken)), threshold=0.5,
            severity="high" if any(ctx.profile.importance.get(f, 0) > 0.05 for f in features) else "medium",
            features=features, evidence={"problems": broken, "worst": worst, "rows": ctx.window.rows},
        )
    ]


def feature_problems(
    name: str, reference: NumericProfile, counts: SubjectCounts, invalid: int, beyond: int
) -> dict[str, Any]:
    """What is wrong with one feature in a window (empty: nothing): the monitor's rules, which the agent's
    `quality_report` tool applies too, so the two never disagree on what is broken."""
    problems: dict[str, Any] = {}
    n = counts.rows
    null_rate = counts.nulls / n
    ref_rate = reference.null_rate
    # A binomial z-test on the null count, gated by a practical floor.
    spread = math.sqrt(max(ref_rate * (1 - ref_rate), 1e-4) / n)
    if null_rate - ref_rate > NULL_RATE_FLOOR and (null_rate - ref_rate) / spread > 3.0:
        problems.update(null_rate=null_rate, reference_null_rate=ref_rate, null_rate_increase=null_rate - ref_rate)
    if invalid >= max(3, 0.01 * n):
        problems["invalid_values"] = invalid
    non_null_rows = n - counts.nulls
    # Outside everything the reference ever showed, for a large share of rows: a contract break (a unit
    # change, a mis-scaled field), not a drift -- drift moves mass within and around the known range.
    if non_null_rows >= MIN_ROWS_QUALITY and beyond / non_null_rows > BEYOND_REFERENCE_SHARE:
        problems.update(beyond_reference_share=beyond / non_null_rows, reference_range=[reference.lower, reference.upper])
    non_null = int(counts.counts.sum())
    if non_null >= 50:
        top = int(np.argmax(counts.counts))
        share = float(counts.counts[top] / non_null)
        if share >= STUCK_SHARE and reference.top_bin_share < 0.9:
            reference_counts = np.asarray(reference.counts, dtype=np.float64)
            bin_share = float(reference_counts[top] / max(reference_counts.sum(), 1.0))
            p_value = binomial_upper_tail(int(counts.counts[top]), non_null, bin_share)
            if p_value < STUCK_P_VALUE:
                problems.update(
                    stuck_share=share, reference_bin_share=bin_share, stuck_p_value=p_value,
                    reference_top_bin_share=reference.top_bin_share,
                )
    return problems


@check("volume", "hour")
def volume_check(ctx: CheckContext) -> list[Finding]:
    """Transactions arriving against the hour-of-week baseline (overdispersed Poisson)."""
    window = ctx.window
    observed = window.rows + window.scalars.get("dead_letters", 0.0)
    expected = ctx.profile.expected_volume(pd.Timestamp(window.start))
    sd = math.sqrt(expected + (ctx.profile.hourly_volume_cv * expected) ** 2) if expected > 0 else 1.0
    z = (expected - observed) / sd  # larger = fewer transactions than expected
    drop = 1.0 - observed / expected if expected > 0 else 0.0
    breached = z > VOLUME_Z and observed < VOLUME_DROP_SHARE * expected
    return [
        Finding(
            check="volume", kind="volume", subject="transactions", breached=breached, metric="volume_shortfall_z",
            value=z, threshold=VOLUME_Z, severity="high",
            evidence={"observed": observed, "expected": expected, "drop_share": drop, "sd": sd},
        )
    ]


# -- predictions and serving (hourly) -----------------------------------------------------------------


def served_by_fallback(window: WindowCounts) -> bool:
    """Most rows were scored by the fallback rules (switched on deliberately, or because the model could not
    load): their scores and alert rate are the rules', not comparable with the model's reference. Why the
    fallback serves is the business of the incident that switched it on (or of model_integrity)."""
    return window.rows > 0 and window.scalars.get("fallback_rows", 0.0) > FALLBACK_SHARE * window.rows


@check("alert_rate", "hour")
def alert_rate_check(ctx: CheckContext) -> list[Finding]:
    """Share of transactions flagged (review or decline) against the reference, with a Wilson interval."""
    if served_by_fallback(ctx.window):
        return []
    n = ctx.window.rows
    alerts = int(ctx.window.scalars.get("alerts", 0))
    expected = ctx.profile.alert_rate
    if n < 30:
        return []
    low, high = wilson_interval(alerts, n, ALERT_Z)
    rate = alerts / n
    relative = abs(rate - expected) / max(expected, 1e-6)
    # A rise is judged on distinct cards or terminals among the flagged rows: a burst of one compromised
    # card's transactions, all rightly flagged, is fraud, not a drift of the alert policy (one such hour
    # raised incidents in no-fault worlds). A wrong threshold spreads its extra alerts over many sources.
    sources = ctx.window.scalars.get("alert_sources", float("nan"))
    evidence: dict[str, Any] = {}
    if rate > expected and not math.isnan(sources):
        low, high = wilson_interval(min(alerts, int(sources)), n, ALERT_Z)
        # Say what the interval counts: it can lie below the alert rate itself, which reads as an error
        # unless the evidence says it is the rate of distinct alerting sources.
        evidence = {"alert_sources": int(sources), "wilson_of": "distinct alerting cards or terminals"}
    outside = expected < low or expected > high
    breached = outside and relative > ALERT_RATE_FLOOR and abs(alerts - expected * n) >= 5
    return [
        Finding(
            check="alert_rate", kind="prediction_drift", subject="predictions", breached=breached,
            metric="alert_rate_relative_change", value=relative, threshold=ALERT_RATE_FLOOR, severity="high",
            evidence={"alert_rate": rate, "reference_alert_rate": expected, "wilson_low": low, "wilson_high": high,
                      **evidence, "rows": n, "alerts": alerts, "declines": ctx.window.scalars.get("declines", 0.0)},
        )
    ]


@check("decision_policy", "hour")
def decision_policy_check(ctx: CheckContext) -> list[Finding]:
    """A recent threshold change that moves the alert rate the policy implies on the reference scores.

    The live alert rate needs traffic to show a wrong threshold: in a world whose scores are bimodal, a
    decline threshold of 0.02 only lifts one hour's alert rate from 1.9 % to 2.9 %, within noise, and the
    alert-rate check took seven hours to see it. The reference scores say at once what a threshold will
    flag: this check compares the share of them at or above the review threshold now in force with the
    share at the profiled threshold, for a threshold change made in the last `POLICY_CHANGE_HOURS`. It
    has no sampling noise, so it needs no interval, only the same practical floor as the alert rate.

    It runs while the fallback rules serve too: it reads the model's reference scores, not live ones, and
    a wrong threshold set then would hit the model's traffic the moment the model serves again.
    """
    change = _latest_threshold_change(ctx.store, ctx.now)
    if change is None:
        return []
    implied = ctx.profile.implied_alert_rate(change.review_threshold)
    expected = ctx.profile.implied_alert_rate(ctx.profile.review_threshold)
    if implied is None or expected is None:
        return []
    relative = abs(implied - expected) / max(expected, 1e-6)
    return [
        Finding(
            check="decision_policy", kind="prediction_drift", subject="predictions",
            breached=relative > ALERT_RATE_FLOOR, metric="implied_alert_rate_relative_change", value=relative,
            threshold=ALERT_RATE_FLOOR, severity="high",
            evidence={"alert_rate": implied, "reference_alert_rate": expected, "implied": True,
                      "threshold": change.threshold, "review_threshold": change.review_threshold,
                      "reference_review_threshold": ctx.profile.review_threshold,
                      "changed_at": str(change.changed_at), "changed_by": change.changed_by,
                      "serving_state_version": change.version},
        )
    ]


def _latest_threshold_change(store: Store, now: datetime) -> ServingState | None:
    """The serving state that last changed a threshold, if that was within `POLICY_CHANGE_HOURS` of `now`."""
    change = ServingStateStore(store).last_change(("threshold", "review_threshold"), now)
    if change is None or change[0].changed_at < now - timedelta(hours=POLICY_CHANGE_HOURS):
        return None
    return change[0]


@check("model_integrity", "hour")
def model_integrity_check(ctx: CheckContext) -> list[Finding]:
    """The champion's artifact failed verification: the scorer fell back to rules on its own."""
    failures = ctx.window.scalars.get("model_load_failures", 0.0)
    fallback = ctx.window.scalars.get("fallback_rows", 0.0)
    return [
        Finding(
            check="model_integrity", kind="model_integrity", subject="artifact", breached=failures > 0,
            metric="model_load_failures", value=failures, threshold=0.5, severity="critical",
            evidence={"fallback_rows": fallback, "rows": ctx.window.rows},
        )
    ]


@check("latency", "hour")
def latency_check(ctx: CheckContext) -> list[Finding]:
    """Scoring latency p99 against the same hours of the previous days.

    Latency is recorded per row as the batch's time shared over its rows, so it follows traffic through
    the day (small night batches carry their fixed cost over few rows): the baseline is the median p99
    of the same hour-of-day (and its neighbours) on earlier days, not of the last few hours.
    """
    p99 = ctx.window.scalars.get("latency_p99_ms", float("nan"))
    earlier = [v for v in _same_hours(ctx, "latency_p99_ms") if not math.isnan(v)]
    if math.isnan(p99) or len(earlier) < 3:
        return []
    baseline = float(np.median(earlier))
    ratio = p99 / max(baseline, 1e-6)
    breached = ratio > LATENCY_RATIO and p99 - baseline > LATENCY_MIN_EXTRA_MS
    return [
        Finding(
            check="latency", kind="latency", subject="scoring", breached=breached, metric="latency_p99_ratio",
            value=ratio, threshold=LATENCY_RATIO, severity="high",
            evidence={"latency_p99_ms": p99, "latency_p50_ms": ctx.window.scalars.get("latency_p50_ms"),
                      "baseline_p99_ms": baseline, "baseline_hours": len(earlier)},
        )
    ]


@check("model_latency", "hour")
def model_latency_check(ctx: CheckContext) -> list[Finding]:
    """A newly serving model that predicts much slower than the one it replaced (a slow model deploy).

    Measured, not inferred from traffic: per-row predict time in live batches is a few microseconds with
    a fixed cost per call, so on a shared machine its noise swamps even a 20x slower model at small
    volumes. The monitor instead times both models on the same logged rows (best of several runs) when
    the champion changes (`Monitor` puts the ratio in the window's scalars); the live per-row model time
    is reported alongside.
    """
    ratio = ctx.window.scalars.get("model_cost_ratio", float("nan"))
    if math.isnan(ratio):
        return []
    return [
        Finding(
            check="model_latency", kind="latency", subject="model", breached=ratio > LATENCY_RATIO,
            metric="model_cost_ratio", value=ratio, threshold=LATENCY_RATIO, severity="high",
            evidence={"model_ms_per_row": ctx.window.scalars.get("model_ms_per_row"),
                      "probe_ms_per_row": ctx.window.scalars.get("probe_ms_per_row"),
                      "previous_probe_ms_per_row": ctx.window.scalars.get("previous_probe_ms_per_row"),
                      "model_version": ctx.window.model_version},
        )
    ]


def _same_hours(ctx: CheckContext, scalar: str) -> list[float]:
    """A scalar from earlier windows at the same hour of day, or one hour either side."""
    hour = pd.Timestamp(ctx.window.start).hour
    values = []
    for window in ctx.history:
        other = pd.Timestamp(window.start).hour
        if min(abs(other - hour), 24 - abs(other - hour)) <= 1:
            values.append(window.scalars.get(scalar, float("nan")))
    return values


@check("dead_letters", "hour")
def dead_letter_check(ctx: CheckContext) -> list[Finding]:
    """Rows dead-lettered for reasons other than the schema (bad values) -- an upstream producing junk."""
    window = ctx.window
    rows_in = window.rows + window.scalars.get("dead_letters", 0.0)
    other = {k: n for k, n in window.dead_letter_reasons.items() if not any(r in k for r in SCHEMA_REASONS)}
    bad = sum(other.values())
    share = bad / rows_in if rows_in else 0.0
    floor = 0.05
    return [
        Finding(
            check="dead_letters", kind="error_rate", subject="dead_letters", breached=bad >= 10 and share > floor,
            metric="dead_letter_share", value=share, threshold=floor, severity="medium",
            evidence={"rows_in": rows_in, "dead_lettered": bad, "reasons": other},
        )
    ]


@check("label_freshness", "hour")
def label_freshness_check(ctx: CheckContext) -> list[Finding]:
    """No labels for a day, although labels were flowing before or transactions are due their labels."""
    recent = [*ctx.history[-23:], ctx.window]
    if len(recent) < 24:
        return []
    received = sum(w.scalars.get("labels_received", 0.0) for w in recent)
    flowing_before = sum(w.scalars.get("labels_received", 0.0) for w in ctx.history[:-23])
    matured_start = pd.Timestamp(ctx.window.start) - pd.Timedelta(days=ctx.label_delay_days + 1)
    matured_end = pd.Timestamp(ctx.window.end) - pd.Timedelta(days=ctx.label_delay_days)
    due = float(
        ctx.store.scalar(
            "SELECT count(*) FROM predictions WHERE timestamp >= ? AND timestamp < ?",
            [matured_start.to_pydatetime(), matured_end.to_pydatetime()],
        )
        or 0
    )
    breached = received == 0 and (flowing_before > 0 or due >= 20)
    return [
        Finding(
            check="label_freshness", kind="label_freshness", subject="labels", breached=breached,
            metric="hours_without_labels", value=24.0 if received == 0 else 0.0, threshold=23.5, severity="medium",
            evidence={"labels_received_24h": received, "labels_received_before": flowing_before,
                      "transactions_due_labels": due},
        )
    ]


# -- drift (daily) ------------------------------------------------------------------------------------


def numeric_pair(reference: NumericProfile, counts: SubjectCounts, weekend: bool | None = None) -> BinnedPair:
    """A numeric subject's reference counts (of the day type, if given) and a window's, with the bins' geometry."""
    return BinnedPair(
        ref=np.asarray(reference.reference_counts(weekend), dtype=np.float64),
        cur=counts.counts.astype(np.float64),
        edges=np.asarray(reference.edges),
        lower=reference.lower,
        upper=reference.upper,
        scale=reference.scale,
    )


def _is_weekend_day(ctx: CheckContext) -> bool:
    return bool(pd.Timestamp(ctx.window.start).day_of_week >= 5)


def _daytype_key(ctx: CheckContext, subject: str) -> str:
    """Bootstrap cache key: weekday and weekend references differ in size and shape."""
    return f"{subject}@{'weekend' if _is_weekend_day(ctx) else 'weekday'}"


def categorical_pair(reference: CategoricalProfile, counts: SubjectCounts) -> BinnedPair:
    """A categorical field's reference and window counts over its categories and OTHER (nulls left out)."""
    # Nulls are a data-quality matter: compare the non-null categories (and OTHER).
    return BinnedPair(ref=np.asarray(reference.counts[:-1], dtype=np.float64), cur=counts.counts[:-1].astype(np.float64))


# A normal day strays from the rest of the reference by up to its largest observed excursion. With five
# to seven reference days that maximum sits near their 85th percentile, and live days drift further as the
# reference ages (slow 30-day features follow the fraud landscape), so allow twice as much.
NATURAL_DAY_FACTOR = 2.0


def natural_daily_excursion(reference: NumericProfile, pair: BinnedPair, weekend: bool | None) -> dict[str, float]:
    """Per statistic, how far the reference's own days stray from the rest of it (leave-one-day-out).

    Rows of one day are not independent draws for features over 30-day windows (a card's count moves
    slowly), so the row-level no-drift bootstrap underestimates day-to-day variation; this measures it.
    """
    days = [np.asarray(c, dtype=np.float64) for c in reference.daily_counts]
    if len(days) < 3:
        return {}
    same_type = [i for i, w in enumerate(reference.daily_weekend) if weekend is None or w == weekend]
    chosen = same_type if len(same_type) >= 3 else list(range(len(days)))
    total = np.sum([days[i] for i in chosen], axis=0)
    worst: dict[str, float] = {}
    for i in chosen:
        rest = total - days[i]
        if rest.sum() <= 0 or days[i].sum() <= 0:
            continue
        day_pair = BinnedPair(ref=rest, cur=days[i], edges=pair.edges, lower=pair.lower, upper=pair.upper, scale=pair.scale)
        for name in NUMERIC_STATS:
            worst[name] = max(worst.get(name, 0.0), evaluate(name, day_pair))
    return worst


def _test_subject(
    ctx: CheckContext, name: str, pair: BinnedPair, stats: dict[str, Any], natural: dict[str, float] | None = None
) -> dict[str, Any]:
    n_ref, n_cur = int(pair.ref.sum()), int(pair.cur.sum())
    results: dict[str, Any] = {"n_ref": n_ref, "n_cur": n_cur, "stats": {}}
    if n_cur == 0 or n_ref == 0:
        results["drifted"], results["p_value"], results["effect"] = False, 1.0, 0.0
        return results
    # One decision per feature over its statistics (Bonferroni inside, so the feature false-alarms <= 1 %).
    combined = decide_feature(pair, list(stats), null=ctx.null_for(name, pair))
    effect, drifted = 0.0, False
    for decision in combined.decisions:
        day_level = NATURAL_DAY_FACTOR * (natural or {}).get(decision.statistic, 0.0)
        threshold = max(decision.threshold, day_level)
        stat_drifted = decision.drifted and decision.value > threshold
        results["stats"][decision.statistic] = {
            "value": decision.value, "threshold": threshold, "floor": decision.floor,
            "no_drift_p99": decision.no_drift_quantile, "natural_daily": day_level, "p_value": decision.p_value,
            "drifted": stat_drifted,
        }
        drifted |= stat_drifted
        effect = max(effect, decision.value / max(threshold, 1e-12))
    results["drifted"] = drifted
    results["p_value"] = combined.p_value
    results["effect"] = effect
    results["top_bins"] = top_shifted_bins(pair)
    return results


@check("data_drift", "day")
def data_drift_check(ctx: CheckContext) -> list[Finding]:
    """Per-feature drift (PSI, JS, binned KS, Wasserstein/IQR; PSI, JS, L-inf for categoricals), grouped."""
    tested: dict[str, dict[str, Any]] = {}
    for name, reference in ctx.profile.numeric.items():
        counts = ctx.window.subjects.get(name)
        if counts is not None:
            weekend = _is_weekend_day(ctx)
            pair = numeric_pair(reference, counts, weekend)
            natural = ctx.natural_for(
                name, lambda r=reference, p=pair, w=weekend: natural_daily_excursion(r, p, w)  # type: ignore[misc]
            )
            tested[name] = _test_subject(ctx, _daytype_key(ctx, name), pair, dict(NUMERIC_STATS), natural)
    for name, categorical in ctx.profile.categorical.items():
        counts = ctx.window.subjects.get(name)
        if counts is not None:
            tested[name] = _test_subject(ctx, name, categorical_pair(categorical, counts), dict(CATEGORICAL_STATS))
    if not tested:
        return []
    names = list(tested)
    # Benjamini-Hochberg across features: many features tested at once must not inflate false alarms.
    significant = benjamini_hochberg(np.array([tested[n]["p_value"] for n in names]), DRIFT_FDR)
    drifted = [n for n, ok in zip(names, significant, strict=True) if ok and tested[n]["drifted"]]
    importance = ctx.profile.importance
    ranked = sorted(drifted, key=lambda n: -(importance.get(n, 0.01) * tested[n]["effect"]))
    worst = max((tested[n]["effect"] for n in drifted), default=max((t["effect"] for t in tested.values()), default=0.0))
    return [
        Finding(
            check="data_drift", kind="data_drift", subject="features", breached=bool(drifted),
            metric="max_effect_over_threshold", value=float(worst), threshold=1.0,
            severity="high" if any(importance.get(n, 0) > 0.1 for n in drifted) else "medium",
            features=ranked,
            evidence={"drifted": {n: tested[n] for n in ranked}, "tested": len(tested),
                      "ranking": [{"feature": n, "importance": importance.get(n, 0.0), "effect": tested[n]["effect"]} for n in ranked]},
        )
    ]


@check("score_drift", "day")
def score_drift_check(ctx: CheckContext) -> list[Finding]:
    """Drift of the model's score distribution against the reference."""
    if served_by_fallback(ctx.window):
        return []
    counts = ctx.window.subjects.get(SCORE_SUBJECT)
    if counts is None or counts.rows == 0:
        return []
    weekend = _is_weekend_day(ctx)
    pair = numeric_pair(ctx.profile.score, counts, weekend)
    natural = ctx.natural_for(SCORE_SUBJECT, lambda: natural_daily_excursion(ctx.profile.score, pair, weekend))
    result = _test_subject(ctx, _daytype_key(ctx, SCORE_SUBJECT), pair, dict(NUMERIC_STATS), natural)
    return [
        Finding(
            check="score_drift", kind="prediction_drift", subject="predictions", breached=bool(result["drifted"]),
            metric="max_effect_over_threshold", value=float(result["effect"]), threshold=1.0, severity="medium",
            evidence=result,
        )
    ]


# -- performance (daily, matured labels) --------------------------------------------------------------


def cohort_recall(store: Store, profile: ReferenceProfile, start: datetime, end: datetime) -> dict[str, Any] | None:
    """Recall and precision of the alert policy on the transactions of [start, end) with their labels, against
    the reference's; None without a reference recall or with fewer than `MIN_FRAUDS` labelled frauds.

    ``z`` is the recall drop in units of the noise one cohort's recall has: the binomial spread, or the
    reference's observed day-to-day spread when larger (fraud comes in campaigns).
    """
    frame = store.query(
        "SELECT p.score, p.decision, l.is_fraud FROM predictions p JOIN labels l USING (transaction_id) "
        "WHERE p.timestamp >= ? AND p.timestamp < ?",
        [pd.Timestamp(start).to_pydatetime(), pd.Timestamp(end).to_pydatetime()],
    )
    reference_recall = profile.performance.get("recall_at_review")
    frauds = int(frame["is_fraud"].sum()) if len(frame) else 0
    if reference_recall is None or frauds < MIN_FRAUDS:
        return None
    flagged = frame["decision"] != "approve"
    caught = int((flagged & (frame["is_fraud"] == 1)).sum())
    recall = caught / frauds
    drop = reference_recall - recall
    binomial_sd = math.sqrt(max(reference_recall * (1 - reference_recall), 1e-4) / frauds)
    daily_sd = profile.performance.get("recall_daily_sd", float("nan"))
    noise = max(binomial_sd, 0.0 if math.isnan(daily_sd) else daily_sd)
    return {
        "cohort_start": str(pd.Timestamp(start)), "cohort_end": str(pd.Timestamp(end)), "labelled": len(frame),
        "frauds": frauds, "caught": caught, "recall": recall,
        "precision": caught / max(int(flagged.sum()), 1), "reference_recall": reference_recall,
        "reference_precision": profile.performance.get("precision_at_review"), "drop": drop, "z": drop / noise,
        "noise_sd": noise,
    }  # fmt: skip


@check("performance", "day")
def performance_check(ctx: CheckContext) -> list[Finding]:
    """Recall and precision of the alert policy on the cohort whose labels just matured."""
    cohort_end = pd.Timestamp(ctx.window.end) - pd.Timedelta(days=ctx.label_delay_days)
    cohort = cohort_recall(ctx.store, ctx.profile, cohort_end - pd.Timedelta(days=1), cohort_end)
    if cohort is None:
        return []
    drop = cohort.pop("drop")
    breached = drop > RECALL_DROP_FLOOR and cohort["z"] > PERFORMANCE_Z
    return [
        Finding(
            check="performance", kind="performance_decay", subject="recall", breached=breached,
            metric="recall_drop", value=drop, threshold=RECALL_DROP_FLOOR, severity="high",
            evidence=cohort,
        )
    ]
