"""Running a runbook's machine steps: render templates, honour ``when`` / ``for_each``, record each call.

Read steps (``tool`` blocks) run here directly: they change nothing. Action steps are only *planned*
here (rendered and schema-checked into `PlannedAction` records); the graph's ``act`` node runs them after
validation and approval. Every step, run or skipped with a reason, becomes a `StepRecord`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from agent.context import AgentRuntime
from agent.label_evidence import estimate_evidence, label_evidence
from agent.state import PlannedAction, StepRecord
from scorer.serving import as_naive_utc
from tools.errors import ToolError
from tools.registry import call_tool, registered_tools
from tools.runbooks import ExpressionError, Runbook, Step, build_scope, evaluate, render

# Sections whose tool steps gather evidence before a decision (Decide/Verify prose may hold tool steps
# too; they are for people and the LLM planner).
INVESTIGATE_SECTIONS = ("investigate",)


def step_record(node: str, kind: str, name: str, runtime: AgentRuntime, **fields: Any) -> StepRecord:
    """A `StepRecord` stamped with the platform clock (the state's reducer numbers it)."""
    record: StepRecord = {"node": node, "kind": kind, "name": name, "at": runtime.now_iso()}
    record.update(fields)  # type: ignore[typeddict-item]
    return record


def incident_scope(runtime: AgentRuntime, incident_id: str, results: dict[str, Any] | None = None) -> dict[str, Any]:
    """The expression scope for an incident as it stands now, with earlier steps' saved ``results``."""
    incident = runtime.incidents.get(incident_id)
    now = as_naive_utc(runtime.clock())
    labels = label_evidence(runtime.monitor, incident, now)
    estimated = estimate_evidence(runtime.monitor, incident, now)
    scope = build_scope(incident, runtime.serving, runtime.registry, labels, estimated)
    scope["results"] = dict(results or {})
    return scope


def _bindings(step: Step, scope: dict[str, Any]) -> Iterator[tuple[dict[str, Any] | None, str | None]]:
    """(scope for one run of the step, or None with the reason it is skipped)."""
    items: list[Any] = [None]
    if step.for_each:
        try:
            value = evaluate(step.for_each, scope)
        except ExpressionError as error:
            yield None, f"for_each {step.for_each!r} could not be evaluated: {error.message}"
            return
        items = list(value) if isinstance(value, (list, tuple)) else [value]
        if not items:
            yield None, f"for_each {step.for_each!r} is empty"
            return
    for item in items:
        names = {**scope, "item": item} if step.for_each else scope
        if step.when:
            try:
                holds = bool(evaluate(step.when, names))
            except ExpressionError as error:
                yield None, f"when {step.when!r} could not be evaluated: {error.message}"
                continue
            if not holds:
                yield None, f"when {step.when!r} is false"
                continue
        yield names, None


def run_tool_steps(
    runtime: AgentRuntime, incident_id: str, runbook: Runbook, scope: dict[str, Any], node: str = "investigate"
) -> list[StepRecord]:
    """Run the runbook's read steps in its investigate section(s); results saved with ``save_as`` land in
    ``scope["results"]`` for later steps and for the plan."""
    records: list[StepRecord] = []
    ctx = runtime.tool_context(incident_id, reason=f"investigating with runbook {runbook.id}")
    for step in runbook.steps:
        if step.block != "tool" or step.section not in INVESTIGATE_SECTIONS:
            continue
        for names, skipped in _bindings(step, scope):
            if names is None:
                records.append(step_record(node, "tool", step.name, runtime, ok=True, note=f"skipped: {skipped}"))
                continue
            try:
                args = render(step.args, names)
                result = call_tool(step.name, ctx, args)
            except (ToolError, ExpressionError) as error:
                records.append(
                    step_record(node, "tool", step.name, runtime, args=step.args, ok=False, error=str(error))
                )
                continue
            if step.save_as:
                scope.setdefault("results", {})[step.save_as] = result.data
            records.append(
                step_record(node, "tool", step.name, runtime, args=args, ok=True, output=result.content)
            )
    return records


def plan_from_runbook(runbook: Runbook, scope: dict[str, Any]) -> tuple[list[PlannedAction], list[str]]:
    """The runbook's remediation, exactly: each action step whose ``when`` holds, once per ``for_each`` item.

    ``page`` steps are not planned: whether to page is the page policy's call (`agent.paging`), which
    uses the runbook's page step for its wording. Returns (actions, notes on skipped steps).
    """
    planned: list[PlannedAction] = []
    notes: list[str] = []
    for step in runbook.steps:
        if step.block != "action" or step.name == "page" or step.section != "remediate":
            continue  # the parser refuses action blocks elsewhere; this holds if a Runbook is built by hand
        for names, skipped in _bindings(step, scope):
            if names is None:
                notes.append(f"{step.name} (line {step.line}) not planned: {skipped}")
                continue
            try:
                args = render(step.args, names)
            except ExpressionError as error:
                notes.append(f"{step.name} (line {step.line}) not planned: {error.message}")
                continue
            why = f"runbook {runbook.id}, line {step.line}" + (f": when {step.when}" if step.when else "")
            planned.append(
                {"action": step.name, "args": args, "approval": runbook.approval(step.name), "status": "planned", "why": why,
                 "step_line": step.line}
            )
    return planned, notes


def page_arguments(runbook: Runbook | None, scope: dict[str, Any]) -> dict[str, Any] | None:
    """The runbook's own page step, rendered (its wording for the page), if it has one."""
    if runbook is None:
        return None
    for step in runbook.steps:
        if step.block == "action" and step.name == "page":
            for names, _ in _bindings(step, scope):
                if names is not None:
                    try:
                        rendered = render(step.args, names)
                    except ExpressionError:
                        return None
                    return rendered if isinstance(rendered, dict) else None
    return None


def check_arguments(action: str, args: dict[str, Any]) -> str | None:
    """None when ``args`` fit the action's schema, else the problem (what `call_tool` would refuse)."""
    spec = registered_tools().get(action)
    if spec is None:
        return f"unknown action {action!r}"
    if spec.kind != "action":
        return f"{action} is a read tool, not an action"
    try:
        spec.arguments.model_validate(args)
    except ValueError as error:
        return f"bad arguments for {action}: {error}"
    return None


def proposal_problem(runbook: Runbook, action: str, args: dict[str, Any]) -> str | None:
    """Why an action someone else proposed (the model, a person in chat) may not run under ``runbook``.

    None when it may, subject to the runbook's approval policy for it. Paging is never proposed: the page
    decision is made by policy in code. The responder's plan and the chat check proposals with this alike.
    """
    if action == "page":
        return "paging is decided by policy in code"
    if not runbook.allows(action):
        return f"runbook {runbook.id} does not allow {action}; it allows only {sorted(runbook.actions)}"
    problem = check_arguments(action, args)
    return problem[:400] if problem else None
