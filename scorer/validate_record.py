"""One record validated in plain Python, with exactly the outcome `validate` gives a batch of that record.

`validate` is vectorised: for one record its fixed costs (a frame, dtype inference, a dozen column checks)
are most of a single request's time. `validate_record` applies the same rules, in the same order, to one
JSON-like record with a handful of ``isinstance`` checks. It must agree with ``validate([record])`` on the
reason, the field and every canonical value, which depends on the dtype pandas infers for a one-record
column (a float NaN amount is "missing", an integer mcc is text, ...); tests/test_validate_record.py holds
the two to each other with hypothesis.

It only decides what it recognises: records whose fields are text, integers, floats, booleans, None or
absent, with timestamps as naive `datetime` values or ISO 8601 text in the usual shape
(``YYYY-MM-DD[T ]HH:MM[:SS[.fraction]][Z|+HH:MM]``). For anything else it returns `UNDECIDED` and the caller
runs `validate` on the one record, which is never wrong, only slower.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

import numpy as np

from scorer import columns as C
from scorer.validate import (
    MAX_ID_LENGTH,
    MAX_TEXT_LENGTH,
    MAX_TIMESTAMP,
    MIN_TIMESTAMP,
    TEXT_FIELDS,
    ScoringLimits,
    _payload,
    _short_id,
    has_lone_surrogate,
    not_an_object_reason,
    not_unicode_reason,
)

_ISO: Final = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?(Z|[+-]\d{2}:\d{2})?"
)
_EPOCH: Final = datetime(1970, 1, 1)
_MICROSECOND: Final = timedelta(microseconds=1)
_MIN_NS: Final = int(MIN_TIMESTAMP.value)
_MAX_NS: Final = int(MAX_TIMESTAMP.value)
_INT_RANGE: Final = (-(2**63), 2**64)  # what a one-record column holds as int64 / uint64
_CHANNELS_REASON: Final = f"channel must be one of {', '.join(C.CHANNELS)}"
_RANGE_REASON: Final = f"timestamp outside [{MIN_TIMESTAMP.date()}, {MAX_TIMESTAMP.date()}]"


@dataclass(frozen=True)
class ValidRecord:
    """A valid transaction in canonical types (what `validate` puts in its ``valid`` columns)."""

    transaction_id: str
    timestamp_ns: int  # nanoseconds since the epoch, naive (UTC when the input carried an offset)
    customer_id: str
    terminal_id: str
    amount: float
    channel: str | None
    merchant_name: str | None
    mcc: str | None
    country: str | None

    @property
    def timestamp(self) -> np.datetime64:
        return np.datetime64(self.timestamp_ns, "ns")


@dataclass(frozen=True)
class DeadRecord:
    """Why a record was refused (what `validate` puts in its ``dead`` frame for row 0)."""

    transaction_id: str | None
    reason: str
    field: str | None
    payload: str


class _Undecided(Exception):
    """The record holds something this module does not mirror: let `validate` decide."""


UNDECIDED: Final = None


def validate_record(
    record: Any, *, limits: ScoringLimits | None = None, seen_ids: set[str] | None = None
) -> ValidRecord | DeadRecord | None:
    """`validate([record])` for one record, or `UNDECIDED` (None) when the record is not in the shape handled.

    Args:
        record: One JSON-like record.
        limits: Bounds a valid transaction respects.
        seen_ids: Recent transaction ids (a repeat is dead-lettered).
    """
    limits = limits or ScoringLimits()
    if not isinstance(record, Mapping):
        return _dead(record, not_an_object_reason(record), None)
    for name in TEXT_FIELDS:
        if has_lone_surrogate(record.get(name)):
            return _dead(record, not_unicode_reason(name), name)
    for name in C.REQUIRED_INPUT_COLUMNS:
        if name not in record:
            return _dead(record, f"missing field {name}", name)
    try:
        ids: list[str] = []
        for name in (C.TRANSACTION_ID, C.CUSTOMER_ID, C.TERMINAL_ID):
            text = _id(record[name], name)
            if not isinstance(text, str):
                return _dead(record, text[0], name)
            ids.append(text)
        stamp = _timestamp(record[C.TIMESTAMP])
        if not isinstance(stamp, int):
            return _dead(record, stamp[0], C.TIMESTAMP)
        amount = _amount(record[C.AMOUNT], limits)
        if not isinstance(amount, float):
            return _dead(record, amount[0], C.AMOUNT)
        texts: list[str | None] = []
        for name in C.OPTIONAL_INPUT_COLUMNS:
            value = _text(record, name)
            if isinstance(value, tuple):
                return _dead(record, value[0], name)
            texts.append(value)
    except _Undecided:
        return UNDECIDED
    if seen_ids and ids[0] in seen_ids:
        return _dead(record, "transaction_id already scored", C.TRANSACTION_ID)
    return ValidRecord(ids[0], stamp, ids[1], ids[2], amount, *texts)


def _dead(record: Any, reason: str, field: str | None) -> DeadRecord:
    tid = _short_id(record.get(C.TRANSACTION_ID)) if isinstance(record, Mapping) else None
    return DeadRecord(tid, reason, field, _payload(record))


# Each check returns the canonical value, or a one-tuple with the reason (so a text value is never
# mistaken for a reason), or raises _Undecided.


def _id(value: Any, name: str) -> str | tuple[str]:
    kind = type(value)
    if kind is int:
        if not _INT_RANGE[0] <= value < _INT_RANGE[1]:
            raise _Undecided  # an object column: the length rule applies to its digits
        return str(value)  # an integer column: written in decimal, no other rule
    if kind is str:
        text = value.strip()
    elif kind is float:
        if math.isnan(value):
            return (f"missing value for {name}",)
        if not (math.isfinite(value) and value.is_integer()):
            return (f"{name} must be a string or an integer",)
        text = str(int(value))  # CSV readers turn integer columns with gaps into floats
    elif value is None:
        return (f"missing value for {name}",)
    elif kind is bool or kind is list or kind is dict:
        return (f"{name} must be a string or an integer",)
    else:
        raise _Undecided
    if len(text) > MAX_ID_LENGTH:
        return (f"{name} longer than {MAX_ID_LENGTH} characters",)
    return text if text else (f"{name} is empty",)


def _timestamp(value: Any) -> int | tuple[str]:
    if type(value) is str:
        stamp = _iso_ns(value)
    elif isinstance(value, datetime) and value.tzinfo is None and 1800 <= value.year <= 2200:
        nanos = getattr(value, "value", None)  # a pandas Timestamp carries nanoseconds
        stamp = int(nanos) if nanos is not None else (value - _EPOCH) // _MICROSECOND * 1000
    elif value is None:
        return (f"missing value for {C.TIMESTAMP}",)
    else:
        raise _Undecided
    if not _MIN_NS <= stamp <= _MAX_NS:
        return (_RANGE_REASON,)
    return int(stamp)


def _iso_ns(text: str) -> int:
    """Nanoseconds since the epoch of ISO 8601 text in the usual shape (UTC if it has an offset)."""
    match = _ISO.fullmatch(text)
    if match is None:
        raise _Undecided
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    if not 1800 <= int(year) <= 2200:
        raise _Undecided  # near the limits of nanosecond timestamps the two parsers word errors differently
    try:
        moment = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second or 0))
    except ValueError:
        raise _Undecided from None  # e.g. 30 February: `validate` words the reason
    ns = (moment - _EPOCH) // _MICROSECOND * 1000 + (int(fraction.ljust(9, "0")) if fraction else 0)
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        ns -= sign * (int(zone[1:3]) * 60 + int(zone[4:6])) * 60 * 1_000_000_000
    return ns



def _amount(value: Any, limits: ScoringLimits) -> float | tuple[str]:
    kind = type(value)
    if kind is bool:
        return ("amount must be a number",)
    if kind is int:
        if not _INT_RANGE[0] <= value < _INT_RANGE[1]:
            raise _Undecided
        amount = float(value)
    elif kind is float:
        if math.isnan(value):
            return (f"missing value for {C.AMOUNT}",)  # a frame cannot tell a missing value from NaN
        amount = value
    elif value is None:
        return (f"missing value for {C.AMOUNT}",)
    else:
        raise _Undecided  # numeric text and the rest: `validate` parses them
    if math.isinf(amount):
        return ("amount is infinite",)
    if amount < 0:
        return ("amount is negative",)
    if amount > limits.max_amount:
        return (f"amount above the limit of {limits.max_amount:g}",)
    return amount


def _text(record: Mapping[str, Any], name: str) -> str | tuple[str] | None:
    if name not in record:
        return None
    value = record[name]
    kind = type(value)
    if value is None:
        return None
    if kind is str or kind is int:
        text = value if kind is str else str(value)
        limit = MAX_TEXT_LENGTH[name]
        if len(text) > limit:
            return (f"{name} longer than {limit} characters",)
        if name == C.CHANNEL and text not in C.CHANNELS:
            return (_CHANNELS_REASON,)
        return text
    if kind is float:
        return None if math.isnan(value) else (f"{name} must be text",)
    if kind is bool:
        return (f"{name} must be text",)
    raise _Undecided
