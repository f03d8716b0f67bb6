"""Scenario files: a world, the faults that strike it, and what the platform must do about them.

A scenario is one YAML file (DESIGN 8, issue 6)::

    id: feature-nulls-terminal-risk
    description: The terminal-risk feature job fails and ships nulls.
    world: {seed: 7, customers: 2000, terminals: 4000, history_days: 45, live_days: 1, label_delay_days: 7}
    faults:
      - kind: feature_nulls                # a key of evals.faults.FAULTS
        start: "day 0 10:00"               # offset into the live period
        end: null                          # null: until the end unless remediated; or "day 0 16:00"
        params: {features: [terminal_risk_7d, terminal_risk_30d], rate: 1.0}
    expect:                                # or a list of such entries, one per expected incident
      incident: true
      detect_within: 2h
      kinds: [data_quality]
      root_cause: feature_pipeline_break
      end_state_any_of: [{quarantined_features_include: [terminal_risk_7d]}, {fallback: true}]
      forbidden_actions: [rollback_model]
      page: true
      mitigate_within: 6h

Times are ``day N HH:MM`` offsets into the live period (day 0 is its first day); durations are ``30m``,
``2h``, ``1d`` (or sums such as ``1d 6h``). `load_scenario` validates everything, faults included (through
`evals.faults.make_fault`), and raises `ScenarioError` naming the file and the field.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from evals.faults import (
    FAULTS,
    INCIDENT_KINDS,
    ROOT_CAUSES,
    Fault,
    FaultError,
    FaultParameterError,
    make_fault,
)
from evals.faults.base import require_known
from scorer.score import LOGGED_FEATURES
from tools.registry import registered_tools

__all__ = [
    "EndState",
    "Expectation",
    "FaultSpec",
    "Scenario",
    "ScenarioError",
    "WorldSpec",
    "default_scenarios_dir",
    "load_scenario",
    "load_suite",
    "parse_duration",
    "parse_offset",
]

_OFFSET = re.compile(r"^\s*day\s+(\d+)\s+(\d{1,2}):(\d{2})\s*$", re.IGNORECASE)
_DURATION_PART = re.compile(r"(\d+)\s*([mhd])", re.IGNORECASE)
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}
# Actions a scenario may forbid: the action tools (page and notes are never "collateral").
ACTION_TOOLS = tuple(sorted(name for name, spec in registered_tools().items() if spec.kind == "action"))


class ScenarioError(ValueError):
    """A scenario file cannot be used; the message names the file and the field.

    Attributes:
        path: The file.
        field: Dotted path of the first offending field (``faults.0.kind``), or ``""`` for the whole file.
    """

    def __init__(self, path: Path | str, field: str, message: str) -> None:
        self.path = Path(path)
        self.field = field
        where = f"field {field!r}" if field else "the file"
        super().__init__(f"{self.path}: {where}: {message}")


def parse_offset(text: str) -> timedelta:
    """``"day 3 10:00"`` -> 3 days 10 hours (an offset into the live period)."""
    match = _OFFSET.match(str(text))
    if match is None:
        raise ValueError(f"{text!r} is not a time like 'day 3 10:00'")
    day, hour, minute = (int(part) for part in match.groups())
    if hour > 23 or minute > 59:
        raise ValueError(f"{text!r}: hour must be 0-23 and minute 0-59")
    return timedelta(days=day, hours=hour, minutes=minute)


def parse_duration(text: str | int | float) -> timedelta:
    """``"30m"``, ``"2h"``, ``"1d"``, ``"1d 6h"`` -> a timedelta (a bare number is hours)."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        return timedelta(hours=float(text))
    value = str(text).strip()
    parts = _DURATION_PART.findall(value)
    if not parts or _DURATION_PART.sub("", value).strip():
        raise ValueError(f"{text!r} is not a duration like '30m', '2h' or '1d'")
    total = timedelta()
    for amount, unit in parts:
        total += timedelta(**{_UNITS[unit.lower()]: int(amount)})
    if total <= timedelta(0):
        raise ValueError(f"{text!r} must be longer than zero")
    return total


Offset = Annotated[timedelta, BeforeValidator(lambda v: v if isinstance(v, timedelta) else parse_offset(v))]
Duration = Annotated[
    timedelta, BeforeValidator(lambda v: v if isinstance(v, timedelta) else parse_duration(v))
]


