"""Serving state: what the scorer serves, kept as data in versioned rows (DESIGN 3).

The serving state says which model is champion, whether the fallback rules serve instead (and why), the
decision thresholds (decline if ``score >= threshold``, else review if ``score >= review_threshold``, else
approve) and which features are quarantined with the value imputed for them. Every change writes a new row
carrying who made it and why; rows are never updated or deleted, so any change can be audited and undone
by writing the old values back.

Version 0 is the built-in default (no champion, default thresholds). It is never written: the table stays
empty until the first change, which becomes version 1.

Champion changes should go through `ModelRegistry.promote` / `rollback`, which move the registry's aliases
in the same transaction; `update(champion_version=...)` alone would leave the aliases behind.
"""

from __future__ import annotations

import json
import math
import threading
import weakref
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any, Final, TypedDict, Unpack, cast

import duckdb
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from scorer.errors import ServingStateError
from scorer.imputation import Surrogate
from store.db import Store

__all__ = [
    "Clock",
    "ServingChanges",
    "ServingState",
    "ServingStateStore",
    "as_naive_utc",
    "default_state",
    "utc_now",
]

Clock = Callable[[], datetime]

# The default state's timestamp: fixed, so version 0 is the same object in every process and report.
_DEFAULT_CHANGED_AT: Final = datetime(1970, 1, 1)
# Concurrent writers in one process collide on the version primary key; each retry re-reads and re-merges.
_MAX_WRITE_ATTEMPTS: Final = 50
_COLUMNS: Final = (
    "version",
    "changed_at",
    "changed_by",
    "reason",
    "champion_version",
    "fallback",
    "fallback_reason",
    "threshold",
    "review_threshold",
    "quarantined_features",
    "quarantine_surrogates",
)
_SELECT: Final = f"SELECT {', '.join(_COLUMNS)} FROM serving_state"


def utc_now() -> datetime:
    """The current UTC time, naive (the store's TIMESTAMP columns hold naive UTC)."""
    return datetime.now(UTC).replace(tzinfo=None)


def as_naive_utc(moment: datetime) -> datetime:
    """`moment` as naive UTC: aware times are converted, naive ones are taken to be UTC already."""
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None)


class ServingChanges(TypedDict, total=False):
    """The fields of a serving state that `ServingStateStore.update` may change."""

    champion_version: int | None
    fallback: bool
    fallback_reason: str | None
    threshold: float
    review_threshold: float
    quarantined_features: dict[str, float]
    quarantine_surrogates: dict[str, list[Surrogate]]


# What a change can touch, in declaration order (readers that diff two states walk these).
CHANGEABLE_FIELDS: Final[tuple[str, ...]] = tuple(ServingChanges.__annotations__)
_CHANGEABLE: Final = frozenset(CHANGEABLE_FIELDS)


class ServingState(BaseModel):
    """One version of the serving state.

    Attributes:
        version: 0 for the built-in default, then 1, 2, ... one per change.
        changed_at: When the change was made (naive UTC, from the store's clock).
        changed_by: Who made it (a person, ``agent``, ``cli``, ...).
        reason: Why.
        champion_version: The registry version that scores, or None when there is no model yet.
        fallback: When true the fallback rules score instead of the champion.
        fallback_reason: Why the fallback is on; set exactly when `fallback` is.
        threshold: Decline when ``score >= threshold``.
        review_threshold: Review when ``review_threshold <= score < threshold``; approve below it.
        quarantined_features: Feature name -> value imputed in place of the live value when no
            surrogate can estimate it. Treat as read-only: the scorer shares one cached instance.
        quarantine_surrogates: Quarantined feature -> healthy sibling features that estimate it, best
            first (`scorer.imputation`); a feature absent here is imputed with its constant.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: int = Field(ge=0)
    changed_at: datetime
    changed_by: str = Field(min_length=1)
    reason: str = Field(min_length=1)
    champion_version: int | None = Field(default=None, ge=1)
    fallback: bool = False
    fallback_reason: str | None = None
    threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    review_threshold: float = Field(default=0.2, ge=0.0, le=1.0)
    quarantined_features: dict[str, float] = Field(default_factory=dict)
    quarantine_surrogates: dict[str, list[Surrogate]] = Field(default_factory=dict)

    @field_validator("quarantined_features")
    @classmethod
    def _imputations_are_finite(cls, value: dict[str, float]) -> dict[str, float]:
        for name, imputed in value.items():
            if not name:
                raise ValueError("a quarantined feature needs a name")
            if not math.isfinite(imputed):
                raise ValueError(f"imputation value for {name!r} must be finite, got {imputed}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ServingState:
        if self.review_threshold > self.threshold:
            raise ValueError(
                f"review_threshold ({self.review_threshold}) must be <= threshold ({self.threshold})"
            )
        if self.fallback and not self.fallback_reason:
            raise ValueError("fallback on needs a fallback_reason")
        if not self.fallback and self.fallback_reason is not None:
            raise ValueError("fallback_reason is only set while the fallback is on")
        orphans = set(self.quarantine_surrogates) - set(self.quarantined_features)
        if orphans:
            raise ValueError(f"surrogates given for features that are not quarantined: {sorted(orphans)}")
        return self

    def changes(self) -> ServingChanges:
        """The changeable fields (what `update` takes), e.g. to write an older state back.

        Writing back a different `champion_version` this way bypasses the registry's aliases; use
        `ModelRegistry.rollback` for the champion and drop that key here.
        """
        return cast(ServingChanges, self.model_dump(include=set(_CHANGEABLE)))


def default_state() -> ServingState:
    """Version 0: no champion, fallback off, default thresholds, nothing quarantined."""
    return ServingState(
        version=0,
        changed_at=_DEFAULT_CHANGED_AT,
        changed_by="selfheal",
        reason="initial state: no champion yet",
    )


class _SharedCache:
    """The latest state of one `Store`, shared by every `ServingStateStore` opened on it.

    Sharing means a second `ServingStateStore` on the same store (a tool, the CLI) can never keep
    serving a state the first one has replaced. The generation counter stops a reader that read the
    table just before a write from caching what it read after the write invalidated the cache.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.state: ServingState | None = None
        self.generation = 0

    def invalidate(self) -> None:
        with self.lock:
            self.state = None
            self.generation += 1


