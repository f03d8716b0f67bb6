"""The agent's tools (read and action), the runbook language and the pagers.

Tools register themselves with the `tool` decorator, built-ins and extensions alike. The built-in tool
modules (`tools.read`, `tools.sql`, `tools.actions`) are imported by `tools.registry.registered_tools()`,
not by importing this package: they pull in the monitor and SciPy, which a command that only reads the
record (``selfheal incidents list``, a report, the web list) does not need. The names below are loaded on
first use (PEP 562) for the same reason.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from store.lazy import lazy_attributes

if TYPE_CHECKING:  # the real names for type checkers ("X as X": re-exported)
    from tools.context import ToolContext as ToolContext
    from tools.context import ToolLimits as ToolLimits
    from tools.errors import ApprovalRequired as ApprovalRequired
    from tools.errors import ToolError as ToolError
    from tools.errors import ToolRefused as ToolRefused
    from tools.errors import ToolRetry as ToolRetry
    from tools.registry import ToolResult as ToolResult
    from tools.registry import ToolSpec as ToolSpec
    from tools.registry import call_tool as call_tool
    from tools.registry import openai_tool_schemas as openai_tool_schemas
    from tools.registry import registered_tools as registered_tools
    from tools.registry import tool as tool

# Where each name lives: loaded from there on first use.
_HOMES = {
    "ApprovalRequired": "tools.errors",
    "ToolContext": "tools.context",
    "ToolError": "tools.errors",
    "ToolLimits": "tools.context",
    "ToolRefused": "tools.errors",
    "ToolResult": "tools.registry",
    "ToolRetry": "tools.errors",
    "ToolSpec": "tools.registry",
    "call_tool": "tools.registry",
    "openai_tool_schemas": "tools.registry",
    "registered_tools": "tools.registry",
    "tool": "tools.registry",
}

__all__ = list(_HOMES)
__getattr__ = lazy_attributes(__name__, _HOMES, globals())
