"""Serving-state actions: fallback rules, decision thresholds, feature quarantine.

Each writes one new serving-state version (who, why) and its audit row in one store transaction, and
records the call that writes the old values back.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from pydantic import ValidationError

from scorer.errors import ModelRegistryError, ServingStateError
from scorer.imputation import Surrogate, usable_surrogates
from scorer.serving import ServingState
from tools.actions.common import change_reason, require_verified
from tools.audit import Effect, Inverse, bounded_text, run_action
from tools.context import ToolContext
from tools.errors import ToolRefused, ToolRetry
from tools.registry import tool

__all__ = [
    "disable_fallback_rules",
    "enable_fallback_rules",
    "quarantine_feature",
    "release_feature",
    "set_threshold",
]


@tool(kind="action", risk="medium")
def enable_fallback_rules(ctx: ToolContext, reason: str) -> dict[str, Any]:
    """Score with the fallback rules instead of the champion model (e.g. its artifact is corrupted).

    Refused when the fallback is already on. The inverse turns it off again.

    Args:
        reason: Why the model must not serve; shown wherever the fallback's state is shown.
    """
    why = bounded_text(reason)
    if not why:
        raise ToolRetry("enable_fallback_rules needs a reason: it is recorded with every decision it makes")

    def apply() -> Effect:
        before = ctx.serving.current()
        if before.fallback:
            raise ToolRefused(
                f"the fallback rules are already on (since serving state v{before.version}, "
                f"{before.changed_at.isoformat(sep=' ')}, by {before.changed_by}: {before.fallback_reason})"
            )
        state = _update(ctx, "enable_fallback_rules", why, fallback=True, fallback_reason=why)
        return Effect(
            result={"fallback": True, "fallback_reason": why, "serving_state_version": state.version},
            inverse=Inverse("disable_fallback_rules", {}),
        )

    return run_action(
        ctx,
        "enable_fallback_rules",
        {"reason": why},
        apply,
        reason=why,
        atomic=True,
        in_force=lambda _result: ctx.serving.current().fallback,
    )


@tool(kind="action", risk="medium")
def disable_fallback_rules(ctx: ToolContext) -> dict[str, Any]:
    """Score with the champion model again instead of the fallback rules.

    Refused when the fallback is off, when there is no champion, or when the champion's artifact fails
    its integrity check (roll back to a version that verifies first). The inverse turns the fallback on
    again with its old reason.
    """

    def apply() -> Effect:
        before = ctx.serving.current()
        if not before.fallback:
            raise ToolRefused("the fallback rules are already off: the champion model is serving")
        if before.champion_version is None:
            raise ToolRefused("cannot turn the fallback off: there is no champion model to serve")
        require_verified(ctx, before.champion_version, "serve the champion")
        state = _update(ctx, "disable_fallback_rules", None, fallback=False)
        return Effect(
            result={
                "fallback": False,
                "champion_version": state.champion_version,
                "serving_state_version": state.version,
            },
            inverse=Inverse(
                "enable_fallback_rules", {"reason": before.fallback_reason or "restore the fallback"}
            ),
        )

    return run_action(
        ctx,
        "disable_fallback_rules",
        {},
        apply,
        atomic=True,
        in_force=lambda _result: not ctx.serving.current().fallback,
    )


@tool(kind="action", risk="medium")
def set_threshold(ctx: ToolContext, value: float, review_threshold: float | None = None) -> dict[str, Any]:
    """Set the decision threshold: decline when the score is at or above it.

    The review threshold must stay at or below it: when omitted it is kept, or lowered in proportion
    when it would exceed the new threshold. Refused outside the allowed range or when nothing changes.
    The inverse restores both old values.

    Args:
        value: The new decline threshold (a fraud probability).
        review_threshold: The new review threshold; omit to keep it (lowered in proportion if needed).
    """
    low, high = ctx.limits.threshold_min, ctx.limits.threshold_max
    args: dict[str, Any] = {"value": value}
    if review_threshold is not None:
        args["review_threshold"] = review_threshold

    def apply() -> Effect:
        if not (math.isfinite(value) and low <= value <= high):
            raise ToolRefused(f"threshold {value} is outside the allowed range [{low}, {high}]")
        before = ctx.serving.current()
        review = _review_for(before, value, review_threshold)
        if (value, review) == (before.threshold, before.review_threshold):
            raise ToolRefused(
                f"the threshold is already {value} (review threshold {review}); nothing changes"
            )
        state = _update(ctx, "set_threshold", None, threshold=value, review_threshold=review)
        return Effect(
            result={
                "threshold": state.threshold,
                "review_threshold": state.review_threshold,
                "previous_threshold": before.threshold,
                "previous_review_threshold": before.review_threshold,
                "serving_state_version": state.version,
            },
            inverse=Inverse(
                "set_threshold", {"value": before.threshold, "review_threshold": before.review_threshold}
            ),
        )

    def in_force(result: dict[str, Any]) -> bool:
        now = ctx.serving.current()
        return (now.threshold, now.review_threshold) == (result["threshold"], result["review_threshold"])

    return run_action(ctx, "set_threshold", args, apply, in_force=in_force, atomic=True)


@tool(kind="action", risk="medium")
def quarantine_feature(ctx: ToolContext, feature: str, value: float | None = None) -> dict[str, Any]:
    """Stop using a broken feature's live values: estimate it from a healthy sibling feature instead.

    Each row gets the best of the champion's reference surrogates (e.g. the 7-day average amount for the
    30-day one) whose source is live, else the reference mean. The feature must be one of the champion's
    features and not already quarantined, and the champion's reference profile must hold its mean. The
    inverse releases it.

    Args:
        feature: The champion model's feature to quarantine, e.g. terminal_risk_7d.
        value: A constant to impute for every row instead; omit to use the reference (the usual choice).
    """
    args: dict[str, Any] = {"feature": feature}
    if value is not None:
        args["value"] = value

    def apply() -> Effect:
        before = ctx.serving.current()
        if feature in before.quarantined_features:
            raise ToolRefused(
                f"feature {feature!r} is already quarantined (imputed as {before.quarantined_features[feature]})"
            )
        reference = _reference_imputation(ctx, before.champion_version, feature, required=value is None)
        imputed = value if value is not None else reference.mean
        if imputed is None or not math.isfinite(imputed):
            raise ToolRefused(f"cannot impute {imputed} for {feature!r}: the value must be finite")
        # A constant a person chose is what they get; the reference's own imputation uses the surrogates.
        surrogates = reference.surrogates if value is None else []
        reason = change_reason(ctx, "quarantine_feature")
        try:
            state = ctx.serving.quarantine_feature(
                feature, imputed, actor=ctx.actor, reason=reason, surrogates=surrogates
            )
        except ServingStateError as error:
            raise ToolRefused(f"cannot quarantine {feature!r}: {error}") from error
        live = usable_surrogates(feature, state.quarantine_surrogates, state.quarantined_features)
        return Effect(
            result={
                "feature": feature,
                "imputed_value": imputed,
                "reference_mean": reference.mean,
                "imputed_from": _imputed_from(before.champion_version, value, live),
                "surrogates": [s.describe() for s in surrogates],
                "quarantined_features": sorted(state.quarantined_features),
                "serving_state_version": state.version,
            },
            inverse=Inverse("release_feature", {"feature": feature}),
        )

    return run_action(
        ctx,
        "quarantine_feature",
        args,
        apply,
        atomic=True,
        in_force=lambda _result: feature in ctx.serving.current().quarantined_features,
    )


def _imputed_from(champion: int | None, value: float | None, live: list[Surrogate]) -> str:
    if value is not None:
        return "given"
    if live:
        return f"{live[0].describe()} where {live[0].source} is live, else the reference mean of model v{champion}"
    return f"reference mean of model v{champion}"


@tool(kind="action", risk="low")
def release_feature(ctx: ToolContext, feature: str) -> dict[str, Any]:
    """Use a quarantined feature's live values again (after its pipeline is fixed).

    Refused when the feature is not quarantined. The inverse quarantines it again the same way: from the
    reference (surrogates, then mean) when that is how it was imputed, else with the same constant.

    Args:
        feature: The quarantined feature to release.
    """

    def apply() -> Effect:
        before = ctx.serving.current()
        if feature not in before.quarantined_features:
            quarantined = ", ".join(sorted(before.quarantined_features)) or "none"
            raise ToolRefused(f"feature {feature!r} is not quarantined (quarantined: {quarantined})")
        reason = change_reason(ctx, "release_feature")
        state = ctx.serving.release_feature(feature, actor=ctx.actor, reason=reason)
        return Effect(
            result={
                "feature": feature,
                "released_imputed_value": before.quarantined_features[feature],
                "quarantined_features": sorted(state.quarantined_features),
                "serving_state_version": state.version,
            },
            inverse=Inverse(
                "quarantine_feature",
                {"feature": feature}
                if feature in before.quarantine_surrogates
                else {"feature": feature, "value": before.quarantined_features[feature]},
            ),
        )

    return run_action(
        ctx,
        "release_feature",
        {"feature": feature},
        apply,
        atomic=True,
        in_force=lambda _result: feature not in ctx.serving.current().quarantined_features,
    )


def _update(ctx: ToolContext, action: str, reason: str | None, **changes: Any) -> ServingState:
    try:
        return ctx.serving.update(actor=ctx.actor, reason=change_reason(ctx, action, reason), **changes)
    except ServingStateError as error:
        raise ToolRefused(f"{action} refused by the serving state: {error}") from error


def _review_for(before: ServingState, value: float, requested: float | None) -> float:
    """The review threshold that goes with a new decline threshold `value`."""
    if requested is not None:
        if not (math.isfinite(requested) and 0.0 <= requested <= value):
            raise ToolRefused(f"review_threshold {requested} must be between 0 and the threshold {value}")
        return requested
    if before.review_threshold <= value:
        return before.review_threshold
    # Keep the review band's relative width: the same share of the decline threshold as before.
    return before.review_threshold * value / before.threshold if before.threshold > 0 else value


class _ReferenceImputation(NamedTuple):
    mean: float | None
    surrogates: list[Surrogate]


def _reference_imputation(ctx: ToolContext, champion: int | None, feature: str, *, required: bool) -> _ReferenceImputation:
    """The champion's reference mean of `feature` and its ranked surrogates: what a quarantine imputes.

    Refuses when `feature` is not one of the champion's features, and when the mean is `required` but the
    reference profile does not hold it. A profile without (valid) surrogates imputes the mean alone.
    """
    if champion is None:
        raise ToolRefused("cannot quarantine a feature: there is no champion model")
    try:
        metadata = ctx.registry.get(champion).metadata
    except ModelRegistryError as error:
        raise ToolRefused(f"cannot quarantine {feature!r}: {error}") from error
    if feature not in metadata.feature_columns:
        raise ToolRefused(
            f"{feature!r} is not a feature of the champion model v{champion}; "
            f"its features: {', '.join(metadata.feature_columns)}"
        )
    profile = metadata.reference_profile or {}
    mean = profile.get("numeric", {}).get(feature, {}).get("mean")
    try:
        surrogates = [Surrogate.model_validate(s) for s in profile.get("surrogates", {}).get(feature, [])]
    except ValidationError:
        surrogates = []
    if isinstance(mean, (int, float)) and math.isfinite(mean):
        return _ReferenceImputation(float(mean), surrogates)
    if required:
        raise ToolRefused(
            f"cannot quarantine {feature!r}: model v{champion}'s reference profile has no mean for it "
            "(nothing safe to impute); consider the fallback rules instead"
        )
    return _ReferenceImputation(None, surrogates)
