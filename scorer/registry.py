"""A local model registry: numbered versions, verified UBJ artifacts and aliases kept as events.

Versions are numbered 1, 2, ... in registration order and never reused. Each artifact is the booster in
XGBoost's UBJ format at ``models_dir/v{version}/model.ubj``; its sha256 is recorded at registration and
checked before every load, promotion and rollback, so a missing or altered file never serves (DESIGN 4).
The table stores the artifact path relative to ``models_dir`` so a workspace can be moved.

Three aliases name versions: ``champion`` (what serves), ``previous`` (the champion before it, the default
rollback target) and ``challenger`` (a candidate). Each alias change is a row in ``model_aliases``; an
alias's value is its latest event. Promotion and rollback move the aliases and write the new champion into
the serving state in one transaction, so the two never disagree.
"""

from __future__ import annotations

import builtins
import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, get_args

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticSerializationError

from scorer.columns import TIMESTAMP
from scorer.errors import (
    ModelIntegrityError,
    ModelRegistryError,
    NoRollbackTargetError,
    UnknownModelVersionError,
)
from scorer.serving import Clock, ServingChanges, ServingState, ServingStateStore, as_naive_utc, utc_now
from store.db import Store

if TYPE_CHECKING:  # XGBoost (and the scikit-learn and SciPy it imports, ~2 s) loads with the first booster
    import xgboost as xgb

__all__ = [
    "ALIASES",
    "AliasEvent",
    "AliasName",
    "IntegrityCheck",
    "LoadedModel",
    "ModelMetadata",
    "ModelRegistry",
    "ModelVersion",
    "TrainingWindow",
    "fingerprint_frame",
]

AliasName = Literal["champion", "previous", "challenger"]
ALIASES: Final[tuple[AliasName, ...]] = get_args(AliasName)
ARTIFACT_NAME: Final = "model.ubj"
_MODEL_COLUMNS: Final = "version, created_at, artifact_path, sha256, metadata"
_ALIAS_FIELDS: Final = ("event_id", "recorded_at", "alias", "version", "actor", "reason")
_ALIAS_COLUMNS: Final = ", ".join(_ALIAS_FIELDS)


# -- metadata ---------------------------------------------------------------------------------------


