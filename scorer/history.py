"""What the feature state is rebuilt from after a restart: the scoring log and the observed history.

The streaming features (`scorer.feature_state`) need ``retention_days`` of history (37 by default: 30-day
terminal windows shifted back by the 7-day label delay) before their windows are full. Transactions the
scorer scored are in the log (``transactions`` and ``labels``); transactions it only *observed*, history
given before the first live one (the demo's month, `selfheal run --warm-from FILE`), used to live in memory
alone. A restarted service then warmed up from a week of log, scored with starved windows, and the monitor
read the low counts as stuck features. `keep_history` stores observed rows in ``feature_history``;
`warm_up_rows` reads both back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd

from scorer import columns as C
from store import Store

__all__ = ["HistoryCoverage", "WarmUp", "keep_history", "warm_up_rows"]

TABLE = "feature_history"


@dataclass(frozen=True)
class WarmUp:
    """What `Scorer.warm_up` loaded into the feature state."""

    logged: int  # scored transactions, read back from the log
    observed: int  # observed history (`Scorer.observe_history`), never scored

    @property
    def rows(self) -> int:
        return self.logged + self.observed


@dataclass(frozen=True)
class HistoryCoverage:
    """How much time the feature state's history spans, against what its longest window needs."""

    rows: int
    held_days: float
    needed_days: int

    @property
    def short(self) -> bool:
        """Held history that does not reach back as far as the windows do (an empty state expects none)."""
        return self.rows > 0 and round(self.held_days) < self.needed_days


def keep_history(store: Store, rows: pd.DataFrame, *, kept_days: int, observed_at: np.datetime64) -> int:
    """Persist observed rows (`FeatureState.history_frame`'s columns); returns how many were kept.

    Only rows a feature window can still reach are kept: those within ``kept_days``
    (`FeatureConfig.kept_days`) of the newest transaction the workspace holds, logged or observed; older rows already stored are
    dropped, so the table holds about one retention window whatever is observed over time. A row whose
    transaction id is stored already replaces it: history observed twice is held once.
    """
    if rows.empty:
        return 0
    newest = max(
        [pd.Timestamp(rows[C.TIMESTAMP].max())] + [pd.Timestamp(t) for t in _newest_times(store) if t]
    )
    horizon = (newest - pd.Timedelta(days=kept_days)).to_pydatetime()
    kept = rows[rows[C.TIMESTAMP] > horizon]
    ids = kept[C.TRANSACTION_ID].dropna().unique().tolist()
    with store.transaction():
        store.execute(f"DELETE FROM {TABLE} WHERE timestamp <= ?", [horizon])
        if ids:
            store.execute(f"DELETE FROM {TABLE} WHERE transaction_id IN (SELECT unnest(?::VARCHAR[]))", [ids])
        store.append(
            TABLE, kept.assign(**{C.LABEL: kept[C.LABEL].astype("Int32"), "observed_at": observed_at})
        )
    return len(kept)


def warm_up_rows(store: Store, *, kept_days: int) -> pd.DataFrame:
    """The logged and the observed transactions a feature window can still reach, in time order.

    Columns: `FeatureState.history_frame`'s, and ``logged`` (True: scored, its id is in the duplicate
    check). A logged row's label is its latest in ``labels``; an observed row's is the same when one
    arrived, else the one it was observed with. An observed row whose id was also logged is read once,
    from the log.
    """
    newest = [pd.Timestamp(t) for t in _newest_times(store) if t]
    if not newest:
        return pd.DataFrame(columns=[C.TRANSACTION_ID, C.TIMESTAMP, C.CUSTOMER_ID, C.TERMINAL_ID, C.AMOUNT,
                                     C.LABEL, "logged"])  # fmt: skip
    since = (max(newest) - pd.Timedelta(days=kept_days)).to_pydatetime()
    return store.query(
        f"""
        WITH latest_labels AS (
            SELECT transaction_id, arg_max(is_fraud, received_at) AS is_fraud FROM labels GROUP BY transaction_id
        )
        SELECT * FROM (
            SELECT t.transaction_id, t.timestamp, t.customer_id, t.terminal_id, t.amount, l.is_fraud,
                   TRUE AS logged
            FROM transactions t LEFT JOIN latest_labels l USING (transaction_id)
            WHERE t.timestamp > ?
            UNION ALL
            SELECT h.transaction_id, h.timestamp, h.customer_id, h.terminal_id, h.amount,
                   coalesce(l.is_fraud, h.is_fraud), FALSE
            FROM {TABLE} h LEFT JOIN latest_labels l USING (transaction_id)
            WHERE h.timestamp > ?
              AND NOT EXISTS (SELECT 1 FROM transactions t WHERE t.transaction_id = h.transaction_id)
        ) ORDER BY timestamp
        """,
        [since, since],
    )


def _newest_times(store: Store) -> tuple[datetime | None, datetime | None]:
    """The newest logged and the newest observed transaction time (None: none)."""
    row = store.execute(
        f"SELECT (SELECT max(timestamp) FROM transactions), (SELECT max(timestamp) FROM {TABLE})"
    )
    return (row[0][0], row[0][1]) if row else (None, None)
