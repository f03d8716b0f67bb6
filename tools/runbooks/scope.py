"""The names a runbook expression reads, built from the live platform for one incident.

``evidence`` is the incident's evidence bundle as the monitor stored it; ``incident`` the incident's
own fields; ``serving`` the serving state plus how its threshold last changed; ``model`` the champion
with its neighbours in the registry; ``labels`` what matured labels say about the day of traffic around the
incident's first breach (`agent.label_evidence`; not matured, and no numbers, where nobody computed it);
``estimated`` the alert policy's recall on the day before the first breach estimated from calibrated
scores, before any label (`monitor.estimated`; all None where it cannot be made). The field sets below
are what the linter accepts, and a test checks that `build_scope` produces exactly them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from monitor.incidents import Incident
from scorer.errors import ScorerError
from scorer.registry import ModelRegistry
from scorer.serving import ServingState, ServingStateStore

# previous_review_threshold travels with previous_threshold: a rollout that lowered both must be
# undone for both, or the review band keeps flagging what the restored decline threshold lets through.
SERVING_EXTRAS = frozenset(
    {"previous_threshold", "previous_review_threshold", "hours_since_threshold_change"}
)
MODEL_FIELDS = frozenset(
    {
        "version",  # the champion, or None
        "previous_version",  # what a plain rollback returns to
        "challenger_version",
        "last_verified_version",  # newest version other than the champion whose artifact verifies
        "verified",  # whether the champion's artifact verifies
        "hours_since_promotion",  # champion promoted this many hours before the incident's first breach
        "created_at",
        "metrics",
        "feature_columns",
        "importance",  # feature -> gain share (0..1) from the reference profile
        "surrogates",  # feature -> sibling features that estimate it when quarantined: [{source, r2}], best first
        "suggested_threshold",
    }
)
LABEL_FIELDS = frozenset(
    {
        "matured",  # the cohort's labels are all in (now >= cohort_end + the label delay)
        "matures_at",  # when they will be (ISO time)
        "cohort_start",  # the day of traffic around the first breach: [first breach - 12 h, + 24 h)
        "cohort_end",
        "frauds",  # labelled frauds in the cohort (None: not matured, or too few to judge)
        "recall",  # share of them the alert policy flagged
        "reference_recall",
        "drop",  # reference_recall - recall
        "z",  # drop in units of one cohort's noise (monitor.checks.cohort_recall)
    }
)
ESTIMATE_FIELDS = frozenset(
    {
        "window_start",  # the 24 hours of traffic before the incident's first breach
        "window_end",
        "rows",  # rows the champion scored in it (None: no estimate: no calibration, too few rows, fallback)
        "recall",  # recall of the alert policy estimated from calibrated scores (monitor.estimated)
        "precision",
        "expected_frauds",
        "reference_recall",  # the same estimate on the model's reference window
        "drop",  # reference_recall - recall
        "z",  # drop in units of the estimate's day-to-day spread on the reference
        "noise_sd",
    }
)
NAMESPACE_FIELDS: dict[str, frozenset[str]] = {
    "incident": frozenset(Incident.model_fields) | {"features"},
    "serving": frozenset(ServingState.model_fields) | SERVING_EXTRAS,
    "model": MODEL_FIELDS,
    "labels": LABEL_FIELDS,
    "estimated": ESTIMATE_FIELDS,
}


def build_scope(
    incident: Incident,
    serving: ServingStateStore,
    registry: ModelRegistry,
    labels: dict[str, Any] | None = None,
    estimated: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``{"evidence", "incident", "serving", "model", "labels", "estimated", "results"}`` for evaluating a
    runbook on an incident; ``labels`` as `agent.label_evidence` computes it, or "not matured" when not
    given; ``estimated`` as `agent.label_evidence.estimate_evidence` computes it, or all None."""
    at = incident.first_breach_at
    return {
        "evidence": dict(incident.evidence),
        "incident": {**incident.model_dump(mode="json"), "features": incident.features},
        "serving": _serving(serving, at),
        "model": _model(registry, at),
        "labels": dict(labels) if labels is not None else {**dict.fromkeys(LABEL_FIELDS), "matured": False},
        "estimated": {**dict.fromkeys(ESTIMATE_FIELDS), **(estimated or {})},
        "results": {},
    }


def _hours(later: datetime, earlier: datetime) -> float:
    return round((later - earlier).total_seconds() / 3600, 2)


def _serving(serving: ServingStateStore, at: datetime) -> dict[str, Any]:
    """The serving state now, and the last threshold change *before* the breach at ``at``.

    Changes after the breach are left out: when an incident reopens after the agent restored the threshold,
    "the previous threshold" must still be the one before the bad rollout, not the bad value itself.
    """
    change = serving.last_change(("threshold",), at)
    return {
        **serving.current().model_dump(mode="json"),
        "previous_threshold": change[1].threshold if change else None,
        "previous_review_threshold": change[1].review_threshold if change else None,
        "hours_since_threshold_change": _hours(at, change[0].changed_at) if change else None,
    }


def _model(registry: ModelRegistry, at: datetime) -> dict[str, Any]:
    aliases = registry.aliases()
    champion = aliases["champion"]
    scope: dict[str, Any] = dict.fromkeys(MODEL_FIELDS)
    scope.update(
        version=champion,
        previous_version=aliases["previous"],
        challenger_version=aliases["challenger"],
        last_verified_version=registry.last_verified_version(exclude={champion} if champion else frozenset()),
        verified=False,
        metrics={},
        feature_columns=[],
        importance={},
        surrogates={},
    )
    if champion is None:
        return scope
    scope["verified"] = registry.verify(champion).ok
    # Only a promotion before the breach can explain it (a workspace trained on the wall clock and fed
    # older data, or a rollback after the fact, records later ones).
    promoted = [
        e.recorded_at
        for e in registry.history()
        if e.alias == "champion" and e.version == champion and e.recorded_at <= at
    ]
    scope["hours_since_promotion"] = _hours(at, max(promoted)) if promoted else None
    try:
        metadata = registry.get(champion).metadata
    except ScorerError:
        return scope
    scope.update(
        created_at=metadata.created_at.isoformat(),
        metrics=dict(metadata.metrics),
        feature_columns=list(metadata.feature_columns),
        importance=dict((metadata.reference_profile or {}).get("importance", {})),
        surrogates={
            feature: [{"source": s["source"], "r2": s["r2"]} for s in fitted]
            for feature, fitted in (metadata.reference_profile or {}).get("surrogates", {}).items()
        },
        suggested_threshold=metadata.suggested_threshold,
    )
    return scope
