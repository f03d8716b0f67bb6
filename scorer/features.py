"""The model's features: one definition, two paths (batch over history, streaming with carried state).

The 15 features are the Fraud Detection Handbook's (chapter 3.4):

- ``amount``, ``is_weekend``, ``is_night`` (hour <= 6);
- per customer, over the window (t - N days, t] *including* the current transaction:
  ``customer_tx_count_{N}d`` and ``customer_avg_amount_{N}d``;
- per terminal, over the window (t - delay - N days, t - delay], i.e. shifted back by the label delay so
  only transactions whose labels are known are used: ``terminal_tx_count_{N}d`` and ``terminal_risk_{N}d``
  (frauds / transactions, 0 when the window is empty).

Optional encodings of the extra payload fields (``is_online``, ``is_high_risk_mcc``) are NaN when the field
is absent, which XGBoost treats as missing.

`compute_features` runs a vectorised kernel (`_kernel`) over a whole history; `FeatureState`
(`scorer.feature_state`) keeps the retained history in sorted window indexes (`scorer.window_index`) and
answers the same windows with binary searches, running the kernel only over the rows not indexed yet. Window sums are integers (amounts in
1/10,000 of a unit, fraud counts), so a window's sum does not depend on how it was split between the paths'
pieces; that is what makes the streaming path equal the batch path to the last bit rather than only to
rounding.

Ties in time are broken by arrival order (a stable sort), the same rule the handbook's pandas rolling
windows follow. Windows are evaluated at millisecond resolution.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from scorer import columns as C
from scorer.window_index import Window, prefix_sums

MS_PER_DAY = 86_400_000
# Amounts are summed in 1/10,000 units: exact for every ISO 4217 currency and far from int64 overflow for
# any realistic window (1e7 per transaction x 1e4 x 9e7 transactions).
AMOUNT_UNITS = 10_000
HIGH_RISK_MCCS = frozenset({"4829", "5967", "6051", "7995", "5993"})
_HIGH_RISK_MCCS = pa.array(sorted(HIGH_RISK_MCCS))
_ONLINE = pa.array(["online"])


@dataclass(frozen=True)
class FeatureConfig:
    """What the features look at.

    Attributes:
        windows_days: the customer and terminal window lengths in days.
        label_delay_days: how far terminal windows are shifted back so they only see labelled history.
        extra_features: also encode the optional payload fields (channel, mcc).
    """

    windows_days: tuple[int, ...] = (1, 7, 30)
    label_delay_days: int = 7
    extra_features: bool = False

    @property
    def retention_days(self) -> int:
        """How much history the streaming path must keep to compute every window."""
        return max(max(self.windows_days), self.label_delay_days + max(self.windows_days))

    @property
    def kept_days(self) -> int:
        """How much history the streaming state keeps (and a restart reads back): every window, and a day of
        slack so rows arriving a little late still see their whole history."""
        return self.retention_days + 1

    @property
    def columns(self) -> list[str]:
        """Feature names in model order."""
        names = ["amount", "is_weekend", "is_night"]
        for n in self.windows_days:
            names += [f"customer_tx_count_{n}d", f"customer_avg_amount_{n}d"]
        for n in self.windows_days:
            names += [f"terminal_tx_count_{n}d", f"terminal_risk_{n}d"]
        if self.extra_features:
            names += list(EXTRA_FEATURE_COLUMNS)
        return names


EXTRA_FEATURE_COLUMNS: tuple[str, ...] = ("is_online", "is_high_risk_mcc")
DEFAULT_CONFIG = FeatureConfig()
FEATURE_COLUMNS: list[str] = DEFAULT_CONFIG.columns


def compute_features(tx: pd.DataFrame, config: FeatureConfig = DEFAULT_CONFIG) -> pd.DataFrame:
    """Features for every row of a history, in one vectorised pass.

    Args:
        tx: canonical transactions (``timestamp``, ``customer_id``, ``terminal_id``, ``amount``; ``is_fraud``
            for terminal risk, NaN or absent meaning "label not known").
        config: window lengths, label delay, optional encodings.

    Returns:
        A float64 frame with ``config.columns``, same index and row order as ``tx``.
    """
    history = _History.from_frame(tx)
    everything = np.ones(len(history), dtype=bool)
    return _finish(history, everything, _kernel(history, everything, config), config).set_axis(tx.index)


@dataclass
class _History:
    """Column arrays of a batch or a history: the kernel's input and `FeatureState`'s unit of arrival."""

    transaction_id: np.ndarray
    ts_ms: np.ndarray  # int64 milliseconds since the epoch
    customer_id: np.ndarray
    terminal_id: np.ndarray
    amount: np.ndarray  # float64, as given
    amount_units: np.ndarray  # int64, amount * AMOUNT_UNITS rounded
    label: np.ndarray  # float64: 1, 0 or NaN (unknown)
    channel: Any = None  # text values: an object array or an Arrow-backed pandas array (as validated)
    mcc: Any = None

    def __len__(self) -> int:
        return len(self.ts_ms)

    @classmethod
    def from_frame(cls, tx: pd.DataFrame, *, ids_as_text: bool = False) -> _History:
        amount = tx[C.AMOUNT].to_numpy(dtype=np.float64)
        label = (
            pd.to_numeric(tx[C.LABEL], errors="coerce").to_numpy(dtype=np.float64)
            if C.LABEL in tx
            else np.full(len(tx), np.nan)
        )
        ids = tx[C.TRANSACTION_ID] if C.TRANSACTION_ID in tx else pd.Series(np.arange(len(tx)))
        customers, terminals = tx[C.CUSTOMER_ID], tx[C.TERMINAL_ID]
        if ids_as_text:
            ids, customers, terminals = _as_text(ids), _as_text(customers), _as_text(terminals)
        return cls(
            transaction_id=ids.to_numpy(),
            ts_ms=_to_epoch_ms(tx[C.TIMESTAMP]),
            customer_id=customers.to_numpy(),
            terminal_id=terminals.to_numpy(),
            amount=amount,
            amount_units=_amount_units(amount),
            label=label,
            channel=tx[C.CHANNEL].to_numpy() if C.CHANNEL in tx else None,
            mcc=tx[C.MCC].to_numpy() if C.MCC in tx else None,
        )

    @staticmethod
    def window_rows(parts: Sequence[_History]) -> _History:
        """The columns `_kernel` reads, concatenated (the others are left empty)."""

        def join(name: str) -> np.ndarray:
            return np.concatenate([getattr(p, name) for p in parts])

        empty = np.empty(0)
        return _History(
            transaction_id=empty,
            ts_ms=join("ts_ms"),
            customer_id=join("customer_id"),
            terminal_id=join("terminal_id"),
            amount=empty,
            amount_units=join("amount_units"),
            label=join("label"),
        )


def _as_text(ids: pd.Series) -> pd.Series:
    """Ids as text, the scorer's canonical form (validation writes integer ids in decimal)."""
    if pd.api.types.is_string_dtype(ids.dtype) and not pd.api.types.is_object_dtype(ids.dtype):
        return ids
    if pd.api.types.is_integer_dtype(ids.dtype):
        return ids.astype(str)
    # A missing id (None: a NULL read back from the store) stays missing, never the id "None".
    return ids.map(lambda v: v if isinstance(v, str) or v is None else str(v))


