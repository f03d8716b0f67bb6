"""The SQL tool cannot write, read files or change settings: a hostile corpus is refused or bounded.

Every query goes through `call_tool("sql", ...)` against a real workspace DuckDB file. After each one the
test checks that no table's row count or schema changed, that no file appeared in the workspace folder
or at the ``/tmp`` targets the corpus names, and that the owner connection still works normally (the
sandbox's locked configuration must not leak into the writer).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

import duckdb
import pytest

import tools.sql  # registers the tool; its interrupt timer is observed below
from monitor.incidents import IncidentManager
from scorer.registry import ModelRegistry
from scorer.serving import ServingStateStore
from store import Store
from tools.context import ToolContext, ToolLimits
from tools.errors import ToolRetry
from tools.registry import call_tool
from tools.sql import check_query

MAX_ROWS = 50
TIMEOUT_S = 1.0
TOKEN = uuid.uuid4().hex[:10]
TMP_TARGET = f"/tmp/selfheal-hostile-{TOKEN}"
NOW = datetime(2018, 6, 1, 12)


@dataclass(frozen=True)
class Hostile:
    sql: str
    expect: Literal["refused", "bounded"]


def _corpus(home: str) -> list[Hostile]:
    r, b = "refused", "bounded"
    cases = [
        # DDL and DML
        ("DROP TABLE labels", r),
        ("DELETE FROM labels", r),
        ("UPDATE labels SET is_fraud = 1", r),
        ("INSERT INTO labels VALUES ('x', 1, now(), now())", r),
        ("CREATE TABLE evil AS SELECT * FROM labels", r),
        ("ALTER TABLE labels ADD COLUMN evil INTEGER", r),
        ("TRUNCATE labels", r),
        ("CREATE VIEW evil AS SELECT 1", r),
        ("CREATE MACRO evil(x) AS x", r),
        ("CREATE SEQUENCE evil", r),
        ("CHECKPOINT", r),
        ("VACUUM", r),
        ("BEGIN TRANSACTION", r),
        # files, other databases, extensions
        (f"ATTACH '{TMP_TARGET}.duckdb' AS evil", r),
        ("DETACH DATABASE evil", r),
        (f"COPY labels TO '{home}/out.csv'", r),
        (f"COPY (SELECT * FROM labels) TO '{TMP_TARGET}.parquet' (FORMAT parquet)", r),
        ("COPY labels FROM '/etc/passwd'", r),
        (f"EXPORT DATABASE '{home}/dump'", r),
        (f"IMPORT DATABASE '{home}/dump'", r),
        ("INSTALL httpfs", r),
        ("LOAD httpfs", r),
        ("CREATE SECRET evil (TYPE s3, KEY_ID 'a', SECRET 'b')", r),
        ("USE memory", r),
        # settings
        ("SET enable_external_access = true", r),
        ("SET threads = 64", r),
        ("RESET ALL", r),
        ("PRAGMA database_list", r),
        ("PRAGMA enable_profiling", r),
        ("CALL pragma_version()", r),
        ("SELECT current_setting('home_directory')", r),
        ("SELECT getenv('HOME')", r),
        ("SELECT * FROM duckdb_settings()", r),
        ("SELECT * FROM duckdb_extensions()", r),
        ("SELECT * FROM duckdb_tables", r),
        ("SELECT * FROM information_schema.tables", r),
        ("SELECT * FROM pg_catalog.pg_tables", r),
        ("SELECT * FROM system.main.labels", r),
        # file and URL readers, replacement scans
        ("SELECT * FROM read_csv('/etc/passwd')", r),
        ("SELECT * FROM read_csv_auto('/etc/passwd')", r),
        ("SeLeCt * FrOm ReAd_CsV('/etc/passwd')", r),
        ('SELECT * FROM "read_csv"(\'/etc/passwd\')', r),
        ("SELECT * FROM '/etc/passwd'", r),
        ('SELECT * FROM "/etc/passwd"', r),
        (f"SELECT * FROM read_parquet('{home}/x.parquet')", r),
        (f"SELECT * FROM parquet_scan('{home}/x.parquet')", r),
        ("SELECT * FROM read_json('/etc/hosts')", r),
        ("SELECT * FROM read_json_auto('/etc/hosts')", r),
        ("SELECT * FROM read_text('/etc/passwd')", r),
        ("SELECT * FROM read_blob('/etc/passwd')", r),
        ("SELECT * FROM sniff_csv('/etc/passwd')", r),
        ("SELECT * FROM glob('/etc/*')", r),
        ("SELECT * FROM 'https://example.com/data.csv'", r),
        ("SELECT * FROM delta_scan('s3://bucket/table')", r),
        ("SELECT * FROM iceberg_scan('s3://bucket/table')", r),
        ("SELECT * FROM query('DROP TABLE labels')", r),
        ("SELECT * FROM query_table('labels')", r),
        ("SELECT * FROM range(1000000000000)", r),
        ("SELECT * FROM labels WHERE transaction_id IN (SELECT column0 FROM read_csv('/etc/passwd'))", r),
        ("SELECT (SELECT count(*) FROM read_text('/etc/shadow')) AS n", r),
        # several statements, comments and CTE tricks
        ("SELECT 1; DROP TABLE labels", r),
        ("SELECT count(*) FROM labels; DELETE FROM labels", r),
        ("SELECT * FROM labels -- ;\n; DROP TABLE labels", r),
        ("/* harmless */ DROP TABLE labels", r),
        ("-- just a comment\nDELETE FROM labels", r),
        ("WITH x AS (SELECT 1) DELETE FROM labels", r),
        ("WITH x AS (SELECT * FROM read_csv('/etc/passwd')) SELECT * FROM x", r),
        ("WITH labels AS (SELECT * FROM '/etc/passwd') SELECT * FROM labels", r),
        ("EXPLAIN ANALYZE SELECT * FROM labels", r),
        ("DESCRIBE labels", r),
        ("SUMMARIZE labels", r),
        ("SHOW TABLES", r),
        ("PIVOT labels ON is_fraud USING count(*)", r),
        ("SELECT 1 /* ; DROP TABLE labels */ AS one -- ; DELETE FROM labels", b),
        ("SELECT '; DROP TABLE labels; --' AS text", b),
        ('WITH "/etc/passwd" AS (SELECT 1 AS a) SELECT * FROM "/etc/passwd"', b),
        # huge results and runaway work
        ("SELECT * FROM labels a, labels b, labels c", b),
        ("SELECT count(*) FROM predictions a, predictions b, labels c, labels d", b),
        ("SELECT a.transaction_id FROM labels a, labels b, labels c ORDER BY random()", b),
        ("WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r", b),
        ("SELECT string_agg(a.transaction_id, ',') FROM labels a, labels b", b),
    ]
    return [Hostile(sql, expect) for sql, expect in cases]  # type: ignore[arg-type]


CORPUS = _corpus("{home}")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ToolContext, Path]]:
    home = tmp_path_factory.mktemp("sql-safety")
    store = Store(home / "selfheal.duckdb")
    store.execute(
        "INSERT INTO labels SELECT 'tx' || range, (range % 50 = 0)::INT, TIMESTAMP '2018-05-01' + range * INTERVAL 1 MINUTE, "
        "TIMESTAMP '2018-05-08' + range * INTERVAL 1 MINUTE FROM range(3000)"
    )
    store.execute(
        "INSERT INTO predictions (transaction_id, timestamp, scored_at, score, decision, model_version, "
        "serving_state_version, used_fallback, latency_ms, batch_id, amount) "
        "SELECT 'tx' || range, TIMESTAMP '2018-05-01' + range * INTERVAL 1 MINUTE, TIMESTAMP '2018-05-01', "
        "(range % 100) / 100.0, 'approve', 1, 1, false, 1.5, 'b1', range FROM range(3000)"
    )
    serving = ServingStateStore(store, clock=lambda: NOW)
    ctx = ToolContext(
        store=store,
        registry=ModelRegistry(store, home / "models", serving),
        serving=serving,
        incidents=IncidentManager(store, clock=lambda: NOW),
        clock=lambda: NOW,
        limits=ToolLimits(sql_max_rows=MAX_ROWS, sql_timeout_s=TIMEOUT_S),
    )
    yield ctx, home
    store.close()


def _fingerprint(ctx: ToolContext) -> dict[str, object]:
    store = ctx.store
    schema = store.query(
        "SELECT table_name, column_name, data_type FROM information_schema.columns ORDER BY ALL"
    ).values.tolist()
    counts = {table: store.count(table) for table in store.tables()}
    settings = store.query(
        "SELECT name, value FROM duckdb_settings() WHERE name IN "
        "('enable_external_access', 'lock_configuration', 'threads', 'memory_limit') ORDER BY name"
    ).values.tolist()
    return {"schema": schema, "counts": counts, "settings": settings, "databases": store.query(
        "SELECT database_name FROM duckdb_databases() ORDER BY 1").values.tolist()}


def _files(home: Path) -> set[str]:
    return {str(p.relative_to(home)) for p in home.rglob("*")} | {
        str(p) for p in Path("/tmp").glob(f"selfheal-hostile-{TOKEN}*")
    }


def test_the_corpus_is_large_enough() -> None:
    assert len(CORPUS) >= 40
    assert {h.expect for h in CORPUS} == {"refused", "bounded"}


@pytest.mark.parametrize("hostile", CORPUS, ids=[f"{i:02d}" for i in range(len(CORPUS))])
def test_hostile_query_is_refused_or_bounded_and_changes_nothing(
    workspace: tuple[ToolContext, Path], hostile: Hostile
) -> None:
    ctx, home = workspace
    query = hostile.sql.replace("{home}", str(home))
    before, files_before = _fingerprint(ctx), _files(home)
    if hostile.expect == "refused":
        with pytest.raises(ToolRetry) as refused:
            call_tool("sql", ctx, {"query": query})
        assert len(str(refused.value)) > 20  # a clear message, not a bare error
    else:
        try:
            result = call_tool("sql", ctx, {"query": query})
        except ToolRetry as stopped:  # a runaway query stopped by the time or memory cap, nothing else
            assert isinstance(stopped.__cause__, duckdb.InterruptException | duckdb.OutOfMemoryException), stopped
            assert f"longer than {TIMEOUT_S:g} s" in str(stopped) or "memory" in str(stopped), stopped
        else:
            assert result.data["row_count"] <= MAX_ROWS
            assert len(result.data["rows"]) <= MAX_ROWS
    assert _fingerprint(ctx) == before
    assert _files(home) == files_before
    assert not list(Path("/tmp").glob(f"selfheal-hostile-{TOKEN}*"))


def test_refusals_say_what_to_do_instead(workspace: tuple[ToolContext, Path]) -> None:
    ctx, _ = workspace
    cases = {
        "DELETE FROM labels": "read-only",
        "SELECT * FROM read_csv('/etc/passwd')": "table function read_csv",
        "SELECT * FROM '/etc/passwd'": "unknown table '/etc/passwd'",
        "SELECT 1; SELECT 2": "exactly one statement",
        "DESCRIBE labels": "describe_tables()",
        "SELECT current_setting('threads')": "current_setting",
        "SELECT * FROM nowhere": "tables: ",
        "SELECT FROM WHERE": "does not parse",
    }
    for query, expected in cases.items():
        with pytest.raises(ToolRetry, match=None) as refused:
            call_tool("sql", ctx, {"query": query})
        assert expected in str(refused.value), (query, str(refused.value))


def test_ordinary_queries_work_and_rows_are_capped(workspace: tuple[ToolContext, Path]) -> None:
    ctx, _ = workspace
    counted = call_tool(
        "sql", ctx, {"query": "WITH f AS (SELECT * FROM labels WHERE is_fraud = 1) SELECT count(*) AS frauds FROM f"}
    )
    assert counted.data["columns"] == ["frauds"] and counted.data["rows"] == [[60]]
    assert counted.data["truncated"] is False
    joined = call_tool(
        "sql",
        ctx,
        {"query": "SELECT p.transaction_id, p.score, l.is_fraud, p.timestamp FROM predictions p "
                  "JOIN labels l USING (transaction_id) ORDER BY p.score DESC, p.transaction_id"},
    )
    assert joined.data["row_count"] == MAX_ROWS and joined.data["truncated"] is True
    assert "first 50 rows" in joined.data["note"]
    assert isinstance(joined.data["rows"][0][3], str)  # timestamps come back as ISO text


def test_a_long_query_is_stopped_at_the_time_limit(
    workspace: tuple[ToolContext, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx, _ = workspace
    armed: list[float] = []
    fired: list[float] = []
    real_timer = threading.Timer  # tools.sql.threading is the threading module: patched for this test only

    def recording_timer(interval: float, interrupt: Callable[[], object]) -> threading.Timer:
        """The sandbox's interrupt timer, recording the delay it was armed with and whether it fired."""
        armed.append(interval)

        def fire() -> None:
            fired.append(interval)
            interrupt()

        return real_timer(interval, fire)

    monkeypatch.setattr(tools.sql.threading, "Timer", recording_timer)
    with pytest.raises(ToolRetry, match="longer than 1 s") as stopped:
        call_tool("sql", ctx, {"query": "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT max(n) FROM r"})
    # Stopped by the interrupt armed at the limit, not by anything else that went wrong.
    assert isinstance(stopped.value.__cause__, duckdb.InterruptException)
    assert armed == [TIMEOUT_S] and fired == [TIMEOUT_S]


