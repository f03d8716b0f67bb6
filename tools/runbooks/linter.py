"""The runbook linter: reject what cannot run, pointing at the file and line.

Every problem has a code naming its class of mistake:

    syntax                  the file is not front matter + markdown, or a block's YAML is broken
    missing-field           a required front-matter field is absent
    front-matter / step     a value does not fit the front-matter or step grammar
    missing-section         a required body section (when it applies ... escalate) is absent
    unknown-incident-kind   ``triggers.kinds`` names a kind the monitor never raises
    unknown-root-cause      ``root_cause`` is not one of DESIGN 5's
    unknown-check           a trigger or verification names a check the monitor does not run
    unknown-tool            a ``tool`` block names no registered read tool
    unknown-action          an ``action`` block, or ``actions``, names no registered action
    wrong-block             a read tool in an ``action`` block or an action in a ``tool`` block
    action-not-allowed      an ``action`` block uses an action the front matter does not allow
    step-out-of-place       a block in a section it never runs from (actions: Remediate; tools: Investigate)
    bad-arguments           arguments that do not fit the tool's schema
    bad-expression          an expression that does not parse or uses an unknown name
    unsafe-expression       an expression reaching outside the whitelist (calls, private names, ...)
    unknown-evidence-field  ``evidence.x`` where no check behind the runbook's triggers emits ``x``
    unknown-field           ``incident.x``, ``serving.x``, ``model.x`` or ``results.x`` that does not exist
    duplicate-id            two runbooks with one id
    unfilled-template       a ``<FILL IN ...>`` placeholder from ``selfheal runbooks new`` is left
    encoding / unreadable   the file is not UTF-8 text, or cannot be read
    too-large               the file is over ``MAX_RUNBOOK_BYTES`` (pasted logs, or the wrong file)

Tools come from `tools.registry.registered_tools()` (which imports the built-in tool modules first); incident
evidence fields from `EVIDENCE_FIELDS`, which a test keeps equal to what the monitor's checks emit.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from monitor.checks import CHECKS
from monitor.findings import INCIDENT_KINDS
from tools.registry import ToolSpec, registered_tools
from tools.runbooks.expressions import ROOTS, Checked, ExpressionError, check
from tools.runbooks.model import REQUIRED_SECTIONS, Problem, RunbookError
from tools.runbooks.parser import (
    RawStep,
    RunbookDocument,
    build_runbook,
    not_allowed_problem,
    read_document,
    read_runbook_text,
)
from tools.runbooks.scope import NAMESPACE_FIELDS
from tools.runbooks.templates import is_template, template_expressions

PLACEHOLDER = "<FILL IN"

# What every incident's evidence holds (monitor.incidents._evidence), and what updates add.
EVIDENCE_COMMON = frozenset({"check", "metric", "value", "threshold", "features"})
EVIDENCE_ON_UPDATE = frozenset({"peak_value"})
# check -> (incident kind, keys of its Finding.evidence). Kept equal to monitor/checks.py by a test that
# runs every registered check.
EVIDENCE_FIELDS: dict[str, tuple[str, frozenset[str]]] = {
    "schema": ("data_quality", frozenset({"rows_in", "dead_lettered", "reasons"})),
    "feature_quality": ("data_quality", frozenset({"problems", "worst", "rows"})),
    "volume": ("volume", frozenset({"observed", "expected", "drop_share", "sd"})),
    "alert_rate": (
        "prediction_drift",
        frozenset(
            {"alert_rate", "reference_alert_rate", "wilson_low", "wilson_high", "rows", "alerts", "declines"}
        ),
    ),
    "decision_policy": (
        "prediction_drift",
        frozenset(
            {"alert_rate", "reference_alert_rate", "implied", "threshold", "review_threshold",
             "reference_review_threshold", "changed_at", "changed_by", "serving_state_version"}
        ),
    ),
    "model_integrity": ("model_integrity", frozenset({"fallback_rows", "rows"})),
    "latency": (
        "latency",
        frozenset({"latency_p99_ms", "latency_p50_ms", "baseline_p99_ms", "baseline_hours"}),
    ),
    "model_latency": (
        "latency",
        frozenset({"model_ms_per_row", "probe_ms_per_row", "previous_probe_ms_per_row", "model_version"}),
    ),
    "dead_letters": ("error_rate", frozenset({"rows_in", "dead_lettered", "reasons"})),
    "label_freshness": (
        "label_freshness",
        frozenset({"labels_received_24h", "labels_received_before", "transactions_due_labels"}),
    ),
    "data_drift": ("data_drift", frozenset({"drifted", "tested", "ranking"})),
    "score_drift": (
        "prediction_drift",
        frozenset({"n_ref", "n_cur", "stats", "drifted", "p_value", "effect", "top_bins"}),
    ),
    "performance": (
        "performance_decay",
        frozenset(
            {
                "cohort_start",
                "cohort_end",
                "labelled",
                "frauds",
                "caught",
                "recall",
                "precision",
                "reference_recall",
                "reference_precision",
                "z",
                "noise_sd",
            }
        ),
    ),
}


def evidence_fields(kinds: Iterable[str], checks: Iterable[str] = ()) -> frozenset[str]:
    """The evidence fields an incident of these kinds (raised by these checks, if named) can carry."""
    wanted_kinds, wanted_checks = set(kinds), set(checks)
    fields = set(EVIDENCE_COMMON | EVIDENCE_ON_UPDATE)
    for name, (kind, emitted) in EVIDENCE_FIELDS.items():
        if kind in wanted_kinds and (not wanted_checks or name in wanted_checks):
            fields |= emitted
    return frozenset(fields)


def check_kinds() -> dict[str, str]:
    """Registered monitor check -> the incident kind it raises."""
    return {name: EVIDENCE_FIELDS[name][0] if name in EVIDENCE_FIELDS else "" for name in CHECKS}


def load_tools() -> dict[str, ToolSpec]:
    """Every registered tool (built-ins included), as a dict the caller may extend."""
    return dict(registered_tools())


def _strings(value: Any) -> list[str]:
    """The text items of a YAML list (the model reports a value of the wrong shape)."""
    return [item for item in value if isinstance(item, str)] if isinstance(value, list) else []


def _suggest(name: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


@dataclass
class _Context:
    """What one runbook's checks need to know while walking it."""

    document: RunbookDocument
    tools: Mapping[str, ToolSpec]
    kinds: list[str]
    checks: list[str]
    allowed: set[str] | None  # None: the front matter's actions could not be read (already a problem)
    problems: list[Problem]

    def add(self, line: int, message: str, code: str) -> None:
        self.problems.append(Problem(path=self.document.path, line=line, message=message, code=code))


