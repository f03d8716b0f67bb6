"""Files a user gets wrong: every row of a damaged file is scored or dead-lettered, an unusable file or
output path is refused before anything is scored, and no command answers with a Python traceback.

(Found by an exploratory pass over the CLI: one ragged CSV line used to crash `score` after the first
batch was logged, losing the rest; a bad ``--out`` was found only after the rows were logged.)
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from typer.testing import CliRunner

from scorer.simulate import Simulator, WorldConfig
from selfheal.app import Platform
from selfheal.cli import app

runner = CliRunner()


def _live(rows: int = 30) -> pd.DataFrame:
    frame = Simulator(WorldConfig(customers=50, terminals=80)).generate(0, 1).head(rows)
    return frame.drop(columns=["is_fraud", "fraud_scenario"], errors="ignore")


def _logged(home: Path, table: str) -> int:
    database = home / "selfheal.duckdb"
    if not database.exists():
        return 0
    with duckdb.connect(str(database), read_only=True) as con:
        return int(con.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # type: ignore[index]


def _said(result: object) -> str:
    """The command's output with Rich's line wrapping undone."""
    return " ".join(str(getattr(result, "output", "")).split())


def _no_traceback(output: str) -> None:
    assert "Traceback" not in output and "Error:" not in output.replace("error:", ""), output


def test_a_ragged_line_and_foreign_bytes_cost_only_their_own_rows(tmp_path: Path) -> None:
    live = _live()
    path = tmp_path / "live.csv"
    live.to_csv(path, index=False)
    lines = path.read_bytes().splitlines(keepends=True)
    ragged = b"X1,2018-04-01 05:00:00,1,2,3.0,online,X,5411,BE,extra,fields,here\n"
    latin1 = lines[5].replace(lines[5].split(b",")[6], "Café Müller".encode("latin-1"), 1)
    path.write_bytes(b"".join([*lines[:5], latin1, ragged, *lines[6:]]))
    home = tmp_path / "ws"

    result = runner.invoke(app, ["score", str(path), "--batch-size", "4", "--home", str(home)])

    assert result.exit_code == 0, result.output
    _no_traceback(result.output)
    rows_in = len(lines)  # the data lines (len(lines) - 1) plus the ragged one
    assert f"{rows_in:,} rows in" in _said(result) and "1 dead-lettered" in _said(result)
    assert _logged(home, "predictions") == rows_in - 1 and _logged(home, "dead_letters") == 1
    with duckdb.connect(str(home / "selfheal.duckdb"), read_only=True) as con:
        reason, payload = con.execute("SELECT reason, payload FROM dead_letters").fetchone()  # type: ignore[misc]
        merchants = {m for (m,) in con.execute("SELECT merchant_name FROM transactions").fetchall()}
    assert reason == "CSV record 7 has 12 fields; the header has 9" and json.loads(payload) == ragged.decode().strip()
    assert "Caf\ufffd M\ufffdller" in merchants  # scored; the undecodable bytes shown as U+FFFD


def test_a_bad_output_path_is_refused_before_anything_is_scored(tmp_path: Path) -> None:
    path = tmp_path / "live.csv"
    _live().to_csv(path, index=False)
    home = tmp_path / "ws"
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")

    for out, words in (
        (tmp_path, "is a directory"),
        (tmp_path / "decisions.xlsx", "unsupported output format '.xlsx'"),
        (blocker / "decisions.parquet", "is not a directory"),
    ):
        result = runner.invoke(app, ["score", str(path), "--out", str(out), "--home", str(home)])
        assert result.exit_code == 1 and words in _said(result), result.output
        _no_traceback(result.output)
    assert _logged(home, "predictions") == 0


def test_unusable_input_files_are_refused_with_a_message(tmp_path: Path) -> None:
    home = tmp_path / "ws"
    empty_parquet, garbage_parquet, folder = tmp_path / "e.parquet", tmp_path / "g.parquet", tmp_path / "d.csv"
    empty_parquet.write_bytes(b"")
    garbage_parquet.write_bytes(b"\x00\xffnot parquet at all" * 50)
    folder.mkdir()

    for source, words in (
        (empty_parquet, "cannot read"),
        (garbage_parquet, "as Parquet"),
        (folder, "is a directory"),
        (tmp_path / "missing.csv", "no such file"),
    ):
        result = runner.invoke(app, ["score", str(source), "--home", str(home)])
        assert result.exit_code == 1 and words in _said(result), (source, result.output)
        _no_traceback(result.output)
    assert _logged(home, "predictions") == 0

    empty_csv, garbage_csv = tmp_path / "empty.csv", tmp_path / "garbage.csv"
    empty_csv.write_text("")
    garbage_csv.write_bytes(bytes(range(256)) * 20)
    assert "0 rows in" in runner.invoke(app, ["score", str(empty_csv), "--home", str(home)]).stdout
    result = runner.invoke(app, ["score", str(garbage_csv), "--home", str(home)])
    # Every line dead-lettered, none lost; nothing scored is a failure (it exited 0 and named no reason).
    assert result.exit_code == 1, result.output
    assert "no row could be scored" in _said(result)
    assert _logged(home, "predictions") == 0 and _logged(home, "dead_letters") > 0
    with duckdb.connect(str(home / "selfheal.duckdb"), read_only=True) as con:
        (commonest,) = con.execute(
            "SELECT reason FROM dead_letters GROUP BY reason ORDER BY count(*) DESC, reason LIMIT 1"
        ).fetchone()  # type: ignore[misc]
    assert f"dead-lettered: {commonest}" in _said(result)


def test_a_semicolon_separated_csv_is_refused_with_what_to_do(tmp_path: Path) -> None:
    """Excel in a locale with decimal commas saves "CSV" with `;` between fields. Read with `,` its header
    is one field, and every row used to be dead-lettered as "CSV record N has 2 fields; the header has 1"
    (9,552 of 9,552 on a handbook day): a reason that names neither the cause nor the fix."""
    home = tmp_path / "ws"
    source = tmp_path / "excel.csv"
    _live().to_csv(source, sep=";", decimal=",", index=False, encoding="utf-8-sig")
    result = runner.invoke(app, ["score", str(source), "--home", str(home)])
    assert result.exit_code == 1, result.output
    assert "separated by ';'" in _said(result) and "commas" in _said(result), result.output
    _no_traceback(result.output)
    assert _logged(home, "predictions") == 0 and _logged(home, "dead_letters") == 0


def test_train_and_export_refuse_what_they_cannot_use(tmp_path: Path) -> None:
    home = ["--home", str(tmp_path / "ws")]
    garbage = tmp_path / "g.parquet"
    garbage.write_bytes(b"nope" * 100)
    one_day = tmp_path / "day.csv"
    Simulator(WorldConfig(customers=50, terminals=80)).generate(0, 1).to_csv(one_day, index=False)

    for args, words in (
        (["train", "--data", str(garbage)], "Parquet magic bytes not found"),
        (["train", "--data", str(tmp_path / "none.parquet")], "no such file"),
        (["train", "--data", str(one_day), "--no-register"], "cannot train on 1 day(s) of data"),
        (["export", "predictions", "--out", str(tmp_path / "x.csv")], "unsupported output format '.csv'"),
        (["export", "predictions", "--out", str(tmp_path / "x.parquet"), "--since", "2018-05-02", "--until", "2018-05-01"],
         "must be after --since"),
    ):  # fmt: skip
        result = runner.invoke(app, [*args, *home])
        assert result.exit_code == 1 and words in _said(result), (args, result.output)
        _no_traceback(result.output)


def test_runbook_commands_report_bad_folders_and_files(tmp_path: Path) -> None:
    shipped = Path(__file__).resolve().parents[1] / "runbooks"
    twins = tmp_path / "twins"
    twins.mkdir()
    for name in ("a.md", "b.md"):
        (twins / name).write_text((shipped / "corrupted_artifact.md").read_text())
    latin = tmp_path / "latin"
    latin.mkdir()
    (latin / "x.md").write_bytes("---\nid: caf\xe9\n".encode("latin-1"))

    missing = runner.invoke(app, ["runbooks", "list", "--dir", str(tmp_path / "nope")])
    duplicated = runner.invoke(app, ["runbooks", "list", "--dir", str(twins)])
    linted = runner.invoke(app, ["runbooks", "lint", str(latin)])
    empty = runner.invoke(app, ["runbooks", "lint", str(tmp_path / "twins" / ".." / "latin" / "..")])

    assert missing.exit_code == 1 and "no such runbook folder" in _said(missing)
    assert duplicated.exit_code == 1 and "duplicate id 'corrupted_artifact'" in _said(duplicated)
    assert linted.exit_code == 1 and "not UTF-8 text" in _said(linted) and "[encoding]" in _said(linted)
    assert empty.exit_code == 1 and "no runbooks" in _said(empty)
    for result in (missing, duplicated, linted, empty):
        _no_traceback(result.output)


@pytest.mark.parametrize(
    "command",
    [
        ["investigate", "INC-1"],
        ["approve", "INC-1", "--by", "alice"],
        ["deny", "INC-1", "--by", "alice"],
        ["ask", "INC-1", "/timeline"],
        ["serve", "--port", "0"],
    ],
    ids=lambda c: c[0],
)
def test_commands_that_run_the_responder_name_the_runbook_that_does_not_load(
    tmp_path: Path, command: list[str]
) -> None:
    # Each loads the whole runbook folder; one bad approval value used to end them in a traceback.
    shipped = Path(__file__).resolve().parents[1] / "runbooks"
    books = tmp_path / "books"
    books.mkdir()
    text = (shipped / "threshold_misconfig.md").read_text()
    (books / "threshold_misconfig.md").write_text(text.replace("set_threshold: auto", "set_threshold: manual"))
    home = tmp_path / "ws"
    Platform.open(home, create=True).close()

    result = runner.invoke(app, [*command, "--home", str(home), "--runbooks", str(books)])

    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    said = _said(result)
    assert f"{books / 'threshold_misconfig.md'}:13: actions.set_threshold" in said, said
    assert "[front-matter]" in said and f"selfheal runbooks lint {books}" in said, said
    _no_traceback(result.output)


def test_filters_that_cannot_match_are_refused(tmp_path: Path) -> None:
    home = ["--home", str(tmp_path / "ws")]
    bogus = runner.invoke(app, ["incidents", "list", "--status", "bogus", *home])
    backwards = runner.invoke(app, ["monitor", "run", "--since", "2018-05-02", "--until", "2018-05-01", *home])

    assert bogus.exit_code == 1 and "unknown status 'bogus': one of open, investigating" in _said(bogus)
    assert backwards.exit_code == 1 and "must be after --since" in _said(backwards)


def test_score_on_a_failing_disk_sets_every_row_aside_and_says_where(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scoring log cannot be written at all (a full disk): every row is still scored, its decision
    written to --out, and its log rows set aside as JSON lines beside the database, with a message."""
    from store.db import Store

    live = _live(rows=12)
    path, decisions = tmp_path / "live.csv", tmp_path / "decisions.csv"
    live.to_csv(path, index=False)
    home = tmp_path / "ws"

    def full(self: Store, table: str, frame: object) -> int:
        raise OSError("No space left on device")

    monkeypatch.setattr(Store, "append", full)
    result = runner.invoke(app, ["score", str(path), "--batch-size", "5", "--out", str(decisions), "--home", str(home)])

    assert result.exit_code == 1
    _no_traceback(result.output)
    said = _said(result)
    assert "12 scored" in said and "could not be written" in said and "No space left" in said
    assert "set aside" in said and "log-spill" in said.replace(" ", "")  # Rich may wrap the path at its "-"
    assert len(pd.read_csv(decisions)) == 12
    spilled = [json.loads(line) for f in (home / "log-spill").glob("*.jsonl") for line in f.read_text().splitlines()]
    assert sorted(r["row"]["transaction_id"] for r in spilled if r["table"] == "predictions") == sorted(
        str(t) for t in live["transaction_id"]
    )
    monkeypatch.undo()  # the disk has room again
    loaded = runner.invoke(app, ["load-spills", "--json", "--home", str(home)])
    assert loaded.exit_code == 0, loaded.output
    assert {x["status"] for x in json.loads(loaded.stdout)} == {"loaded"}
    assert _logged(home, "predictions") == 12 == _logged(home, "transactions")
    nothing_left = runner.invoke(app, ["load-spills", "--home", str(home)])
    assert nothing_left.exit_code == 0 and "no set-aside log rows" in nothing_left.output


