"""What can go wrong when the agent (or a person) calls a tool.

    ToolError
    ├── ToolRetry            the caller made a fixable mistake (unknown tool, bad arguments, a refused
    │                        query): tell the model what was wrong so it can try again
    ├── ToolRefused          a rule said no (precondition, rate limit, not allowed by the runbook); final
    │                        for this call, recorded in the audit log when it was an action
    └── ApprovalRequired     the action needs a human's approval before it runs

Anything else raised from a tool is *our* bug and propagates.
"""

from __future__ import annotations


class ToolError(Exception):
    """Base class for tool errors the caller should see."""


class ToolRetry(ToolError):
    """A fixable mistake by the caller: the message says how to fix it."""


class ToolRefused(ToolError):
    """A rule refused the call (precondition, rate limit, allowlist)."""


class ApprovalRequired(ToolError):
    """The action must be approved by a human before it runs."""
