"""The SQL tool's child process: runs checked SELECTs in a fresh in-memory DuckDB, one at a time.

`tools.sql` starts it as ``python -m tools.sql_worker DATA_LIMIT_MB`` and keeps it warm across queries; it
kills it when a query outlives its deadline or its memory cap, and starts another. Nothing here decides
what may run: the parent has already checked the query (`tools.sql.check_query`) and read the tables.

The protocol, both ways, is frames: an 8-byte big-endian length and a JSON object.

- parent -> child, ``{"op": "query", "id", "sql", "max_rows", "config", "tables": [names]}`` followed by
  one Arrow IPC stream per named table; ``{"op": "interrupt", "id"}`` asks the running query to stop
  (it is ignored unless that query is still running).
- child -> parent, one frame per query: ``{"ok": true, "columns", "rows", "truncated"}`` with cells
  already made JSON-safe (`cell`), or ``{"ok": false, "kind": "interrupt" | "memory" | "error",
  "message"}``.

The child lowers its own ``RLIMIT_DATA`` to the cap before importing DuckDB: an allocation past it fails
inside DuckDB (which raises ``OutOfMemoryException``) instead of growing the process. The parent's RSS
poll and deadline still kill it if anything gets past that. End of input (the parent closed the pipe or
died) ends the child.

This module imports only the standard library at import time, so `tools.sql` can use `cell` and the
framing without loading anything else.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import os
import queue
import struct
import sys
import threading
import uuid
from typing import IO, Any, Final

MAX_CELL_CHARS: Final = 300
MAX_LIST_ITEMS: Final = 50
_LENGTH: Final = struct.Struct(">Q")


def write_frame(stream: IO[bytes], payload: dict[str, Any]) -> None:
    """Write one frame (length, then JSON) without flushing."""
    body = json.dumps(payload, default=str, separators=(",", ":")).encode()
    stream.write(_LENGTH.pack(len(body)) + body)


def frame_length(prefix: bytes) -> int:
    """The body length announced by a frame's 8-byte prefix."""
    return int(_LENGTH.unpack(prefix)[0])


FRAME_PREFIX: Final = _LENGTH.size


def _read_exactly(stream: IO[bytes], size: int) -> bytes | None:
    chunks: list[bytes] = []
    while size:
        chunk = stream.read(size)
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _read_frame(stream: IO[bytes]) -> dict[str, Any] | None:
    prefix = _read_exactly(stream, FRAME_PREFIX)
    if prefix is None:
        return None
    body = _read_exactly(stream, frame_length(prefix))
    return None if body is None else dict(json.loads(body))


def cell(value: Any) -> Any:
    """One result value as something JSON can carry, long text and lists cut short."""
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
        return [cell(v) for v in value[:MAX_LIST_ITEMS]]
    if isinstance(value, dict):
        return {str(k): cell(v) for k, v in list(value.items())[:MAX_LIST_ITEMS]}
    return value


def first_line(error: BaseException) -> str:
    """The first line of an error's message (DuckDB's go on with hints), or its type's name."""
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


class _Child:
    """The child's state: the query running now (so an interrupt reaches only it) and the job queue."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running: tuple[int, Any] | None = None  # (query id, its DuckDB connection)
        self.stopped = 0  # the last query id an interrupt named (it may come before the query starts)
        self.jobs: queue.Queue[tuple[dict[str, Any], list[tuple[str, Any]]]] = queue.Queue()

    def read_requests(self, stream: IO[bytes]) -> None:
        """Reader thread: queue queries with their tables, deliver interrupts; end the process at EOF."""
        import pyarrow.ipc

        try:
            while (request := _read_frame(stream)) is not None:
                if request.get("op") == "interrupt":
                    with self.lock:
                        self.stopped = int(request.get("id", 0))
                        if self.running is not None and self.running[0] == self.stopped:
                            self.running[1].interrupt()
                    continue
                # Straight into the queue: this thread keeps no reference to a query's tables.
                self.jobs.put((request, [(n, pyarrow.ipc.open_stream(stream).read_all()) for n in request["tables"]]))
        except BaseException as error:  # a child that cannot read its input can only stop
            print(f"sql_worker: cannot read a request: {first_line(error)}", file=sys.stderr)
            os._exit(3)
        os._exit(0)

    def run(self, request: dict[str, Any], tables: list[tuple[str, Any]]) -> dict[str, Any]:
        import duckdb

        connection = duckdb.connect(":memory:", config=dict(request["config"]))
        with self.lock:
            self.running = (int(request["id"]), connection)
            if self.stopped == self.running[0]:
                connection.close()
                self.running = None
                return {"ok": False, "kind": "interrupt", "message": "interrupted before it started"}
        try:
            for name, table in tables:
                connection.register(name, table)
            # The trailing newline keeps a final "-- comment" from swallowing the wrapper.
            relation = connection.sql(f"SELECT * FROM (\n{request['sql']}\n) AS _q")
            columns = list(relation.columns)
            max_rows = int(request["max_rows"])
            rows = relation.limit(max_rows + 1).fetchall()
            return {
                "ok": True,
                "columns": columns,
                "rows": [[cell(v) for v in row] for row in rows[:max_rows]],
                "truncated": len(rows) > max_rows,
            }
        except duckdb.InterruptException as error:
            return {"ok": False, "kind": "interrupt", "message": first_line(error)}
        except (duckdb.OutOfMemoryException, MemoryError) as error:
            return {"ok": False, "kind": "memory", "message": first_line(error)}
        except Exception as error:  # DuckDB's errors, and anything converting the rows
            return {"ok": False, "kind": "error", "message": first_line(error)}
        finally:
            with self.lock:
                self.running = None
            connection.close()


def main(argv: list[str]) -> int:
    """Serve queries from stdin until it closes. ``argv``: the data-segment cap in MiB (0: none)."""
    limit_mb = int(argv[0]) if argv else 0
    if limit_mb > 0:
        import resource

        limit = limit_mb << 20
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    import duckdb  # noqa: F401  (loaded before the first query: the worker is started ahead of need)
    import pyarrow.ipc  # noqa: F401

    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a stray print (or a library's) must not corrupt the replies
    child = _Child()
    threading.Thread(target=child.read_requests, args=(sys.stdin.buffer,), daemon=True).start()
    while True:
        request, tables = child.jobs.get()
        try:
            reply = child.run(request, tables)
        except MemoryError as error:
            reply = {"ok": False, "kind": "memory", "message": first_line(error)}
        except Exception as error:  # opening the sandbox failed: say so, and serve the next query
            reply = {"ok": False, "kind": "error", "message": first_line(error)}
        del tables
        try:
            write_frame(replies, reply)
        except MemoryError as error:
            write_frame(replies, {"ok": False, "kind": "memory", "message": first_line(error)})
        replies.flush()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
