"""The one owner of the workspace's DuckDB file.

A `Store` holds the only read-write connection to the file (DuckDB allows one writing process; DESIGN 4),
applies migrations on open, and appends pandas frames in batches (a single-row INSERT into a file runs at
a few hundred rows per second, a registered frame at hundreds of thousands). All access goes through a
lock so threads in one process (the service) can share it.
"""

from __future__ import annotations

import contextlib
import shutil
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa

from store.errors import UnknownTableError, WorkspaceBusyError
from store.schema import MIGRATIONS, TIME_COLUMNS
from store.workspace import Workspace


class Store:
    """One DuckDB connection, migrations, batched appends, queries and Parquet export."""

    def __init__(self, path: str | Path, *, extensions_dir: Path | None = None) -> None:
        self.path = Path(path)
        config: dict[str, Any] = {}
        if extensions_dir is not None:
            extensions_dir.mkdir(parents=True, exist_ok=True)
            config["extension_directory"] = str(extensions_dir)
            # Never fetch extensions at run time; parquet and json are built in.
            config["autoinstall_known_extensions"] = False
            config["autoload_known_extensions"] = False
        try:
            self._con = duckdb.connect(str(self.path), config=config)
        except duckdb.IOException as error:
            if "lock" in str(error).lower():
                raise WorkspaceBusyError(
                    f"{self.path} is held by another process (a running `selfheal serve`?): "
                    "stop it, or talk to it over its HTTP API"
                ) from error
            raise
        self._lock = threading.RLock()
        self._columns: dict[str, list[str]] = {}
        self._arrow_schemas: dict[str, pa.Schema] = {}
        self.migrate()

    @classmethod
    def open(cls, workspace: Workspace) -> Store:
        """Open (creating if needed) the database of a workspace."""
        workspace.ensure()
        return cls(workspace.db_path, extensions_dir=workspace.extensions_dir)

    @classmethod
    def in_memory(cls) -> Store:
        """A throwaway store (tests, dry runs)."""
        return cls(":memory:")

    def close(self) -> None:
        with self._lock:
            self._con.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- schema ---------------------------------------------------------------------------------

    def migrate(self) -> int:
        """Apply pending migrations; returns the schema version."""
        with self._lock:
            self._con.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(version INTEGER PRIMARY KEY, description VARCHAR, applied_at TIMESTAMP)"
            )
            applied = {row[0] for row in self._con.execute("SELECT version FROM schema_migrations").fetchall()}
            for migration in MIGRATIONS:
                if migration.version in applied:
                    continue
                self._con.execute("BEGIN TRANSACTION")
                try:
                    self._con.execute(migration.sql)
                    self._con.execute(
                        "INSERT INTO schema_migrations VALUES (?, ?, now())",
                        [migration.version, migration.description],
                    )
                    self._con.execute("COMMIT")
                except Exception:
                    self._con.execute("ROLLBACK")
                    raise
            self._columns.clear()
            self._arrow_schemas.clear()
            return self.schema_version()

    def schema_version(self) -> int:
        with self._lock:
            row = self._con.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()
        return int(row[0]) if row else 0

    def tables(self) -> list[str]:
        with self._lock:
            rows = self._con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' ORDER BY 1"
            ).fetchall()
        return [r[0] for r in rows]

    def columns(self, table: str) -> list[str]:
        """Column names of a table, in order (cached)."""
        if table not in self._columns:
            with self._lock:
                rows = self._con.execute(
                    "SELECT column_name FROM information_schema.columns WHERE table_name = ? ORDER BY ordinal_position",
                    [table],
                ).fetchall()
            if not rows:
                raise UnknownTableError(f"unknown table {table!r}; tables: {', '.join(self.tables())}")
            self._columns[table] = [r[0] for r in rows]
        return self._columns[table]

    def arrow_schema(self, table: str) -> pa.Schema:
        """The Arrow types a table's columns take without a cast (cached): what `LogWriter` converts to.

        Columns of a type with no plain Arrow twin (lists, for instance) are left out; an Arrow table
        holding them is inserted as it is and DuckDB casts it.
        """
        if table not in self._arrow_schemas:
            self.columns(table)  # validates the name
            with self._lock:
                rows = self._con.execute(
                    "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = ? "
                    "ORDER BY ordinal_position",
                    [table],
                ).fetchall()
            fields = [pa.field(name, _ARROW_TYPES[kind]) for name, kind in rows if kind in _ARROW_TYPES]
            self._arrow_schemas[table] = pa.schema(fields)
        return self._arrow_schemas[table]

    # -- reads and writes -----------------------------------------------------------------------

    def append(self, table: str, frame: pd.DataFrame | pa.Table) -> int:
        """Insert a frame's (or an Arrow table's) rows in one statement; absent columns become NULL.

        Arrow tables whose columns already have the table's types (`arrow_schema`) are the cheapest input:
        DuckDB scans them without converting Python objects and without holding the GIL.

        Returns the number of rows written.
        """
        names = list(frame.column_names) if isinstance(frame, pa.Table) else [str(c) for c in frame.columns]
        rows = frame.num_rows if isinstance(frame, pa.Table) else len(frame)
        if rows == 0:
            return 0
        columns = self.columns(table)
        unknown = set(names) - set(columns)
        if unknown:
            raise ValueError(f"columns not in table {table}: {sorted(unknown)}")
        present = [c for c in columns if c in names]
        select = ", ".join(f'"{c}"' for c in present)
        if names != present:  # the frame's own column order, or extra copies of the frame, do not matter
            frame = frame.select(present) if isinstance(frame, pa.Table) else frame[present]
        with self._lock:
            self._con.register("_append_frame", frame)
            try:
                self._con.execute(f'INSERT INTO "{table}" ({select}) SELECT {select} FROM _append_frame')
            except BaseException:
                # Inside a transaction the failed INSERT aborted it, and unregistering would raise "current
                # transaction is aborted", hiding the real error (a NOT NULL column, say). The stale name is
                # replaced by the next register.
                with contextlib.suppress(duckdb.Error):
                    self._con.unregister("_append_frame")
                raise
            self._con.unregister("_append_frame")
        return rows

    def query(self, sql: str, params: Sequence[Any] | None = None) -> pd.DataFrame:
        """Run a query and return its result as a frame."""
        with self._lock:
            return self._con.execute(sql, params or []).df()

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        """Run a statement and return its rows (if any)."""
        with self._lock:
            cursor = self._con.execute(sql, params or [])
            try:
                return cursor.fetchall()
            except duckdb.InvalidInputException:  # statements without a result set
                return []

    def scalar(self, sql: str, params: Sequence[Any] | None = None) -> Any:
        rows = self.execute(sql, params)
        return rows[0][0] if rows else None

    @contextmanager
    def transaction(self) -> Iterator[Store]:
        """All statements inside commit together or not at all."""
        with self._lock:
            self._con.execute("BEGIN TRANSACTION")
            try:
                yield self
            except BaseException:
                self._con.execute("ROLLBACK")
                raise
            self._con.execute("COMMIT")

    @contextmanager
    def threads(self, n: int | None) -> Iterator[Store]:
        """Hold the lock and run DuckDB's statements on ``n`` worker threads inside (None: as configured).

        DuckDB parallelises a large INSERT over all cores by default; a background log write that does so
        competes with the scoring thread for the same two cores (measured: ~30 % less end-to-end
        throughput). The previous setting is restored afterwards.
        """
        with self._lock:
            if n is None:
                yield self
                return
            row = self._con.execute("SELECT current_setting('threads')").fetchone()
            self._con.execute(f"SET threads = {int(n)}")
            try:
                yield self
            finally:
                self._con.execute(f"SET threads = {int(row[0]) if row else 1}")

    def count(self, table: str) -> int:
        self.columns(table)  # validates the name
        return int(self.scalar(f'SELECT count(*) FROM "{table}"'))

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A separate cursor on the same database (for read tools that set their own limits)."""
        with self._lock:
            return self._con.cursor()

    # -- export ---------------------------------------------------------------------------------

    def export(
        self,
        table: str,
        out: str | Path,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        by_day: bool = False,
    ) -> int:
        """Write a table's rows with time in [since, until) to a Parquet file; returns the row count.

        With ``by_day``, ``out`` is a folder of Hive partitions, ``day=YYYY-MM-DD/`` (DESIGN 10: what
        DuckDB, Spark and Trino read alike). Whole days are exported (``since`` is taken back to its
        midnight, ``until`` on to the next one), and each replaces that day's partition already in the
        folder, and no other: a daily export of yesterday, or a re-export of a week, never doubles a row
        nor keeps half a day. The days are written to a staging folder beside ``out`` (not in it, where a
        reader's glob would see it) and swapped in by renames.
        """
        if by_day:
            return self._export_by_day(table, Path(out), since=since, until=until)
        clause, params, order = self._export_filter(table, since, until)
        out_path = Path(out)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            return self._copy(f"SELECT * FROM \"{table}\"{clause}{order}", out_path, "", params)

    def _export_by_day(self, table: str, folder: Path, *, since: datetime | None, until: datetime | None) -> int:
        time_column = TIME_COLUMNS.get(table)
        if time_column is None:
            raise ValueError(f"table {table} has no time column to partition by day")
        since = None if since is None else pd.Timestamp(since).floor("D").to_pydatetime()
        if until is not None and pd.Timestamp(until) != pd.Timestamp(until).floor("D"):
            until = (pd.Timestamp(until).floor("D") + pd.Timedelta(days=1)).to_pydatetime()
        clause, params, order = self._export_filter(table, since, until)
        folder.mkdir(parents=True, exist_ok=True)
        staging = folder.parent / f".{folder.name}.staging-{uuid.uuid4().hex[:12]}"
        try:
            with self._lock:
                rows = self._copy(
                    f'SELECT *, CAST("{time_column}" AS DATE) AS day FROM "{table}"{clause}{order}',
                    staging, ", PARTITION_BY (day)", params,
                )  # fmt: skip
            for day in sorted(staging.glob("day=*")) if staging.exists() else []:
                _swap_in(day, folder / day.name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return rows

    def _copy(self, select: str, out: Path, options: str, params: list[Any]) -> int:
        """``COPY (select) TO out`` as Parquet; the rows written, as COPY itself reports them. (Its result
        is read to the end: DuckDB 2 refuses the connection's next `register` while one is left open.)"""
        written = self._con.execute(
            f"COPY ({select}) TO '{_sql_string(str(out))}' (FORMAT parquet{options})", params
        ).fetchall()
        return int(written[0][0]) if written else 0

    def _export_filter(
        self, table: str, since: datetime | None, until: datetime | None
    ) -> tuple[str, list[Any], str]:
        """(WHERE clause, its parameters, ORDER BY clause) of an export of [since, until)."""
        self.columns(table)
        time_column = TIME_COLUMNS.get(table)
        where, params = [], []
        if since is not None or until is not None:
            if time_column is None:
                raise ValueError(f"table {table} has no time column to filter on")
            if since is not None:
                where.append(f'"{time_column}" >= ?')
                params.append(since)
            if until is not None:
                where.append(f'"{time_column}" < ?')
                params.append(until)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        order = f' ORDER BY "{time_column}"' if time_column else ""
        return clause, params, order


def _swap_in(staged: Path, target: Path) -> None:
    """Put a staged partition where ``target`` is, replacing it whole.

    The old partition is first moved beside the staging folder (outside the exported folder, where a
    reader's glob does not look); if the second rename fails it is moved back, so a day is never missing.
    """
    old = staged.parent.parent / f"{staged.parent.name}-replaced-{target.name}"
    replaced = target.exists()
    if replaced:
        target.rename(old)
    try:
        staged.rename(target)
    except OSError:
        if replaced:
            old.rename(target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def where_equal(**columns: Any) -> tuple[str, list[Any]]:
    """``(" WHERE a = ? AND b = ?", [a, b])`` for the keyword columns whose value is not None ("" and []
    when none is): the optional filters of a read method. Column names come from code, values are bound."""
    chosen = {name: value for name, value in columns.items() if value is not None}
    clause = " WHERE " + " AND ".join(f'"{name}" = ?' for name in chosen) if chosen else ""
    return clause, list(chosen.values())


# DuckDB column type -> the Arrow type DuckDB reads without a cast.
_ARROW_TYPES: dict[str, pa.DataType] = {
    "VARCHAR": pa.string(),
    "TIMESTAMP": pa.timestamp("us"),
    "DOUBLE": pa.float64(),
    "INTEGER": pa.int32(),
    "BIGINT": pa.int64(),
    "BOOLEAN": pa.bool_(),
}


def _sql_string(value: str) -> str:
    return value.replace("'", "''")