class WorldSpec(BaseModel):
    """The simulated world: its seed and sizes, how much history the champion learns from, how long it runs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = Field(ge=0, description="simulator seed (seed i of a run adds i)")
    customers: int = Field(2000, ge=50, description="simulated customers")
    terminals: int = Field(4000, ge=50, description="simulated terminals")
    history_days: int = Field(45, ge=21, le=365, description="days of history the champion is trained on")
    live_days: int = Field(ge=1, le=60, description="days played live after the history")
    label_delay_days: int = Field(7, ge=0, le=30, description="days until a transaction's label arrives")


class FaultSpec(BaseModel):
    """One fault: a kind from the fault library, its window (offsets) and its parameters."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str = Field(description="a key of evals.faults.FAULTS")
    start: Offset = Field(description="'day N HH:MM' into the live period")
    end: Offset | None = Field(None, description="when it stops; null: until remediated or the run ends")
    params: dict[str, Any] = Field(default_factory=dict, description="the fault's parameters")

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, value: str) -> str:
        if value not in FAULTS:
            raise ValueError(f"unknown fault kind {value!r}; known kinds: {', '.join(sorted(FAULTS))}")
        return value

    @model_validator(mode="after")
    def _ordered(self) -> FaultSpec:
        if self.end is not None and self.end <= self.start:
            raise ValueError("end must be after start")
        return self

    def build(self, live_start: datetime) -> Fault:
        """The fault, placed in a world whose live period starts at ``live_start``."""
        end = None if self.end is None else live_start + self.end
        return make_fault(self.kind, self.params, live_start + self.start, end)


class EndState(BaseModel):
    """One accepted serving state after remediation; every key given must hold (unset keys are not checked)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fallback: bool | None = Field(None, description="the fallback rules serve (true) or a model does")
    champion_version: int | None = Field(None, ge=1, description="this version is champion (v1: the first)")
    champion_changed: bool | None = Field(
        None, description="the champion differs from the one before the fault"
    )
    threshold_restored: bool | None = Field(
        None, description="decision thresholds are back to pre-fault values"
    )
    quarantined_features_include: list[str] | None = Field(None, description="these features are quarantined")
    no_action: bool | None = Field(
        None, description="no action tool ran for the incident (notes, pages aside)"
    )

    @field_validator("quarantined_features_include")
    @classmethod
    def _known_features(cls, value: list[str] | None) -> list[str] | None:
        require_known(value or [], LOGGED_FEATURES, "feature(s)")
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> EndState:
        if not self.model_dump(exclude_none=True):
            raise ValueError("an end state needs at least one key")
        return self

    def keys(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class Expectation(BaseModel):
    """What must happen for one expected incident (or, with ``incident: false``, that none happens)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    incident: bool = Field(description="an incident must be raised (false: a control, nothing may be raised)")
    fault: int | None = Field(
        None, ge=0, description="index of the fault this incident is about (default: the entry's own index)"
    )
    detect_within: Duration | None = Field(
        None, description="deadline from the fault's start to the incident"
    )
    kinds: list[str] = Field(default_factory=list, description="acceptable kinds of the first incident")
    root_cause: str | None = Field(None, description="the root cause the responder must name")
    end_state_any_of: list[EndState] = Field(default_factory=list, description="accepted serving states")
    metrics_recover: bool | None = Field(
        None,
        description="fraud metrics must recover after mitigation (default: yes unless the accepted end "
        "states are all no_action); false when only the upstream can fix it, say why in the description",
    )
    forbidden_actions: list[str] = Field(default_factory=list, description="action tools that must not run")
    page: bool | None = Field(None, description="a human must (true) or must not (false) be paged")
    mitigate_within: Duration | None = Field(
        None, description="deadline from the fault's start to the first fix"
    )

    @field_validator("kinds")
    @classmethod
    def _known_kinds(cls, value: list[str]) -> list[str]:
        require_known(value, INCIDENT_KINDS, "incident kind(s)")
        return value

    @field_validator("root_cause")
    @classmethod
    def _known_root_cause(cls, value: str | None) -> str | None:
        if value is not None and value not in ROOT_CAUSES:
            raise ValueError(f"unknown root cause {value!r}; root causes: {', '.join(ROOT_CAUSES)}")
        return value

    @field_validator("forbidden_actions")
    @classmethod
    def _known_actions(cls, value: list[str]) -> list[str]:
        require_known(value, ACTION_TOOLS, "action(s)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Expectation:
        if self.incident and (not self.kinds or self.root_cause is None):
            raise ValueError("an expected incident needs kinds and root_cause")
        if not self.incident and (self.kinds or self.end_state_any_of or self.mitigate_within):
            raise ValueError("a control (incident: false) cannot expect kinds, end states or mitigation")
        return self

    @property
    def recovery_required(self) -> bool:
        """Whether fraud metrics must recover for remediation to count as a success."""
        if not self.incident:
            return False
        if self.metrics_recover is not None:
            return self.metrics_recover
        return not all(state.no_action for state in self.end_state_any_of)


class Scenario(BaseModel):
    """A whole scenario file (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$", description="unique, lowercase, dashes")
    description: str = Field(min_length=1)
    world: WorldSpec
    faults: list[FaultSpec] = Field(default_factory=list)
    expect: list[Expectation] = Field(min_length=1, description="one entry, or one per expected incident")
    tags: list[str] = Field(default_factory=list, description="free labels (control, multi_fault, ...)")

    @field_validator("expect", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, dict) else value

    @model_validator(mode="after")
    def _coherent(self) -> Scenario:
        live = timedelta(days=self.world.live_days)
        for index, fault in enumerate(self.faults):
            if fault.start >= live:
                raise _FieldProblem(
                    f"faults.{index}.start", f"starts after the live period ({self.world.live_days} days)"
                )
        incidents = [e for e in self.expect if e.incident]
        for index, entry in enumerate(self.expect):
            target = entry.fault if entry.fault is not None else index
            if entry.incident and target >= len(self.faults):
                raise _FieldProblem(
                    f"expect.{index}.fault", f"no fault {target} (the scenario has {len(self.faults)})"
                )
        if incidents and len(incidents) != len(self.expect):
            raise _FieldProblem("expect", "mixes expected incidents with a no-incident control")
        return self

    @property
    def is_control(self) -> bool:
        """No incident is expected (no faults, or faults that must not raise one)."""
        return not any(e.incident for e in self.expect)

    def fault_index(self, entry_index: int) -> int:
        entry = self.expect[entry_index]
        return entry.fault if entry.fault is not None else entry_index


class _FieldProblem(ValueError):
    """Raised inside validators to name the field (pydantic reports it at the model's location)."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class _UniqueKeyLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that refuses a key written twice in one mapping. YAML keeps the later value without
    a word: a scenario with two ``expect:`` blocks graded only the second (runbooks refuse this too)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first on line {seen[key]})", key_node.start_mark
                )
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def load_scenario(path: Path | str) -> Scenario:
    """Read and validate one scenario file, its faults included.

    Raises:
        ScenarioError: Not YAML, a missing or unknown field, an unknown fault kind or parameter, a bad time
            or duration, an unknown root cause, kind or action; the message names the file and the field.
    """
    path = Path(path)
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # a SafeLoader
    except yaml.YAMLError as error:
        raise ScenarioError(path, "", f"not valid YAML: {error}") from error
    except OSError as error:
        raise ScenarioError(path, "", f"cannot read it: {error}") from error
    if not isinstance(data, dict):
        raise ScenarioError(path, "", "must be a mapping of fields (id, description, world, faults, expect)")
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as error:  # pydantic wraps a validator's _FieldProblem: _scenario_error unwraps it
        raise _scenario_error(path, error) from error
    # Build every fault once now, so a bad parameter fails at load time rather than mid-run.
    live_start = datetime(2000, 1, 1)
    for index, fault in enumerate(scenario.faults):
        try:
            fault.build(live_start)
        except FaultParameterError as error:
            raise ScenarioError(path, f"faults.{index}.params.{error.field}", str(error)) from error
        except FaultError as error:
            raise ScenarioError(path, f"faults.{index}", str(error)) from error
    return scenario


