"""From a runbook's text to its parts, keeping the line of everything so problems can point at it.

`read_document` does the syntax: it splits the YAML front matter from the markdown body, cuts the body
into ``##`` sections and parses every fenced ``tool`` / ``action`` block's YAML, recording the line of
each key. It never raises for a mistake in the file; it records a `Problem`. `parse_runbook` then builds
the pydantic `Runbook` and raises `RunbookError` listing every problem. `render_runbook` writes a
runbook back as text (parse and render round-trip).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from tools.runbooks.model import REQUIRED_SECTIONS, FrontMatter, Problem, Runbook, RunbookError, Section, Step

Path_ = tuple[str | int, ...]
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})\s*([A-Za-z0-9_-]*)[^`]*$")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
STEP_BLOCKS = ("tool", "action")
# Every library load reads every file, and the LLM planner sends matched runbooks whole in its prompt; the
# shipped ones are under 5 KB, so a file past this is pasted logs or the wrong file, refused unread.
MAX_RUNBOOK_BYTES = 256 * 1024


@dataclass
class RawStep:
    """A fenced machine block as written: its YAML data and the line of each key."""

    block: str
    line: int  # the opening fence
    section: str
    data: dict[str, Any] | None
    lines: dict[Path_, int] = field(default_factory=dict)

    def line_of(self, *path: str | int) -> int:
        return _nearest(self.lines, path, self.line)


@dataclass
class RawSection:
    title: str
    key: str | None
    line: int
    lines: list[str] = field(default_factory=list)
    steps: list[RawStep] = field(default_factory=list)


@dataclass
class RunbookDocument:
    """A runbook file cut into parts, with line numbers and the syntax problems found on the way."""

    path: str
    front: dict[str, Any] | None
    front_lines: dict[Path_, int]
    body: str
    body_line: int
    sections: list[RawSection]
    problems: list[Problem]

    def line_of(self, *path: str | int) -> int:
        """The line of a front-matter key (or of its nearest enclosing key)."""
        return _nearest(self.front_lines, path, 1)

    @property
    def steps(self) -> list[RawStep]:
        return [step for section in self.sections for step in section.steps]


def _nearest(lines: dict[Path_, int], path: tuple[str | int, ...], default: int) -> int:
    for end in range(len(path), -1, -1):
        if path[:end] in lines:
            return lines[path[:end]]
    return default


def _yaml_with_lines(text: str, first_line: int) -> tuple[Any, dict[Path_, int]]:
    """Load YAML safely and map every key path to its 1-based line (``first_line`` is the text's line 1)."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    finally:
        loader.dispose()
    lines: dict[Path_, int] = {}

    def walk(current: yaml.Node, path: Path_) -> None:
        if isinstance(current, yaml.MappingNode):
            for key_node, value_node in current.value:
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.start_mark)
                if (*path, key) in lines:
                    # YAML keeps the last value without a word: an approval written twice (human, then
                    # auto) would silently become the later one.
                    first = lines[(*path, key)]
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r} (first on line {first})", key_node.start_mark
                    )
                lines[(*path, key)] = key_node.start_mark.line + first_line
                walk(value_node, (*path, key))
        elif isinstance(current, yaml.SequenceNode):
            for index, item in enumerate(current.value):
                lines[(*path, index)] = item.start_mark.line + first_line
                walk(item, (*path, index))

    if node is not None:
        lines[()] = node.start_mark.line + first_line
        walk(node, ())
    return data, lines


def _yaml_problem(path: str, error: yaml.YAMLError, first_line: int, what: str) -> Problem:
    mark = getattr(error, "problem_mark", None)
    line = first_line + (mark.line if mark is not None else 0)
    reason = getattr(error, "problem", None) or str(error).splitlines()[0]
    return Problem(path=path, line=line, message=f"invalid YAML in {what}: {reason}", code="syntax")


def section_key(title: str) -> str | None:
    """Which required section a ``##`` heading opens (``"Remediate (quick)"`` -> ``"remediate"``)."""
    normal = " ".join(re.sub(r"[^a-z0-9 ]+", " ", title.lower()).split())
    return next((key for key in REQUIRED_SECTIONS if normal.startswith(key)), None)


