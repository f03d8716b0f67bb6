"""Errors raised by the store.

    StoreError
    ├── UnknownTableError      a table name that the schema does not have
    ├── WorkspaceBusyError     another process owns the database file (DESIGN 4: one owner)
    ├── WorkspaceNotFound      a command that only reads or changes a workspace was pointed where there is none
    ├── LogWriteError          logged rows could not be written yet; they are kept, not lost
    └── LogWriterFull          too many rows wait for a write and cannot be set aside: refuse new work
"""

from __future__ import annotations


class StoreError(Exception):
    """Base class for store errors."""


class UnknownTableError(StoreError, ValueError):
    """A table name that the schema does not define."""


class WorkspaceBusyError(StoreError):
    """The database file is held by another process."""


class WorkspaceNotFound(StoreError):
    """No workspace database where a command expected one (a mistyped --home, an unset SELFHEAL_HOME).

    Commands that read or change an existing workspace raise it instead of creating an empty one there,
    which would look like a healthy workspace with nothing in it.
    """


class LogWriteError(StoreError):
    """Writing logged rows failed (a full disk, a value the database cannot hold, ...).

    The rows are kept: staged or in a failed chunk written again (first) by the next flush, or set aside in
    a spill file (see `store.log_writer`). The original error is the ``__cause__``.
    """


class LogWriterFull(StoreError):
    """More log rows wait for a write than the writer keeps in memory, and they cannot be set aside.

    Raised by `LogWriter.check_capacity` *before* new rows are accepted: the caller should refuse new
    work (the service answers 503) until the log can be written again.
    """
