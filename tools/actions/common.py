"""Helpers the action tools share: the reason a change records, and model checks that refuse clearly."""

from __future__ import annotations

from scorer.errors import UnknownModelVersionError
from tools.audit import bounded_text
from tools.context import ToolContext
from tools.errors import ToolRefused


def change_reason(ctx: ToolContext, action: str, reason: str | None = None) -> str:
    """The non-empty "why" a serving-state or registry change records (both refuse a blank one)."""
    text = bounded_text(reason if reason is not None else ctx.reason)
    where = f" for {ctx.incident_id}" if ctx.incident_id else ""
    return f"{action}{where}: {text}" if text else f"{action}{where} by {ctx.actor}"


def require_verified(ctx: ToolContext, version: int, purpose: str) -> None:
    """Refuse unless `version` is registered and its artifact matches its recorded sha256.

    Args:
        ctx: The tool context.
        version: The model version.
        purpose: What the check is for, for the message (e.g. ``"roll back to"``).
    """
    try:
        check = ctx.registry.verify(version)
    except UnknownModelVersionError as error:
        raise ToolRefused(f"cannot {purpose} model v{version}: {error}") from error
    if not check.ok:
        raise ToolRefused(
            f"cannot {purpose} model v{version}: its artifact fails the integrity check ({check.reason}); "
            "a model whose hash does not verify never serves"
        )
