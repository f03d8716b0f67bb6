"""One registry of tools: plain typed functions whose JSON schemas come from their signatures.

A tool is a function ``(ctx: ToolContext, arg: T, ...) -> JSON-able`` with a Google docstring. `tool(...)`
registers it with its kind (``read`` or ``action``) and risk class, builds a pydantic model of its
arguments (so calls are validated exactly as the schema says) and takes the parameter descriptions from
the docstring's ``Args:`` section. The agent sees `openai_tool_schemas()`; a snapshot test shows any change
to what the model sees.

Tool output is bounded (`MAX_OUTPUT_CHARS`) and says when it was cut.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final, Literal, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from tools.errors import ToolRetry

ToolKind = Literal["read", "action"]
Risk = Literal["none", "low", "medium", "high"]
MAX_OUTPUT_CHARS = 8_000


@dataclass(frozen=True)
class ToolSpec:
    """A registered tool."""

    name: str
    kind: ToolKind
    risk: Risk
    function: Callable[..., Any]
    description: str
    arguments: type[BaseModel]

    def json_schema(self) -> dict[str, Any]:
        schema = self.arguments.model_json_schema()
        schema.pop("title", None)
        return schema

    def openai_schema(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.json_schema()},
        }


# Every tool registered so far. Read it through `registered_tools()`, which first imports the built-in tool
# modules: importing `tools` alone registers nothing, so commands that never call a tool (listing
# incidents, reading a report) do not load the monitor, SciPy and the action code behind the tools.
_TOOLS: dict[str, ToolSpec] = {}
BUILTIN_TOOL_MODULES: Final = ("tools.read", "tools.sql", "tools.actions")


def registered_tools() -> Mapping[str, ToolSpec]:
    """Every tool: the built-ins (imported here on first use) and any extension imported before."""
    for module in BUILTIN_TOOL_MODULES:
        importlib.import_module(module)  # a dictionary lookup once imported
    return MappingProxyType(_TOOLS)


def tool(kind: ToolKind, risk: Risk) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a tool function (built-ins and extensions use the same door)."""

    def register(function: Callable[..., Any]) -> Callable[..., Any]:
        spec = _spec(function, kind, risk)
        if spec.name in _TOOLS:
            raise ValueError(f"tool {spec.name} is registered twice")
        _TOOLS[spec.name] = spec
        return function

    return register


def _spec(function: Callable[..., Any], kind: ToolKind, risk: Risk) -> ToolSpec:
    doc = inspect.getdoc(function) or ""
    if not doc:
        raise ValueError(f"tool {function.__name__} needs a docstring: it is what the model reads")
    summary, arg_docs = _parse_google_docstring(doc)
    hints = get_type_hints(function)
    fields: dict[str, Any] = {}
    parameters = list(inspect.signature(function).parameters.values())[1:]  # the first is the context
    for parameter in parameters:
        if parameter.name not in arg_docs:
            raise ValueError(f"tool {function.__name__}: document argument {parameter.name!r} under Args:")
        default = ... if parameter.default is inspect.Parameter.empty else parameter.default
        fields[parameter.name] = (hints[parameter.name], Field(default, description=arg_docs[parameter.name]))
    model = create_model(  # type: ignore[call-overload]
        f"{function.__name__}_arguments", __config__=ConfigDict(extra="forbid"), **fields
    )
    return ToolSpec(function.__name__, kind, risk, function, summary, model)


def _parse_google_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """(description without the Args/Returns sections, {argument: description})."""
    sections = re.split(r"\n(?=(?:Args|Returns|Raises|Example|Examples):\s*\n)", doc)
    description = sections[0].strip()
    args: dict[str, str] = {}
    for section in sections[1:]:
        if not section.startswith("Args:"):
            continue
        current = None
        for line in section.splitlines()[1:]:
            match = re.match(r"^\s{4}(\w+)(?:\s*\([^)]*\))?:\s*(.*)$", line)
            if match:
                current = match.group(1)
                args[current] = match.group(2).strip()
            elif current and line.strip():
                args[current] += " " + line.strip()
    return description, args


@dataclass(frozen=True)
class ToolResult:
    """What a tool call returned, as the text the model sees."""

    name: str
    content: str
    truncated: bool
    data: Any


def call_tool(name: str, ctx: Any, arguments: dict[str, Any] | str | None) -> ToolResult:
    """Validate the arguments against the tool's schema and run it.

    Raises:
        ToolRetry: unknown tool or arguments that do not fit the schema (the model can fix these).
        ToolRefused / ApprovalRequired: from the tool itself.
    """
    tools = registered_tools()
    spec = tools.get(name)
    if spec is None:
        raise ToolRetry(f"unknown tool {name!r}; available: {', '.join(sorted(tools))}")
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as error:
            raise ToolRetry(f"arguments for {name} are not valid JSON: {error.msg}") from error
    if not isinstance(arguments, dict):
        raise ToolRetry(f"arguments for {name} must be a JSON object")
    try:
        parsed = spec.arguments.model_validate(arguments)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'arguments'}: {e['msg']}" for e in error.errors())
        raise ToolRetry(f"bad arguments for {name}: {problems}") from error
    data = spec.function(ctx, **{k: getattr(parsed, k) for k in type(parsed).model_fields})
    content, truncated = bounded_json(data)
    return ToolResult(name=name, content=content, truncated=truncated, data=data)


def bounded_json(data: Any, limit: int = MAX_OUTPUT_CHARS) -> tuple[str, bool]:
    """JSON text of a tool's output, cut to ``limit`` characters with a note saying so."""
    text = json.dumps(data, default=str, ensure_ascii=False)
    if len(text) <= limit:
        return text, False
    return text[:limit] + f' ... [output cut: {len(text):,} characters in all; ask for less]', True


def openai_tool_schemas(names: list[str] | None = None) -> list[dict[str, Any]]:
    """The function-calling schemas of the tools (all, or the named ones), in name order."""
    tools = registered_tools()
    chosen = sorted(tools) if names is None else names
    return [tools[name].openai_schema() for name in chosen]
