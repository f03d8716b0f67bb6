"""The bottom layer: the workspace folder and the one owner of its DuckDB file."""

from store.db import TIME_COLUMNS, Store
from store.errors import StoreError, UnknownTableError, WorkspaceBusyError
from store.workspace import Workspace

__all__ = ["TIME_COLUMNS", "Store", "StoreError", "UnknownTableError", "Workspace", "WorkspaceBusyError"]