class TrainingWindow(BaseModel):
    """The half-open time window ``[start, end)`` a model was trained on."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    start: datetime
    end: datetime

    @model_validator(mode="after")
    def _ordered(self) -> TrainingWindow:
        if self.start >= self.end:
            raise ValueError(f"training window start ({self.start}) must be before its end ({self.end})")
        return self


class ModelMetadata(BaseModel):
    """What the registry knows about a model besides its artifact.

    Attributes:
        created_at: When the model was trained.
        training_window: The period its training rows come from.
        data_fingerprint: Identifies the training data (see `fingerprint_frame`).
        params: Training hyper-parameters (JSON-able).
        metrics: Evaluation metrics by name (e.g. ``auc``, ``ap``, ``cp100``).
        feature_columns: Feature order the booster expects.
        best_iteration: 0-based index of the last boosting round kept.
        label_delay_days: The label delay the features were computed with.
        suggested_threshold: Decision threshold to serve with; applied when the model becomes the first
            champion (later promotions keep the thresholds in force). Set with `suggested_review_threshold`.
        suggested_review_threshold: Review threshold to serve with, likewise.
        notes: Free text.
        reference_profile: Feature and score distributions the monitor compares live traffic with;
            filled after registration by `ModelRegistry.set_reference_profile`.
    """

    # NaN metrics (e.g. AUC on a window without fraud) must survive the JSON round trip as NaN.
    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_inf_nan="constants")

    created_at: datetime = Field(default_factory=utc_now)
    training_window: TrainingWindow
    data_fingerprint: str = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    feature_columns: list[str] = Field(min_length=1)
    best_iteration: int = Field(ge=0)
    label_delay_days: int = Field(ge=0)
    suggested_threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    suggested_review_threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    notes: str = ""
    reference_profile: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ModelMetadata:
        duplicated = sorted({c for c in self.feature_columns if self.feature_columns.count(c) > 1})
        if duplicated:
            raise ValueError(f"feature_columns repeats {duplicated}")
        suggested = (self.suggested_threshold, self.suggested_review_threshold)
        if (suggested[0] is None) != (suggested[1] is None):
            raise ValueError("suggest both thresholds or neither (they must stay ordered together)")
        if suggested[0] is not None and suggested[1] is not None and suggested[1] > suggested[0]:
            raise ValueError(
                f"suggested_review_threshold ({suggested[1]}) must be <= suggested_threshold ({suggested[0]})"
            )
        return self


def fingerprint_frame(frame: pd.DataFrame, *, time_column: str = TIMESTAMP) -> str:
    """A short identifier of a data set: 16 hex digits of a sha256 over its shape and sums.

    Hashes the row count, the sorted column names, the time range of `time_column` (when present) and
    the sum of every numeric or boolean column (12 significant digits, so reordering rows does not
    change it). Cheap on millions of rows; a change detector, not a cryptographic content hash.

    Args:
        frame: The training rows.
        time_column: The column whose min and max are hashed.
    """
    parts = [f"rows={len(frame)}", f"columns={sorted(map(str, frame.columns))}"]
    if time_column in frame.columns and len(frame):
        times = pd.to_datetime(frame[time_column])
        parts.append(f"time={times.min().isoformat()}..{times.max().isoformat()}")
    numeric = frame.select_dtypes(include=["number", "bool"])
    for name in sorted(numeric.columns, key=str):
        parts.append(f"sum[{name}]={float(numeric[name].sum()):.12g}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


# -- records ----------------------------------------------------------------------------------------


class ModelVersion(BaseModel):
    """A registered model: where its artifact is, the artifact's hash, and its metadata."""

    model_config = ConfigDict(frozen=True)

    version: int
    created_at: datetime
    artifact_path: Path
    sha256: str
    metadata: ModelMetadata


class IntegrityCheck(BaseModel):
    """The outcome of checking an artifact against its recorded hash."""

    model_config = ConfigDict(frozen=True)

    version: int
    ok: bool
    reason: str
    expected_sha256: str
    actual_sha256: str | None = None


class AliasEvent(BaseModel):
    """One alias change; `version` None means the alias was cleared."""

    model_config = ConfigDict(frozen=True)

    event_id: int
    recorded_at: datetime
    alias: AliasName
    version: int | None
    actor: str
    reason: str


@dataclass(frozen=True)
class LoadedModel:
    """A verified booster ready to serve (one thread per predict, DESIGN 4)."""

    version: int
    booster: xgb.Booster
    metadata: ModelMetadata
    sha256: str


# -- the registry -----------------------------------------------------------------------------------