def lint_text(
    text: str, path: str | Path = "<runbook>", tools: Mapping[str, ToolSpec] | None = None
) -> list[Problem]:
    """Every problem in one runbook's text, sorted by line."""
    document = read_document(text, path)
    _, parsed = build_runbook(document)
    # The linter says why an action is not allowed itself: an unknown one is `unknown-action`, not a
    # missing allowlist entry.
    problems = [p for p in parsed if p.code != "action-not-allowed"]
    front = document.front or {}
    raw_triggers = front.get("triggers")
    triggers: dict[str, Any] = raw_triggers if isinstance(raw_triggers, dict) else {}
    actions = front.get("actions")
    ctx = _Context(
        document=document,
        tools=load_tools() if tools is None else tools,
        kinds=[k for k in _strings(triggers.get("kinds")) if k in INCIDENT_KINDS],
        checks=_strings(triggers.get("checks")),
        allowed=set(actions) if isinstance(actions, dict) else None,
        problems=problems,
    )
    if document.front is not None:
        _lint_front(ctx, front, triggers)
        _lint_sections(ctx)
    _lint_steps(ctx)
    for number, line in enumerate(text.splitlines(), start=1):
        if PLACEHOLDER in line:
            ctx.add(
                number, "unfilled template placeholder: replace the <FILL IN ...> text", "unfilled-template"
            )
    # A block of the wrong kind (a read tool in an ``action`` block) is said once, as `wrong-block`: where
    # that kind of block may stand follows from fixing it.
    wrong = {p.line for p in ctx.problems if p.code == "wrong-block"}
    kept = [p for p in ctx.problems if not (p.code == "step-out-of-place" and p.line in wrong)]
    return sorted(set(kept), key=lambda p: (p.line, p.code, p.message))


