"""Serving faults: the running platform breaks around the model (feature jobs, hosts, config, disks).

They act through a `FaultContext` at ``start`` and stop at ``end``. Hooks (feature and latency faults) act
only on rows whose timestamp is in the window, so a fault that starts mid-hour is exact. One-shot changes
(a threshold rollout, a corrupted file) are reverted at ``end`` only if they are still in effect, so a
platform that already fixed them is never overridden.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, ClassVar

import numpy as np
import pandas as pd
from pydantic import Field, PrivateAttr, field_validator

from evals.faults.base import (
    Fault,
    FaultContext,
    FaultError,
    FaultFamily,
    IncidentKind,
    RootCause,
    affected_rows,
    register_fault,
    require_known,
)
from scorer.score import LOGGED_FEATURES

# Who ships config and models in these stories: an automated pipeline, not a person and not the agent.
DEPLOY_ACTOR = "deploy-bot"
FeatureHook = Callable[[pd.DataFrame, pd.DataFrame], pd.DataFrame]
LatencyHook = Callable[[pd.DataFrame], np.ndarray]
Rate = Annotated[float, Field(gt=0.0, le=1.0)]


class ServingFault(Fault):
    """A fault that changes the running platform rather than the data."""

    family: ClassVar[FaultFamily] = "serving"


class _FeatureHookFault(ServingFault):
    """Shared install/uninstall of a scorer feature hook that breaks some features on some rows."""

    features: list[str] = Field(
        min_length=1, description="model features (DESIGN 5b) the broken job produces"
    )
    rate: Rate = Field(1.0, description="fraction of rows in the window whose features are broken")
    _hook: FeatureHook | None = PrivateAttr(default=None)

    @field_validator("features")
    @classmethod
    def _known_features(cls, value: list[str]) -> list[str]:
        require_known(value, LOGGED_FEATURES, "feature(s)")
        return value

    def _break(self, features: pd.DataFrame, rows: np.ndarray) -> None:
        """Overwrite ``self.features`` on ``rows`` (a boolean mask) of ``features``, in place."""
        raise NotImplementedError

    def install(self, ctx: FaultContext) -> None:
        rng = ctx.rng

        def hook(transactions: pd.DataFrame, features: pd.DataFrame) -> pd.DataFrame:
            rows = affected_rows(self, transactions, rng, self.rate)
            if not rows.any():
                return features
            broken = features.copy()
            self._break(broken, rows)
            return broken

        self._hook = hook
        ctx.platform.scorer.hooks.features.append(hook)

    def uninstall(self, ctx: FaultContext) -> None:
        hooks = ctx.platform.scorer.hooks.features
        if self._hook in hooks:
            hooks.remove(self._hook)
        self._hook = None


@register_fault
class FeatureNulls(_FeatureHookFault):
    """An upstream feature job ships nulls for some features (a failed join, an empty source table).

    Affected rows get NaN for the named features before the model sees them; the predictions table logs
    the NaNs, which is how the monitor sees them. XGBoost scores NaN as "missing", so scores go quietly
    wrong rather than failing.

    Parameters:
        features: Model features that arrive null (e.g. ``terminal_risk_7d``).
        rate: Fraction of rows in the window whose features are null.

    Root cause ``feature_pipeline_break``; expected incident: ``data_quality``.
    """

    kind: ClassVar[str] = "feature_nulls"
    root_cause: ClassVar[RootCause] = "feature_pipeline_break"
    expected_kinds: ClassVar[tuple[IncidentKind, ...]] = ("data_quality",)
    example_params: ClassVar[dict[str, Any]] = {
        "features": ["terminal_risk_7d", "terminal_risk_30d"],
        "rate": 0.6,
    }

    def _break(self, features: pd.DataFrame, rows: np.ndarray) -> None:
        features.loc[rows, self.features] = np.nan


@register_fault
class FeatureConstant(_FeatureHookFault):
    """An upstream feature job is stuck and ships one constant value (a default, a stale cache).

    Affected rows get ``value`` for the named features; the predictions table logs it.

    Parameters:
        features: Model features stuck at the constant.
        value: The constant they take (e.g. 0.0, a job's default).
        rate: Fraction of rows in the window affected (1.0: all of them).

    Root cause ``feature_pipeline_break``; expected incident: ``data_quality``.
    """

    kind: ClassVar[str] = "feature_constant"
    root_cause: ClassVar[RootCause] = "feature_pipeline_break"
    expected_kinds: ClassVar[tuple[IncidentKind, ...]] = ("data_quality",)
    example_params: ClassVar[dict[str, Any]] = {
        "features": ["customer_avg_amount_7d", "customer_avg_amount_30d"],
        "value": 0.0,
    }

    value: float = Field(description="the constant the features take")

    def _break(self, features: pd.DataFrame, rows: np.ndarray) -> None:
        features.loc[rows, self.features] = self.value


@register_fault
class Latency(ServingFault):
    """The scoring hosts slow down (noisy neighbour, GC pauses, a degraded disk), whatever model serves.

    Adds ``extra_ms`` to the logged latency of a share of the rows in the window.

    Parameters:
        extra_ms: Milliseconds added per affected row.
        share: Fraction of rows in the window affected.

    Root cause ``slow_model_deploy`` (the latency family; there is no separate host root cause in
    DESIGN 5); expected incident: ``latency``.
    """

    kind: ClassVar[str] = "latency"
    root_cause: ClassVar[RootCause] = "slow_model_deploy"
    expected_kinds: ClassVar[tuple[IncidentKind, ...]] = ("latency",)
    example_params: ClassVar[dict[str, Any]] = {"extra_ms": 40.0, "share": 0.5}

    extra_ms: Annotated[float, Field(gt=0.0, le=60_000.0)] = Field(
        description="milliseconds added per affected row"
    )
    share: Rate = Field(1.0, description="fraction of rows in the window affected")
    _hook: LatencyHook | None = PrivateAttr(default=None)

    def install(self, ctx: FaultContext) -> None:
        rng = ctx.rng

        def hook(transactions: pd.DataFrame) -> np.ndarray:
            return np.where(affected_rows(self, transactions, rng, self.share), self.extra_ms, 0.0)

        self._hook = hook
        ctx.platform.scorer.hooks.extra_latency_ms.append(hook)

    def uninstall(self, ctx: FaultContext) -> None:
        hooks = ctx.platform.scorer.hooks.extra_latency_ms
        if self._hook in hooks:
            hooks.remove(self._hook)
        self._hook = None


@register_fault
class ThresholdMisconfig(ServingFault):
    """A config rollout sets a wrong decision threshold (a typo, a value meant for another model).

    At ``start``, ``deploy-bot`` writes ``threshold`` into the serving state (lowering the review
    threshold with it when needed, since review <= decline must hold). At ``end`` the old thresholds are
    written back, unless someone changed the threshold since.

    Parameters:
        threshold: The decline threshold rolled out (0.05 declines far too much; 0.99 almost nothing).

    Root cause ``threshold_misconfig``; expected incident: ``prediction_drift`` (the alert rate).
    """

    kind: ClassVar[str] = "threshold_misconfig"
    root_cause: ClassVar[RootCause] = "threshold_misconfig"
    expected_kinds: ClassVar[tuple[IncidentKind, ...]] = ("prediction_drift",)
    example_params: ClassVar[dict[str, Any]] = {"threshold": 0.05}

    threshold: Annotated[float, Field(ge=0.0, le=1.0)] = Field(description="the decline threshold rolled out")
    _previous: tuple[float, float] | None = PrivateAttr(default=None)

    def install(self, ctx: FaultContext) -> None:
        serving = ctx.platform.serving
        state = serving.current()
        self._previous = (state.threshold, state.review_threshold)
        serving.update(
            actor=DEPLOY_ACTOR,
            reason="config rollout: decision threshold",
            threshold=self.threshold,
            review_threshold=min(state.review_threshold, self.threshold),
        )

    def uninstall(self, ctx: FaultContext) -> None:
        serving = ctx.platform.serving
        if self._previous is None or serving.current().threshold != self.threshold:
            return  # already put right by someone else: never undo their fix
        threshold, review = self._previous
        serving.update(
            actor=DEPLOY_ACTOR, reason="config rollout reverted", threshold=threshold, review_threshold=review
        )


@register_fault
class CorruptArtifact(ServingFault):
    """The champion's model file is damaged on disk (a bad copy, a failing volume, a truncated sync).

    At ``start`` bytes in the middle of the champion's artifact are flipped and the scorer is told to
    reload; the sha256 check then refuses the file, the scorer serves the fallback rules and writes a
    ``model_load_failed`` audit row. At ``end`` the original bytes are restored (the file is recovered
    from backup) if the file still holds the damaged ones.

    Parameters: none.

    Root cause ``corrupted_artifact``; expected incident: ``model_integrity``.
    """

    kind: ClassVar[str] = "corrupt_artifact"
    root_cause: ClassVar[RootCause] = "corrupted_artifact"
    expected_kinds: ClassVar[tuple[IncidentKind, ...]] = ("model_integrity",)
    example_params: ClassVar[dict[str, Any]] = {}

    _original: bytes | None = PrivateAttr(default=None)
    _damaged: bytes | None = PrivateAttr(default=None)
    _version: int | None = PrivateAttr(default=None)

    def install(self, ctx: FaultContext) -> None:
        registry = ctx.platform.registry
        version = registry.alias("champion")
        if version is None:
            raise FaultError("corrupt_artifact needs a champion model to corrupt")
        path = registry.get(version).artifact_path
        original = path.read_bytes()
        damaged = bytearray(original)
        middle = len(damaged) // 4 + ctx.rng.integers(0, max(len(damaged) // 2, 1), size=16)
        for position in np.unique(middle):
            damaged[int(position)] ^= 0xFF
        path.write_bytes(bytes(damaged))
        self._original, self._damaged, self._version = original, bytes(damaged), version
        ctx.platform.scorer.invalidate_model()

    def uninstall(self, ctx: FaultContext) -> None:
        if self._version is None or self._original is None:
            return
        path = ctx.platform.registry.get(self._version).artifact_path
        if path.exists() and path.read_bytes() == self._damaged:
            path.write_bytes(self._original)
            ctx.platform.scorer.invalidate_model()
