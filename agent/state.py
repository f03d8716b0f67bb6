"""What the responder's graph carries from node to node: plain JSON-able dicts (DESIGN 4).

`ResponderInput` is the narrow input (which incident, which planner); `ResponderState` is everything the
nodes add. Checkpoints store it as is, so nothing here may be an object: records are `TypedDict`s whose
keys are documented once, here, and read by the report, the page summary, the chat and the evals.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypedDict

Planner = Literal["deterministic", "llm"]
VerificationStatus = Literal["verified", "failed", "pending", "not_applicable"]


class StepRecord(TypedDict, total=False):
    """One thing the agent did while investigating: a tool call, a model turn, or a decision.

    Keys: ``n`` (1-based order, set by the state's reducer), ``node`` (graph node), ``kind`` (``tool`` | ``llm`` | ``decision`` |
    ``error``), ``name`` (tool name or decision name), ``args`` (dict), ``ok`` (bool), ``output`` (the
    bounded text the planner saw, possibly cut), ``error`` (message when not ok), ``at`` (ISO time on the
    platform clock), ``tokens`` (dict of prompt/completion/total for ``llm`` steps), ``note`` (free text).
    """

    n: int
    node: str
    kind: str
    name: str
    args: dict[str, Any]
    ok: bool
    output: str
    error: str
    at: str
    tokens: dict[str, int]
    note: str


def append_steps(steps: list[StepRecord], new: list[StepRecord]) -> list[StepRecord]:
    """The ``steps`` reducer: new records go at the end, numbered on from the last (``n`` is 1-based)."""
    numbered: list[StepRecord] = [{**record, "n": len(steps) + i + 1} for i, record in enumerate(new)]
    return [*steps, *numbered]


class Diagnosis(TypedDict, total=False):
    """What the agent concluded: ``root_cause`` (DESIGN 5, or ``none``), ``runbook_id`` (or None when it
    abstained), ``confidence`` (0..1), ``evidence`` (list of short strings with numbers, each naming where
    it came from: ``"incident.evidence.value=0.41"``, ``"step 3: quality_report ..."``), ``abstained``
    (bool), ``reason`` (why this runbook, or why none), ``planner`` (which planner decided)."""

    root_cause: str
    runbook_id: str | None
    confidence: float
    evidence: list[str]
    abstained: bool
    reason: str
    planner: str


class PlannedAction(TypedDict, total=False):
    """One action the plan holds: ``action`` and ``args`` (validated against the tool schema),
    ``approval`` (``auto`` | ``human``), ``status`` (``planned`` | ``awaiting_approval`` | ``approved`` |
    ``denied`` | ``applied`` | ``repeat`` | ``refused`` | ``failed`` | ``skipped``: a note that would have
    recorded an earlier action of the plan that did not happen), ``why`` (the runbook line or model
    rationale), ``audit_id`` and ``result`` once it ran (a denial is audited too), ``decided_by`` and
    ``decided_at`` (who approved or denied, when), ``step_line`` (the runbook step it came from, for
    runbook plans)."""

    action: str
    args: dict[str, Any]
    approval: str
    status: str
    why: str
    audit_id: str | None
    result: dict[str, Any]
    decided_by: str
    decided_at: str
    step_line: int


class Verification(TypedDict, total=False):
    """Did the fix hold: ``status``, ``check`` (monitor check re-run), ``since`` / ``until`` (the window
    after the action it was run on, ISO), ``deadline`` (ISO), ``findings`` (list of dicts: subject, value,
    threshold, breached), ``attempts`` (how many times it was evaluated), ``reason`` (one sentence)."""

    status: VerificationStatus
    check: str
    since: str
    until: str
    deadline: str
    findings: list[dict[str, Any]]
    attempts: int
    reason: str


class PageDecision(TypedDict, total=False):
    """The page policy's verdict: ``page`` (bool), ``rule`` (which rule fired: ``runbook_always``,
    ``unverified``, ``remediation_failed``, ``agent_degraded``, ``abstained``, ``fixed_and_verified``,
    ``no_action_needed``, ...), ``reason`` (one sentence a human reads), ``severity``, ``page_id`` and
    ``sent`` once notify ran."""

    page: bool
    rule: str
    reason: str
    severity: str
    page_id: str | None
    sent: bool


class ResponderInput(TypedDict, total=False):
    """What starts an investigation."""

    incident_id: str
    planner: Planner


class ResponderState(ResponderInput, total=False):
    """Everything the graph accumulates for one incident (one thread per incident)."""

    incident: dict[str, Any]  # the incident as stored when the investigation started
    matches: list[dict[str, Any]]  # runbook matches: {runbook_id, score, reasons}
    label_wait: dict[str, Any] | None  # no match yet, labels due soon: {not_before, reason} (agent.label_evidence)
    steps: Annotated[list[StepRecord], append_steps]
    results: dict[str, Any]  # what runbook steps saved with save_as (tool output, JSON)
    proposal: dict[str, Any]  # the LLM planner's final answer, before code validates it
    diagnosis: Diagnosis
    plan: list[PlannedAction]
    verification: Verification
    page_decision: PageDecision
    approval_page: dict[str, Any]  # the page asking a person to approve: {page_id, actions}
    summary: str  # the markdown page / incident summary
    report: dict[str, str]  # {"markdown": path, "html": path}
    degraded: list[str]  # why the agent fell back or was limited (LLM unavailable, budget spent, ...)
    usage: dict[str, float]  # llm_calls, prompt_tokens, completion_tokens, cost_usd
    acted_at: str | None  # ISO time the last action applied (verification looks after it)
    outcome: str  # mitigated | escalated | no_action | abstained