def _lint_front(ctx: _Context, front: dict[str, Any], triggers: dict[str, Any]) -> None:
    doc = ctx.document
    for name in sorted(ctx.allowed or ()):
        spec = ctx.tools.get(name)
        if spec is None:
            actions = [n for n, s in ctx.tools.items() if s.kind == "action"]
            ctx.add(
                doc.line_of("actions", name),
                f"unknown action {name!r} in actions{_suggest(name, actions)}",
                "unknown-action",
            )
        elif spec.kind != "action":
            ctx.add(
                doc.line_of("actions", name),
                f"{name!r} is a read tool, not an action: list only actions under actions",
                "unknown-action",
            )
    known_checks = check_kinds()
    for index, name in enumerate(ctx.checks):
        line = doc.line_of("triggers", "checks", index)
        if name not in known_checks:
            ctx.add(
                line,
                f"unknown check {name!r} in triggers.checks{_suggest(name, known_checks)}",
                "unknown-check",
            )
        elif (
            ctx.kinds
            and len(ctx.kinds) == len(_strings(triggers.get("kinds")))
            and known_checks[name] not in ctx.kinds
        ):
            ctx.add(
                line,
                f"check {name!r} raises {known_checks[name]} incidents, which triggers.kinds does not list",
                "unknown-check",
            )
    verification = front.get("verification")
    for key in ("check", "while_fallback"):
        verify_with = verification.get(key) if isinstance(verification, dict) else None
        if isinstance(verify_with, str) and verify_with not in known_checks:
            ctx.add(
                doc.line_of("verification", key),
                f"unknown check {verify_with!r} in verification{_suggest(verify_with, known_checks)}",
                "unknown-check",
            )
    if isinstance(triggers.get("when"), str):
        _lint_expression(
            ctx, triggers["when"], doc.line_of("triggers", "when"), ROOTS - {"results", "item"}, saved=set()
        )


def _lint_sections(ctx: _Context) -> None:
    present = {section.key for section in ctx.document.sections}
    for key in REQUIRED_SECTIONS:
        if key not in present:
            ctx.add(
                ctx.document.body_line, f"missing required section '## {key.capitalize()}'", "missing-section"
            )


def _lint_steps(ctx: _Context) -> None:
    saved: set[str] = set()
    for step in ctx.document.steps:
        if step.data is None:
            continue  # its syntax problem is already recorded
        name = step.data.get(step.block)
        if not isinstance(name, str):
            ctx.add(step.line_of(step.block), f"'{step.block}:' must name a {step.block}", "syntax")
            continue
        spec = _lint_step_target(ctx, step, name)
        roots = set(ROOTS) if step.data.get("for_each") is not None else set(ROOTS - {"item"})
        for key in ("when", "for_each"):
            if isinstance(step.data.get(key), str):
                # for_each is evaluated before item exists
                usable = roots - {"item"} if key == "for_each" else roots
                _lint_expression(ctx, step.data[key], step.line_of(key), usable, saved)
        args = step.data.get("args", {})
        if not isinstance(args, dict):
            ctx.add(step.line_of("args"), "args must be a mapping of argument name to value", "bad-arguments")
            args = {}
        for arg, value in args.items():
            try:
                expressions = template_expressions(value)
            except ExpressionError as error:
                ctx.add(step.line_of("args", arg), f"argument {arg!r}: {error.message}", "bad-expression")
                continue
            for expression, _ in expressions:
                _lint_expression(ctx, expression, step.line_of("args", arg), roots, saved)
        if spec is not None:
            _lint_arguments(ctx, step, spec, args)
        if isinstance(step.data.get("save_as"), str):
            if step.data["save_as"] in saved:
                ctx.add(step.line_of("save_as"), f"save_as {step.data['save_as']!r} is used twice", "step")
            saved.add(step.data["save_as"])


def _lint_step_target(ctx: _Context, step: RawStep, name: str) -> ToolSpec | None:
    line = step.line_of(step.block)
    spec = ctx.tools.get(name)
    if spec is None:
        same_kind = [
            n for n, s in ctx.tools.items() if s.kind == ("read" if step.block == "tool" else "action")
        ]
        ctx.add(line, f"unknown {step.block} {name!r}{_suggest(name, same_kind)}", f"unknown-{step.block}")
        return None
    if step.block == "tool" and spec.kind == "action":
        ctx.add(line, f"{name!r} is an action: put it in an ```action block", "wrong-block")
    elif step.block == "action" and spec.kind == "read":
        ctx.add(line, f"{name!r} is a read tool: put it in a ```tool block", "wrong-block")
    if step.block == "action" and spec.kind == "action" and ctx.allowed is not None and name not in ctx.allowed:
        ctx.problems.append(not_allowed_problem(ctx.document.path, step))
    return spec


