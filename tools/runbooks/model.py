"""What a runbook is, as code sees it: its front matter, its sections and its machine steps."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError

from monitor.findings import INCIDENT_KINDS, ROOT_CAUSES

Approval = Literal["auto", "human"]
Paging = Literal["always", "if_unverified", "never"]
Severity = Literal["low", "medium", "high", "critical"]
BlockKind = Literal["tool", "action"]
# The body's sections, in the order a reader meets them; a heading matches when it starts with one.
REQUIRED_SECTIONS: tuple[str, ...] = (
    "when it applies",
    "investigate",
    "decide",
    "remediate",
    "verify",
    "escalate",
)
_DURATION = re.compile(r"^(\d+)\s*(m|h|d)$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}
ID_PATTERN = r"^[a-z][a-z0-9_]*$"


class Problem(BaseModel):
    """One thing wrong with a runbook, where it is, and a short code naming the class of mistake."""

    model_config = ConfigDict(frozen=True)

    path: str
    line: int
    message: str
    code: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message} [{self.code}]"


class RunbookError(ValueError):
    """A runbook that cannot be used; ``problems`` says where and why."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(map(str, problems)))
        self.problems = problems


def _known_kind(kind: str) -> str:
    if kind not in INCIDENT_KINDS:
        raise PydanticCustomError(
            "unknown_incident_kind",
            "unknown incident kind '{kind}'; known kinds: {known}",
            {"kind": kind, "known": ", ".join(INCIDENT_KINDS)},
        )
    return kind


def _known_root_cause(cause: str) -> str:
    if cause not in ROOT_CAUSES:
        raise PydanticCustomError(
            "unknown_root_cause",
            "unknown root cause '{cause}'; known: {known}",
            {"cause": cause, "known": ", ".join(ROOT_CAUSES)},
        )
    return cause


def _duration(text: str) -> str:
    if not _DURATION.match(str(text).strip()):
        raise PydanticCustomError(
            "bad_duration", "duration '{text}' must look like 30m, 2h or 1d", {"text": text}
        )
    return str(text).strip()


def parse_duration(text: str) -> timedelta:
    """``"30m"`` / ``"2h"`` / ``"1d"`` as a timedelta."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise ValueError(f"duration '{text}' must look like 30m, 2h or 1d")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


IncidentKindName = Annotated[str, AfterValidator(_known_kind)]


class Triggers(BaseModel):
    """When a runbook applies: incident kinds, optionally narrowed to the checks that raised them and a condition."""

    model_config = ConfigDict(extra="forbid")

    kinds: list[IncidentKindName] = Field(min_length=1, description="incident kinds it applies to")
    checks: list[str] = Field(
        default_factory=list, description="monitor checks (signals) it applies to; empty: any"
    )
    when: str | None = Field(None, description="an expression that must hold for the runbook to apply")


class Verification(BaseModel):
    """What must be true after remediation: a check back under its threshold within a time."""

    model_config = ConfigDict(extra="forbid")

    check: str = Field(description="the monitor check that must be back under its threshold")
    while_fallback: str | None = Field(
        None,
        description="the check to verify with instead while the fallback rules serve (the monitor does not "
        "judge live scores or alert rates then, so a check that reads them has nothing to say)",
    )
    within: Annotated[str, AfterValidator(_duration)] = Field(description="how long it may take: 30m, 2h, 1d")

    @property
    def deadline(self) -> timedelta:
        return parse_duration(self.within)

    def check_for(self, fallback: bool) -> str:
        """The check that verifies the fix, given whether the fallback rules serve."""
        return self.while_fallback if fallback and self.while_fallback else self.check


class FrontMatter(BaseModel):
    """The YAML front matter: what code must know about a runbook."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=ID_PATTERN, description="unique id, lower_snake_case")
    title: str = Field(min_length=3)
    root_cause: Annotated[str, AfterValidator(_known_root_cause)] = Field(
        description="the root cause it handles"
    )
    triggers: Triggers
    severity: Severity
    actions: dict[str, Approval] = Field(
        description="action -> approval policy; the only actions it may take"
    )
    verification: Verification
    paging: Paging = Field(description="always | if_unverified | never")


class Step(BaseModel):
    """A fenced ``tool`` or ``action`` block: one call a machine makes.

    ``args`` values may hold ``{{ expression }}`` templates; ``when`` guards the step; ``for_each`` runs it
    once per element (bound to ``item``); ``save_as`` keeps the result for later steps as ``results.<name>``.
    """

    model_config = ConfigDict(extra="forbid")

    block: BlockKind
    name: str
    args: dict[str, Any] = Field(default_factory=dict)
    when: str | None = None
    for_each: str | None = None
    save_as: str | None = Field(None, pattern=r"^[a-z][a-z0-9_]*$")
    section: str = ""
    line: int = Field(0, description="1-based line of the block's opening fence")


class Section(BaseModel):
    """A ``##`` section of the body."""

    title: str
    key: str | None = Field(description="which required section this is, if any")
    line: int
    text: str
    steps: list[Step] = Field(default_factory=list)


class Runbook(FrontMatter):
    """A parsed runbook: front matter plus its body's sections and steps."""

    sections: list[Section] = Field(default_factory=list)
    body: str = ""
    path: Path | None = None

    @property
    def steps(self) -> list[Step]:
        """Every machine step, in document order."""
        return [step for section in self.sections for step in section.steps]

    def section(self, key: str) -> Section | None:
        """The body section for a required key (``investigate``, ``remediate``, ...), if present."""
        return next((s for s in self.sections if s.key == key), None)

    def allows(self, action: str) -> bool:
        """Whether the runbook allows this action at all."""
        return action in self.actions

    def approval(self, action: str) -> Approval:
        """The approval policy of an allowed action.

        Raises:
            KeyError: The action is not allowed by this runbook.
        """
        if action not in self.actions:
            raise KeyError(
                f"runbook {self.id} does not allow action {action!r}; it allows {sorted(self.actions)}"
            )
        return self.actions[action]

    def front_matter(self) -> dict[str, Any]:
        """The front matter as plain data (what `parser.render_runbook` writes back)."""
        return self.model_dump(mode="json", include=set(FrontMatter.model_fields), exclude_none=True)