def _to_epoch_ms(timestamps: pd.Series) -> np.ndarray:
    values = pd.to_datetime(timestamps).to_numpy(dtype="datetime64[ms]")
    return values.astype(np.int64)


# Row-level definitions shared by the batch path and the one-transaction path (`FeatureState.transform_one`):
# each takes one value or an array. Timestamps are naive local times (as in the handbook): weekday and hour
# are read as given.


def _amount_units(amount: Any) -> Any:
    """Amounts in 1/AMOUNT_UNITS, rounded half to even (numpy's rint): what windows sum (int64 array or int)."""
    units = np.rint(amount * AMOUNT_UNITS)
    return int(units) if isinstance(units, np.floating) else units.astype(np.int64)


def _is_weekend(ts_ms: Any) -> Any:
    return (ts_ms // MS_PER_DAY + 3) % 7 >= 5  # 1970-01-01 was a Thursday


def _is_night(ts_ms: Any) -> Any:
    return (ts_ms % MS_PER_DAY) // 3_600_000 <= 6


# A window is (t - lookback, t - lag]: customers use lag 0, terminals lag = the label delay.


def _customer_windows(config: FeatureConfig) -> list[Window]:
    return [(n * MS_PER_DAY, 0) for n in config.windows_days]


def _terminal_windows(config: FeatureConfig) -> list[Window]:
    lag = config.label_delay_days * MS_PER_DAY
    return [(lag + n * MS_PER_DAY, lag) for n in config.windows_days]


class _Aggregates:
    """Integer window aggregates for the output rows: counts, amount sums (in units) and fraud counts.

    Integers add exactly, so the streaming path can compute part of a window from an index over old rows and
    the rest from recent rows, and still equal the batch path to the bit.
    """

    def __init__(self, rows: int, config: FeatureConfig) -> None:
        k = len(config.windows_days)
        self.customer_count = np.zeros((k, rows), dtype=np.int64)
        self.customer_units = np.zeros((k, rows), dtype=np.int64)
        self.terminal_count = np.zeros((k, rows), dtype=np.int64)
        self.terminal_frauds = np.zeros((k, rows), dtype=np.int64)

    def add(self, other: _Aggregates) -> None:
        self.customer_count += other.customer_count
        self.customer_units += other.customer_units
        self.terminal_count += other.terminal_count
        self.terminal_frauds += other.terminal_frauds


class _EntityWindows:
    """Rows grouped by entity and sorted by time, with fast window boundaries.

    Sorting on one int64 key ``entity_code * stride + (time - t0)``, with a stride longer than the time span
    plus the longest look-back, turns "rows of my entity with time in (t - a, t - b]" into two
    `np.searchsorted` calls.
    """

    def __init__(self, entity: np.ndarray, ts_ms: np.ndarray, max_lookback_ms: int, *, dense: bool = False) -> None:
        """Index rows by (entity, time).

        Args:
            dense: ``entity`` already holds small non-negative int codes (`FeatureState` encodes ids on
                arrival); they are used as they are, sparing a hash of every row.
        """
        if dense:
            codes = entity.astype(np.int64, copy=False)
            n_entities = int(codes.max()) + 1 if len(codes) else 0
        else:
            entities = pd.Index(pd.unique(entity))
            codes = entities.get_indexer(entity).astype(np.int64)
            n_entities = len(entities)
        self.t0 = int(ts_ms.min()) if len(ts_ms) else 0
        self.span = (int(ts_ms.max()) - self.t0) if len(ts_ms) else 0
        self.max_lookback = max_lookback_ms
        self.stride = self.span + max_lookback_ms + 2
        self.n_entities = n_entities
        if (n_entities + 1) * self.stride >= np.iinfo(np.int64).max:
            raise OverflowError("too many entities x too long a time span for one feature pass")
        key = codes * self.stride + (ts_ms - self.t0)
        self.order = np.argsort(key, kind="stable")
        self.key = key[self.order]

    def sorted(self, values: np.ndarray) -> np.ndarray:
        return values[self.order]

    def bounds(self, keys: np.ndarray, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Sorted positions [start, end) of the rows with time in (t - lookback, t - lag]."""
        lookback, lag = window
        end = np.searchsorted(self.key, keys - lag, side="right")
        start = np.searchsorted(self.key, keys - lookback, side="right")
        return start, end


def _fraud_units(label: np.ndarray) -> np.ndarray:
    return np.nan_to_num(label, nan=0.0).astype(np.int64)


def _kernel(history: _History, out_rows: np.ndarray, config: FeatureConfig, *, dense: bool = False) -> _Aggregates:
    """Window aggregates for the rows of ``history`` selected by ``out_rows``, over all of ``history``.

    Within an entity, rows are ordered by time then by position in ``history`` (arrival order), and a
    window ends at the row itself: a later-arriving row with the same timestamp is not counted, the rule
    pandas' time-based rolling windows (and so the handbook) follow. ``dense``: the ids are int codes
    (see `_EntityWindows`).
    """
    out_positions = np.flatnonzero(out_rows)
    aggregates = _Aggregates(len(out_positions), config)
    customer_windows, terminal_windows = _customer_windows(config), _terminal_windows(config)

    customers = _EntityWindows(history.customer_id, history.ts_ms, max(w[0] for w in customer_windows), dense=dense)
    rank = np.empty(len(history), dtype=np.int64)
    rank[customers.order] = np.arange(len(history))
    amount_prefix = prefix_sums(customers.sorted(history.amount_units))
    keys = customers.key[rank[out_positions]]
    end = rank[out_positions] + 1  # the current transaction is inside its own customer window
    for i, (lookback, _) in enumerate(customer_windows):
        start = np.searchsorted(customers.key, keys - lookback, side="right")
        aggregates.customer_count[i] = end - start
        aggregates.customer_units[i] = amount_prefix[end] - amount_prefix[start]

    terminals = _EntityWindows(history.terminal_id, history.ts_ms, max(w[0] for w in terminal_windows), dense=dense)
    rank[terminals.order] = np.arange(len(history))
    fraud_prefix = prefix_sums(terminals.sorted(_fraud_units(history.label)))
    keys = terminals.key[rank[out_positions]]
    for i, window in enumerate(terminal_windows):
        # A terminal window ends a whole label delay before t, so ties at t cannot matter here.
        start, stop = terminals.bounds(keys, window)
        aggregates.terminal_count[i] = stop - start
        aggregates.terminal_frauds[i] = fraud_prefix[stop] - fraud_prefix[start]
    return aggregates


def _finish(history: _History, out_rows: np.ndarray, aggregates: _Aggregates, config: FeatureConfig) -> pd.DataFrame:
    """Turn window aggregates into the model's feature frame (column order = ``config.columns``)."""
    matrix = _feature_matrix(history, out_rows, aggregates, config)
    return pd.DataFrame(dict(zip(config.columns, matrix, strict=True)))


def _feature_matrix(
    history: _History, out_rows: np.ndarray | slice, aggregates: _Aggregates, config: FeatureConfig
) -> np.ndarray:
    """Window aggregates -> a (features, rows) float64 matrix, features in ``config.columns`` order.

    Feature-major, so each feature is one contiguous array: a frame, an Arrow table or a log row takes it
    without a copy, and the model input is one transpose away.
    """
    out_ts = history.ts_ms[out_rows]
    matrix = np.empty((len(config.columns), len(out_ts)), dtype=np.float64)
    matrix[0] = history.amount[out_rows]
    matrix[1] = _is_weekend(out_ts)
    matrix[2] = _is_night(out_ts)
    row = 3
    for i in range(len(config.windows_days)):
        count = aggregates.customer_count[i]
        matrix[row] = count
        matrix[row + 1] = aggregates.customer_units[i] / count / AMOUNT_UNITS
        row += 2
    for i in range(len(config.windows_days)):
        count = aggregates.terminal_count[i]
        matrix[row] = count
        matrix[row + 1] = 0.0  # an empty window has no risk
        np.divide(aggregates.terminal_frauds[i], count, out=matrix[row + 1], where=count > 0)
        row += 2
    if config.extra_features:
        channel = None if history.channel is None else history.channel[out_rows]
        mcc = None if history.mcc is None else history.mcc[out_rows]
        matrix[row], matrix[row + 1] = _extra_features(channel, mcc, len(out_ts))
    return matrix


def _extra_features(channel: Any, mcc: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``is_online`` and ``is_high_risk_mcc``: NaN where the field is absent or null (XGBoost's missing)."""
    online, risky = np.full(n, np.nan), np.full(n, np.nan)
    if channel is not None:
        flags = _text_flags(channel, _ONLINE)
        if flags is not None:
            online = flags
        else:
            values = np.asarray(channel, dtype=object)
            present = ~pd.isna(values)
            online[present] = values[present] == "online"
    if mcc is not None:
        flags = _text_flags(mcc, _HIGH_RISK_MCCS)
        if flags is not None:
            risky = flags
        else:
            values = np.asarray(mcc, dtype=object)
            present = ~pd.isna(values)
            codes = values[present]
            # str(): an integer code 5967 is the same merchant category as the text "5967".
            risky[present] = np.fromiter((str(v) in HIGH_RISK_MCCS for v in codes), dtype=bool, count=len(codes))
    return online, risky


def _text_flags(values: Any, accepted: pa.Array) -> np.ndarray | None:
    """1.0 where a text column's value is in ``accepted``, 0.0 where not, NaN where null; None unless text.

    Validated columns are text (Arrow-backed, or Python strings and None): Arrow answers without a Python
    loop. Anything else (integer codes in a training frame, say) is left to the general path.
    """
    try:
        text = pa.array(values, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None
    if not (pa.types.is_string(text.type) or pa.types.is_large_string(text.type)):
        return None
    flags = pc.cast(pc.is_in(text, value_set=accepted), pa.float64())
    return pc.if_else(pc.is_null(text), np.nan, flags).to_numpy(zero_copy_only=False)


def _extra_feature_values(channel: object, mcc: object) -> tuple[float, float]:
    """`_extra_features` for one transaction (validated fields are text or None; NaN also means absent)."""
    online = math.nan if _absent(channel) else float(channel == "online")
    risky = math.nan if _absent(mcc) else float(str(mcc) in HIGH_RISK_MCCS)
    return online, risky


def _absent(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
