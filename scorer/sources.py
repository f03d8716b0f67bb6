"""Batches of raw records from files or stdin, for scoring.

Unlike `scorer.data.load_transactions` (which loads clean training data and refuses bad files), a scoring
source must never lose a row: malformed JSON lines are passed on as raw text so validation dead-letters
them with their payload, and column types are left for validation to judge.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, TypeAlias

import pandas as pd
import pyarrow.parquet as pq

from scorer.columns import HANDBOOK_COLUMNS
from scorer.data import DataFormatError

Batch: TypeAlias = pd.DataFrame | list[Any]


def read_records(source: str | Path, *, batch_size: int = 10_000, stdin: IO[str] | None = None) -> Iterator[Batch]:
    """Yield batches from a .csv, .parquet or .jsonl file, or JSONL from ``stdin`` when source is ``-``.

    Raises:
        FileNotFoundError: the file does not exist.
        DataFormatError: the file type is not supported.
    """
    if str(source) == "-":
        if stdin is None:
            raise DataFormatError("reading '-' needs standard input")
        return _jsonl_batches(stdin, batch_size)
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return _parquet_batches(path, batch_size)
    if suffix == ".csv":
        return _csv_batches(path, batch_size)
    if suffix in (".jsonl", ".ndjson", ".json"):
        return _jsonl_file_batches(path, batch_size)
    raise DataFormatError(f"unsupported file type {suffix!r} for {path}: use .csv, .parquet or .jsonl")


def _canonical_names(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.rename(columns={k: v for k, v in HANDBOOK_COLUMNS.items() if k in frame.columns})


def _parquet_batches(path: Path, batch_size: int) -> Iterator[Batch]:
    for record_batch in pq.ParquetFile(path).iter_batches(batch_size=batch_size):
        yield _canonical_names(record_batch.to_pandas())


def _csv_batches(path: Path, batch_size: int) -> Iterator[Batch]:
    # Read everything as text: validation parses and judges each value, so one bad cell cannot make
    # pandas reject (or silently re-type) a whole column.
    for chunk in pd.read_csv(path, chunksize=batch_size, dtype=str, keep_default_na=False, na_values=[""]):
        yield _canonical_names(chunk)


def _jsonl_file_batches(path: Path, batch_size: int) -> Iterator[Batch]:
    with path.open(encoding="utf-8", errors="replace") as handle:
        yield from _jsonl_batches(handle, batch_size)


def _jsonl_batches(handle: IO[str], batch_size: int) -> Iterator[Batch]:
    batch: list[Any] = []
    for line in handle:
        if not line.strip():
            continue
        try:
            record: Any = json.loads(line)
        except json.JSONDecodeError:
            record = line.rstrip("\n")  # kept as text: validation dead-letters it with this payload
        if isinstance(record, dict):
            record = {HANDBOOK_COLUMNS.get(k, k): v for k, v in record.items()}
        batch.append(record)
        if len(batch) >= batch_size:
            yield batch
            batch = []
    if batch:
        yield batch
