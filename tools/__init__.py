"""The agent's tools (read and action), the runbook language and the pagers.

Importing this package registers every built-in tool in `TOOLS` (read tools, the SQL tool, actions), the
same way an extension registers its own: with the `tool` decorator.
"""

from tools import actions, read, sql
from tools.context import ToolContext, ToolLimits
from tools.errors import ApprovalRequired, ToolError, ToolRefused, ToolRetry
from tools.registry import TOOLS, ToolResult, ToolSpec, call_tool, openai_tool_schemas, tool

__all__ = [
    "TOOLS",
    "ApprovalRequired",
    "ToolContext",
    "ToolError",
    "ToolLimits",
    "ToolRefused",
    "ToolResult",
    "ToolRetry",
    "ToolSpec",
    "actions",
    "call_tool",
    "openai_tool_schemas",
    "read",
    "sql",
    "tool",
]