def read_document(text: str, path: str | Path = "<runbook>") -> RunbookDocument:
    """Cut a runbook's text into front matter, sections and steps; syntax problems are recorded, not raised."""
    name = str(path)
    problems: list[Problem] = []
    lines = text.splitlines()
    front: dict[str, Any] | None = None
    front_lines: dict[Path_, int] = {}
    body_start = 0
    if not lines or lines[0].strip() != "---":
        problems.append(
            Problem(
                path=name,
                line=1,
                message="no YAML front matter: the file must start with '---'",
                code="syntax",
            )
        )
    else:
        end = next((i for i in range(1, len(lines)) if lines[i].strip() in ("---", "...")), None)
        if end is None:
            problems.append(
                Problem(
                    path=name, line=1, message="front matter is not closed by a '---' line", code="syntax"
                )
            )
            body_start = len(lines)
        else:
            body_start = end + 1
            try:
                data, front_lines = _yaml_with_lines("\n".join(lines[1:end]), first_line=2)
            except yaml.YAMLError as error:
                problems.append(_yaml_problem(name, error, 2, "front matter"))
            else:
                if isinstance(data, dict):
                    front = data
                else:
                    problems.append(
                        Problem(
                            path=name, line=2, message="front matter must be a YAML mapping", code="syntax"
                        )
                    )
    sections = _read_body(name, lines, body_start, problems)
    return RunbookDocument(
        path=name,
        front=front,
        front_lines=front_lines,
        body="\n".join(lines[body_start:]),
        body_line=body_start + 1,
        sections=sections,
        problems=problems,
    )


def _read_body(name: str, lines: list[str], start: int, problems: list[Problem]) -> list[RawSection]:
    sections = [RawSection(title="", key=None, line=start + 1)]
    index = start
    while index < len(lines):
        line = lines[index]
        fence = _FENCE.match(line)
        if fence:
            marker, info = fence.group(1), fence.group(2).lower()
            close = next(
                (j for j in range(index + 1, len(lines)) if lines[j].strip().startswith(marker[0] * len(marker))
                 and set(lines[j].strip()) == {marker[0]}),
                None,
            )  # fmt: skip
            if close is None:
                problems.append(
                    Problem(path=name, line=index + 1, message="code block is never closed", code="syntax")
                )
                close = len(lines)
            sections[-1].lines.extend(lines[index : close + 1])
            if info in STEP_BLOCKS:
                sections[-1].steps.append(
                    _read_step(name, info, lines[index + 1 : close], index + 1, sections[-1], problems)
                )
            index = close + 1
            continue
        heading = _HEADING.match(line)
        if heading and len(heading.group(1)) == 2:
            title = heading.group(2)
            sections.append(RawSection(title=title, key=section_key(title), line=index + 1, lines=[line]))
        else:
            sections[-1].lines.append(line)
        index += 1
    if not sections[0].lines and not sections[0].steps:
        sections.pop(0)
    return sections


def _read_step(
    name: str, block: str, content: list[str], fence_line: int, section: RawSection, problems: list[Problem]
) -> RawStep:
    step = RawStep(block=block, line=fence_line, section=section.key or section.title, data=None)
    try:
        data, step.lines = _yaml_with_lines("\n".join(content), first_line=fence_line + 1)
    except yaml.YAMLError as error:
        problems.append(_yaml_problem(name, error, fence_line + 1, f"{block} block"))
        return step
    if not isinstance(data, dict):
        problems.append(
            Problem(
                path=name,
                line=fence_line,
                message=f"a {block} block must be a YAML mapping with a '{block}:' key",
                code="syntax",
            )
        )
        return step
    if block not in data:
        other = next((b for b in STEP_BLOCKS if b in data), None)
        hint = f" (this block says '{other}:'; fence it as ```{other})" if other else ""
        problems.append(
            Problem(
                path=name,
                line=fence_line,
                message=f"a {block} block must name its {block} with '{block}:'{hint}",
                code="syntax",
            )
        )
        return step
    step.data = data
    return step


def build_step(raw: RawStep) -> Step:
    """The pydantic `Step` of a syntactically valid block.

    Raises:
        pydantic.ValidationError: Its keys or values do not fit the step grammar.
    """
    data = dict(raw.data or {})
    name = data.pop(raw.block)
    return Step.model_validate(
        {"block": raw.block, "name": name, **data, "section": raw.section, "line": raw.line}
    )


def validation_problems(
    error: ValidationError, path: str, line_of: Any, prefix: Path_ = (), code: str = "front-matter"
) -> list[Problem]:
    """Pydantic errors as problems pointing at the line of the offending key."""
    problems = []
    for item in error.errors():
        location = tuple(item["loc"])
        where = ".".join(map(str, (*prefix, *location)))
        kind = item["type"]
        if kind == "missing":
            message, problem_code = f"missing required field '{where}'", "missing-field"
            line = line_of(*prefix, *location[:-1])
        else:
            message = f"{where}: {item['msg']}" if where else str(item["msg"])
            problem_code = (
                kind.replace("_", "-") if kind in ("unknown_incident_kind", "unknown_root_cause") else code
            )
            line = line_of(*prefix, *location)
        problems.append(Problem(path=path, line=line, message=message, code=problem_code))
    return problems


