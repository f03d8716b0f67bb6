"""A folder of runbooks: load them, find one by id, search their text, match them to an incident."""

from __future__ import annotations

import difflib
import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tools.runbooks.expressions import ExpressionError, evaluate
from tools.runbooks.linter import runbook_files
from tools.runbooks.model import Problem, Runbook, RunbookError
from tools.runbooks.parser import read_runbook

# The shipped runbooks live at the repository root, next to the packages (built-ins are just files).
SHIPPED_RUNBOOKS = Path(__file__).resolve().parents[2] / "runbooks"
_WORD = re.compile(r"[a-z0-9]+")


def default_runbooks_dir() -> Path:
    """``$SELFHEAL_RUNBOOKS`` if set, else the shipped ``runbooks/`` folder."""
    configured = os.environ.get("SELFHEAL_RUNBOOKS")
    return Path(configured) if configured else SHIPPED_RUNBOOKS


@dataclass(frozen=True)
class RunbookMatch:
    """A runbook that applies to an incident, how well, and why."""

    runbook: Runbook
    score: float
    reasons: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SearchHit:
    """A runbook found by text search, with the line that matched best."""

    runbook: Runbook
    score: float
    snippet: str


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


class RunbookLibrary:
    """Runbooks by id. Built-in and user runbooks are the same: files in a folder."""

    def __init__(self, runbooks: Iterable[Runbook]) -> None:
        """Index runbooks by id.

        Raises:
            RunbookError: Two runbooks share an id (one problem per repeat, code ``duplicate-id``).
        """
        self._runbooks: dict[str, Runbook] = {}
        repeats: list[Problem] = []
        for runbook in runbooks:
            if runbook.id in self._runbooks:
                message = f"duplicate id {runbook.id!r}: also used by {self._runbooks[runbook.id].path}"
                repeats.append(Problem(path=str(runbook.path), line=0, message=message, code="duplicate-id"))
            else:
                self._runbooks[runbook.id] = runbook
        if repeats:
            raise RunbookError(repeats)

    @classmethod
    def load(cls, folder: Path | None = None) -> RunbookLibrary:
        """Parse every runbook in a folder (default: `default_runbooks_dir`).

        Raises:
            RunbookError: Some file is not a well-formed runbook (all problems of all files are listed).
        """
        where = folder or default_runbooks_dir()
        if not where.is_dir():
            raise RunbookError([Problem(path=str(where), line=0, message="no such runbook folder", code="not-found")])
        problems: list[Problem] = []
        runbooks: list[Runbook] = []
        for path in runbook_files([where]):
            try:
                runbooks.append(read_runbook(path))
            except RunbookError as error:
                problems += error.problems
        if problems:
            raise RunbookError(problems)
        return cls(runbooks)

    def __iter__(self) -> Iterator[Runbook]:
        return iter(sorted(self._runbooks.values(), key=lambda r: r.id))

    def __len__(self) -> int:
        return len(self._runbooks)

    def __contains__(self, runbook_id: object) -> bool:
        return runbook_id in self._runbooks

    def ids(self) -> list[str]:
        return sorted(self._runbooks)

    def get(self, runbook_id: str) -> Runbook:
        """The runbook with this id.

        Raises:
            KeyError: No such runbook (the message suggests the closest id).
        """
        if runbook_id not in self._runbooks:
            close = difflib.get_close_matches(runbook_id, self.ids(), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; runbooks: {', '.join(self.ids())}"
            raise KeyError(f"no runbook {runbook_id!r}{hint}")
        return self._runbooks[runbook_id]

    def for_root_cause(self, root_cause: str) -> list[Runbook]:
        return [r for r in self if r.root_cause == root_cause]

    def search(self, text: str, limit: int = 5) -> list[SearchHit]:
        """Runbooks ranked by how well their id, title, triggers and body match the words of ``text``.

        Words in the id, title or root cause count three times, trigger kinds and checks twice, the body
        once per line they appear on (dampened, so one long runbook does not win by length).
        """
        query = set(_words(text))
        if not query:
            return []
        hits: list[SearchHit] = []
        for runbook in self:
            heading = set(_words(f"{runbook.id} {runbook.title} {runbook.root_cause}"))
            triggers = set(_words(" ".join([*runbook.triggers.kinds, *runbook.triggers.checks])))
            lines = [line for line in runbook.body.splitlines() if line.strip()]
            per_line = [len(query & set(_words(line))) for line in lines]
            body = sum(per_line)
            score = 3 * len(query & heading) + 2 * len(query & triggers) + math.log1p(body)
            if score <= 0:
                continue
            best = max(range(len(lines)), key=lambda i: per_line[i], default=None)
            snippet = lines[best].strip() if best is not None and per_line[best] else runbook.title
            hits.append(SearchHit(runbook, round(score, 3), snippet[:200]))
        return sorted(hits, key=lambda h: (-h.score, h.runbook.id))[:limit]

    def match(self, kind: str, scope: Mapping[str, Any] | None = None) -> list[RunbookMatch]:
        """Runbooks that apply to an incident of ``kind``, best first.

        A runbook applies when it triggers on the kind; naming the check that raised the incident
        (``evidence.check``) and a trigger condition that holds make it more specific. A runbook whose
        condition is false is left out; one whose condition cannot be evaluated (a field this incident
        lacks) stays in, ranked lower, with the reason -- a planner can still read it.

        Args:
            kind: The incident kind.
            scope: The expression names (`tools.runbooks.build_scope`); at least ``evidence``.
        """
        names = dict(scope or {})
        evidence = names.setdefault("evidence", {})
        raised_by = evidence.get("check") if isinstance(evidence, Mapping) else None
        matches: list[RunbookMatch] = []
        for runbook in self:
            triggers = runbook.triggers
            if kind not in triggers.kinds:
                continue
            score, reasons = 1.0, [f"triggers on {kind}"]
            if triggers.checks:
                if raised_by in triggers.checks:
                    score, reasons = score + 2, [*reasons, f"raised by check {raised_by}"]
                elif raised_by is not None:
                    continue
            if triggers.when:
                try:
                    holds = bool(evaluate(triggers.when, names))
                except ExpressionError as error:
                    score, reasons = score - 0.5, [*reasons, f"condition not evaluated: {error.message}"]
                else:
                    if not holds:
                        continue
                    score, reasons = score + 2, [*reasons, f"condition holds: {triggers.when}"]
            matches.append(RunbookMatch(runbook, score, reasons))
        return sorted(matches, key=lambda m: (-m.score, m.runbook.id))