class ModelRegistry:
    """Registers, verifies, loads, promotes and rolls back models.

    Args:
        store: The workspace database.
        models_dir: Folder holding ``v{version}/model.ubj`` artifacts.
        serving: The serving state that promotions and rollbacks change.
        clock: "Now" for registrations and alias events; defaults to the serving state's clock so both
            run on the same (possibly simulated) time.
    """

    def __init__(
        self,
        store: Store,
        models_dir: Path,
        serving: ServingStateStore,
        clock: Clock | None = None,
    ) -> None:
        self.store = store
        self.models_dir = Path(models_dir)
        self.serving = serving
        self.clock: Clock = clock or serving.clock

    # -- registration -----------------------------------------------------------------------------

    def register(
        self,
        booster: xgb.Booster,
        metadata: ModelMetadata,
        *,
        actor: str,
        reason: str,
        alias: AliasName | None = None,
    ) -> ModelVersion:
        """Save a booster as the next version.

        Args:
            booster: The trained model.
            metadata: Its description; `feature_columns` must match the booster's feature names.
            actor: Who registers it.
            reason: Why.
            alias: ``"challenger"`` to mark it as a candidate, ``"champion"`` to promote it at once
                (through `promote`, so the serving state follows). ``previous`` is only ever set by
                promotions and rollbacks.

        Returns:
            The registered version.

        Raises:
            ModelRegistryError: A bad alias, or feature names that contradict the metadata.
        """
        _require_text(actor=actor, reason=reason)
        if alias not in (None, "champion", "challenger"):
            raise ModelRegistryError(f"cannot register with alias {alias!r}; use 'champion' or 'challenger'")
        _check_feature_names(booster, metadata.feature_columns, what="booster to register")
        artifact = bytes(booster.save_raw(raw_format="ubj"))
        with self._transaction():
            version = int(self.store.scalar("SELECT coalesce(max(version), 0) + 1 FROM models"))
            relative = Path(f"v{version}") / ARTIFACT_NAME
            _write_atomically(self.models_dir / relative, artifact)
            self.store.execute(
                f"INSERT INTO models ({_MODEL_COLUMNS}) VALUES (?, ?, ?, ?, ?)",
                [version, self._now(), relative.as_posix(), _sha256(artifact), metadata.model_dump_json()],
            )
            if alias == "challenger":
                self._record_alias("challenger", version, actor=actor, reason=reason)
        if alias == "champion":
            self.promote(version, actor=actor, reason=reason)
        return self.get(version)

    def set_reference_profile(self, version: int, profile: dict[str, Any]) -> None:
        """Attach the monitor's reference profile to a version's metadata (replacing any earlier one).

        Raises:
            UnknownModelVersionError: No such version.
            ModelRegistryError: The profile is not JSON-serialisable.
        """
        model = self.get(version)
        updated = ModelMetadata.model_validate({**model.metadata.model_dump(), "reference_profile": profile})
        try:
            text = updated.model_dump_json()
        except PydanticSerializationError as error:
            raise ModelRegistryError(
                f"reference profile for v{version} is not JSON-serialisable: {error}"
            ) from error
        self.store.execute("UPDATE models SET metadata = ? WHERE version = ?", [text, version])

    def set_challenger(self, version: int | None, *, actor: str, reason: str) -> None:
        """Mark a version as the challenger, or clear the alias with None."""
        _require_text(actor=actor, reason=reason)
        if version is not None:
            self.get(version)
        with self._transaction():
            self._record_alias("challenger", version, actor=actor, reason=reason)

    # -- reads ------------------------------------------------------------------------------------

    def get(self, version: int) -> ModelVersion:
        """A registered version.

        Raises:
            UnknownModelVersionError: No such version (the message lists the registered ones).
        """
        rows = self.store.execute(f"SELECT {_MODEL_COLUMNS} FROM models WHERE version = ?", [version])
        if not rows:
            raise UnknownModelVersionError(f"no model v{version}; {self._describe_versions()}")
        return self._model_from_row(rows[0])

    def list(self) -> builtins.list[ModelVersion]:
        """Every registered version, oldest first."""
        rows = self.store.execute(f"SELECT {_MODEL_COLUMNS} FROM models ORDER BY version")
        return [self._model_from_row(row) for row in rows]

    def aliases(self) -> dict[str, int | None]:
        """Every alias and the version it names (None when never set or cleared)."""
        rows = self.store.execute(
            "SELECT alias, version FROM model_aliases "
            "QUALIFY row_number() OVER (PARTITION BY alias ORDER BY event_id DESC) = 1"
        )
        current: dict[str, int | None] = dict.fromkeys(ALIASES)
        current.update({alias: version for alias, version in rows})
        return current

    def alias(self, name: str) -> int | None:
        """The version an alias names, or None.

        Raises:
            ModelRegistryError: Not one of `ALIASES`.
        """
        if name not in ALIASES:
            raise ModelRegistryError(f"unknown alias {name!r}; aliases: {', '.join(ALIASES)}")
        return self.aliases()[name]

    def history(self) -> builtins.list[AliasEvent]:
        """Every alias change, newest first."""
        rows = self.store.execute(f"SELECT {_ALIAS_COLUMNS} FROM model_aliases ORDER BY event_id DESC")
        return [AliasEvent.model_validate(dict(zip(_ALIAS_FIELDS, row, strict=True))) for row in rows]

    # -- integrity and loading --------------------------------------------------------------------

    def verify(self, version: int) -> IntegrityCheck:
        """Check a version's artifact against its recorded sha256 (reads and hashes the whole file).

        Raises:
            UnknownModelVersionError: No such version.
        """
        model = self.get(version)
        try:
            self._verified_artifact(model)
        except ModelIntegrityError as error:
            return IntegrityCheck(
                version=version,
                ok=False,
                reason=error.reason,
                expected_sha256=model.sha256,
                actual_sha256=error.actual_sha256,
            )
        return IntegrityCheck(
            version=version,
            ok=True,
            reason="sha256 matches",
            expected_sha256=model.sha256,
            actual_sha256=model.sha256,
        )

    def load(self, version: int) -> LoadedModel:
        """Load a version for serving, after checking its hash; the booster predicts on one thread.

        The bytes that were hashed are the bytes loaded, so the file cannot change in between.

        Raises:
            UnknownModelVersionError: No such version.
            ModelIntegrityError: The artifact is missing, altered, or not a loadable booster.
        """
        model = self.get(version)
        artifact = self._verified_artifact(model)
        import xgboost as xgb

        booster = xgb.Booster()
        try:
            booster.load_model(bytearray(artifact))
        except xgb.core.XGBoostError as error:
            raise ModelIntegrityError(
                version, f"artifact does not load as an XGBoost model: {error}", path=model.artifact_path
            ) from error
        # nthread=1: on 2 vCPUs two threads make a 1-row predict ~20x slower (DESIGN 4).
        booster.set_param({"nthread": 1})
        _check_feature_names(booster, model.metadata.feature_columns, what=f"model v{version}")
        return LoadedModel(version=version, booster=booster, metadata=model.metadata, sha256=model.sha256)

    def last_verified_version(self, exclude: set[int] | frozenset[int] = frozenset()) -> int | None:
        """The newest version not in `exclude` whose artifact verifies, or None."""
        versions = self.store.execute("SELECT version FROM models ORDER BY version DESC")
        for (version,) in versions:
            if version not in exclude and self.verify(version).ok:
                return int(version)
        return None

    # -- champion changes -------------------------------------------------------------------------

    def promote(self, version: int, *, actor: str, reason: str) -> ServingState:
        """Make a version the champion.

        The old champion becomes ``previous``; ``challenger`` is cleared if it named this version. The
        serving state gets the new champion; when there was no champion before, it also takes the model's
        suggested thresholds (later promotions keep the thresholds in force). Promoting the champion
        again changes nothing.

        Raises:
            UnknownModelVersionError: No such version.
            ModelIntegrityError: Its artifact is missing or altered.
        """
        _require_text(actor=actor, reason=reason)
        model = self.get(version)
        self._verified_artifact(model)
        return self._make_champion(model, actor=actor, reason=f"promote model v{version}: {reason}")

    def rollback(self, *, to_version: int | None = None, actor: str, reason: str) -> ServingState:
        """Make an earlier model the champion again: ``previous`` unless `to_version` is given.

        The replaced champion becomes ``previous``, so a second rollback would return to it; callers
        that may retry should check the champion first. Thresholds are left as they are.

        Raises:
            NoRollbackTargetError: No `to_version` and no previous champion.
            UnknownModelVersionError: No such version.
            ModelIntegrityError: The target's artifact is missing or altered.
        """
        _require_text(actor=actor, reason=reason)
        aliases = self.aliases()
        target = to_version if to_version is not None else aliases["previous"]
        if target is None:
            champion = aliases["champion"]
            names = f"the champion is v{champion}" if champion is not None else "there is no champion"
            raise NoRollbackTargetError(
                f"nothing to roll back to: no previous champion ({names}); name the version to roll back to (`selfheal models rollback --to N`, or to_version in the API and tools)"
            )
        model = self.get(target)
        self._verified_artifact(model)
        return self._make_champion(model, actor=actor, reason=f"rollback to model v{target}: {reason}")

    def _make_champion(self, model: ModelVersion, *, actor: str, reason: str) -> ServingState:
        """Move the aliases and the serving state to `model` in one transaction."""
        version = model.version
        with self._transaction():
            aliases = self.aliases()
            state = self.serving.current()
            old = aliases["champion"]
            if old == version and state.champion_version == version:
                return state
            if old is not None and old != version:
                self._record_alias("previous", old, actor=actor, reason=reason)
            self._record_alias("champion", version, actor=actor, reason=reason)
            if aliases["challenger"] == version:
                self._record_alias("challenger", None, actor=actor, reason=reason)
            changes: ServingChanges = {"champion_version": version}
            if state.champion_version is None:
                changes.update(_suggested_thresholds(model.metadata))
            return self.serving.update(actor=actor, reason=reason, **changes)

    # -- internals --------------------------------------------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """A store transaction that also drops the serving-state cache if it rolls back.

        `ServingStateStore.update` caches nothing itself, but a reader inside the transaction could
        have cached the uncommitted state.
        """
        try:
            with self.store.transaction():
                yield
        except BaseException:
            self.serving.invalidate()
            raise

    def _now(self) -> datetime:
        return as_naive_utc(self.clock())

    def _record_alias(self, alias: AliasName, version: int | None, *, actor: str, reason: str) -> None:
        """Append one alias event (called inside a transaction, which makes the max+1 id safe)."""
        event_id = int(self.store.scalar("SELECT coalesce(max(event_id), 0) + 1 FROM model_aliases"))
        self.store.execute(
            f"INSERT INTO model_aliases ({_ALIAS_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
            [event_id, self._now(), alias, version, actor, reason],
        )

    def _verified_artifact(self, model: ModelVersion) -> bytes:
        """The artifact's bytes, if they hash to the recorded sha256."""
        path = model.artifact_path
        try:
            artifact = path.read_bytes()
        except FileNotFoundError as error:
            raise ModelIntegrityError(
                model.version, f"artifact missing: {path}", path=path, expected_sha256=model.sha256
            ) from error
        except OSError as error:
            raise ModelIntegrityError(
                model.version,
                f"artifact unreadable: {path}: {error}",
                path=path,
                expected_sha256=model.sha256,
            ) from error
        actual = _sha256(artifact)
        if actual != model.sha256:
            raise ModelIntegrityError(
                model.version,
                f"sha256 mismatch for {path}: expected {model.sha256}, actual {actual}",
                path=path,
                expected_sha256=model.sha256,
                actual_sha256=actual,
            )
        return artifact

    def _model_from_row(self, row: tuple[Any, ...]) -> ModelVersion:
        version, created_at, relative, sha256, metadata = row
        return ModelVersion(
            version=version,
            created_at=created_at,
            artifact_path=self.models_dir / relative,
            sha256=sha256,
            metadata=ModelMetadata.model_validate_json(metadata),
        )

    def _describe_versions(self) -> str:
        rows = self.store.execute("SELECT min(version), max(version), count(*) FROM models")
        low, high, count = rows[0]
        if not count:
            return "no models are registered"
        return f"registered: v{low}..v{high}"


def _suggested_thresholds(metadata: ModelMetadata) -> ServingChanges:
    if metadata.suggested_threshold is None or metadata.suggested_review_threshold is None:
        return {}
    return {
        "threshold": metadata.suggested_threshold,
        "review_threshold": metadata.suggested_review_threshold,
    }


def _check_feature_names(booster: xgb.Booster, expected: list[str], *, what: str) -> None:
    """A booster scoring columns in another order than the metadata says would score garbage silently."""
    names = booster.feature_names
    if names is not None and list(names) != list(expected):
        raise ModelRegistryError(
            f"{what} has feature names {list(names)} but the metadata lists {list(expected)}"
        )


def _require_text(**values: str) -> None:
    """Who and why make registry changes auditable: refuse blank ones."""
    for name, value in values.items():
        if not value or not value.strip():
            raise ModelRegistryError(f"{name} must be a non-empty string (every change records who and why)")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write_atomically(path: Path, data: bytes) -> None:
    """Write via a temporary file and rename, so a crash never leaves a half-written artifact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    with temporary.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
