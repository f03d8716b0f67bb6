"""Loading transaction files (Parquet, CSV, JSONL) in the canonical or the handbook format.

Every file is mapped onto the canonical columns of `scorer.columns` here, once, so the rest of the
scorer never sees the handbook's `TX_*` spelling. Timestamps always come back as naive
`datetime64[ns]` (timezone-aware input is converted to UTC first), because the feature windows and the
time-based splits compare timestamps across frames and mixed resolutions or zones would silently misalign.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, TypeAlias

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from scorer.columns import HANDBOOK_COLUMNS, LABEL, REQUIRED_INPUT_COLUMNS, TIMESTAMP, TRANSACTION_ID

__all__ = ["DataFormatError", "TimeBound", "detect_format", "load_transactions", "to_canonical"]

FileFormat: TypeAlias = Literal["parquet", "csv", "jsonl"]
TimeBound: TypeAlias = str | dt.date | dt.datetime | pd.Timestamp | None

# Handbook columns that only re-encode TX_DATETIME; keeping them would give two clocks that can disagree.
_HANDBOOK_DERIVED = ("TX_TIME_SECONDS", "TX_TIME_DAYS")
_HANDBOOK_TIMESTAMP = "TX_DATETIME"
_SUFFIXES: dict[str, FileFormat] = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}
# Text formats are read in chunks when a time filter is given, so memory follows the kept rows.
_CHUNK_ROWS = 250_000


class DataFormatError(ValueError):
    """A transaction file or frame cannot be mapped onto the canonical columns."""


def detect_format(path: str | Path) -> FileFormat:
    """Return the file format implied by the file name.

    Args:
        path: File name; a trailing compression suffix (`.gz`, `.zst`, `.bz2`, `.xz`) is ignored.

    Returns:
        "parquet", "csv" or "jsonl".

    Raises:
        DataFormatError: The suffix is not one we read.
    """
    suffixes = [s.lower() for s in Path(path).suffixes]
    if suffixes and suffixes[-1] in {".gz", ".zst", ".bz2", ".xz", ".zip"}:
        suffixes = suffixes[:-1]
    if suffixes and suffixes[-1] in _SUFFIXES:
        return _SUFFIXES[suffixes[-1]]
    raise DataFormatError(f"{path}: unknown transaction file type; expected one of {sorted(_SUFFIXES)}")


def load_transactions(
    path: str | Path,
    *,
    since: TimeBound = None,
    until: TimeBound = None,
) -> pd.DataFrame:
    """Read a transaction file in canonical or handbook format into canonical columns.

    Args:
        path: A `.parquet`, `.csv` or `.jsonl` file (optionally compressed, for the text formats).
        since: Keep transactions with `timestamp >= since` (inclusive); None keeps everything before `until`.
        until: Keep transactions with `timestamp < until` (exclusive), so consecutive ranges tile.

    Returns:
        A frame with the canonical columns (plus any extra columns of the file), `timestamp` as naive
        `datetime64[ns]`, in time order (the file's order when it already is one, else sorted by
        timestamp then transaction id), with a fresh RangeIndex.

    Raises:
        DataFormatError: Unknown file type, or required columns are missing (they are named).
        FileNotFoundError: The file does not exist.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    lo, hi = _bound(since), _bound(until)
    fmt = detect_format(path)
    if fmt == "parquet":
        # The pyarrow filter already applied the bounds when the column is a timestamp; filtering again
        # is cheap and covers string timestamps, which can only be compared after parsing.
        frame = _filter_time(to_canonical(_read_parquet(path, lo, hi), source=str(path)), lo, hi)
    else:
        frame = pd.concat(list(_read_text_chunks(path, fmt, lo, hi)), ignore_index=True)
    return _finish(frame)


def to_canonical(frame: pd.DataFrame, *, source: str = "frame") -> pd.DataFrame:
    """Map a handbook-format or canonical frame onto the canonical columns.

    Handbook files are recognised by `TX_DATETIME`; their columns are renamed with `HANDBOOK_COLUMNS` and
    the derived `TX_TIME_SECONDS` / `TX_TIME_DAYS` dropped. The label, when present, is kept as is (a
    missing label means "not known yet").

    Args:
        frame: The raw frame.
        source: What to call the input in error messages.

    Returns:
        A new frame with canonical names and `timestamp` as naive `datetime64[ns]`.

    Raises:
        DataFormatError: Required columns are missing, or timestamps cannot be parsed.
    """
    if _HANDBOOK_TIMESTAMP in frame.columns:
        frame = frame.drop(columns=[c for c in _HANDBOOK_DERIVED if c in frame.columns])
        frame = frame.rename(columns=HANDBOOK_COLUMNS)
    missing = [c for c in REQUIRED_INPUT_COLUMNS if c not in frame.columns]
    if missing:
        raise DataFormatError(
            f"{source}: missing required column(s) {missing}; expected the canonical columns "
            f"{list(REQUIRED_INPUT_COLUMNS)} or the handbook columns {list(HANDBOOK_COLUMNS)}; "
            f"found {list(frame.columns)}"
        )
    frame = frame.copy()
    frame[TIMESTAMP] = _to_naive_ns(frame[TIMESTAMP], source)
    return frame


