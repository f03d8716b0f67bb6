"""Errors raised by the store.

    StoreError
    ├── UnknownTableError      a table name that the schema does not have
    └── WorkspaceBusyError     another process owns the database file (DESIGN 4: one owner)
"""

from __future__ import annotations


class StoreError(Exception):
    """Base class for store errors."""


class UnknownTableError(StoreError, ValueError):
    """A table name that the schema does not define."""


class WorkspaceBusyError(StoreError):
    """The database file is held by another process."""
