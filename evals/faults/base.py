"""The fault protocol, its context, its errors and its registry.

A fault is a pydantic model: ``start`` and ``end`` (when it is active, ``[start, end)``; ``end`` None means
until the end of the run unless the platform remediates it) plus typed, described, validated parameters.
Unknown parameters are refused (``extra="forbid"``), so a typo in a scenario file is an error, not a
silently ignored setting.

A fault acts through one or more of three seams, each a method whose default does nothing:

- ``apply_transactions(frame, rng)`` changes a simulated day *before* it is cut into hours (stream faults),
  so the labels that arrive a week later describe what really happened;
- ``install(ctx)`` / ``uninstall(ctx)`` change the running platform at ``start`` and ``end`` (serving
  faults: scorer hooks, deploys, serving-state changes, the model file on disk);
- ``filter_labels(labels, now)`` withholds labels on their way in (label faults).

Errors::

    FaultError (ValueError)
    ├── UnknownFaultKindError   no fault of that kind is registered (the message lists the kinds)
    └── FaultParameterError     a parameter is unknown, missing or invalid (``.kind``, ``.field``)
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Any, ClassVar, Final, Literal, Protocol, TypeVar

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from monitor.findings import INCIDENT_KINDS, ROOT_CAUSES, IncidentKind, RootCause
from scorer import columns as C
from scorer.registry import ModelRegistry
from scorer.score import Scorer
from scorer.serving import ServingStateStore
from scorer.simulate import Simulator

__all__ = [
    "FAULTS",
    "INCIDENT_KINDS",
    "ROOT_CAUSES",
    "SCENARIO_CARD_TESTING",
    "SCENARIO_NEW_PATTERN",
    "WIRE_EDITS",
    "Fault",
    "FaultContext",
    "FaultError",
    "FaultFamily",
    "FaultParameterError",
    "IncidentKind",
    "PlatformLike",
    "RootCause",
    "UnknownFaultKindError",
    "affected_rows",
    "make_fault",
    "register_fault",
]

FaultFamily = Literal["stream", "serving", "labels"]

# Fraud scenario codes of rows that faults turn into fraud (the simulator uses 0-3).
SCENARIO_CARD_TESTING: Final = 4
SCENARIO_NEW_PATTERN: Final = 5

# A stream fault that changes the *shape* of a record (a field dropped or renamed) cannot express that in
# a frame whose columns the labels still need, so it writes the change here: per row None (sent as is) or
# a dict {field: new name, or None to drop it}. The world player applies it when it builds the payload.
WIRE_EDITS: Final = "_wire_edits"


# -- errors -----------------------------------------------------------------------------------------


class FaultError(ValueError):
    """A fault cannot be built as asked."""


class UnknownFaultKindError(FaultError):
    """No fault of that kind is registered.

    Attributes:
        kind: The kind asked for.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        close = difflib.get_close_matches(kind, FAULTS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        super().__init__(f"unknown fault kind {kind!r}{hint}; known kinds: {', '.join(sorted(FAULTS))}")


class FaultParameterError(FaultError):
    """A fault parameter is unknown, missing or invalid.

    Attributes:
        kind: The fault kind.
        field: The first offending parameter (``start``/``end`` for the window), for "file X, field Y".
        problems: Every (parameter, message) pair.
    """

    def __init__(self, kind: str, problems: list[tuple[str, str]]) -> None:
        self.kind = kind
        self.problems = problems
        self.field = problems[0][0] if problems else ""
        detail = "; ".join(f"parameter {name!r}: {message}" for name, message in problems)
        super().__init__(f"fault {kind!r}: {detail}")


# -- context ----------------------------------------------------------------------------------------


class PlatformLike(Protocol):
    """What faults need of the running platform (`selfheal.app.Platform` has it; evals may not import it)."""

    @property
    def scorer(self) -> Scorer: ...

    @property
    def registry(self) -> ModelRegistry: ...

    @property
    def serving(self) -> ServingStateStore: ...


@dataclass
class FaultContext:
    """What a serving fault may touch when it is installed or uninstalled.

    Attributes:
        platform: The running platform (scorer, registry, serving state).
        simulator: The world being played.
        rng: This fault's own seeded random stream (one per fault, so faults never shift each other).
        clock: The simulated "now".
        load_history: Returns the transactions the champion was trained on; called at most once, and
            only by faults that retrain (generating a long history is not free).
    """

    platform: PlatformLike
    simulator: Simulator
    rng: np.random.Generator
    clock: Callable[[], datetime]
    load_history: Callable[[], pd.DataFrame]

    @cached_property
    def history(self) -> pd.DataFrame:
        """The training history (transactions with ``is_fraud``), loaded on first use."""
        return self.load_history()


# -- the base class ---------------------------------------------------------------------------------


class Fault(BaseModel):
    """Something that goes wrong between ``start`` and ``end``; subclasses document what and how.

    Class attributes every registered fault sets:
        kind: Its name in scenario files and in `FAULTS`.
        family: Which seam it acts through (``stream``, ``serving`` or ``labels``).
        root_cause: The DESIGN 5 root cause it stands for (``none`` when it is no incident at all).
        expected_kinds: The incident kinds the monitor should raise for it (empty: none should be raised).
        example_params: Parameters that make a typical instance (used by docs and the conformance test).
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    kind: ClassVar[str]
    family: ClassVar[FaultFamily]
    root_cause: ClassVar[RootCause]
    expected_kinds: ClassVar[tuple[IncidentKind, ...]]
    example_params: ClassVar[dict[str, Any]]

    start: datetime = Field(description="when the fault begins (naive UTC, simulated time)")
    end: datetime | None = Field(
        default=None, description="when it stops (exclusive); None: until the run ends or it is remediated"
    )

    @field_validator("start", "end")
    @classmethod
    def _naive_utc(cls, value: datetime | None) -> datetime | None:
        """Simulated timestamps are naive UTC; an aware time is converted rather than compared wrongly."""
        if value is not None and value.tzinfo is not None:
            return value.astimezone(UTC).replace(tzinfo=None)
        return value

    @model_validator(mode="after")
    def _ordered(self) -> Fault:
        if self.end is not None and self.end <= self.start:
            raise ValueError(f"end ({self.end}) must be after start ({self.start})")
        return self

    # -- window -----------------------------------------------------------------------------------

    def active_at(self, moment: datetime) -> bool:
        """Whether the fault is in effect at ``moment``."""
        return self.start <= moment and (self.end is None or moment < self.end)

    def in_window(self, timestamps: pd.Series) -> np.ndarray:
        """Boolean mask of the ``timestamps`` inside ``[start, end)``."""
        values = pd.to_datetime(timestamps).to_numpy(dtype="datetime64[ns]")
        inside = values >= np.datetime64(self.start, "ns")
        if self.end is not None:
            inside &= values < np.datetime64(self.end, "ns")
        return np.asarray(inside, dtype=bool)

    def params(self) -> dict[str, Any]:
        """The fault's parameters (everything but the window), JSON-able: what a scenario file holds."""
        return self.model_dump(mode="json", exclude={"start", "end"})

    # -- the three seams (no-ops by default) ------------------------------------------------------

    def apply_transactions(self, frame: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
        """Change one simulated day (sorted by time, with ``is_fraud`` and ``fraud_scenario``).

        Only rows with a timestamp in the window may change. Rows may be added (with new, unique
        ``transaction_id`` values and labels) or removed; the caller re-sorts by time.
        """
        return frame

    def install(self, ctx: FaultContext) -> None:
        """Start acting on the platform (called once, at ``start``)."""

    def uninstall(self, ctx: FaultContext) -> None:
        """Stop acting on the platform (called once, at ``end`` or when remediation ends the fault)."""

    def filter_labels(self, labels: pd.DataFrame, now: datetime) -> pd.DataFrame:
        """The labels (``transaction_id``, ``is_fraud``, ``label_time``) that get through at ``now``."""
        return labels


def require_known(values: Iterable[str], known: Sequence[str], what: str) -> None:
    """Raise ValueError naming the `values` not in `known`, and listing `known` (`what`: "feature(s)")."""
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"unknown {what} {unknown}; known: {', '.join(known)}")


def affected_rows(fault: Fault, frame: pd.DataFrame, rng: np.random.Generator, share: float) -> np.ndarray:
    """Rows in the fault's window, each kept with probability ``share`` (one draw per row, always)."""
    draws = rng.random(len(frame))  # drawn for every row, so the stream does not depend on the window
    return fault.in_window(frame[C.TIMESTAMP]) & (draws < share)


# -- registry ---------------------------------------------------------------------------------------

FAULTS: dict[str, type[Fault]] = {}
_F = TypeVar("_F", bound=type[Fault])


def register_fault(cls: _F) -> _F:
    """Add a fault class to `FAULTS` under its ``kind`` (built-ins register through this door too).

    Raises:
        TypeError: The class lacks a docstring or a class attribute, or its kind is taken.
    """
    missing = [
        name
        for name in ("kind", "family", "root_cause", "expected_kinds", "example_params")
        if not hasattr(cls, name)
    ]
    if missing or not (cls.__doc__ or "").strip():
        raise TypeError(f"{cls.__name__} needs a docstring and class attributes {missing or ''}")
    if cls.kind in FAULTS and FAULTS[cls.kind] is not cls:
        raise TypeError(f"fault kind {cls.kind!r} is already registered by {FAULTS[cls.kind].__name__}")
    FAULTS[cls.kind] = cls
    return cls


def make_fault(
    kind: str, params: Mapping[str, Any] | None, start: datetime, end: datetime | None = None
) -> Fault:
    """Build a registered fault from its kind and parameters (what a scenario loader calls).

    Args:
        kind: A key of `FAULTS`, e.g. ``"feature_nulls"``.
        params: Its parameters (see the class); None or empty for faults without any.
        start: When it begins.
        end: When it stops; None for "until remediated or the end of the run".

    Returns:
        The fault.

    Raises:
        UnknownFaultKindError: No such kind.
        FaultParameterError: A parameter is unknown, missing or invalid (the message names it).
    """
    cls = FAULTS.get(kind)
    if cls is None:
        raise UnknownFaultKindError(kind)
    if params is not None and not isinstance(params, Mapping):
        raise FaultParameterError(
            kind, [("params", f"must be a mapping of name to value, got {type(params).__name__}")]
        )
    given = dict(params or {})
    window = sorted({"start", "end"} & set(given))
    if window:
        raise FaultParameterError(
            kind, [(name, "is the fault window, not a parameter; pass it separately") for name in window]
        )
    if end is not None and end <= start:  # checked here too so the error names the field
        raise FaultParameterError(kind, [("end", f"must be after start ({start}), got {end}")])
    try:
        return cls(start=start, end=end, **given)
    except ValidationError as error:
        raise FaultParameterError(kind, _problems(error, cls)) from error


def _problems(error: ValidationError, cls: type[Fault]) -> list[tuple[str, str]]:
    """Pydantic's errors as (parameter, message), with the allowed names when one is unknown."""
    names = [name for name in cls.model_fields if name not in ("start", "end")]
    problems = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "(fault)"
        if item["type"] == "extra_forbidden":
            close = difflib.get_close_matches(where, names, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            problems.append(
                (where, f"unknown parameter ({hint}parameters of {cls.kind}: {', '.join(names) or 'none'})")
            )
        else:
            problems.append((where, str(item["msg"])))
    # A misspelt parameter also makes the real one "missing": name the misspelling first, it is the cause.
    return sorted(problems, key=lambda problem: "unknown parameter" not in problem[1])