def _read_parquet(path: Path, lo: pd.Timestamp | None, hi: pd.Timestamp | None) -> pd.DataFrame:
    """Read a Parquet file, pushing the time bounds down to pyarrow when the column type allows it."""
    schema = pq.read_schema(path)
    ts_col = _HANDBOOK_TIMESTAMP if _HANDBOOK_TIMESTAMP in schema.names else TIMESTAMP
    filters = None
    if (lo is not None or hi is not None) and ts_col in schema.names:
        ts_type = schema.field(ts_col).type
        # Only a real timestamp column can be compared inside pyarrow; strings are filtered after parsing.
        if pa.types.is_timestamp(ts_type):
            filters = _arrow_time_filter(ts_col, ts_type, lo, hi)
    table = pq.read_table(path, filters=filters)
    return table.to_pandas()


def _arrow_time_filter(
    column: str, ts_type: pa.TimestampType, lo: pd.Timestamp | None, hi: pd.Timestamp | None
) -> pc.Expression:
    """Build `lo <= column < hi` as a pyarrow expression in the column's own unit and zone."""
    field = pc.field(column)
    expr: pc.Expression | None = None
    for bound, is_lower in ((lo, True), (hi, False)):
        if bound is None:
            continue
        # `bound` is naive UTC in nanoseconds (see `_bound`), which is also what a zoned column stores;
        # pyarrow promotes the column's unit to nanoseconds for the comparison, so nothing is truncated.
        scalar = pa.scalar(bound.value, type=pa.timestamp("ns", tz=ts_type.tz))
        part = field >= scalar if is_lower else field < scalar
        expr = part if expr is None else expr & part
    assert expr is not None  # only called with at least one bound
    return expr


def _read_text_chunks(
    path: Path, fmt: FileFormat, lo: pd.Timestamp | None, hi: pd.Timestamp | None
) -> Iterator[pd.DataFrame]:
    """Yield the rows of a CSV / JSONL file as canonical frames, filtered to the time bounds per chunk."""
    yielded = False
    # The readers are context managers: closing them explicitly avoids ResourceWarnings on early exit.
    reader: Any
    if fmt == "csv":
        reader = pd.read_csv(path, chunksize=_CHUNK_ROWS)
    else:
        # dtype=False: no dtype or date guessing (pandas would turn epoch-like integers into dates);
        # JSON numbers still arrive as int64 / float64 and timestamps as strings, parsed below.
        reader = pd.read_json(path, lines=True, chunksize=_CHUNK_ROWS, dtype=False)
    with reader:
        for chunk in reader:
            yielded = True
            yield _filter_time(to_canonical(chunk, source=str(path)), lo, hi)
    if not yielded:
        # A file with no rows still goes through the column check rather than fail inside pd.concat.
        yield to_canonical(pd.DataFrame(), source=str(path))


def _filter_time(frame: pd.DataFrame, lo: pd.Timestamp | None, hi: pd.Timestamp | None) -> pd.DataFrame:
    """Keep rows with `lo <= timestamp < hi` (either bound optional)."""
    if lo is None and hi is None:
        return frame
    ts = frame[TIMESTAMP]
    keep = pd.Series(True, index=frame.index)
    if lo is not None:
        keep &= ts >= lo
    if hi is not None:
        keep &= ts < hi
    return frame.loc[keep]


def _finish(frame: pd.DataFrame) -> pd.DataFrame:
    """Sort by time (transaction id breaks ties) and give the frame a fresh RangeIndex."""
    if LABEL in frame.columns and frame[LABEL].notna().all() and frame[LABEL].dtype.kind == "f":
        # JSON / CSV round trips can turn an all-known 0/1 label into floats; integers are what we compare.
        frame[LABEL] = frame[LABEL].astype("int64")
    sort_cols = [TIMESTAMP, TRANSACTION_ID]
    ts = frame[TIMESTAMP]
    if not ts.is_monotonic_increasing:
        frame = frame.sort_values(sort_cols, kind="stable")
    return frame.reset_index(drop=True)


def _bound(value: TimeBound) -> pd.Timestamp | None:
    """Normalise a time bound to a naive (UTC) nanosecond Timestamp."""
    if value is None:
        return None
    ts = pd.Timestamp(value)
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return ts.as_unit("ns")


def _to_naive_ns(values: pd.Series, source: str) -> pd.Series:
    """Parse timestamps to naive `datetime64[ns]`, converting zoned values to UTC.

    Numbers are refused: an epoch in seconds, milliseconds or nanoseconds cannot be told apart, and
    guessing wrong puts every transaction in 1970 without an error.
    """
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        raise DataFormatError(
            f"{source}: column {TIMESTAMP!r} is numeric ({values.dtype}); write ISO-8601 timestamps instead"
        )
    try:
        if pd.api.types.is_datetime64_any_dtype(values):
            parsed = pd.to_datetime(values, utc=True)
        else:
            # ISO-8601 covers what pandas, pyarrow and JSON encoders write; utc=True accepts mixed offsets
            # (naive strings are taken as UTC).
            parsed = pd.to_datetime(values, utc=True, format="ISO8601")
    except (ValueError, TypeError) as exc:
        raise DataFormatError(f"{source}: cannot parse column {TIMESTAMP!r} as timestamps: {exc}") from exc
    return parsed.dt.tz_localize(None).astype("datetime64[ns]")
