"""CSV sources: Arrow's fast reader and Python's `csv` reader deliver the same records, and when Arrow
refuses part of a file the Python reader resumes exactly where it stopped (nothing twice, nothing lost)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scorer import sources
from scorer.sources import Batch, read_records
from scorer.validate import UnreadableRecord

HEADER = ["transaction_id", "merchant_name", "amount"]


def _split(batches: Iterator[Batch]) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    frames: list[pd.DataFrame] = []
    bad: list[tuple[str, str]] = []
    for batch in batches:
        if isinstance(batch, pd.DataFrame):
            frames.append(batch)
        else:
            assert all(isinstance(record, UnreadableRecord) for record in batch)
            bad.extend((str(record), record.reason) for record in batch)
    good = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return good, bad


def _python_reader(path: Path, batch_size: int) -> Iterator[Batch]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        header = sources._unique(next(csv.reader(handle)))
    return sources._python_csv_rows(path, batch_size, header)


def _both(path: Path, batch_size: int = 7) -> tuple[tuple[pd.DataFrame, list], tuple[pd.DataFrame, list]]:
    return _split(read_records(path, batch_size=batch_size)), _split(_python_reader(path, batch_size))


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks of 256 bytes, so a small file spans many of them (and a long record straddles two)."""
    monkeypatch.setattr(sources._ArrowCsv, "_BLOCK_BYTES", 256)


@pytest.fixture
def resumed_from(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The record counts from which the Python reader was asked to resume, in call order."""
    calls: list[int] = []
    python_rows = sources._python_csv_rows

    def spy(path: Path, batch_size: int, header: list[str], *, skip_records: int = 0) -> Iterator[Batch]:
        calls.append(skip_records)
        return python_rows(path, batch_size, header, skip_records=skip_records)

    monkeypatch.setattr(sources, "_python_csv_rows", spy)
    return calls


def _assert_same(path: Path) -> tuple[pd.DataFrame, list]:
    (fast_good, fast_bad), (slow_good, slow_bad) = _both(path)
    pd.testing.assert_frame_equal(fast_good, slow_good)
    assert fast_bad == slow_bad
    return fast_good, fast_bad


cell = st.text(alphabet=st.sampled_from(list('ab,"\n\r é\0\t€1')), max_size=6)
record = st.lists(cell, min_size=1, max_size=4)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=st.lists(record, max_size=40), blank_every=st.integers(2, 9))
def test_arrow_and_python_readers_deliver_the_same_records(
    records: list[list[str]], blank_every: int, tmp_path: Path, small_blocks: None
) -> None:
    text = io.StringIO(newline="")
    writer = csv.writer(text, lineterminator="\r\n")  # quotes a field holding either character
    writer.writerow(HEADER)
    for number, fields in enumerate(records):
        writer.writerow(fields)
        if number % blank_every == 0:
            text.write("\r\n")
    path = tmp_path / "records.csv"
    path.write_bytes(text.getvalue().encode())

    good, bad = _assert_same(path)

    # Every record is delivered once (csv.writer quotes a lone empty field, so none is a blank line):
    # good when it has the header's width, else dead-lettered.
    assert len(good) + len(bad) == len(records)


def test_the_python_reader_resumes_where_arrow_stopped(
    tmp_path: Path, small_blocks: None, resumed_from: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = [",".join(HEADER)]
    for number in range(200):
        lines.append(f"t{number},shop {number},{number}.5")
        if number in (3, 90, 150):
            lines.append(f"ragged{number},1")
    path = tmp_path / "late-latin1.csv"
    body = "\n".join(lines).encode() + b"\n"
    body = body.replace(b"shop 170,", "Caf\u00e9 170,".encode("latin-1"))  # not UTF-8, many blocks in
    path.write_bytes(body)
    monkeypatch.setattr(sources, "_is_utf8", lambda path: True)  # Arrow meets the foreign bytes itself
    good, bad = _split(read_records(path, batch_size=16))

    assert resumed_from and 0 < resumed_from[0] < 170  # Arrow read the first blocks, Python the rest
    assert good["transaction_id"].tolist() == [f"t{n}" for n in range(200)]  # each once, in order
    assert good.loc[170, "merchant_name"] == "Caf\ufffd 170"
    assert [text for text, _ in bad] == ["ragged3,1", "ragged90,1", "ragged150,1"]
    assert bad[0][1] == "CSV record 6 has 2 fields; the header has 3"
    assert bad[2][1] == "CSV record 155 has 2 fields; the header has 3"


def test_a_record_longer_than_a_block_is_read(tmp_path: Path, small_blocks: None, resumed_from: list[int]) -> None:
    rows = [f"t{n},shop,{n}" for n in range(60)]
    rows[40] = "t40," + "x" * 2000 + ",40"  # Arrow refuses a record that straddles two blocks
    path = tmp_path / "long.csv"
    path.write_text(",".join(HEADER) + "\n" + "\n".join(rows) + "\n")
    good, bad = _split(read_records(path, batch_size=16))

    assert 0 < resumed_from[0] <= 40
    assert good["transaction_id"].tolist() == [f"t{n}" for n in range(60)] and not bad
    assert good.loc[40, "merchant_name"] == "x" * 2000


def test_a_byte_order_mark_is_not_part_of_the_first_name_and_nul_is_shown(tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes("\ufeff".encode() + b"transaction_id,merchant_name,amount\r\nt1,a\x00b,\r\n")

    good, bad = _assert_same(path)

    assert list(good.columns) == HEADER and not bad
    assert good.loc[0, "merchant_name"] == "a\ufffdb" and pd.isna(good.loc[0, "amount"])
