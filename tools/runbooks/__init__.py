"""Runbooks: markdown files people write and the agent executes (DESIGN 7).

A runbook is YAML front matter (what code must know) plus a markdown body (what people and LLMs read)
whose machine steps are fenced ``tool`` / ``action`` blocks. The grammar is in ``README.md`` next to
this file. ``parse_runbook`` reads one, ``lint_paths`` rejects what cannot run, ``RunbookLibrary``
loads a folder and matches runbooks to incidents, ``evaluate`` runs the safe expression language over
the scope ``build_scope`` builds for an incident.
"""

from tools.runbooks.expressions import ExpressionError, evaluate
from tools.runbooks.expressions import check as check_expression
from tools.runbooks.library import RunbookLibrary, RunbookMatch, SearchHit, default_runbooks_dir
from tools.runbooks.linter import (
    EVIDENCE_FIELDS,
    evidence_fields,
    lint_file,
    lint_paths,
    lint_text,
    load_tools,
    runbook_files,
)
from tools.runbooks.model import (
    REQUIRED_SECTIONS,
    Approval,
    Paging,
    Problem,
    Runbook,
    RunbookError,
    Section,
    Step,
    Triggers,
    Verification,
)
from tools.runbooks.parser import parse_runbook, read_runbook, render_runbook
from tools.runbooks.scope import NAMESPACE_FIELDS, build_scope
from tools.runbooks.skeleton import runbook_template
from tools.runbooks.templates import render

__all__ = [
    "EVIDENCE_FIELDS",
    "NAMESPACE_FIELDS",
    "REQUIRED_SECTIONS",
    "Approval",
    "ExpressionError",
    "Paging",
    "Problem",
    "Runbook",
    "RunbookError",
    "RunbookLibrary",
    "RunbookMatch",
    "SearchHit",
    "Section",
    "Step",
    "Triggers",
    "Verification",
    "build_scope",
    "check_expression",
    "default_runbooks_dir",
    "evaluate",
    "evidence_fields",
    "lint_file",
    "lint_paths",
    "lint_text",
    "load_tools",
    "parse_runbook",
    "read_runbook",
    "render",
    "render_runbook",
    "runbook_files",
    "runbook_template",
]
