"""A person's changes to the serving state: the fallback rules, feature quarantine, decision thresholds.

`selfheal serving ...` calls these on the workspace file, and the service's admin routes call the same
functions while it owns the file, so a change is made, checked and recorded one way whichever door it
came through. Each change goes through the agent's own action tool (`tools.actions.serving`) with a
context whose actor is ``person:<name>`` and whose approval is ``human``: so it writes one serving-state
version (who, why) and one audit row, and a quarantine imputes exactly as the agent's does (the
champion's reference surrogates, then its reference mean).

Three outcomes:

- **changed**: the new state, with the audit row's id;
- **nothing to change** (the fallback already off, the feature not quarantined, the same thresholds):
  said in words, nothing written, no audit row; not an error;
- **refused**: `InvalidChange` for input that can never work (a threshold outside [0, 1], review above
  decline, a name that is not a feature of the champion): nothing is written; `ChangeRefused` for what the
  action tool refused (e.g. the champion's artifact fails its check): the refusal is in the audit log.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from scorer.errors import ModelRegistryError
from scorer.serving import ServingState
from selfheal.service import views
from tools.audit import bounded_text
from tools.context import ToolContext, ToolLimits

if TYPE_CHECKING:
    from selfheal.app import Platform

__all__ = [
    "PERSON_NAME",
    "ChangeRefused",
    "InvalidChange",
    "ServingChange",
    "check_thresholds",
    "person_actor",
    "quarantine",
    "release",
    "set_fallback",
    "set_thresholds",
]

# The names the audit log accepts for a person: the same alphabet as the API's X-Selfheal-Actor header.
PERSON_NAME: Final = r"^[A-Za-z0-9_.@-]{1,64}$"
_PERSON_NAME: Final = re.compile(PERSON_NAME)
# A person may set any threshold in [0, 1]; the agent's tighter bounds (`ToolLimits`) are for autonomy.
_PERSON_LIMITS: Final = ToolLimits(threshold_min=0.0, threshold_max=1.0)


class InvalidChange(ValueError):
    """The change can never be made as asked (bad input); nothing was written or audited."""


class ChangeRefused(Exception):
    """The action tool refused the change (a precondition); the refusal is in the audit log."""


@dataclass(frozen=True)
class ServingChange:
    """What a change did: ``changed`` False means nothing needed changing (and nothing was written)."""

    changed: bool
    message: str
    state: ServingState
    audit_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "changed": self.changed,
            "message": self.message,
            "audit_id": self.audit_id,
            "state": views.serving_state(self.state),
        }


def person_actor(by: str) -> str:
    """``person:<by>``, the audit log's name for a person acting by hand.

    Raises:
        InvalidChange: A name outside 1-64 letters, digits or ``_.@-``.
    """
    if not _PERSON_NAME.fullmatch(by):  # not match: "$" also matches before a final newline
        raise InvalidChange(
            f"--by {by!r}: a name of 1-64 letters, digits or _.@- (it is recorded in the audit log)"
        )
    return f"person:{by}"


def check_thresholds(decline: float, review: float) -> None:
    """Refuse thresholds a scorer cannot use: each in [0, 1], review at or below decline.

    Raises:
        InvalidChange: Saying which bound is broken.
    """
    for name, value in (("decline", decline), ("review", review)):
        if not (math.isfinite(value) and 0.0 <= value <= 1.0):
            raise InvalidChange(f"the {name} threshold must be between 0 and 1, got {value}")
    if review > decline:
        raise InvalidChange(
            f"the review threshold ({review:g}) must be at or below the decline threshold ({decline:g}): "
            "scores between them are reviewed, scores at or above decline are declined"
        )


def set_fallback(platform: Platform, on: bool, *, by: str, reason: str) -> ServingChange:
    """Turn the deterministic fallback rules on (they score instead of the champion) or off."""
    ctx = _person_context(platform, by, reason)
    before = platform.serving.current()
    if before.fallback == on:
        said = f"on (since serving state v{before.version}: {before.fallback_reason})" if on else "off"
        return ServingChange(False, f"the fallback rules are already {said}; nothing changed", before)
    if on:
        result = _call("enable_fallback_rules", ctx, {"reason": ctx.reason})
        message = f"the fallback rules now score instead of model v{before.champion_version}"
    else:
        result = _call("disable_fallback_rules", ctx, {})
        message = f"model v{before.champion_version} scores again; the fallback rules are off"
    return _changed(platform, message, result)


def quarantine(
    platform: Platform, feature: str, *, by: str, reason: str, value: float | None = None
) -> ServingChange:
    """Stop using `feature`'s live values: impute it as the agent's `quarantine_feature` does.

    Args:
        platform: The workspace.
        feature: One of the champion's features.
        by: Who (a name; recorded as ``person:<by>``).
        reason: Why.
        value: A constant to impute instead of the champion's reference (surrogates, then mean).
    """
    ctx = _person_context(platform, by, reason)
    before = platform.serving.current()
    if feature in before.quarantined_features:
        imputed = before.quarantined_features[feature]
        return ServingChange(
            False, f"{feature} is already quarantined (imputed as {imputed:g}); nothing changed", before
        )
    _require_champion_feature(platform, before, feature)
    if value is not None and not math.isfinite(value):
        raise InvalidChange(f"the value to impute for {feature} must be a finite number, got {value}")
    args: dict[str, Any] = {"feature": feature} if value is None else {"feature": feature, "value": value}
    result = _call("quarantine_feature", ctx, args)
    return _changed(platform, f"{feature} is quarantined: imputed from {result['imputed_from']}", result)


def release(platform: Platform, feature: str, *, by: str, reason: str) -> ServingChange:
    """Use a quarantined feature's live values again (after its pipeline is fixed)."""
    ctx = _person_context(platform, by, reason)
    before = platform.serving.current()
    if feature not in before.quarantined_features:
        _require_champion_feature(platform, before, feature)  # a typo is an error, not "nothing to do"
        held = ", ".join(sorted(before.quarantined_features)) or "none"
        return ServingChange(
            False, f"{feature} is not quarantined (quarantined: {held}); nothing changed", before
        )
    result = _call("release_feature", ctx, {"feature": feature})
    return _changed(platform, f"{feature} is released: its live values are used again", result)


