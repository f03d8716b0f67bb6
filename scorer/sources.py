"""Batches of raw records from files or stdin, for scoring.

Unlike `scorer.data.load_transactions` (which loads clean training data and refuses bad files), a scoring
source must never lose a row:

- a line that cannot be parsed (a CSV line with the wrong number of fields, a JSONL line that is not
  JSON) becomes an `UnreadableRecord`: validation dead-letters it with the reason and its raw text;
- bytes that are not UTF-8 are decoded as U+FFFD (a Latin-1 merchant name must not stop a file);
- column types are left for validation to judge (CSV cells stay text).

A file that cannot be read at all (missing, a directory, not Parquet, no CSV header) is refused with a
`DataFormatError` *before* the first batch, so nothing is scored from it. Parquet is read row group by
row group: one that turns out to be corrupt mid-file raises a `DataFormatError` that says how many rows
were read before it (those were scored; nothing after it was).
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any, TypeAlias

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from scorer.columns import HANDBOOK_COLUMNS
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
        try:
            next(csv.reader(_Lines(handle)))
        except StopIteration:
            return iter(())  # an empty file: no rows
        except csv.Error as error:
            raise DataFormatError(f"cannot read the header of {path} as CSV: {error}") from error
    return _csv_rows(path, batch_size)


def _open_text(path: Path) -> IO[str]:
    return path.open(encoding="utf-8", errors="replace", newline="")


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


def _csv_rows(path: Path, batch_size: int) -> Iterator[Batch]:
    with _open_text(path) as handle:
        lines = _Lines(handle)
        reader = csv.reader(lines)
        header = _unique(next(reader))
        lines.take()
        width = len(header)
        good: list[list[str]] = []
        bad: list[UnreadableRecord] = []
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                break
            except csv.Error as error:
                bad.append(UnreadableRecord(lines.take(), f"CSV line {reader.line_num}: {error}"))
                continue
            text = lines.take()
            if not fields:  # a blank line
                continue
            if len(fields) != width:
                bad.append(
                    UnreadableRecord(
                        text, f"CSV line {reader.line_num} has {len(fields)} fields; the header has {width}"
                    )
                )
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
        try:
            record: Any = json.loads(line)
        except json.JSONDecodeError as error:
            # Kept as text: validation dead-letters it with this reason and payload.
            record = UnreadableRecord(line.rstrip("\r\n"), f"line {number} is not JSON: {error.msg}")
        if isinstance(record, dict):
            record = {HANDBOOK_COLUMNS.get(k, k): v for k, v in record.items()}
        batch.append(record)
        if len(batch) >= batch_size:
            yield batch
            batch = []
    if batch:
        yield batch
