"""The SQL tool runs each query in a child process: a query that builds one huge value, or ignores the
interrupt, costs the child (killed and replaced), never the calling process's memory or the next query.

Before the child process, ``SELECT repeat('x', 300000000)`` grew the caller by ~600 MB and the
regexp_replace blow-up below by over 1 GB: DuckDB's ``memory_limit`` and ``interrupt()`` do not reach a
function that builds one value inside one row.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

import tools.sql
from store import Store
from tools.context import DEFAULT_SQL_MEMORY_MB
from tools.errors import ToolRetry
from tools.sql import run_query

IDS = 5_000  # ~34,000 characters of ids: regexp_replace(s, '.', s) would build ~1.2 GB


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    store = Store(tmp_path_factory.mktemp("sql-process") / "selfheal.duckdb")
    store.execute(
        "INSERT INTO labels SELECT 'tx' || range, (range % 50 = 0)::INT, TIMESTAMP '2018-05-01' + range * "
        f"INTERVAL 1 MINUTE, TIMESTAMP '2018-05-08' + range * INTERVAL 1 MINUTE FROM range({IDS})"
    )
    yield store
    store.close()


def _rss_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / (1 << 20)


def _peak_growth_mb(call: Callable[[], object]) -> tuple[float, object]:
    """Run ``call`` while sampling this process's RSS; the largest growth over the start, and the outcome."""
    start, peak, done = _rss_mb(), [0.0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_mb())
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        outcome: object = call()
    except ToolRetry as error:
        outcome = error
    finally:
        done.set()
        sampler.join()
    return max(peak[0], _rss_mb()) - start, outcome


def _count(store: Store) -> Any:
    return run_query(store, "SELECT count(*) AS n FROM labels", max_rows=10, timeout_s=30)["rows"]


def _worker_pid() -> int:
    assert tools.sql._WORKER is not None
    return tools.sql._WORKER.process.pid


@pytest.mark.parametrize(
    "query",
    [
        "SELECT length(repeat('x', 2000000000)) AS n",
        "SELECT length(regexp_replace(s, '.', s, 'g')) AS n FROM (SELECT string_agg(transaction_id, ',') AS s "
        "FROM labels)",
    ],
    ids=["repeat-2e9", "regexp-replace-string-agg"],
)
def test_a_huge_value_is_refused_for_memory_and_the_caller_does_not_grow(store: Store, query: str) -> None:
    _count(store)  # the worker is warm: its start is not what is measured
    # A generous time limit: on a loaded machine the memory cap must still be what stops these.
    growth, outcome = _peak_growth_mb(lambda: run_query(store, query, max_rows=10, timeout_s=60))
    assert isinstance(outcome, ToolRetry), outcome
    assert "needed too much memory" in str(outcome)
    assert isinstance(outcome.__cause__, duckdb.OutOfMemoryException)
    assert growth < 64, f"the calling process grew by {growth:.0f} MB"
    assert _count(store) == [[IDS]]


def test_a_query_that_ignores_the_interrupt_is_killed_and_the_next_one_runs(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``repeat`` builds its value without checking the interrupt (seconds for 5e8 characters)."""
    _count(store)
    before = _worker_pid()
    monkeypatch.setattr(tools.sql, "KILL_MARGIN_S", 0.1)
    growth, outcome = _peak_growth_mb(
        lambda: run_query(store, "SELECT length(repeat('x', 500000000)) AS n", max_rows=10, timeout_s=0.2)
    )
    assert isinstance(outcome, ToolRetry), outcome
    assert "ran longer than 0.2 s" in str(outcome)
    assert isinstance(outcome.__cause__, duckdb.InterruptException)
    assert "killed" in str(outcome.__cause__)  # the kill stopped it, not the query finishing
    assert growth < 64
    assert _worker_pid() != before  # the killed worker was replaced ...
    assert _count(store) == [[IDS]]  # ... and the next query runs


def test_an_interrupted_query_leaves_the_worker_warm(store: Store) -> None:
    _count(store)
    before = _worker_pid()
    with pytest.raises(ToolRetry, match=r"longer than 0\.5 s") as stopped:
        run_query(
            store,
            "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT max(n) FROM r",
            max_rows=10,
            timeout_s=0.5,
        )
    assert isinstance(stopped.value.__cause__, duckdb.InterruptException)
    assert "killed" not in str(stopped.value.__cause__)  # DuckDB stopped it, inside the child
    assert _worker_pid() == before
    assert _count(store) == [[IDS]]


def test_a_worker_over_its_rss_cap_is_killed(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """The parent's RSS poll (the backstop for memory the child's data-segment limit does not count)."""
    _count(store)
    before = _worker_pid()
    monkeypatch.setattr(tools.sql._SandboxProcess, "rss_mb", lambda self: float(self.memory_mb + 1))
    with pytest.raises(ToolRetry, match="needed too much memory") as stopped:
        run_query(store, "SELECT count(*) FROM labels a, labels b", max_rows=10, timeout_s=30)
    assert isinstance(stopped.value.__cause__, duckdb.OutOfMemoryException)
    monkeypatch.undo()
    assert _worker_pid() != before
    assert _count(store) == [[IDS]]


def test_a_worker_that_died_between_queries_is_replaced(store: Store) -> None:
    _count(store)
    dead = _worker_pid()
    os.kill(dead, signal.SIGKILL)
    assert tools.sql._WORKER is not None
    tools.sql._WORKER.process.wait(timeout=10)
    assert _count(store) == [[IDS]]
    assert _worker_pid() != dead


def test_the_worker_is_capped_and_holds_no_workspace_file(store: Store) -> None:
    _count(store)
    pid = _worker_pid()
    limits = Path(f"/proc/{pid}/limits").read_text()
    data = next(line for line in limits.splitlines() if line.startswith("Max data size"))
    assert data.split()[3] == str(DEFAULT_SQL_MEMORY_MB << 20)
    targets = {os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()}
    assert not [t for t in targets if "selfheal.duckdb" in t or t.endswith(".wal")], targets


def test_queries_from_several_threads_each_get_their_own_answer(store: Store) -> None:
    answers: dict[int, Any] = {}

    def ask(i: int) -> None:
        answers[i] = run_query(store, f"SELECT count(*) + {i} AS n FROM labels", max_rows=10, timeout_s=30)["rows"]

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == {i: [[IDS + i]] for i in range(6)}
