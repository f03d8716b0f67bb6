"""A sorted (entity, time) index answering "how many rows, and what sum, in (t - lookback, t - lag]".

`FeatureState` keeps one for customers and one for terminals. Rows are kept sorted by one int64 key,
``entity * stride + (time - t0)``, with ties in arrival order; a window is then two binary searches and a
prefix-sum difference. New rows are merged in with `np.insert` (O(rows) memory moves, no re-sort), so a
batch of 10,000 rows costs a few milliseconds however much history is kept, and no periodic rebuild
stalls a request.

The key layout (``t0``, ``stride``) leaves room past the newest row (``headroom_ms``) and past the longest
look-back, so a window's search can never reach a neighbouring entity's keys. A row that falls outside the
layout (a late or far-future timestamp) makes `merge` lay the keys out again first: the (entity, time)
order does not change, so that is one O(rows) pass, not a sort. Entity and time are read back from the key
itself (``key // stride``, ``key % stride``), so the index needs no other copy of them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_INT64_MAX = int(np.iinfo(np.int64).max)
Window = tuple[int, int]  # (lookback_ms, lag_ms): the rows with time in (t - lookback, t - lag]


def prefix_sums(values: np.ndarray) -> np.ndarray:
    """Cumulative sum with a leading 0, so ``sum(values[a:b]) == prefix[b] - prefix[a]``."""
    out = np.zeros(len(values) + 1, dtype=np.int64)
    np.cumsum(values, out=out[1:])
    return out


class WindowIndex:
    """Rows of one entity kind sorted by (entity code, time, arrival), with integer prefix sums.

    Args:
        max_lookback_ms: The longest ``lookback`` any query will use (lag included).
        headroom_ms: Time past the newest row the key layout leaves room for before it must be redone.
        track_rows: Keep each entry's row id (needed to change summed values later, see `set_values`).
    """

    def __init__(self, max_lookback_ms: int, headroom_ms: int, *, track_rows: bool = False) -> None:
        self.max_lookback = int(max_lookback_ms)
        self.headroom = int(headroom_ms)
        self.t0 = 0
        self.capacity = -1  # largest time - t0 the layout holds; -1: no layout yet
        self.stride = 1
        self.top_code = -1  # largest entity code indexed
        self.key = np.empty(0, dtype=np.int64)
        self.row: np.ndarray | None = np.empty(0, dtype=np.int64) if track_rows else None  # row ids, key order
        self.values = np.empty(0, dtype=np.int64)  # the summed quantity, key order
        self.prefix = np.zeros(1, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.key)

    # -- writes ------------------------------------------------------------------------------------

    def merge(self, codes: np.ndarray, ts_ms: np.ndarray, values: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """Insert new rows (given in arrival order, after every indexed row); returns their ranks.

        Args:
            codes, ts_ms, values: The new rows' entity codes, times and summed values.
            rows: Their row ids (required when the index tracks rows).

        Returns:
            Each new row's position in the merged index, in the order given.
        """
        if len(codes) == 0:
            return np.empty(0, dtype=np.int64)
        lo, hi = int(ts_ms.min()), int(ts_ms.max())
        top_code = max(int(codes.max()), self.top_code)
        if not self._fits(lo, hi, top_code):
            if len(self.key):
                old_codes, old_ts = self.entities_and_times()
                lo, hi = min(lo, int(old_ts.min())), max(hi, int(old_ts.max()))
                self._layout(lo, hi, top_code)
                self.key = old_codes * self.stride + (old_ts - self.t0)
            else:
                self._layout(lo, hi, top_code)
        self.top_code = top_code
        keys = codes * self.stride + (ts_ms - self.t0)
        order = np.argsort(keys, kind="stable")  # equal keys keep arrival order
        sorted_keys = keys[order]
        at = np.searchsorted(self.key, sorted_keys, side="right")  # after equal keys: they arrived earlier
        self.key = np.insert(self.key, at, sorted_keys)
        if self.row is not None:
            assert rows is not None, "this index tracks row ids: merge needs them"
            self.row = np.insert(self.row, at, rows[order])
        self.values = np.insert(self.values, at, values[order])
        self.prefix = prefix_sums(self.values)
        ranks = np.empty(len(keys), dtype=np.int64)
        ranks[order] = at + np.arange(len(keys))
        return ranks

    def set_values(self, values_by_row: np.ndarray) -> None:
        """New summed values (e.g. after labels arrived), given per row id."""
        assert self.row is not None, "only an index that tracks row ids can re-read values"
        self.values = values_by_row[self.row]
        self.prefix = prefix_sums(self.values)

    def evict(self, horizon_ms: int, new_ids: np.ndarray | None = None) -> None:
        """Drop the entries with time <= ``horizon_ms``; ``new_ids`` renumbers the kept row ids.

        The key layout stays (the kept keys still fit it), so no key is recomputed.
        """
        keep = self.key % self.stride > horizon_ms - self.t0
        self.key = self.key[keep]
        self.values = self.values[keep]
        self.prefix = prefix_sums(self.values)
        if self.row is not None:
            assert new_ids is not None, "this index tracks row ids: evicting renumbers them"
            self.row = new_ids[self.row[keep]]
        if not len(self.key):
            self.capacity, self.top_code = -1, -1

    # -- reads -------------------------------------------------------------------------------------

    def entities_and_times(self) -> tuple[np.ndarray, np.ndarray]:
        """Entity codes and times of the entries, in key order."""
        return self.key // self.stride, self.key % self.stride + self.t0

    def query_keys(self, codes: np.ndarray, ts_ms: np.ndarray) -> np.ndarray:
        """Keys for query rows (not necessarily indexed), time clamped so no window reaches a neighbour.

        A time before ``t0`` or past the layout has no indexed rows within any window of it, and the clamped
        key keeps that true; so does clamping an entity never indexed to one past the largest indexed code.
        """
        rel = np.clip(ts_ms - self.t0, -1, max(self.capacity, 0) + self.max_lookback)
        return np.minimum(codes, self.top_code + 1) * self.stride + rel

    def query_key(self, code: int, ts_ms: int) -> int:
        """`query_keys` for one row, in plain Python integers."""
        rel = min(max(ts_ms - self.t0, -1), max(self.capacity, 0) + self.max_lookback)
        return min(code, self.top_code + 1) * self.stride + rel

    def search(self, needles: np.ndarray) -> np.ndarray:
        """Positions just past the indexed keys <= each needle."""
        return np.searchsorted(self.key, needles, side="right")

    def window_sums(
        self, keys: np.ndarray, windows: Sequence[Window], *, ends: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Entry counts and value sums in each window of each query key; each (windows, keys) int64.

        Args:
            keys: Query keys (`query_keys`, or indexed rows' own keys), best in ascending order.
            windows: (lookback, lag) pairs.
            ends: Where windows with lag 0 end, instead of searching (rows just merged: their rank + 1,
                so a later arrival with the same key is not counted).
        """
        counts = np.zeros((len(windows), len(keys)), dtype=np.int64)
        sums = np.zeros((len(windows), len(keys)), dtype=np.int64)
        if not len(self.key) or not len(keys):
            return counts, sums
        offsets = {lookback for lookback, _ in windows} | {lag for _, lag in windows}
        if ends is not None:
            offsets.discard(0)
        ordered = sorted(offsets, reverse=True)
        # All of a key's needles in one call, ascending within the key: they land in the same few cache lines
        # of the index, where separate calls per window would each miss their way down again.
        needles = (keys[:, None] - np.array(ordered, dtype=np.int64)[None, :]).ravel()
        found = self.search(needles).reshape(len(keys), len(ordered))
        position = {offset: found[:, j] for j, offset in enumerate(ordered)}
        if ends is not None:
            position[0] = ends
        for i, (lookback, lag) in enumerate(windows):
            start, stop = position[lookback], position[lag]
            counts[i] = stop - start
            sums[i] = self.prefix[stop] - self.prefix[start]
        return counts, sums

    def add_window_sums(
        self, code: int, ts_ms: int, windows: Sequence[Window], counts: list[int], sums: list[int]
    ) -> None:
        """`window_sums` for one query row (every indexed row arrived before it), added to ``counts`` and
        ``sums`` in place: one search call and plain Python integers, no (windows, keys) arrays."""
        if not len(self.key):
            return
        key = self.query_key(code, ts_ms)
        needles = [key - lookback for lookback, _ in windows] + [key - lag for _, lag in windows]
        found = self.search(np.array(needles, dtype=np.int64)).tolist()
        prefix = self.prefix
        k = len(windows)
        for i in range(k):
            start, stop = found[i], found[k + i]
            counts[i] += stop - start
            sums[i] += int(prefix[stop]) - int(prefix[start])

    # -- layout ------------------------------------------------------------------------------------

    def _fits(self, lo: int, hi: int, top_code: int) -> bool:
        if self.capacity < 0:
            return False
        return lo >= self.t0 and hi - self.t0 <= self.capacity and (top_code + 2) * self.stride < _INT64_MAX

    def _layout(self, lo: int, hi: int, top_code: int) -> None:
        self.t0 = lo
        self.capacity = hi - lo + self.headroom
        self.stride = self.capacity + self.max_lookback + 2
        if (top_code + 2) * self.stride >= _INT64_MAX:
            raise OverflowError("too many entities x too long a time span for the feature index")
