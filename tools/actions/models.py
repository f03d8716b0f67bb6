"""Champion changes: `rollback_model` and `promote_model`, each the other's inverse.

Both go through `ModelRegistry.rollback` / `promote`, which move the aliases and the serving state in one
transaction and re-verify the artifact's hash. Rollbacks are rate limited per champion: two rollbacks away
from the same model in a day is already a story a human should hear; a third is refused.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Final

from scorer.errors import ModelRegistryError
from tools.actions.common import change_reason, require_verified
from tools.audit import ActionLog, Effect, Inverse, run_action
from tools.context import ToolContext
from tools.errors import ToolRefused
from tools.registry import tool

__all__ = ["promote_model", "rollback_model"]

RATE_WINDOW: Final = timedelta(days=1)
KNOWN_BAD_DAYS: Final = 7  # a version rolled back away from this recently is not a rollback target


@tool(kind="action", risk="high")
def rollback_model(ctx: ToolContext, to_version: int) -> dict[str, Any]:
    """Serve an earlier registered model version as the champion again.

    Refused when the version is not registered, is already the champion, or its artifact fails its
    integrity check; when the agent would roll back *to* a version that was itself rolled back away
    from in the last 7 days (known bad: a human decides); and after too many rollbacks away from the
    same champion within 24 hours. The result names the replaced champion; its inverse promotes that
    champion back.

    Args:
        to_version: The registered model version to serve instead of the current champion.
    """

    def apply() -> Effect:
        champion = ctx.serving.current().champion_version
        if champion == to_version:
            raise ToolRefused(f"model v{to_version} is already the champion; nothing to roll back")
        require_verified(ctx, to_version, "roll back to")
        _refuse_known_bad(ctx, to_version)
        _check_rollback_rate(ctx, champion)
        reason = change_reason(ctx, "rollback_model")
        try:
            state = ctx.registry.rollback(to_version=to_version, actor=ctx.actor, reason=reason)
        except ModelRegistryError as error:  # e.g. the artifact changed since the check above
            raise ToolRefused(f"cannot roll back to model v{to_version}: {error}") from error
        return Effect(
            result={
                "from_version": champion,
                "to_version": to_version,
                "serving_state_version": state.version,
            },
            inverse=Inverse("promote_model", {"version": champion}) if champion is not None else None,
        )

    return run_action(
        ctx,
        "rollback_model",
        {"to_version": to_version},
        apply,
        in_force=lambda _result: ctx.serving.current().champion_version == to_version,
    )


def _refuse_known_bad(ctx: ToolContext, to_version: int) -> None:
    """The agent must not put back into service (by a rollback or a promotion) a version that a rollback
    took out of service within the last week: it was taken out for a reason, and only a human may overrule."""
    if ctx.actor != "agent":
        return
    since = ctx.clock() - timedelta(days=KNOWN_BAD_DAYS)
    earlier = ActionLog(ctx.store, ctx.clock).since("rollback_model", since, from_version=to_version)
    if earlier:
        raise ToolRefused(
            f"model v{to_version} was rolled back away from at {earlier[-1].recorded_at:%Y-%m-%d %H:%M} "
            f"({earlier[-1].incident_id}); returning to it needs a human"
        )


@tool(kind="action", risk="high")
def promote_model(ctx: ToolContext, version: int) -> dict[str, Any]:
    """Make a registered model version (usually the challenger) the champion that serves.

    Refused when the version is not registered, is already the champion, or its artifact fails its
    integrity check; and, for the agent, when the version was rolled back away from in the last 7 days
    (known bad: a human decides). Thresholds in force are kept. The inverse rolls back to the replaced
    champion.

    Args:
        version: The registered model version to promote.
    """

    def apply() -> Effect:
        champion = ctx.serving.current().champion_version
        if champion == version:
            raise ToolRefused(f"model v{version} is already the champion; nothing to promote")
        require_verified(ctx, version, "promote")
        _refuse_known_bad(ctx, version)
        challenger = ctx.registry.alias("challenger")
        reason = change_reason(ctx, "promote_model")
        try:
            state = ctx.registry.promote(version, actor=ctx.actor, reason=reason)
        except ModelRegistryError as error:
            raise ToolRefused(f"cannot promote model v{version}: {error}") from error
        return Effect(
            result={
                "from_version": champion,
                "to_version": version,
                "was_challenger": challenger == version,
                "serving_state_version": state.version,
            },
            inverse=Inverse("rollback_model", {"to_version": champion}) if champion is not None else None,
        )

    return run_action(
        ctx,
        "promote_model",
        {"version": version},
        apply,
        in_force=lambda _result: ctx.serving.current().champion_version == version,
    )


def _check_rollback_rate(ctx: ToolContext, champion: int | None) -> None:
    """Refuse a rollback away from `champion` when the last 24 hours already hold the limit."""
    limit = ctx.limits.rollbacks_per_model_per_day
    now = ctx.clock()
    recent = ActionLog(ctx.store, ctx.clock).since("rollback_model", now - RATE_WINDOW, from_version=champion)
    if len(recent) >= limit:
        next_allowed = recent[-limit].recorded_at + RATE_WINDOW
        raise ToolRefused(
            f"rate limit: {len(recent)} rollbacks away from champion v{champion} in the last 24 hours "
            f"(at most {limit}); the next is allowed after {next_allowed.isoformat(sep=' ')} UTC. "
            "Repeated rollbacks mean the problem is not the model: escalate to a human"
        )