_CACHES: weakref.WeakKeyDictionary[Store, _SharedCache] = weakref.WeakKeyDictionary()
_CACHES_LOCK = threading.Lock()


def _cache_for(store: Store) -> _SharedCache:
    with _CACHES_LOCK:
        return _CACHES.setdefault(store, _SharedCache())


class ServingStateStore:
    """Reads and changes the serving state in the `serving_state` table.

    Args:
        store: The workspace database.
        clock: Returns "now" for `changed_at`; injectable so demos and evals run on simulated time.
            Defaults to the UTC wall clock.
    """

    def __init__(self, store: Store, clock: Clock | None = None) -> None:
        self.store = store
        self.clock: Clock = clock or utc_now
        self._cache = _cache_for(store)

    # -- reads ------------------------------------------------------------------------------------

    def current(self) -> ServingState:
        """The latest state; served from memory after the first read (the scorer asks on every batch)."""
        cache = self._cache
        state = cache.state
        if state is not None:
            return state
        with cache.lock:
            generation = cache.generation
        state = self._read_latest()
        with cache.lock:
            if cache.generation == generation:
                cache.state = state
        return state

    def invalidate(self) -> None:
        """Forget the cached state, so the next `current` reads the table (e.g. after a rolled-back write)."""
        self._cache.invalidate()

    def get(self, version: int) -> ServingState:
        """One version of the state; 0 is the built-in default.

        Raises:
            ServingStateError: No such version.
        """
        if version == 0:
            return default_state()
        rows = self.store.execute(f"{_SELECT} WHERE version = ?", [version])
        if not rows:
            latest = self.current().version
            raise ServingStateError(f"no serving state version {version}; versions are 0..{latest}")
        return _from_row(rows[0])

    def history(self, limit: int | None = None) -> list[ServingState]:
        """Written states, newest first (version 0 is never written, so it is not listed).

        Args:
            limit: At most this many of the most recent states; None for all.
        """
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        sql = f"{_SELECT} ORDER BY version DESC"
        params: list[Any] = []
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [_from_row(row) for row in self.store.execute(sql, params)]

    def last_change(self, fields: Sequence[str], at: datetime) -> tuple[ServingState, ServingState] | None:
        """The last change of any of `fields` made at or before `at`: (the state that made it, the one before).

        Changes written after `at` are left out, so an incident judged at its breach does not read the fix
        made for it (or a replayed hour a later change) as the cause. None when `fields` never changed.
        """
        for newer, older in pairwise(self.history()):  # newest first; versions, not clocks, give the order
            if newer.changed_at <= at and any(getattr(newer, name) != getattr(older, name) for name in fields):
                return newer, older
        return None

    # -- changes ----------------------------------------------------------------------------------

    def update(self, *, actor: str, reason: str, **changes: Unpack[ServingChanges]) -> ServingState:
        """Write a new version with `changes` applied to the latest state.

        Turning the fallback on without a `fallback_reason` records `reason` as the fallback's reason;
        turning it off clears the fallback reason.

        Args:
            actor: Who makes the change.
            reason: Why.
            **changes: Fields to change (see `ServingChanges`).

        Returns:
            The new state, or the latest one unchanged (nothing written) when `changes` change nothing.

        Raises:
            ServingStateError: An unknown field, or a state that would be invalid (thresholds outside
                [0, 1] or out of order, fallback without a reason, a non-finite imputation value, ...).
        """
        unknown = set(changes) - _CHANGEABLE
        if unknown:
            raise ServingStateError(
                f"cannot change {sorted(unknown)}; changeable fields: {sorted(_CHANGEABLE)}"
            )
        return self._apply(actor, reason, lambda _latest: changes)

    def quarantine_feature(
        self, feature: str, value: float, *, actor: str, reason: str, surrogates: Sequence[Surrogate] = ()
    ) -> ServingState:
        """Impute `feature` from now on (merged with the latest state, safe under concurrency).

        Each row gets the first of `surrogates` (best first) whose source is live on that row, else `value`.
        """

        def change(latest: ServingState) -> ServingChanges:
            others = {name: s for name, s in latest.quarantine_surrogates.items() if name != feature}
            return {
                "quarantined_features": {**latest.quarantined_features, feature: value},
                "quarantine_surrogates": {**others, feature: list(surrogates)} if surrogates else others,
            }

        return self._apply(actor, reason, change)

    def release_feature(self, feature: str, *, actor: str, reason: str) -> ServingState:
        """Use `feature`'s live values again; a no-op when it is not quarantined."""

        def change(latest: ServingState) -> ServingChanges:
            kept = {name: v for name, v in latest.quarantined_features.items() if name != feature}
            surrogates = {name: s for name, s in latest.quarantine_surrogates.items() if name != feature}
            return {"quarantined_features": kept, "quarantine_surrogates": surrogates}

        return self._apply(actor, reason, change)

    def _apply(
        self, actor: str, reason: str, change: Callable[[ServingState], ServingChanges]
    ) -> ServingState:
        """Merge `change(latest)` onto the latest state and write it as the next version.

        The merge is recomputed on every attempt, so two writers never lose each other's changes: the
        loser of the race on the version number re-reads the winner's state and merges onto that.
        """
        _require_text(actor=actor, reason=reason)
        for _ in range(_MAX_WRITE_ATTEMPTS):
            latest = self._read_latest()
            proposed = self._proposed(latest, actor, reason, change(latest))
            if proposed is None:
                return latest
            try:
                self._insert(proposed)
            except duckdb.ConstraintException:
                continue
            self._cache.invalidate()
            return proposed
        raise ServingStateError(
            f"gave up writing the serving state after {_MAX_WRITE_ATTEMPTS} attempts: "
            "other writers kept taking the next version"
        )

    def _proposed(
        self, latest: ServingState, actor: str, reason: str, changes: ServingChanges
    ) -> ServingState | None:
        """The next state, or None when it would equal `latest` in every changeable field."""
        before = latest.model_dump(include=set(_CHANGEABLE))
        fields: dict[str, Any] = {**before, **changes}
        if fields["fallback"] and fields["fallback_reason"] is None:
            fields["fallback_reason"] = reason
        if not fields["fallback"] and "fallback_reason" not in changes:
            fields["fallback_reason"] = None
        try:
            proposed = ServingState(
                version=latest.version + 1,
                changed_at=as_naive_utc(self.clock()),
                changed_by=actor,
                reason=reason,
                **fields,
            )
        except ValidationError as error:
            raise ServingStateError(f"invalid serving-state change by {actor}: {_describe(error)}") from error
        # Compared once validated, so nested values (surrogates) given as models or as dicts compare alike.
        return None if proposed.model_dump(include=set(_CHANGEABLE)) == before else proposed

    def _read_latest(self) -> ServingState:
        rows = self.store.execute(f"{_SELECT} ORDER BY version DESC LIMIT 1")
        return _from_row(rows[0]) if rows else default_state()

    def _insert(self, state: ServingState) -> None:
        values = state.model_dump()
        for column in ("quarantined_features", "quarantine_surrogates"):  # JSON columns
            values[column] = json.dumps(values[column], sort_keys=True)
        placeholders = ", ".join("?" for _ in _COLUMNS)
        self.store.execute(
            f"INSERT INTO serving_state ({', '.join(_COLUMNS)}) VALUES ({placeholders})",
            [values[column] for column in _COLUMNS],
        )


def _from_row(row: tuple[Any, ...]) -> ServingState:
    fields = dict(zip(_COLUMNS, row, strict=True))
    fields["quarantined_features"] = json.loads(fields["quarantined_features"])
    fields["quarantine_surrogates"] = json.loads(fields["quarantine_surrogates"] or "{}")
    return ServingState.model_validate(fields)


def _require_text(**values: str) -> None:
    """Who and why are what make a change auditable: refuse blank ones."""
    for name, value in values.items():
        if not value or not value.strip():
            raise ServingStateError(f"{name} must be a non-empty string (every change records who and why)")


def _describe(error: ValidationError) -> str:
    """Pydantic's errors as one line: ``field: message; field: message``."""
    parts = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"])
        parts.append(f"{where}: {item['msg']}" if where else item["msg"])
    return "; ".join(parts)