def set_thresholds(
    platform: Platform, *, decline: float, review: float, by: str, reason: str
) -> ServingChange:
    """Set both decision thresholds: decline at or above `decline`, review from `review` up to it."""
    check_thresholds(decline, review)
    ctx = _person_context(platform, by, reason)
    before = platform.serving.current()
    if (before.threshold, before.review_threshold) == (decline, review):
        return ServingChange(
            False,
            f"the thresholds are already decline >= {decline:g}, review >= {review:g}; nothing changed",
            before,
        )
    result = _call("set_threshold", ctx, {"value": decline, "review_threshold": review})
    message = (
        f"decline >= {decline:g}, review >= {review:g} "
        f"(were {result['previous_threshold']:g} and {result['previous_review_threshold']:g})"
    )
    return _changed(platform, message, result)


# -- internals ----------------------------------------------------------------------------------------


def _person_context(platform: Platform, by: str, reason: str) -> ToolContext:
    """The action tools' context for a person: their name as actor, their reason, a human's approval."""
    actor = person_actor(by)
    why = bounded_text(reason)
    if not why:
        raise InvalidChange("the reason must say why: it is recorded with the change")
    return platform.tool_context(actor=actor, reason=why, limits=_PERSON_LIMITS)


def _require_champion_feature(platform: Platform, state: ServingState, feature: str) -> None:
    """Refuse a name that is not one of the champion's features (checked before anything is audited)."""
    if state.champion_version is None:
        raise InvalidChange(
            "there is no champion model, so no feature to quarantine or release (train one first)"
        )
    try:
        features = platform.registry.get(state.champion_version).metadata.feature_columns
    except ModelRegistryError as error:
        raise InvalidChange(str(error)) from error
    if feature not in features:
        raise InvalidChange(
            f"{feature!r} is not a feature of the champion model v{state.champion_version}; "
            f"its features: {', '.join(features)}"
        )


def _call(name: str, ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    from tools import ToolRefused, ToolRetry, call_tool  # the tool registry loads every action module

    try:
        return call_tool(name, ctx, args).data  # type: ignore[no-any-return]
    except ToolRefused as error:
        raise ChangeRefused(str(error)) from error
    except ToolRetry as error:  # arguments the tool's schema refused: our input, not a precondition
        raise InvalidChange(str(error)) from error


def _changed(platform: Platform, message: str, result: dict[str, Any]) -> ServingChange:
    state = platform.serving.get(int(result["serving_state_version"]))
    return ServingChange(True, message, state, audit_id=str(result["audit_id"]))