def _lint_arguments(ctx: _Context, step: RawStep, spec: ToolSpec, args: dict[str, Any]) -> None:
    # Templated values are only known at run time; everything else is validated now, exactly as a call would be.
    literal = {key: value for key, value in args.items() if not is_template(value)}
    templated = set(args) - set(literal)
    accepted = ", ".join(spec.arguments.model_fields) or "no arguments"
    try:
        spec.arguments.model_validate(literal)
    except ValidationError as error:
        for item in error.errors():
            location = item["loc"]
            argument = str(location[0]) if location else ""
            if item["type"] == "missing" and argument in templated:
                continue
            if item["type"] == "missing":
                message = f"{spec.name} needs argument {argument!r} (takes: {accepted})"
                line = step.line_of("args") if "args" in (step.data or {}) else step.line_of(step.block)
            elif item["type"] == "extra_forbidden":
                message = f"{spec.name} takes no argument {argument!r}{_suggest(argument, spec.arguments.model_fields)} (takes: {accepted})"
                line = step.line_of("args", argument)
            else:
                message = f"argument {argument!r} of {spec.name}: {item['msg']}"
                line = step.line_of("args", argument)
            ctx.add(line, message, "bad-arguments")


def _lint_expression(
    ctx: _Context, source: str, line: int, roots: set[str] | frozenset[str], saved: set[str]
) -> Checked | None:
    try:
        checked = check(source, frozenset(roots))
    except ExpressionError as error:
        if not error.unsafe and "unknown name 'item'" in error.message:
            message = "'item' only exists in a step with for_each"
        else:
            message = f"{error.message} (column {error.offset + 1} of {source!r})"
        ctx.add(line, message, "unsafe-expression" if error.unsafe else "bad-expression")
        return None
    for reference in checked.references:
        if reference.field is None:
            continue
        if reference.root == "evidence":
            if ctx.document.front is None:
                continue  # the triggers that say which fields exist could not be read (already a problem)
            fields = evidence_fields(ctx.kinds, ctx.checks)
            if reference.field not in fields:
                kinds = ", ".join(ctx.kinds) or "no kinds"
                if ctx.checks:
                    kinds += f" raised by {', '.join(ctx.checks)}"
                ctx.add(
                    line,
                    f"evidence field {reference.field!r} does not exist for incidents of {kinds}"
                    f"{_suggest(reference.field, fields)}; fields: {', '.join(sorted(fields))}",
                    "unknown-evidence-field",
                )
        elif reference.root in NAMESPACE_FIELDS and reference.field not in NAMESPACE_FIELDS[reference.root]:
            fields = NAMESPACE_FIELDS[reference.root]
            ctx.add(
                line,
                f"{reference.root} has no field {reference.field!r}{_suggest(reference.field, fields)}",
                "unknown-field",
            )
        elif reference.root == "results" and reference.field not in saved:
            ctx.add(
                line, f"results.{reference.field} is not saved by an earlier step (save_as)", "unknown-field"
            )
    return checked


def lint_file(path: Path, tools: Mapping[str, ToolSpec] | None = None) -> list[Problem]:
    """Every problem in one runbook file."""
    try:
        text = read_runbook_text(path)
    except RunbookError as error:
        return error.problems
    return lint_text(text, path, tools)


def runbook_files(paths: Iterable[Path]) -> list[Path]:
    """The runbook files named, with folders expanded to their ``*.md`` (README.md is not a runbook)."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            # A folder named like a runbook (``drafts.md/``) is not one; it used to stop the whole library.
            files += sorted(p for p in path.glob("*.md") if p.name.lower() != "readme.md" and not p.is_dir())
        else:
            files.append(path)
    return files


def lint_paths(paths: Iterable[Path], tools: Mapping[str, ToolSpec] | None = None) -> list[Problem]:
    """Lint runbook files and folders together (so duplicate ids across files are found)."""
    registered = load_tools() if tools is None else tools
    problems: list[Problem] = []
    first_seen: dict[str, tuple[str, int]] = {}
    for path in runbook_files(paths):
        try:
            text = read_runbook_text(path)  # read once: linted, then its id compared with the others'
        except RunbookError as error:
            problems += error.problems
            continue
        problems += lint_text(text, path, registered)
        document = read_document(text, path)
        runbook_id = (document.front or {}).get("id")
        if not isinstance(runbook_id, str):
            continue
        line = document.line_of("id")
        if runbook_id in first_seen:
            other, other_line = first_seen[runbook_id]
            problems.append(
                Problem(
                    path=str(path),
                    line=line,
                    message=f"duplicate id {runbook_id!r}: also used by {other}:{other_line}",
                    code="duplicate-id",
                )
            )
        else:
            first_seen[runbook_id] = (str(path), line)
    return problems