def not_allowed_problem(path: str, raw: RawStep) -> Problem:
    """The problem of an ``action`` step whose action the front matter's ``actions`` do not list."""
    return Problem(
        path=path,
        line=raw.line_of(raw.block),
        message=f"action {raw.data.get(raw.block) if raw.data else None!r} is used but not allowed: "
        "add it to the front matter's actions",
        code="action-not-allowed",
    )


# Where each kind of step runs: read steps while investigating, actions when remediating, the page's wording
# in Remediate or Escalate. A block anywhere else (an example in "When it applies", say) is never run,
# and used to be: the planner took every action block, whatever its section.
STEP_SECTIONS: dict[str, tuple[str, ...]] = {"tool": ("investigate",), "action": ("remediate",), "page": ("remediate", "escalate")}


def misplaced_problem(path: str, raw: RawStep, section: RawSection) -> Problem | None:
    """The problem of a machine block in a section its kind does not run from, else None."""
    kind = "page" if raw.block == "action" and raw.data is not None and raw.data.get("action") == "page" else raw.block
    allowed = STEP_SECTIONS.get(kind, ())
    if section.key in allowed:
        return None
    where = " or ".join(f"'## {name.capitalize()}'" for name in allowed)
    return Problem(
        path=path,
        line=raw.line_of(raw.block),
        message=f"{'an' if raw.block == 'action' else 'a'} {raw.block} block in '{section.title}' would never "
        f"run: {kind} steps run from {where} only (show an example as a ```yaml block instead)",
        code="step-out-of-place",
    )


def build_runbook(document: RunbookDocument) -> tuple[Runbook | None, list[Problem]]:
    """The `Runbook` of a document, or None, with every syntax and validation problem found."""
    problems = list(document.problems)
    front: FrontMatter | None = None
    if document.front is not None:
        try:
            front = FrontMatter.model_validate(document.front)
        except ValidationError as error:
            problems += validation_problems(error, document.path, document.line_of)
    sections: list[Section] = []
    for raw_section in document.sections:
        steps: list[Step] = []
        for raw in raw_section.steps:
            if raw.data is None:
                continue
            if front is not None and raw.block == "action" and raw.data.get("action") not in front.actions:
                # The front matter's actions are the only ones the runbook may take: a step outside them
                # must not load (the planner would find no approval policy for it).
                problems.append(not_allowed_problem(document.path, raw))
            if (misplaced := misplaced_problem(document.path, raw, raw_section)) is not None:
                problems.append(misplaced)
            try:
                steps.append(build_step(raw))
            except ValidationError as error:
                problems += validation_problems(error, document.path, raw.line_of, code="step")
        sections.append(
            Section(
                title=raw_section.title,
                key=raw_section.key,
                line=raw_section.line,
                text="\n".join(raw_section.lines),
                steps=steps,
            )
        )
    if front is None or problems:
        return None, problems
    runbook = Runbook(
        **front.model_dump(),
        sections=sections,
        body=document.body,
        path=None if document.path.startswith("<") else Path(document.path),
    )
    return runbook, problems


def parse_runbook(text: str, path: str | Path = "<runbook>") -> Runbook:
    """Parse a runbook's text.

    Raises:
        RunbookError: The file is not a well-formed runbook (syntax, or front matter that does not fit).
    """
    runbook, problems = build_runbook(read_document(text, path))
    if runbook is None:
        raise RunbookError(problems)
    return runbook


def read_runbook_text(path: Path) -> str:
    """A runbook file's text (a UTF-8 byte order mark, as Windows editors write it, is dropped).

    Raises:
        RunbookError: the file is too large, not UTF-8 text, or cannot be read.
    """
    try:
        size = path.stat().st_size
        if size > MAX_RUNBOOK_BYTES:
            message = f"{size} bytes, over the {MAX_RUNBOOK_BYTES} a runbook may have: is it the right file?"
            raise RunbookError([Problem(path=str(path), line=0, message=message, code="too-large")])
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        problem = Problem(path=str(path), line=1, message=f"not UTF-8 text (byte {error.start}): save it as UTF-8", code="encoding")
    except OSError as error:
        problem = Problem(path=str(path), line=0, message=f"cannot read: {error.strerror or error}", code="unreadable")
    raise RunbookError([problem])


def read_runbook(path: Path) -> Runbook:
    """Parse a runbook file (see `parse_runbook`)."""
    return parse_runbook(read_runbook_text(path), path)


def render_runbook(runbook: Runbook) -> str:
    """A runbook as text: its front matter as YAML, then its body unchanged."""
    front = yaml.safe_dump(runbook.front_matter(), sort_keys=False, allow_unicode=True, width=100)
    return f"---\n{front}---\n{runbook.body}\n"