def test_the_owner_connection_keeps_its_settings_and_can_still_export(workspace: tuple[ToolContext, Path]) -> None:
    """The sandbox is a separate database: locking it must not lock the writer (it exports Parquet)."""
    ctx, home = workspace
    call_tool("sql", ctx, {"query": "SELECT count(*) FROM labels"})
    out = home / "export" / "labels.parquet"
    assert ctx.store.export("labels", out) == 3000
    assert ctx.store.scalar("SELECT current_setting('enable_external_access')") is True
    out.unlink()
    out.parent.rmdir()


def test_check_query_names_the_tables_it_reads() -> None:
    checked = check_query(
        "WITH recent AS (SELECT * FROM predictions) SELECT * FROM recent JOIN labels USING (transaction_id)",
        {"predictions", "labels", "transactions"},
    )
    assert checked.tables == ("labels", "predictions")


def test_describe_tables_lists_what_sql_can_read(workspace: tuple[ToolContext, Path]) -> None:
    ctx, _ = workspace
    described = call_tool("describe_tables", ctx, {}).data
    assert "schema_migrations" not in described["tables"]
    labels = described["tables"]["labels"]
    assert labels["rows"] == 3000 and labels["time_column"] == "label_time"
    assert labels["columns"]["is_fraud"] == "INTEGER"
