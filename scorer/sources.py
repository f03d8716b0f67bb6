"""Batches of raw records from files or stdin, for scoring.

Unlike `scorer.data.load_transactions` (which loads clean training data and refuses bad files), a scoring
source must never lose a row:

- a record that cannot be parsed (a CSV record with the wrong number of fields, a JSONL line that is not
  JSON) becomes an `UnreadableRecord`: validation dead-letters it with the reason and its raw text;
- bytes that are not UTF-8 are decoded as U+FFFD (a Latin-1 merchant name must not stop a file);
- a UTF-8 CSV is parsed by `pyarrow.csv` (~7x Python's `csv`, `benchmarks/README.md`); anything Arrow
  cannot take is read by Python's `csv`, which takes over at the first record Arrow did not deliver;
- column types are left for validation to judge (CSV cells stay text).

A file that cannot be read at all (missing, a directory, not Parquet, no CSV header) is refused with a
`DataFormatError` *before* the first batch, so nothing is scored from it. Parquet is read row group by
row group: one that turns out to be corrupt mid-file raises a `DataFormatError` that says how many rows
were read before it (those were scored; nothing after it was).
"""

from __future__ import annotations

import codecs
import csv
import json
import sys
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any, Literal, TypeAlias

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from scorer.columns import HANDBOOK_COLUMNS, REQUIRED_INPUT_COLUMNS
from scorer.data import DataFormatError
from scorer.validate import UnreadableRecord

Batch: TypeAlias = pd.DataFrame | list[Any]

# csv's default field limit (128 KiB) would make one huge cell an error for the whole reader; validation
# bounds text fields and dead-letters the row instead. (csv's limit is process-wide: it is raised when a
# CSV is first read, not when this module is imported.)
_CSV_FIELD_LIMIT = min(sys.maxsize, 2**31 - 1)


