"""`validate_record` (one record, plain Python) decides exactly as `validate` does on a batch of that record."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scorer import columns as C
from scorer.validate import ScoringLimits, validate
from scorer.validate_record import DeadRecord, ValidRecord, validate_record
from tests.test_validate import GOOD, malformed_records

LIMITS = ScoringLimits(max_amount=10_000.0)
SEEN = {"seen-1", "42"}


def _iso(moment: datetime, draw: st.DrawFn) -> str:
    """ISO 8601 text in the shapes clients send: T or space, with or without seconds, fraction, offset."""
    sep = draw(st.sampled_from(["T", " "]))
    shape = draw(st.sampled_from(["minutes", "seconds", "millis", "micros", "nanos"]))
    text = moment.strftime(f"%Y-%m-%d{sep}%H:%M")
    if shape != "minutes":
        text += moment.strftime(":%S")
    if shape == "millis":
        text += f".{moment.microsecond // 1000:03d}"
    elif shape == "micros":
        text += f".{moment.microsecond:06d}"
    elif shape == "nanos":
        text += f".{moment.microsecond:06d}{draw(st.integers(0, 999)):03d}"
    zone = draw(st.sampled_from(["", "", "Z", "+02:00", "-05:30", "+00:00"]))
    return text + zone


@st.composite
def timestamps(draw: st.DrawFn) -> Any:
    moment = draw(st.datetimes(min_value=datetime(1750, 1, 1), max_value=datetime(2250, 12, 31)))
    return draw(
        st.one_of(
            st.just(_iso(moment, draw)),
            st.just(moment),
            st.just(moment.replace(tzinfo=timezone(timedelta(hours=3)))),
            st.sampled_from(["2024-02-30T10:00:00", "2024-05-01T24:00:00", "2024-05-01", "yesterday", "", None]),
            st.integers(0, 2_000_000_000),
            st.floats(allow_nan=True),
        )
    )


ids = st.one_of(
    st.text(max_size=6),
    st.text(min_size=125, max_size=135),
    st.integers(-(2**65), 2**65),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["seen-1", " 42 ", "  ", None, True, [1], {"a": 1}]),
)
amounts = st.one_of(
    st.integers(-(2**65), 2**65),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(0, 20_000),
    st.sampled_from([None, True, "12.5", "abc", [1]]),
)
texts = st.one_of(
    st.sampled_from(["online", "card_present", "pigeon", "", "x" * 40, None, 5999, True, 1.5, math.nan]),
    st.text(max_size=10),
    st.integers(-(10**10), 10**10),
)


@st.composite
def records(draw: st.DrawFn) -> Any:
    """Plain records with each field drawn from what clients send, right and wrong; some fields absent."""
    record: dict[str, Any] = {
        C.TRANSACTION_ID: draw(ids),
        C.TIMESTAMP: draw(timestamps()),
        C.CUSTOMER_ID: draw(ids),
        C.TERMINAL_ID: draw(ids),
        C.AMOUNT: draw(amounts),
    }
    for name in C.OPTIONAL_INPUT_COLUMNS:
        if draw(st.booleans()):
            record[name] = draw(texts)
    for name in list(record):
        if draw(st.integers(0, 12)) == 0:
            del record[name]
    return record


def _assert_same(record: Any) -> bool:
    """Compare the two validators on one record; returns whether the fast path decided."""
    fast = validate_record(record, limits=LIMITS, seen_ids=SEEN)
    batch = validate([record], limits=LIMITS, seen_ids=SEEN)
    if fast is None:
        return False
    if isinstance(fast, DeadRecord):
        assert len(batch.valid) == 0, (record, fast)
        dead = batch.dead.iloc[0]
        assert (fast.reason, fast.field) == (dead["reason"], dead["field"]), record
        assert fast.transaction_id == dead[C.TRANSACTION_ID] or (fast.transaction_id is None and dead[C.TRANSACTION_ID] is None)
        assert fast.payload == dead["payload"]
        return True
    assert isinstance(fast, ValidRecord)
    assert len(batch.valid) == 1, (record, batch.dead)
    row = {name: values[0] for name, values in batch.columns.items()}
    assert fast.timestamp == np.datetime64(row[C.TIMESTAMP], "ns"), record
    assert fast.amount == row[C.AMOUNT] and math.copysign(1, fast.amount) == math.copysign(1, row[C.AMOUNT])
    for name in (C.TRANSACTION_ID, C.CUSTOMER_ID, C.TERMINAL_ID):
        assert getattr(fast, name) == row[name], (name, record)
    for name in C.OPTIONAL_INPUT_COLUMNS:
        expected = row[name]
        expected = None if expected is None or (isinstance(expected, float) and math.isnan(expected)) else expected
        assert getattr(fast, name) == expected, (name, record)
    return True


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records())
def test_the_one_record_validator_agrees_with_the_batch_validator(record: dict[str, Any]) -> None:
    _assert_same(record)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(malformed_records())
def test_it_agrees_on_the_hostile_records_of_the_batch_tests_too(record: Any) -> None:
    _assert_same(record)


@settings(max_examples=200, deadline=None)
@given(
    st.datetimes(min_value=datetime(1995, 1, 1), max_value=datetime(2090, 12, 31)),
    st.data(),
    st.sampled_from([7, "7", " tx-7 "]),
    st.floats(0, 10_000),
)
def test_records_as_json_clients_send_them_take_the_fast_path(
    moment: datetime, data: st.DataObject, tid: Any, amount: float
) -> None:
    """The common case must not fall back: ids as text or integers, ISO text times, numbers, text fields."""
    record = {**GOOD, C.TRANSACTION_ID: tid, C.TIMESTAMP: _iso(moment, data.draw), C.AMOUNT: amount}
    record.update(channel="online", mcc="5411", country="BE", merchant_name="Shop")
    assert _assert_same(record)


def test_aware_datetimes_and_numeric_text_are_left_to_the_batch_validator() -> None:
    assert validate_record({**GOOD, C.TIMESTAMP: datetime(2024, 5, 1, tzinfo=UTC)}) is None
    assert validate_record({**GOOD, C.AMOUNT: "12.50"}) is None
    assert validate_record({**GOOD, C.TIMESTAMP: "1 May 2024"}) is None
