"""Streaming features: `FeatureState` keeps just enough history to compute every window for the next batch.

The definition of the features and the batch kernel live in `scorer.features`; this module keeps the
retained history between calls. It reuses that module's internals on purpose (`_History`, `_kernel`,
`_feature_matrix`, the window lists): the two paths must compute the same numbers from the same code.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import repeat

import numpy as np
import pandas as pd

from scorer import columns as C
from scorer.features import (
    AMOUNT_UNITS,
    DEFAULT_CONFIG,
    MS_PER_DAY,
    FeatureConfig,
    _Aggregates,
    _amount_units,
    _as_text,
    _customer_windows,
    _extra_feature_values,
    _feature_matrix,
    _fraud_units,
    _History,
    _is_night,
    _is_weekend,
    _kernel,
    _terminal_windows,
)
from scorer.window_index import Window, WindowIndex


@dataclass
class _Level:
    """One level of `FeatureState`'s indexes: the same rows indexed by customer and by terminal."""

    customers: WindowIndex
    terminals: WindowIndex


class _RowStore:
    """The retained transactions in arrival order, with spare capacity (appends are amortised O(rows)).

    Row ids are positions here; `FeatureState`'s window indexes refer to rows by id.
    """

    _COLUMNS = (
        ("transaction_id", object),
        ("ts_ms", np.int64),
        ("customer", np.int64),
        ("terminal", np.int64),
        ("units", np.int64),
        ("label", np.float64),
    )

    def __init__(self) -> None:
        self.size = 0
        # Transaction id -> its row, so arriving labels find their rows without matching every retained id
        # (that matching was 22 % of the demo's time). An id held by more than one row (history observed
        # twice, say) lives in `_repeated` with all its rows, and every one of them is labelled, as before.
        # Missing ids (None, NaN) are not indexed. Rows are indexed when labels next arrive, not on append:
        # the lookup costs ~1 µs per row, which a scoring call that never sees labels should not pay.
        self._row_of: dict[object, int] = {}
        self._repeated: dict[object, list[int]] = {}
        self._ids_indexed = 0  # rows [0, _ids_indexed) are in the lookup
        self.transaction_id = np.empty(0, dtype=object)
        self.ts_ms = np.empty(0, dtype=np.int64)
        self.customer = np.empty(0, dtype=np.int64)  # dense entity codes
        self.terminal = np.empty(0, dtype=np.int64)
        self.units = np.empty(0, dtype=np.int64)  # amount in 1/AMOUNT_UNITS
        self.label = np.empty(0, dtype=np.float64)  # 1, 0 or NaN (unknown)

    def append(self, rows: _History) -> int:
        """Append encoded rows (customer and terminal ids are codes); returns the first new row id."""
        start = self.size
        self._reserve(start + len(rows))
        stop = start + len(rows)
        self.transaction_id[start:stop] = rows.transaction_id
        self.ts_ms[start:stop] = rows.ts_ms
        self.customer[start:stop] = rows.customer_id
        self.terminal[start:stop] = rows.terminal_id
        self.units[start:stop] = rows.amount_units
        self.label[start:stop] = rows.label
        self.size = stop
        return start

    def append_one(self, transaction_id: str, ts_ms: int, customer: int, terminal: int, units: int) -> None:
        """Append one unlabelled row (the single-transaction path)."""
        at = self.size
        self._reserve(at + 1)
        self.transaction_id[at] = transaction_id
        self.ts_ms[at] = ts_ms
        self.customer[at] = customer
        self.terminal[at] = terminal
        self.units[at] = units
        self.label[at] = np.nan
        self.size = at + 1

    def view(self, start: int, stop: int | None = None) -> _History:
        """Rows [start, stop) as the kernel's input (views, no copy)."""
        part = slice(start, self.size if stop is None else stop)
        return _History(
            transaction_id=self.transaction_id[part],
            ts_ms=self.ts_ms[part],
            customer_id=self.customer[part],
            terminal_id=self.terminal[part],
            amount=np.empty(0),  # the kernel reads amount_units; amounts as given are not kept
            amount_units=self.units[part],
            label=self.label[part],
        )

    def compact(self, keep: np.ndarray) -> np.ndarray:
        """Keep only the rows flagged in ``keep`` (length `size`); returns old id -> new id (-1: dropped)."""
        new_ids = np.cumsum(keep) - 1
        for name, _ in self._COLUMNS:
            setattr(self, name, getattr(self, name)[: self.size][keep])
        self.size = int(keep.sum())
        self._row_of, self._repeated, self._ids_indexed = {}, {}, 0  # row ids changed: indexed again when needed
        return np.where(keep, new_ids, -1)

    def rows_of(self, transaction_ids: Sequence[object]) -> list[list[int]]:
        """For each transaction id, the rows holding it (none, one, or several when the id was repeated)."""
        if self._ids_indexed < self.size:
            self._index_ids(self.transaction_id[self._ids_indexed : self.size], self._ids_indexed)
            self._ids_indexed = self.size
        row_of, repeated = self._row_of, self._repeated
        found: list[list[int]] = []
        for transaction_id in transaction_ids:
            row = row_of.get(transaction_id)
            found.append([row] if row is not None else list(repeated.get(transaction_id, ())))
        return found

    def _index_ids(self, ids: np.ndarray, start: int) -> None:
        """Add rows [start, start + len(ids)) to the id lookup; O(len(ids)) whatever is already indexed."""
        present = pd.notna(ids)
        keys = ids[present].tolist() if not present.all() else ids.tolist()
        rows = (np.flatnonzero(present) + start).tolist()
        row_of, repeated = self._row_of, self._repeated
        new = row_of.keys().isdisjoint(keys) and repeated.keys().isdisjoint(keys)
        if new and len(set(keys)) == len(keys):
            row_of.update(zip(keys, rows, strict=True))  # the usual case: every id new, at C speed
            return
        for key, row in zip(keys, rows, strict=True):  # some id met before, or twice here
            if key in repeated:
                repeated[key].append(row)
            elif key in row_of:
                repeated[key] = [row_of.pop(key), row]
            else:
                row_of[key] = row

    def _reserve(self, needed: int) -> None:
        if needed <= len(self.ts_ms):
            return
        capacity = max(needed, 2 * len(self.ts_ms), 1024)
        for name, dtype in self._COLUMNS:
            grown = np.empty(capacity, dtype=dtype)
            grown[: self.size] = getattr(self, name)[: self.size]
            setattr(self, name, grown)


