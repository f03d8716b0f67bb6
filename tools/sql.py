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

That DuckDB runs in a **child process** (`tools.sql_worker`), not in the service: DuckDB's
``memory_limit`` and ``interrupt()`` do not reach a function that builds one large value inside one row.
In-process, ``SELECT repeat('x', 2000000000)`` took 33 s and 4 GB of the caller's memory with a 5 s
limit, and ``regexp_replace(s, '.', s, 'g')`` over a ``string_agg`` of 2,500 demo ids built a 625 MB
string (the ``selfheal ask`` process peaked at 1.5 GB); ordinary functions compose quadratically, so no
deny-list closes that. The child lowers its ``RLIMIT_DATA`` to ``limits.sql_memory_mb`` (an allocation
past it fails inside DuckDB, which reports out of memory and the child stays usable), and the parent reads
its RSS every ``POLL_S`` and kills it above the same cap. At ``limits.sql_timeout_s`` the parent asks the
child to interrupt the query; a query still running ``KILL_MARGIN_S`` later is killed with its process.
A killed or crashed child is replaced at once. Either way the caller sees a ``ToolRetry`` ("ran longer
than", "needed too much memory") whose cause is a DuckDB ``InterruptException`` / ``OutOfMemoryException``.

One child is kept warm and reused, one query at a time (a lock; queries from other threads wait): a fresh
child per query cost 0.3-0.4 s more per query (interpreter, DuckDB and pyarrow imports); with a warm one
the query's time is within the machine's noise of in-process (median 37 vs 41 ms on a 3,000-row table,
~300 ms either way over a 250,000-row one), the Arrow IPC copy through its stdin being ~60 ms for a
52 MB table (a tmpfs file would save ~25 ms of that: not worth a file to clean up). Each query still gets its own
in-memory DuckDB, closed after it, so nothing carries over; a worker left above half its cap, or after
`RECYCLE_AFTER_QUERIES` queries, is replaced. The child inherits no file descriptor of the workspace.

Before that, the query is checked on its parse tree (``json_serialize_sql``), so refusals are clear:
exactly one SELECT / WITH statement; no table functions (``read_csv``, ``glob``, ``range``...); FROM
names only the workspace's tables or the query's own CTEs (a quoted path such as ``'/etc/passwd'`` is a
replacement scan and is refused); no functions that read settings or the environment. Rows are capped at
``limits.sql_max_rows`` (the query is wrapped in a LIMIT, so a huge cross join stops early; long cells are
cut in the child, and a reply over `MAX_REPLY_BYTES` is refused).
"""

from __future__ import annotations

import atexit
import functools
import itertools
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import duckdb

from store.db import TIME_COLUMNS, Store
from tools.context import DEFAULT_SQL_MEMORY_MB as DEFAULT_MEMORY_MB
from tools.context import ToolContext
from tools.errors import ToolRetry
from tools.registry import tool
from tools.sql_worker import FRAME_PREFIX, first_line, frame_length, write_frame

if TYPE_CHECKING:  # pyarrow is imported when a query is sent (DuckDB's to_arrow_table loads it anyway)
    import pyarrow as pa

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
        raise ToolRetry(f"the query does not parse: {first_line(error)}") from error
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


def run_query(
    store: Store, query: str, *, max_rows: int, timeout_s: float, memory_mb: int = DEFAULT_MEMORY_MB
) -> dict[str, Any]:
    """Check ``query`` and run it in the sandbox process with bounded rows, time and memory.

    Returns:
        ``columns``, ``rows`` (lists), ``row_count``, ``truncated`` (more rows existed), ``elapsed_s``,
        and ``table_bounds`` for tables the sandbox saw only partly.

    Raises:
        ToolRetry: The query was refused, failed, or ran out of time or memory.
    """
    checked = check_query(query, visible_tables(store))
    started = time.monotonic()
    tables, bounds = _load_tables(store, checked.tables)
    request = {"op": "query", "sql": checked.sql, "max_rows": max_rows, "config": SANDBOX_CONFIG}
    with _WORKER_LOCK:
        reply = _run_in_worker(request, tables, timeout_s=timeout_s, memory_mb=memory_mb)
    if not reply.get("ok"):
        kind, message = reply.get("kind"), str(reply.get("message", ""))
        if kind == "interrupt":
            raise ToolRetry(
                f"the query ran longer than {timeout_s:g} s and was stopped; filter by time, aggregate, "
                "or avoid cross joins"
            ) from duckdb.InterruptException(message)
        if kind == "memory":
            raise ToolRetry(
                "the query needed too much memory; aggregate or filter before sorting or joining"
            ) from duckdb.OutOfMemoryException(message)
        raise ToolRetry(f"the query failed: {message}") from duckdb.Error(message)
    rows = list(reply["rows"])
    truncated = bool(reply["truncated"])
    result: dict[str, Any] = {
        "columns": list(reply["columns"]),
        "rows": rows,
        "row_count": len(rows),
        "truncated": truncated,
        "elapsed_s": round(time.monotonic() - started, 3),
    }
    if truncated:
        result["note"] = f"only the first {max_rows} rows are shown; aggregate or add LIMIT/WHERE"
    if bounds:
        result["table_bounds"] = bounds
    return result


def _load_tables(store: Store, tables: tuple[str, ...]) -> tuple[dict[str, pa.Table], dict[str, str]]:
    """The newest rows of each table as Arrow tables, and which tables the sandbox sees only in part."""
    bounds: dict[str, str] = {}
    loaded: dict[str, pa.Table] = {}
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
            loaded[table] = cursor.sql(select).to_arrow_table()
    finally:
        cursor.close()
    return loaded, bounds


# --- the sandbox process -------------------------------------------------------------------------------

# The child gets this long after the interrupt (armed at the time limit) before it is killed: DuckDB
# usually stops within milliseconds, but a function building one huge value never checks the interrupt.
KILL_MARGIN_S: Final = 1.0
POLL_S: Final = 0.02  # how often the parent reads the child's RSS while it waits
MAX_REPLY_BYTES: Final = 32 << 20  # cells are cut to MAX_CELL_CHARS: only a pathological nesting gets here
# A worker left holding more than this share of its cap after a query (allocator fragmentation, a big
# result) is replaced before the next one, so a query never starts close to the cap; and one that has
# served this many queries is replaced anyway.
RECYCLE_RSS_SHARE: Final = 0.5
RECYCLE_AFTER_QUERIES: Final = 200


class _Stopped(Exception):
    """The parent stopped (or lost) the sandbox process: ``kind`` is interrupt, memory, crash or error."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class _SandboxProcess:
    """One warm ``python -m tools.sql_worker``: a fresh in-memory DuckDB per query, killed when over a cap."""

    def __init__(self, memory_mb: int) -> None:
        self.memory_mb = memory_mb
        self.queries = 0
        self.owner = os.getpid()  # a forked copy of the parent must not write to this worker's pipe
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH", "")) if p)
        self.process = subprocess.Popen(  # our own interpreter and module, no shell
            [sys.executable, "-m", "tools.sql_worker", str(memory_mb)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            close_fds=True,  # the workspace file's descriptors stay in the parent
            start_new_session=True,  # a Ctrl-C meant for the service does not reach the worker
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        self.stdin = self.process.stdin
        self.stdout_fd = self.process.stdout.fileno()
        self._write_lock = threading.Lock()  # the interrupt timer writes too
        self._statm = f"/proc/{self.process.pid}/statm"

    def alive(self) -> bool:
        return self.process.poll() is None

    def rss_mb(self) -> float:
        try:
            with open(self._statm) as statm:
                return int(statm.read().split()[1]) * _PAGE_SIZE / (1 << 20)
        except (OSError, IndexError, ValueError):
            return 0.0

    def send(self, request: dict[str, Any], tables: dict[str, pa.Table]) -> None:
        import pyarrow.ipc

        with self._write_lock:
            write_frame(self.stdin, {**request, "tables": list(tables)})
            for table in tables.values():
                with pyarrow.ipc.new_stream(self.stdin, table.schema) as writer:
                    writer.write_table(table)
            self.stdin.flush()

    def interrupt(self, query_id: int) -> None:
        """Ask the child to interrupt query ``query_id`` (the child ignores it if that one has finished)."""
        try:
            with self._write_lock:
                write_frame(self.stdin, {"op": "interrupt", "id": query_id})
                self.stdin.flush()
        except (OSError, ValueError):  # the child is gone; the parent's wait sees that
            pass

    def receive(self, *, deadline: float) -> dict[str, Any]:
        """Wait for the reply, killing the child past ``deadline`` or over its memory cap."""
        buffer = bytearray()
        expected: int | None = None
        while expected is None or len(buffer) < FRAME_PREFIX + expected:
            ready, _, _ = select.select([self.stdout_fd], [], [], POLL_S)
            if ready:
                chunk = os.read(self.stdout_fd, 1 << 20)
                if not chunk:
                    raise _Stopped("crash", f"the SQL sandbox stopped ({self._exit_status()})")
                buffer += chunk
                if expected is None and len(buffer) >= FRAME_PREFIX:
                    expected = frame_length(bytes(buffer[:FRAME_PREFIX]))
                    if expected > MAX_REPLY_BYTES:
                        raise _Stopped("error", f"the result is larger than {MAX_REPLY_BYTES >> 20} MB")
            if self.rss_mb() > self.memory_mb:
                raise _Stopped("memory", f"the SQL sandbox grew past {self.memory_mb} MB and was killed")
            if time.monotonic() > deadline:
                raise _Stopped("interrupt", "the SQL sandbox did not stop at the interrupt and was killed")
        self.queries += 1
        return dict(json.loads(bytes(buffer[FRAME_PREFIX:])))

    def _exit_status(self) -> str:
        try:
            code = self.process.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            return "no reply"
        return f"signal {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"

    def worn(self) -> bool:
        return self.queries >= RECYCLE_AFTER_QUERIES or self.rss_mb() > self.memory_mb * RECYCLE_RSS_SHARE

    def kill(self) -> None:
        if self.alive():
            self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass


_PACKAGE_ROOT: Final = str(Path(__file__).resolve().parents[1])
_PAGE_SIZE: Final = os.sysconf("SC_PAGE_SIZE")
_WORKER_LOCK = threading.Lock()  # the worker runs one query at a time
_WORKER: _SandboxProcess | None = None
_QUERY_IDS = itertools.count(1)


def _worker(memory_mb: int) -> _SandboxProcess:
    """The warm sandbox process, started if there is none yet or replaced if it died. Hold _WORKER_LOCK."""
    global _WORKER
    if _WORKER is not None and _WORKER.owner != os.getpid():
        _WORKER = None  # inherited through a fork: the parent's, not ours to use or kill
    if _WORKER is None or not _WORKER.alive() or _WORKER.memory_mb != memory_mb:
        _replace_worker(memory_mb)
    assert _WORKER is not None
    return _WORKER


def _replace_worker(memory_mb: int) -> None:
    """Kill the worker and start the next one now, so it is warm by the next query. Hold _WORKER_LOCK."""
    global _WORKER
    if _WORKER is not None:
        _WORKER.kill()
    _WORKER = _SandboxProcess(memory_mb)


@atexit.register
def _stop_worker() -> None:
    if _WORKER is not None:
        _WORKER.kill()


def _run_in_worker(
    request: dict[str, Any], tables: dict[str, pa.Table], *, timeout_s: float, memory_mb: int
) -> dict[str, Any]:
    """Run one checked query in the warm sandbox process: its reply, or a typed error if it was stopped."""
    query_id = next(_QUERY_IDS)
    worker = _worker(memory_mb)
    try:
        worker.send({**request, "id": query_id}, tables)
    except (OSError, ValueError):  # it died since the last query: once more, in a new one
        _replace_worker(memory_mb)
        worker = _worker(memory_mb)
        try:
            worker.send({**request, "id": query_id}, tables)
        except (OSError, ValueError):  # the new one died reading the tables: they do not fit its cap
            _replace_worker(memory_mb)
            return {"ok": False, "kind": "memory", "message": "the SQL sandbox could not hold the tables"}
    tables.clear()  # the child has its copy
    # At the time limit the query is interrupted inside the child, which replies "interrupt" and stays
    # warm; a query that does not stop then is killed with its process at the deadline.
    timer = threading.Timer(timeout_s, functools.partial(worker.interrupt, query_id))
    timer.start()
    try:
        reply = worker.receive(deadline=time.monotonic() + timeout_s + KILL_MARGIN_S)
    except _Stopped as stopped:
        _replace_worker(memory_mb)
        if stopped.kind == "crash":
            return {"ok": False, "kind": "memory", "message": f"{stopped}; most likely out of memory"}
        return {"ok": False, "kind": stopped.kind, "message": str(stopped)}
    finally:
        timer.cancel()
    if reply.get("kind") == "memory" or worker.worn():
        _replace_worker(memory_mb)
    return reply


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
    return run_query(
        ctx.store,
        query,
        max_rows=ctx.limits.sql_max_rows,
        timeout_s=ctx.limits.sql_timeout_s,
        memory_mb=ctx.limits.sql_memory_mb,
    )


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
