"""The bottom layer: the workspace folder, the one owner of its DuckDB file, and its log writer.

The names below are loaded on first use (PEP 562): `import store.errors` or `store.schema` must not
import DuckDB, pandas and Arrow, so that ``selfheal --help`` and the commands that never open the
database start in a fraction of a second (`tests/test_cli_startup.py`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from store.lazy import lazy_attributes

if TYPE_CHECKING:  # the real names for type checkers ("X as X": re-exported)
    from store.db import Store as Store
    from store.db import where_equal as where_equal
    from store.errors import LogWriteError as LogWriteError
    from store.errors import LogWriterFull as LogWriterFull
    from store.errors import StoreError as StoreError
    from store.errors import UnknownTableError as UnknownTableError
    from store.errors import WorkspaceBusyError as WorkspaceBusyError
    from store.errors import WorkspaceNotFound as WorkspaceNotFound
    from store.log_writer import LogWriter as LogWriter
    from store.schema import TIME_COLUMNS as TIME_COLUMNS
    from store.workspace import Workspace as Workspace

# Where each name lives: loaded from there on first use.
_HOMES = {
    "TIME_COLUMNS": "store.schema",
    "LogWriteError": "store.errors",
    "LogWriter": "store.log_writer",
    "LogWriterFull": "store.errors",
    "Store": "store.db",
    "StoreError": "store.errors",
    "UnknownTableError": "store.errors",
    "Workspace": "store.workspace",
    "WorkspaceBusyError": "store.errors",
    "WorkspaceNotFound": "store.errors",
    "where_equal": "store.db",
}

__all__ = list(_HOMES)
__getattr__ = lazy_attributes(__name__, _HOMES, globals())