class FeatureState:
    """Streaming features: keeps just enough history to compute every window for the next batch.

    Feed batches in time order with `transform` (or `transform_columns`, or one transaction with
    `transform_one`); feed labels as they arrive with `add_labels`. The result equals `compute_features`
    over the concatenated history (bit for bit: window sums are integers). Ids are kept as text, the
    scorer's canonical form, so a history read with integer ids and validated live traffic name the same
    customers and terminals.

    Retained rows sit in a row store in arrival order and, like a log-structured merge tree, in two levels
    of `WindowIndex` es (customers, terminals) sorted by (entity, time): a *large* level with most of the
    history and a *small* one with the recent rows. Rows that arrived since the last merge (the *tail*, at
    most ``min_recent_rows``) are not indexed yet: a batch's windows over them are computed by the batch
    kernel (`_kernel`) and a single transaction's by a scan of the tail. A large batch is merged into the
    small level first and then read from the indexes alone; the small level is merged into the large one
    when it reaches 16 x ``min_recent_rows`` rows. A merge moves its level's memory (O(level)), so most
    merges move the small level only. A batch costs O(batch x log history) plus those moves, and one
    transaction O(log history + tail).
    """

    def __init__(self, config: FeatureConfig = DEFAULT_CONFIG, *, min_recent_rows: int = 4096) -> None:
        self.config = config
        self.min_recent_rows = max(int(min_recent_rows), 1)
        self._customer_windows = _customer_windows(config)
        self._terminal_windows = _terminal_windows(config)
        self.small_level_rows = 16 * self.min_recent_rows
        self._large, self._small = self._level(), self._level()
        self._rows = _RowStore()
        self._promoted = 0  # rows [0, _promoted) are in the large level
        self._indexed = 0  # rows [_promoted, _indexed) are in the small level; the rest is the tail
        self._labels_changed = False
        self._latest_ms: int | None = None
        # Customers and terminals become small integers when they arrive: every later window lookup then
        # compares integers, not id strings. (They share the code space, which is harmless: each kind has
        # its own index.)
        self._codes: dict[object, int] = {}

    @property
    def rows(self) -> int:
        """Retained transactions."""
        return self._rows.size

    def _level(self) -> _Level:
        # Room for a month (at least) of new rows before a key layout must be redone.
        headroom = max(self.config.retention_days, 30) * MS_PER_DAY
        return _Level(
            WindowIndex(max(w[0] for w in self._customer_windows), headroom),
            # Terminal windows sum fraud labels, which arrive later: that index keeps row ids to re-read them.
            WindowIndex(max(w[0] for w in self._terminal_windows), headroom, track_rows=True),
        )

    # -- public API -------------------------------------------------------------------------------

    def transform(self, batch: pd.DataFrame, *, remember: bool = True) -> pd.DataFrame:
        """Features for a batch, using the carried history; then (by default) remember the batch.

        Args:
            batch: canonical transactions, in time order after what was seen before.
            remember: add the batch to the state. Pass False to score without learning (dry runs).
        """
        matrix = self._features(self._encoded(batch), remember)
        return pd.DataFrame(dict(zip(self.config.columns, matrix, strict=True)), index=batch.index)

    def transform_columns(
        self,
        *,
        transaction_id: np.ndarray,
        timestamp: np.ndarray,
        customer_id: np.ndarray,
        terminal_id: np.ndarray,
        amount: np.ndarray,
        channel: np.ndarray | None = None,
        mcc: np.ndarray | None = None,
        remember: bool = True,
    ) -> np.ndarray:
        """`transform` on validated columns (ids as text, ``timestamp`` datetime64); no frame is built.

        Returns:
            A (features, rows) float64 matrix, features in ``config.columns`` order.
        """
        amount = np.asarray(amount, dtype=np.float64)
        rows = _History(
            transaction_id=np.asarray(transaction_id, dtype=object),
            ts_ms=np.asarray(timestamp).astype("datetime64[ms]").astype(np.int64),
            customer_id=self._encode(np.asarray(customer_id, dtype=object)),
            terminal_id=self._encode(np.asarray(terminal_id, dtype=object)),
            amount=amount,
            amount_units=_amount_units(amount),
            label=np.full(len(amount), np.nan),
            channel=channel,
            mcc=mcc,
        )
        return self._features(rows, remember)

    def transform_one(
        self,
        transaction_id: str,
        ts_ms: int,
        customer_id: str,
        terminal_id: str,
        amount: float,
        channel: object = None,
        mcc: object = None,
    ) -> list[float]:
        """Features of one transaction (validated fields), then remember it; equals a one-row `transform`.

        Plain Python over the few rows that matter: two binary searches in each index and a scan of the
        tail for this customer and terminal, instead of the vectorised batch machinery's fixed costs.

        Args:
            ts_ms: The timestamp in milliseconds since the epoch (naive local time, like the batch path).
        """
        self._sync_labels()
        customer, terminal = self._code(customer_id), self._code(terminal_id)
        units = _amount_units(amount)
        k = len(self.config.windows_days)
        c_count, c_units, t_count, t_frauds = [1] * k, [units] * k, [0] * k, [0] * k  # the row itself
        for i, (lookback, lag) in enumerate(self._terminal_windows):
            if lag == 0 and lookback > 0:  # a window ending at t holds the row itself (no label yet)
                t_count[i] = 1
        for level in (self._large, self._small):
            level.customers.add_window_sums(customer, ts_ms, self._customer_windows, c_count, c_units)
            level.terminals.add_window_sums(terminal, ts_ms, self._terminal_windows, t_count, t_frauds)
        rows, lo = self._rows, self._indexed
        if rows.size > lo:
            for at in (np.flatnonzero(rows.customer[lo : rows.size] == customer) + lo).tolist():
                when = int(rows.ts_ms[at])
                if when > ts_ms:  # arrived earlier but happened later: after this row in (time, arrival) order
                    continue
                for i, (lookback, _) in enumerate(self._customer_windows):
                    if when > ts_ms - lookback:
                        c_count[i] += 1
                        c_units[i] += int(rows.units[at])
            for at in (np.flatnonzero(rows.terminal[lo : rows.size] == terminal) + lo).tolist():
                when = int(rows.ts_ms[at])
                label = float(rows.label[at])
                for i, (lookback, lag) in enumerate(self._terminal_windows):
                    if ts_ms - lookback < when <= ts_ms - lag:
                        t_count[i] += 1
                        t_frauds[i] += 0 if math.isnan(label) else int(label)
        rows.append_one(transaction_id, ts_ms, customer, terminal, units)
        self._after_append(ts_ms)
        values = [float(amount), float(_is_weekend(ts_ms)), float(_is_night(ts_ms))]
        for i in range(k):
            values += [float(c_count[i]), float(c_units[i]) / float(c_count[i]) / AMOUNT_UNITS]
        for i in range(k):
            values += [float(t_count[i]), float(t_frauds[i]) / float(t_count[i]) if t_count[i] > 0 else 0.0]
        if self.config.extra_features:
            values += _extra_feature_values(channel, mcc)
        return values

    def observe(self, history: pd.DataFrame) -> None:
        """Remember transactions without computing features (rebuilding state after a restart)."""
        new = self._encoded(history)
        if len(new) == 0:
            return
        self._sync_labels()
        self._rows.append(new)
        self._merge()
        self._after_append(int(new.ts_ms.max()))

    def history_frame(self, history: pd.DataFrame) -> pd.DataFrame:
        """The columns `observe` keeps of ``history``, as it keeps them: ids as text (transaction ids None
        when the frame has none), times to the millisecond, labels 1, 0 or NaN. Observing this frame
        equals observing ``history``; a workspace persists it to rebuild the state (`scorer.history`)."""
        rows = _History.from_frame(history, ids_as_text=True)
        no_ids = C.TRANSACTION_ID not in history
        return pd.DataFrame(
            {
                C.TRANSACTION_ID: np.full(len(rows), None, dtype=object) if no_ids else rows.transaction_id,
                C.TIMESTAMP: rows.ts_ms.astype("datetime64[ms]"),
                C.CUSTOMER_ID: rows.customer_id,
                C.TERMINAL_ID: rows.terminal_id,
                C.AMOUNT: rows.amount,
                C.LABEL: rows.label,
            }
        )

    def holds(self, transaction_ids: Sequence[object] | np.ndarray) -> np.ndarray:
        """Which of these (text) transaction ids a retained row already has; a missing id never matches."""
        if self._rows.size == 0:  # the usual first observation: nothing to look up
            return np.zeros(len(transaction_ids), dtype=bool)
        found = self._rows.rows_of(list(transaction_ids))
        return np.fromiter(map(bool, found), dtype=bool, count=len(found))

    def forget(self, transaction_ids: Sequence[object]) -> int:
        """Drop the retained rows holding these (text) ids and index the rest again; returns the rows dropped.

        For history that comes back as live traffic: a transaction kept as observed history and then scored
        must count once in its own windows, so its observed copy goes before the scored one arrives. Costs
        O(retained rows), a rebuild of both index levels: meant for that rare overlap, not every batch.
        """
        rows = self._rows
        if rows.size == 0 or not len(transaction_ids):
            return 0
        drop = pd.Series(rows.transaction_id[: rows.size]).isin(list(transaction_ids)).to_numpy()
        dropped = int(drop.sum())
        if dropped == 0:
            return 0
        rows.compact(~drop)
        self._large, self._small = self._level(), self._level()
        self._promoted = self._indexed = 0
        self._merge()  # every row into the small level (it reads the labels as they are now) ...
        self._promote()  # ... and on into the large one: no tail, nothing left for later merges
        self._labels_changed = False
        return dropped

    @property
    def newest_ms(self) -> int | None:
        """The newest retained transaction's time (ms since the epoch; None before any)."""
        return self._latest_ms

    @property
    def history_days(self) -> float:
        """Days from the oldest retained transaction to the newest (0 when none is retained)."""
        if self._rows.size == 0 or self._latest_ms is None:
            return 0.0
        return (self._latest_ms - int(self._rows.ts_ms[: self._rows.size].min())) / MS_PER_DAY

    def add_labels(self, transaction_ids: Sequence[object] | np.ndarray, labels: Sequence[float] | np.ndarray) -> int:
        """Record labels that arrived; returns how many retained transactions were labelled."""
        ids = _as_text(pd.Series(np.asarray(transaction_ids))).tolist()
        values = np.asarray(labels, dtype=np.float64)
        rows = self._rows
        labelled: dict[int, float] = {}  # row -> label; a later label for the same id wins
        for held, value in zip(rows.rows_of(ids), values.tolist(), strict=True):
            for row in held:
                labelled[row] = value
        if labelled:
            rows.label[list(labelled)] = list(labelled.values())
            self._labels_changed = True
        return len(labelled)

    # -- internals --------------------------------------------------------------------------------

    def _features(self, new: _History, remember: bool) -> np.ndarray:
        n = len(new)
        if n == 0:
            return np.empty((len(self.config.columns), 0))
        self._sync_labels()
        tail = self._rows.size - self._indexed
        if remember and tail + n >= self.min_recent_rows:
            # Large enough to merge first: every window is then read from the indexes alone.
            self._rows.append(new)
            small_ranks = self._merge()[-n:]
            aggregates = self._indexed_aggregates(new, small_ranks)
        else:
            aggregates = self._unindexed_aggregates(new)
            if remember:
                self._rows.append(new)
        if remember:
            self._after_append(int(new.ts_ms.max()))
        return _feature_matrix(new, slice(None), aggregates, self.config)

    def _indexed_aggregates(self, new: _History, small_ranks: np.ndarray) -> _Aggregates:
        """Aggregates of rows just merged into the small level: their own ranks there end their customer
        windows (a later arrival with the same key is not counted); the large level's rows all came earlier."""
        aggregates = _Aggregates(len(new), self.config)
        small = self._small.customers
        # Queries in key order: the searches then walk the index forwards (several times faster than
        # random probes into ~400k keys); results are written back in batch order.
        order = np.argsort(small_ranks)
        ranks = small_ranks[order]
        counts, sums = small.window_sums(small.key[ranks], self._customer_windows, ends=ranks + 1)
        large = self._large.customers
        more_counts, more_sums = large.window_sums(
            large.query_keys(new.customer_id[order], new.ts_ms[order]), self._customer_windows
        )  # keys from the small level's order: sorted by (entity, time) in the large level's layout too
        aggregates.customer_count[:, order] = counts + more_counts
        aggregates.customer_units[:, order] = sums + more_sums
        self._terminal_aggregates(new, aggregates)
        return aggregates

    def _unindexed_aggregates(self, new: _History) -> _Aggregates:
        """Aggregates of rows not merged: the indexes (all earlier arrivals) plus the tail and the batch."""
        aggregates = _Aggregates(len(new), self.config)
        # Every indexed row arrived earlier, so ties at t count: lag-0 windows end at a search too.
        found = self._level_sums("customers", new.customer_id, new.ts_ms, self._customer_windows)
        if found is not None:
            aggregates.customer_count[:], aggregates.customer_units[:] = found
        self._terminal_aggregates(new, aggregates)
        tail = self._rows.view(self._indexed)
        combined = _History.window_rows([tail, new]) if len(tail) else new
        out_rows = np.zeros(len(combined), dtype=bool)
        out_rows[len(tail) :] = True
        aggregates.add(_kernel(combined, out_rows, self.config, dense=True))
        return aggregates

    def _terminal_aggregates(self, new: _History, aggregates: _Aggregates) -> None:
        """Add the terminal windows over both levels (windows end a label delay back: no ties at t)."""
        found = self._level_sums("terminals", new.terminal_id, new.ts_ms, self._terminal_windows)
        if found is not None:
            aggregates.terminal_count += found[0]
            aggregates.terminal_frauds += found[1]

    def _level_sums(
        self, kind: str, codes: np.ndarray, ts_ms: np.ndarray, windows: list[Window]
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Window counts and sums over both levels' indexes, in the rows' order (None: both empty)."""
        indexes = [getattr(level, kind) for level in (self._large, self._small)]
        indexes = [index for index in indexes if len(index)]
        if not indexes:
            return None
        order: np.ndarray | None = None
        counts = sums = np.empty(0)
        for index in indexes:
            keys = index.query_keys(codes, ts_ms)
            if order is None:  # (entity, time) order is the same in every layout: sort once
                order = np.argsort(keys)
                counts, sums = index.window_sums(keys[order], windows)
            else:
                more_counts, more_sums = index.window_sums(keys[order], windows)
                counts, sums = counts + more_counts, sums + more_sums
        assert order is not None
        # One scatter back to the rows' order (a fancy-indexed ``+=`` per level would gather and scatter).
        out_counts, out_sums = np.empty_like(counts), np.empty_like(sums)
        out_counts[:, order], out_sums[:, order] = counts, sums
        return out_counts, out_sums

    def _merge(self) -> np.ndarray:
        """Index the tail in the small level; returns the tail rows' ranks there (customers, arrival order)."""
        rows, lo = self._rows, self._indexed
        if rows.size == lo:
            return np.empty(0, dtype=np.int64)
        size = rows.size
        ts = rows.ts_ms[lo:size]
        ranks = self._small.customers.merge(rows.customer[lo:size], ts, rows.units[lo:size])
        ids = np.arange(lo, size, dtype=np.int64)
        self._small.terminals.merge(rows.terminal[lo:size], ts, _fraud_units(rows.label[lo:size]), ids)
        self._indexed = size
        return ranks

    def _promote(self) -> None:
        """Merge the small level into the large one (its entries are already in key order, ties by arrival)."""
        small, large = self._small, self._large
        codes, ts = small.customers.entities_and_times()
        large.customers.merge(codes, ts, small.customers.values)
        codes, ts = small.terminals.entities_and_times()
        large.terminals.merge(codes, ts, small.terminals.values, small.terminals.row)
        self._small = self._level()
        self._promoted = self._indexed

    def _after_append(self, latest_ms: int) -> None:
        """Merge a full tail, promote a full small level, and drop rows no window can reach any more."""
        self._latest_ms = latest_ms if self._latest_ms is None else max(self._latest_ms, latest_ms)
        if self._rows.size - self._indexed >= self.min_recent_rows:
            self._merge()
        if self._indexed - self._promoted >= self.small_level_rows:
            self._promote()
        if self._promoted != self._rows.size:
            return  # evict only when the large level holds every row
        horizon = self._latest_ms - self.config.kept_days * MS_PER_DAY
        rows = self._rows
        expired = rows.ts_ms[: rows.size] <= horizon
        if int(expired.sum()) < max(self.min_recent_rows, rows.size // 16):
            return  # evicting costs O(rows), like the promotion just done: do it in bulk
        new_ids = rows.compact(~expired)
        self._large.customers.evict(horizon)
        self._large.terminals.evict(horizon, new_ids)
        self._promoted = self._indexed = rows.size

    def _sync_labels(self) -> None:
        """Labels changed since the terminal indexes summed them: re-read their fraud counts."""
        if self._labels_changed:
            frauds = _fraud_units(self._rows.label[: self._rows.size])
            for level in (self._large, self._small):
                if len(level.terminals):
                    level.terminals.set_values(frauds)
            self._labels_changed = False

    def _encoded(self, frame: pd.DataFrame) -> _History:
        rows = _History.from_frame(frame, ids_as_text=True)
        rows.customer_id = self._encode(rows.customer_id)
        rows.terminal_id = self._encode(rows.terminal_id)
        if C.TRANSACTION_ID not in frame:  # no ids to label by: keep positions, never matched as text
            rows.transaction_id = np.full(len(rows), None, dtype=object)
        return rows

    def _encode(self, ids: np.ndarray) -> np.ndarray:
        """Text ids -> dense int codes, new ids getting the next free codes.

        ``map(dict.get)`` runs at C speed (~3x faster than `pd.Index.get_indexer` on object ids); only ids
        not seen before go through Python one by one.
        """
        codes = np.fromiter(map(self._codes.get, ids, repeat(-1)), dtype=np.int64, count=len(ids))
        new = codes < 0
        if new.any():
            for value in pd.unique(ids[new]):
                self._codes[value] = len(self._codes)
            codes[new] = [self._codes[value] for value in ids[new]]
        return codes

    def _code(self, value: str) -> int:
        code = self._codes.get(value)
        if code is None:
            code = self._codes[value] = len(self._codes)
        return code
