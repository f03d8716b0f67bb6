"""The SQL tool: one read-only SELECT over the workspace's tables, in a sandbox that cannot reach anything.

Why a sandbox and not a connection to the workspace file (measured on DuckDB 2.0, DESIGN 4):

- a second ``duckdb.connect(path, read_only=True)`` in the owner process fails ("same database file with a
  different configuration"), and ``ATTACH path (READ_ONLY)`` from another in-process database fails with
  "Unique file handle conflict";
- a ``store.cursor()`` shares the database instance, and ``enable_external_access`` / ``lock_configuration``
  are instance-wide: setting them on the cursor stops the owner's own Parquet export.

So every query runs in a fresh in-memory DuckDB opened with external access disabled, configuration
locked, no spill directory, a memory cap and Python replacement scans off. The tables the query names are
copied into it as Arrow tables (read through a cursor of the owner's connection, newest
`MAX_TABLE_ROWS` rows per table). Nothing in the sandbox can reach the workspace file, another file, a
URL or a setting, so even a query the checks below missed cannot change anything.

Before that, the query is checked on its parse tree (``json_serialize_sql``), so refusals are clear:
exactly one SELECT / WITH statement; no table functions (``read_csv``, ``glob``, ``range``...); FROM
names only the workspace's tables or the query's own CTEs (a quoted path such as ``'/etc/passwd'`` is a
replacement scan and is refused); no functions that read settings or the environment. Rows are capped at
``limits.sql_max_rows`` (the query is wrapped in a LIMIT, so a huge cross join stops early) and time at
``limits.sql_timeout_s`` (the sandbox is interrupted).
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Final

import duckdb

from store.db import TIME_COLUMNS, Store
from tools.context import ToolContext
from tools.errors import ToolRetry
from tools.registry import tool

__all__ = [
    "MAX_TABLE_ROWS",
    "CheckedQuery",
    "check_query",
    "describe_tables",
    "run_query",
    "sql",
    "visible_tables",
]

# Newest rows of each table the sandbox sees: keeps the per-query copy bounded on a large workspace.
MAX_TABLE_ROWS: Final = 250_000
MAX_CELL_CHARS: Final = 300
SANDBOX_CONFIG: Final[dict[str, Any]] = {
    "enable_external_access": False,
    "lock_configuration": True,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "python_enable_replacements": False,  # else a Python variable named like a table could be scanned
    "temp_directory": "",  # never spill to disk: a huge sort fails on the memory cap instead
    "memory_limit": "512MB",
    "threads": 1,
}
# Scalar functions that read settings, the environment or sequences: nothing a report needs.
DENIED_FUNCTIONS: Final = frozenset(
    {"current_setting", "getenv", "setseed", "nextval", "currval", "current_database", "current_schema",
     "current_schemas", "version", "pragma_version"}
)
# FROM items that are plain relational algebra; anything else (table functions, SHOW/DESCRIBE) is refused.
ALLOWED_TABLE_REFS: Final = frozenset({"BASE_TABLE", "JOIN", "SUBQUERY", "EMPTY", "EXPRESSION_LIST", "PIVOT"})
HIDDEN_TABLES: Final = frozenset({"schema_migrations"})


@dataclass(frozen=True)
class CheckedQuery:
    """A query that passed the checks, and the workspace tables it reads."""

    sql: str
    tables: tuple[str, ...]


@dataclass
class _Walk:
    tables: set[str] = field(default_factory=set)
    ctes: set[str] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)


def visible_tables(store: Store) -> list[str]:
    """The workspace tables the SQL tool may read."""
    return [t for t in store.tables() if t not in HIDDEN_TABLES]


def _sandbox() -> duckdb.DuckDBPyConnection:
    return duckdb.connect(":memory:", config=dict(SANDBOX_CONFIG))


# One sandbox only parses (json_serialize_sql never runs the query): opening one per call costs ~0.1 s.
_PARSER_LOCK = threading.Lock()
_PARSER: duckdb.DuckDBPyConnection | None = None


def _parse_tree(text: str) -> dict[str, Any]:
    global _PARSER
    with _PARSER_LOCK:
        if _PARSER is None:
            _PARSER = _sandbox()
        row = _PARSER.execute("SELECT json_serialize_sql(?)", [text]).fetchall()
    return json.loads(row[0][0]) if row else {"error": True, "error_message": "no parse tree"}


def check_query(query: str, tables: list[str] | set[str]) -> CheckedQuery:
    """Check that ``query`` is one SELECT that reads only ``tables`` (and its own CTEs).

    Raises:
        ToolRetry: What is not allowed, and what to do instead.
    """
    text = query.strip().rstrip(";").strip()
    if not text:
        raise ToolRetry("the query is empty: send one SELECT statement")
    try:
        statements = duckdb.extract_statements(text)
    except duckdb.Error as error:
        raise ToolRetry(f"the query does not parse: {_first_line(error)}") from error
    if len(statements) != 1:
        raise ToolRetry(f"send exactly one statement (got {len(statements)}); run separate queries one by one")
    kind = statements[0].type
    if kind != duckdb.StatementType.SELECT:
        name = getattr(kind, "name", str(kind))
        raise ToolRetry(
            f"only SELECT (or WITH ... SELECT) is allowed, not {name}: the SQL tool is read-only; "
            "changes go through the action tools, and describe_tables() shows the schema"
        )
    tree = _parse_tree(text)
    if tree.get("error"):
        raise ToolRetry(f"the query is not a plain SELECT: {tree.get('error_message', 'unknown parse error')}")
    walk = _Walk()
    _visit(tree["statements"], walk)
    allowed = {t.lower() for t in tables}
    for name in sorted(walk.tables - walk.ctes):
        if name not in allowed:
            walk.problems.append(
                f"unknown table {name!r} (files, URLs and other catalogs cannot be read); "
                f"tables: {', '.join(sorted(allowed))}"
            )
    if walk.problems:
        raise ToolRetry("query refused: " + "; ".join(dict.fromkeys(walk.problems)))
    return CheckedQuery(text, tuple(sorted((walk.tables - walk.ctes) & allowed)))


def _visit(node: Any, walk: _Walk) -> None:
    if isinstance(node, list):
        for item in node:
            _visit(item, walk)
        return
    if not isinstance(node, dict):
        return
    cte_map = node.get("cte_map")
    if isinstance(cte_map, dict):
        walk.ctes.update(str(entry.get("key", "")).lower() for entry in cte_map.get("map", []))
    kind = node.get("type")
    if "class" not in node and isinstance(kind, str) and "sample" in node and not kind.endswith("_NODE"):
        _check_table_ref(node, kind, walk)
        if kind == "TABLE_FUNCTION":
            return  # refused already; its own name would only repeat the message
    if node.get("class") == "FUNCTION":
        name = str(node.get("function_name", "")).lower()
        if name in DENIED_FUNCTIONS or name.startswith(("duckdb_", "read_", "pragma_")):
            walk.problems.append(f"function {name}() is not allowed (it reads settings, files or the environment)")
    for value in node.values():
        if isinstance(value, (dict, list)):
            _visit(value, walk)


def _check_table_ref(node: dict[str, Any], kind: str, walk: _Walk) -> None:
    if kind == "TABLE_FUNCTION":
        function = str((node.get("function") or {}).get("function_name", "?"))
        walk.problems.append(
            f"table function {function}() is not allowed (no file, URL or generated tables); "
            "select from the workspace tables instead"
        )
    elif kind == "SHOW_REF":
        walk.problems.append("DESCRIBE/SHOW/SUMMARIZE are not allowed; call describe_tables() for the schema")
    elif kind not in ALLOWED_TABLE_REFS:
        walk.problems.append(f"FROM item of type {kind} is not allowed")
    elif kind == "BASE_TABLE":
        catalog, schema = str(node.get("catalog_name", "")), str(node.get("schema_name", ""))
        name = str(node.get("table_name", "")).lower()
        if catalog or schema not in ("", "main"):
            walk.problems.append(
                f"qualified name {'.'.join(p for p in (catalog, schema, name) if p)!r} is not allowed: "
                "use the bare table names from describe_tables()"
            )
        else:
            walk.tables.add(name)


def run_query(store: Store, query: str, *, max_rows: int, timeout_s: float) -> dict[str, Any]:
    """Check ``query`` and run it in a fresh sandbox with bounded rows and time.

    Returns:
        ``columns``, ``rows`` (lists), ``row_count``, ``truncated`` (more rows existed), ``elapsed_s``,
        and ``table_bounds`` for tables the sandbox saw only partly.

    Raises:
        ToolRetry: The query was refused, failed, or ran out of time or memory.
    """
    checked = check_query(query, visible_tables(store))
    started = time.monotonic()
    with _sandbox() as sandbox:
        bounds = _load_tables(store, sandbox, checked.tables)
        timer = threading.Timer(timeout_s, sandbox.interrupt)
        timer.start()
        try:
            # The trailing newline keeps a final "-- comment" from swallowing the wrapper.
            relation = sandbox.sql(f"SELECT * FROM (\n{checked.sql}\n) AS _q")
            columns = list(relation.columns)
            rows = relation.limit(max_rows + 1).fetchall()
        except duckdb.InterruptException as error:
            raise ToolRetry(
                f"the query ran longer than {timeout_s:g} s and was stopped; filter by time, aggregate, "
                "or avoid cross joins"
            ) from error
        except duckdb.OutOfMemoryException as error:
            raise ToolRetry("the query needed too much memory; aggregate or filter before sorting or joining") from error
        except duckdb.Error as error:
            raise ToolRetry(f"the query failed: {_first_line(error)}") from error
        finally:
            timer.cancel()
    truncated = len(rows) > max_rows
    result: dict[str, Any] = {
        "columns": columns,
        "rows": [[_cell(v) for v in row] for row in rows[:max_rows]],
        "row_count": min(len(rows), max_rows),
        "truncated": truncated,
        "elapsed_s": round(time.monotonic() - started, 3),
    }
    if truncated:
        result["note"] = f"only the first {max_rows} rows are shown; aggregate or add LIMIT/WHERE"
    if bounds:
        result["table_bounds"] = bounds
    return result


def _load_tables(store: Store, sandbox: duckdb.DuckDBPyConnection, tables: tuple[str, ...]) -> dict[str, str]:
    """Copy the newest rows of each table into the sandbox; say which tables were seen only in part."""
    bounds: dict[str, str] = {}
    cursor = store.cursor()
    try:
        for table in tables:
            total = int(cursor.execute(f'SELECT count(*) FROM "{table}"').fetchall()[0][0])
            select = f'SELECT * FROM "{table}"'
            if total > MAX_TABLE_ROWS:
                order = TIME_COLUMNS.get(table)
                select += f' ORDER BY "{order}" DESC' if order else ""
                select += f" LIMIT {MAX_TABLE_ROWS}"
                bounds[table] = f"newest {MAX_TABLE_ROWS:,} of {total:,} rows visible"
            sandbox.register(table, cursor.sql(select).to_arrow_table())
    finally:
        cursor.close()
    return bounds


def _cell(value: Any) -> Any:
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return str(value)
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes):
        return value[:64].hex()
    if isinstance(value, float) and value != value:  # NaN is not JSON
        return None
    if isinstance(value, str) and len(value) > MAX_CELL_CHARS:
        return value[:MAX_CELL_CHARS] + f"...[{len(value) - MAX_CELL_CHARS} more chars]"
    if isinstance(value, list):
        return [_cell(v) for v in value[:50]]
    if isinstance(value, dict):
        return {str(k): _cell(v) for k, v in list(value.items())[:50]}
    return value


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


@tool(kind="read", risk="none")
def sql(ctx: ToolContext, query: str) -> dict[str, Any]:
    """Run one read-only SELECT (or WITH ... SELECT) over the workspace tables (DuckDB SQL).

    Only the tables listed by describe_tables() can be read; no files, URLs, table functions, settings
    or changes. Results are capped in rows and time: aggregate and filter by time rather than selecting
    raw rows.

    Args:
        query: One SELECT statement, e.g. "SELECT decision, count(*) FROM predictions
            WHERE timestamp >= '2018-06-01' GROUP BY ALL".
    """
    return run_query(ctx.store, query, max_rows=ctx.limits.sql_max_rows, timeout_s=ctx.limits.sql_timeout_s)


@tool(kind="read", risk="none")
def describe_tables(ctx: ToolContext) -> dict[str, Any]:
    """List the tables the sql tool can read, with their columns, types, row counts and time column."""
    columns = ctx.store.query(
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = 'main' ORDER BY table_name, ordinal_position"
    )
    tables: dict[str, Any] = {}
    for name in visible_tables(ctx.store):
        rows = ctx.store.count(name)
        entry: dict[str, Any] = {
            "rows": rows,
            "time_column": TIME_COLUMNS.get(name),
            "columns": {r.column_name: r.data_type for r in columns[columns["table_name"] == name].itertuples()},
        }
        if rows > MAX_TABLE_ROWS:
            entry["sql_sees"] = f"newest {MAX_TABLE_ROWS:,} rows"
        tables[name] = entry
    return {"tables": tables, "max_rows_per_query": ctx.limits.sql_max_rows, "timeout_s": ctx.limits.sql_timeout_s}
