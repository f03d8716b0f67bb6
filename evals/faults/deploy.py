"""Deploy faults: an automated pipeline registers and promotes a model that should never serve.

The models come from `evals.faults.models`. At ``end`` the deploy is reverted (a rollback by the same
bot) only if the faulty model still serves, so a platform that already rolled back is never overridden.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import Field, PrivateAttr

from evals.faults.base import FaultContext, FaultError, IncidentKind, RootCause, register_fault
from evals.faults.models import BadDeployMode, BuiltModel, poor_model, slow_model
from evals.faults.serving import DEPLOY_ACTOR, ServingFault
from scorer.registry import ModelVersion


class _DeployFault(ServingFault):
    """Registers a model built by `_build` and promotes it as ``deploy-bot``; reverts it at ``end``."""

    _deployed: int | None = PrivateAttr(default=None)
    _replaced: int | None = PrivateAttr(default=None)

    def _build(self, ctx: FaultContext, champion: ModelVersion) -> BuiltModel:
        raise NotImplementedError

    def install(self, ctx: FaultContext) -> None:
        registry = ctx.platform.registry
        version = registry.alias("champion")
        if version is None:
            raise FaultError(f"{self.kind} needs a champion model to replace")
        champion = registry.get(version)
        built = self._build(ctx, champion)
        deployed = registry.register(
            built.booster(),
            built.metadata_at(ctx.clock()),
            actor=DEPLOY_ACTOR,
            reason="nightly retrain passed the pipeline's checks",
            alias="champion",
        )
        self._deployed, self._replaced = deployed.version, version

    def uninstall(self, ctx: FaultContext) -> None:
        registry = ctx.platform.registry
        if self._deployed is None or registry.alias("champion") != self._deployed:
            return  # already rolled back (or replaced): never undo someone else's fix
        registry.rollback(
            to_version=self._replaced, actor=DEPLOY_ACTOR, reason="deploy reverted by its owners"
        )


@register_fault
class BadDeploy(_DeployFault):
    """A poor model is promoted by the deploy pipeline; nothing crashes, fraud just gets through.

    Modes (each a real training bug, trained from the history the champion saw):
        ``inverted_labels``: labels flipped in the training job; the model ranks genuine above fraud.
        ``undertrained``: one tree of depth 1 (a broken hyper-parameter file); barely better than chance
            beyond the amount rule.
        ``wrong_feature_order``: trained on columns sorted by name but registered in model order, so its
            metadata looks right while every feature lands in the wrong slot.

    Parameters:
        mode: One of the modes above.

    Root cause ``bad_model_deploy``; expected incidents: ``performance_decay``, ``prediction_drift``.
    """

    kind: ClassVar[str] = "bad_deploy"
    root_cause: ClassVar[RootCause] = "bad_model_deploy"
    expected_kinds: ClassVar[tuple[IncidentKind, ...]] = ("performance_decay", "prediction_drift")
    example_params: ClassVar[dict[str, Any]] = {"mode": "wrong_feature_order"}

    mode: BadDeployMode = Field(description="which training bug produced the model (see the class)")

    def _build(self, ctx: FaultContext, champion: ModelVersion) -> BuiltModel:
        meta = champion.metadata
        return poor_model(ctx.history, self.mode, list(meta.feature_columns), meta.label_delay_days)


@register_fault
class SlowDeploy(_DeployFault):
    """A model that scores like the champion but is far slower is promoted (early stopping switched off).

    Its ``trees`` trees are the champion's, split into scaled copies, so scores are unchanged and only
    latency tells: each prediction walks ``trees`` trees instead of the champion's few dozen.

    Parameters:
        trees: Number of trees of the slow model (at least the champion's).

    Root cause ``slow_model_deploy``; expected incident: ``latency``.
    """

    kind: ClassVar[str] = "slow_deploy"
    root_cause: ClassVar[RootCause] = "slow_model_deploy"
    expected_kinds: ClassVar[tuple[IncidentKind, ...]] = ("latency",)
    example_params: ClassVar[dict[str, Any]] = {"trees": 3000}

    trees: Annotated[int, Field(ge=100, le=50_000)] = Field(description="number of trees of the slow model")

    def _build(self, ctx: FaultContext, champion: ModelVersion) -> BuiltModel:
        verified = ctx.platform.registry.load(champion.version).booster  # never build on a damaged file
        return slow_model(bytes(verified.save_raw(raw_format="ubj")), champion.metadata, self.trees)