READ_COMMANDS = [
    ["status"],
    ["incidents", "list"],
    ["incidents", "show", "INC-1"],
    ["runs"],
    ["pages", "list"],
    ["audit"],
    ["models", "list"],
    ["models", "rollback", "--reason", "test"],
    ["export", "transactions", "--out", "{tmp}/out.parquet"],
    ["monitor", "run", "--since", "2018-05-01", "--until", "2018-05-02"],
    ["load-spills"],
    ["ask", "INC-1", "what happened?"],
    ["investigate", "INC-1"],
    ["run", "simulator", "--days", "1"],
]


@pytest.mark.parametrize("command", READ_COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_commands_on_a_mistyped_workspace_say_so_and_create_nothing(tmp_path: Path, command: list[str]) -> None:
    # They used to create an empty workspace there and print empty tables with exit 0: a typo in --home
    # looked like a healthy workspace with nothing in it.
    home = tmp_path / "no-such-workspace"

    args = [arg.replace("{tmp}", str(tmp_path)) for arg in command]
    result = runner.invoke(app, [*args, "--home", str(home)])

    assert result.exit_code == 1, result.output
    _no_traceback(result.output)
    unwrapped = "".join(str(result.output).split())  # Rich may wrap a long path mid-word
    assert f"noworkspaceat{home}" in unwrapped, result.output
    assert not home.exists()


def test_the_demo_refuses_to_wipe_a_folder_it_did_not_make(tmp_path: Path) -> None:
    # It used to delete whatever --home named before starting: `--home .selfheal` or `--home .` lost real work.
    precious = tmp_path / "work" / "important.txt"
    precious.parent.mkdir()
    precious.write_text("precious")

    result = runner.invoke(app, ["demo", "--home", str(precious.parent), "--live-days", "1"])

    assert result.exit_code == 1, result.output
    _no_traceback(result.output)
    assert "not made by the demo" in _said(result) and precious.read_text() == "precious"


def test_the_demo_wipes_only_its_own_workspace(tmp_path: Path) -> None:
    from selfheal.demo import DEMO_MARKER, _fresh_home

    fresh, empty, earlier = tmp_path / "new" / "demo", tmp_path / "empty", tmp_path / "earlier"
    empty.mkdir()
    for home in (fresh, empty):
        _fresh_home(home)
        assert [p.name for p in home.iterdir()] == [DEMO_MARKER]
    _fresh_home(earlier)
    (earlier / "selfheal.duckdb").write_text("an earlier demo's database")
    _fresh_home(earlier)
    assert [p.name for p in earlier.iterdir()] == [DEMO_MARKER]


def test_home_given_before_the_command_names_its_workspace(tmp_path: Path) -> None:
    # The README says "--home or SELFHEAL_HOME"; `selfheal --home X status` failed with "No such option".
    home = tmp_path / "typo"

    before = runner.invoke(app, ["--home", str(home), "status"])
    after = runner.invoke(app, ["--home", str(home), "incidents", "list"])

    for result in (before, after):
        assert result.exit_code == 1, result.output
        assert f"noworkspaceat{home}" in "".join(result.output.split())
    # The command's own --home wins; nothing global is left behind for the next command.
    own = runner.invoke(app, ["--home", str(home), "status", "--home", str(tmp_path / "other")])
    assert f"noworkspaceat{tmp_path / 'other'}" in "".join(own.output.split())
    later = runner.invoke(app, ["status", "--home", str(tmp_path / "third")])
    assert f"noworkspaceat{tmp_path / 'third'}" in "".join(later.output.split())


def test_version_is_printed() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.startswith("selfheal "), result.output