def read_records(source: str | Path, *, batch_size: int = 10_000, stdin: IO[str] | None = None) -> Iterator[Batch]:
    """Yield batches from a .csv, .parquet or .jsonl file, or JSONL from ``stdin`` when source is ``-``.

    The file is opened (and a CSV header or the Parquet footer read) before this returns, so a file
    that cannot be read is refused before anything is scored.

    Raises:
        FileNotFoundError: the file does not exist.
        DataFormatError: the file type is not supported, or the file cannot be read as that type.
    """
    if str(source) == "-":
        if stdin is None:
            raise DataFormatError("reading '-' needs standard input")
        return _jsonl_batches(stdin, batch_size)
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    if path.is_dir():
        raise DataFormatError(f"{path} is a directory: give a .csv, .parquet or .jsonl file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            return _parquet_batches(path, batch_size)
        if suffix == ".csv":
            return _csv_batches(path, batch_size)
        if suffix in (".jsonl", ".ndjson", ".json"):
            return _jsonl_file_batches(path, batch_size)
    except OSError as error:
        raise DataFormatError(f"cannot read {path}: {error.strerror or error}") from error
    raise DataFormatError(f"unsupported file type {suffix!r} for {path}: use .csv, .parquet or .jsonl")


def _canonical_names(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.rename(columns={k: v for k, v in HANDBOOK_COLUMNS.items() if k in frame.columns})


# Each reader checks its file now (and closes it again) and reads it in a generator that opens it when
# the first batch is asked for: a generator never started would never close a file opened for it.


def _parquet_batches(path: Path, batch_size: int) -> Iterator[Batch]:
    try:
        pq.read_metadata(path)
    except (pa.ArrowException, ValueError) as error:
        raise DataFormatError(f"cannot read {path} as Parquet: {error}") from error
    return _parquet_rows(path, batch_size)


def _parquet_rows(path: Path, batch_size: int) -> Iterator[Batch]:
    read = 0
    with pq.ParquetFile(path) as parquet:
        batches = parquet.iter_batches(batch_size=batch_size)
        while True:
            try:
                record_batch = next(batches)
            except StopIteration:
                return
            except (pa.ArrowException, OSError, ValueError) as error:
                raise DataFormatError(
                    f"{path} is corrupt after its first {read:,} rows (those were read; nothing after): {error}"
                ) from error
            read += record_batch.num_rows
            yield _canonical_names(record_batch.to_pandas())


def _csv_batches(path: Path, batch_size: int) -> Iterator[Batch]:
    csv.field_size_limit(_CSV_FIELD_LIMIT)
    with _open_text(path) as handle:
        reader = csv.reader(_Lines(handle))
        try:
            header = _header(reader)
        except csv.Error as error:
            raise DataFormatError(f"cannot read the header of {path} as CSV: {error}") from error
        if header is None:
            return iter(())  # an empty file (or blank lines only): no rows
        _refuse_other_separators(path, header)
        header_on_line_one = reader.line_num == 1
    reading = _arrow_reading(path) if header_on_line_one else None
    if reading is None:
        return _python_csv_rows(path, batch_size, header)
    return _csv_rows(path, batch_size, header, one_block=reading == "one block")


def _refuse_other_separators(path: Path, header: list[str]) -> None:
    """Refuse a file whose header is one field of column names joined by `;` or tabs (Excel's "CSV" where
    the decimal mark is a comma): read with commas, every row would be dead-lettered for a field count, naming neither the
    cause nor the fix, and its amounts ("118,5") would not be numbers anyway."""
    if len(header) != 1:
        return
    known = {*HANDBOOK_COLUMNS, *REQUIRED_INPUT_COLUMNS}
    for separator, name in ((";", "';'"), ("\t", "tabs")):
        if known & {part.strip() for part in header[0].split(separator)}:
            raise DataFormatError(
                f"{path} looks separated by {name}, not commas (its header is one field: {header[0][:80]!r}); "
                "save it as CSV with commas between fields and '.' as the decimal mark"
            )


def _header(reader: Iterator[list[str]]) -> list[str] | None:
    """The first record that is not a blank line, names made unique; None when there is none."""
    for names in reader:
        if names:
            return _unique(names)
    return None


def csv_header(path: Path) -> list[str] | None:
    """A CSV file's column names as `read_records` uses them (blank lines before them skipped, a
    byte-order mark dropped, a repeated name suffixed); None for a file without any."""
    with _open_text(path) as handle:
        return _header(csv.reader(_Lines(handle)))


# A file Arrow must read in one block (one with quotes, see `_arrow_reading`) is held in memory whole, as
# text and then as a table of strings; above this size the Python reader (constant memory, ~6x slower)
# reads it instead.
ONE_BLOCK_MAX_BYTES = 256 << 20

ArrowReading = Literal["blocks", "one block"]


def _arrow_reading(path: Path, chunk_bytes: int = 1 << 22) -> ArrowReading | None:
    """How Arrow reads this file as Python's `csv` does, or None when it cannot; one streaming pass
    (~1 GB/s).

    - Bytes that are not UTF-8: None. Arrow cannot hand them to the invalid-row handler (it prints an
      ignored exception and stops).
    - Quotes: ``"one block"`` (None above `ONE_BLOCK_MAX_BYTES`). A quoted field can hold a line break,
      and Arrow gets such records wrong where they cross its block boundaries: a quoted CR that straddles
      two blocks is mis-split (apache/arrow#51368, open in pyarrow 26), and a record longer than a block
      with a quoted line break is cut in two instead of refused (hypothesis found both;
      `tests/test_sources.py`). In a single block nothing straddles. Excel's CSV export (quotes around
      text with commas) is such a file.
    - No quotes: ``"blocks"`` (1 MiB each, streamed). Every line break ends a record there, and a record
      longer than a block makes Arrow refuse, after which Python's reader takes over.

    The caller checks that the header is on the first line: Arrow's ``skip_rows`` counts lines.
    """
    decoder = codecs.getincrementaldecoder("utf-8")()
    quote = False
    with path.open("rb") as handle:
        try:
            while chunk := handle.read(chunk_bytes):
                decoder.decode(chunk)
                quote = quote or b'"' in chunk
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return None
    if not quote:
        return "blocks"
    return "one block" if path.stat().st_size <= ONE_BLOCK_MAX_BYTES else None


def _open_text(path: Path) -> IO[str]:
    # utf-8-sig: a byte-order mark (Excel writes one) is not part of the first column's name.
    return path.open(encoding="utf-8-sig", errors="replace", newline="")


def _csv_rows(path: Path, batch_size: int, header: list[str], *, one_block: bool = False) -> Iterator[Batch]:
    """Arrow's C++ reader (~6x faster than `csv`), and Python's reader from the first record Arrow did
    not deliver when Arrow refuses the rest of the file (a record longer than a block, 1 MiB). Arrow's
    records are delivered strictly in file order, so the Python reader picks up exactly where Arrow
    stopped: every record is delivered once. ``one_block``: the whole file in one Arrow block."""
    arrow = _ArrowCsv(path, batch_size, header, one_block=one_block)
    try:
        yield from arrow.batches()
    except _ArrowRefused:
        yield from arrow.salvage()
        yield from _python_csv_rows(path, batch_size, header, skip_records=arrow.delivered)


class _ArrowRefused(Exception):
    """Arrow stopped reading the file; what it parsed before the refusal is in `_ArrowCsv.salvage`."""


class _ArrowCsv:
    """A CSV file read by `pyarrow.csv` in blocks, delivered as the Python reader delivers it.

    Cells stay text and an empty cell is missing. Records go out in chunks of ``batch_size``
    consecutive records: the chunk's good records as a frame, then its bad ones (a wrong number of
    fields, an unclosed quote: Arrow's invalid-row handler, which numbers them) as `UnreadableRecord`s.
    Arrow reports a block's bad records while it parses ahead, before it returns the block before it;
    their record numbers put each in its place, so what has been delivered is always a prefix of the
    file's records (``delivered`` of them: the Python reader's resume point).
    """

    _BLOCK_BYTES = 1 << 20

    def __init__(self, path: Path, batch_size: int, header: list[str], *, one_block: bool = False) -> None:
        self._path, self._batch_size, self._header = path, batch_size, header
        # One block: a byte past the file's size, so Arrow never cuts it (see `_arrow_reading`).
        self._block_bytes = path.stat().st_size + 1 if one_block else self._BLOCK_BYTES
        self._schema = pa.schema([(name, pa.string()) for name in header])
        self._good = self._schema.empty_table()  # good records of the blocks Arrow returned, not delivered
        self._bad: deque[tuple[int, UnreadableRecord]] = deque()  # (data record index, record), in order
        self.delivered = 0  # data records delivered, good and bad

    def batches(self) -> Iterator[Batch]:
        try:
            reader = pacsv.open_csv(self._path, **self._options())
        except (pa.ArrowException, OSError) as error:
            raise _ArrowRefused from error
        with reader:
            while True:
                try:
                    block = reader.read_next_batch()
                except StopIteration:
                    break
                except (pa.ArrowException, OSError) as error:
                    raise _ArrowRefused from error
                self._good = pa.concat_tables([self._good, pa.Table.from_batches([block])])  # no copy
                yield from self._chunks(whole_only=True)
        yield from self._chunks(whole_only=False)  # the end of the file: every record is known
        if self._bad:  # cannot happen: Arrow numbered a record the file does not have
            raise RuntimeError(f"CSV records left after the end of {self._path}: {list(self._bad)[:3]}")

    def salvage(self) -> Iterator[Batch]:
        """After a refusal: the records that follow the delivered ones without a gap (the good records
        of the blocks Arrow returned, and bad ones at their places). The rest is the Python reader's."""
        yield from self._chunks(whole_only=False)

    def _chunks(self, *, whole_only: bool) -> Iterator[Batch]:
        """The next chunks of ``batch_size`` records in file order; with ``whole_only``, full ones only
        (more blocks will come)."""
        while True:
            good, bad = self._plan()
            if good + bad == 0 or (whole_only and good + bad < self._batch_size):
                return
            yield from self._emit(good, [self._bad.popleft()[1] for _ in range(bad)])
            if good + bad < self._batch_size:
                return

    def _plan(self) -> tuple[int, int]:
        """(good, bad) records of the next chunk: the longest run of records that follow the delivered
        ones, up to ``batch_size``. A bad record is taken at its number's place; good records fill the
        places between, and there are no others: Arrow reports a block's bad records before it returns
        the block."""
        good = bad = 0
        position = self.delivered
        while good + bad < self._batch_size:
            if bad < len(self._bad) and self._bad[bad][0] == position:
                bad += 1
                position += 1
                continue
            room = self._batch_size - good - bad
            before_next_bad = self._bad[bad][0] - position if bad < len(self._bad) else room
            step = min(self._good.num_rows - good, before_next_bad, room)
            if step <= 0:
                break
            good += step
            position += step
        return good, bad

    def _emit(self, good_rows: int, bad: list[UnreadableRecord]) -> Iterator[Batch]:
        self.delivered += good_rows + len(bad)
        if good_rows:
            now, self._good = self._good.slice(0, good_rows), self._good.slice(good_rows)
            yield _canonical_names(_without_nul(now).to_pandas())
        if bad:
            yield bad

    def _options(self) -> dict[str, Any]:
        return {
            "read_options": pacsv.ReadOptions(
                column_names=self._header, skip_rows=1, block_size=self._block_bytes, use_threads=False
            ),
            "parse_options": pacsv.ParseOptions(newlines_in_values=True, invalid_row_handler=self._invalid),
            "convert_options": pacsv.ConvertOptions(
                column_types=self._schema,
                strings_can_be_null=True,
                quoted_strings_can_be_null=True,
                null_values=[""],
            ),
        }

    def _invalid(self, row: pacsv.InvalidRow) -> str:
        # Arrow numbers records from 1 at the header and skips blank lines, as `_python_csv_rows` does;
        # without a number (only with use_threads) the record cannot be placed: Arrow stops, Python reads.
        if row.number is None:
            return "error"
        text = row.text.replace("\0", "\ufffd")
        self._bad.append((row.number - 2, _ragged(text, row.number, row.actual_columns, row.expected_columns)))
        return "skip"


def _ragged(text: str, record: int, fields: int, width: int) -> UnreadableRecord:
    return UnreadableRecord(text, f"CSV record {record} has {fields} fields; the header has {width}")


def _without_nul(table: pa.Table) -> pa.Table:
    """NUL characters as U+FFFD, as the Python reader gives them (`csv` refuses NUL outright)."""
    columns = [
        pc.replace_substring(column, "\0", "\ufffd") if pc.any(pc.match_substring(column, "\0")).as_py() else column
        for column in table.columns
    ]
    return pa.Table.from_arrays(columns, schema=table.schema)


class _Lines:
    """The file's lines for `csv.reader`, remembering the text of the record being parsed (a bad record's
    payload) and replacing NUL characters, which `csv` refuses for the whole reader."""

    def __init__(self, handle: Iterable[str]) -> None:
        self._handle = iter(handle)
        self.record: list[str] = []

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        line = next(self._handle).replace("\0", "\ufffd")
        self.record.append(line)
        return line

    def take(self) -> str:
        text, self.record = "".join(self.record).rstrip("\r\n"), []
        return text


def _python_csv_rows(path: Path, batch_size: int, header: list[str], *, skip_records: int = 0) -> Iterator[Batch]:
    """Python's `csv` reader: slower, but it reads any bytes (U+FFFD for what is not UTF-8). The first
    ``skip_records`` data records (blank lines not counted) were delivered already."""
    with _open_text(path) as handle:
        lines = _Lines(handle)
        reader = csv.reader(lines)
        _header(reader)
        lines.take()
        record = 1  # the header; records are numbered like Arrow numbers them
        width = len(header)
        good: list[list[str]] = []
        bad: list[UnreadableRecord] = []
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                break
            except csv.Error as error:
                record += 1
                text = lines.take()
                if record > skip_records + 1:
                    bad.append(UnreadableRecord(text, f"CSV record {record}: {error}"))
                continue
            text = lines.take()
            if not fields:  # a blank line
                continue
            record += 1
            if record <= skip_records + 1:
                continue
            if len(fields) != width:
                bad.append(_ragged(text, record, len(fields), width))
            else:
                good.append(fields)
            if len(good) + len(bad) >= batch_size:
                yield from _csv_chunk(good, bad, header)
                good, bad = [], []
        yield from _csv_chunk(good, bad, header)


def _csv_chunk(good: list[list[str]], bad: list[UnreadableRecord], header: list[str]) -> Iterator[Batch]:
    if good:
        # Cells stay text (what `pd.read_csv(dtype=str)` gives); an empty cell is missing.
        frame = pd.DataFrame(good, columns=header, dtype=str).replace("", np.nan)
        yield _canonical_names(frame)
    if bad:
        yield list(bad)


def _unique(header: list[str]) -> list[str]:
    """Header names, a repeated one suffixed like pandas does (``amount``, ``amount.1``)."""
    seen: dict[str, int] = {}
    out = []
    for name in header:
        count = seen.get(name, 0)
        seen[name] = count + 1
        out.append(name if count == 0 else f"{name}.{count}")
    return out


def _jsonl_file_batches(path: Path, batch_size: int) -> Iterator[Batch]:
    path.open("rb").close()  # readable now, or an OSError before anything is scored
    return _jsonl_file_rows(path, batch_size)


def _jsonl_file_rows(path: Path, batch_size: int) -> Iterator[Batch]:
    with path.open(encoding="utf-8", errors="replace") as handle:
        yield from _jsonl_batches(handle, batch_size)


def _jsonl_batches(handle: IO[str], batch_size: int) -> Iterator[Batch]:
    batch: list[Any] = []
    for number, line in enumerate(handle, start=1):
        if not line.strip():
            continue
        record = parse_json_line(line, number)
        if isinstance(record, dict) and not HANDBOOK_COLUMNS.keys().isdisjoint(record):  # handbook names
            record = {HANDBOOK_COLUMNS.get(k, k): v for k, v in record.items()}
        batch.append(record)
        if len(batch) >= batch_size:
            yield batch
            batch = []
    if batch:
        yield batch



def parse_json_line(line: str, number: int) -> Any:
    """One JSONL line as Python objects exactly as `json.loads` gives them, or an `UnreadableRecord`.

    orjson parses the common line ~2x faster (`benchmarks/README.md`, sources). What it refuses and
    `json` takes (NaN and Infinity literals, lone surrogate escapes) goes to `json`, and so does a line
    whose result holds a float of 2**63 or more: orjson reads an integer beyond 64 bits as a float (an
    id would change), `json` keeps it exact. Validation sees the same values and gives the same reasons
    either way.
    """
    try:
        parsed = orjson.loads(line)
    except orjson.JSONDecodeError:
        pass
    else:
        if not _holds_huge_float(parsed):
            return parsed
    try:
        return json.loads(line)
    except json.JSONDecodeError as error:
        # Kept as text: validation dead-letters it with this reason and payload.
        return UnreadableRecord(line.rstrip("\r\n"), f"line {number} is not JSON: {error.msg}")


_INT64_BOUND = 2.0**63


def _holds_huge_float(value: Any) -> bool:
    # A loop, not map/any: this runs on every JSONL line, and a record is a flat dict of ~10 values.
    if type(value) is dict:
        values: Iterable[Any] = value.values()
    elif type(value) is list:
        values = value
    else:
        return type(value) is float and not -_INT64_BOUND < value < _INT64_BOUND
    for item in values:
        kind = type(item)
        if kind is float:
            if not -_INT64_BOUND < item < _INT64_BOUND:  # NaN cannot come from orjson
                return True
        elif (kind is dict or kind is list) and _holds_huge_float(item):
            return True
    return False
