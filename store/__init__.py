"""The bottom layer: the workspace folder, the one owner of its DuckDB file, and its log writer."""

from store.db import TIME_COLUMNS, Store, where_equal
from store.errors import LogWriteError, LogWriterFull, StoreError, UnknownTableError, WorkspaceBusyError
from store.log_writer import LogWriter
from store.workspace import Workspace

__all__ = [
    "TIME_COLUMNS",
    "LogWriteError",
    "LogWriter",
    "LogWriterFull",
    "Store",
    "StoreError",
    "UnknownTableError",
    "Workspace",
    "WorkspaceBusyError",
    "where_equal",
]