def _scenario_error(path: Path, error: ValidationError) -> ScenarioError:
    first = error.errors()[0]
    field = ".".join(str(part) for part in first["loc"])
    message = str(first["msg"]).removeprefix("Value error, ")
    context = first.get("ctx") or {}
    inner = context.get("error")
    if isinstance(inner, _FieldProblem):
        field, message = inner.field, inner.message
    if first["type"] == "extra_forbidden":
        message = "unknown field"
    return ScenarioError(path, field, message)


def load_suite(directory: Path | str) -> list[Scenario]:
    """Every ``*.yaml`` / ``*.yml`` scenario in ``directory``, sorted by id.

    Raises:
        ScenarioError: A file is invalid, or two files share an id.
        FileNotFoundError: ``directory`` does not exist or holds no scenario.
    """
    folder = Path(directory)
    if not folder.is_dir():
        raise FileNotFoundError(f"no scenario folder {folder}")
    paths = sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")])
    if not paths:
        raise FileNotFoundError(f"no scenario files (*.yaml) in {folder}")
    seen: dict[str, Path] = {}
    scenarios = []
    for path in paths:
        scenario = load_scenario(path)
        if scenario.id in seen:
            raise ScenarioError(path, "id", f"{scenario.id!r} is also the id of {seen[scenario.id]}")
        seen[scenario.id] = path
        scenarios.append(scenario)
    return sorted(scenarios, key=lambda s: s.id)


def default_scenarios_dir() -> Path:
    """The default suite shipped with the package (evals/scenarios/)."""
    return Path(__file__).resolve().parent / "scenarios"
