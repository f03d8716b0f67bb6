"""Labels a team sends after the fact (chargebacks, confirmed fraud): read, checked, then given to the scorer.

Labels feed the terminals' fraud ratios (`FeatureState.add_labels`) and the monitor's performance checks
(the ``labels`` table). `selfheal run` delivered them from the file it played; a team that scores with
`selfheal score` or a running service had no way to send them (`selfheal labels FILE`,
``POST /v1/labels`` now). A label names a transaction id and ``is_fraud`` (0 or 1, or true / false);
``label_time`` (when it became known) is optional: the time it arrives stands in. Handbook spellings
(``TRANSACTION_ID``, ``TX_FRAUD``) are read too. A row that is not a label is refused with its reason,
never half-applied.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from scorer import columns as C
from scorer.sources import read_records
from scorer.validate import MAX_ID_LENGTH, TIMESTAMP_REASON, UnreadableRecord, parse_time

if TYPE_CHECKING:
    from scorer.score import Scorer

__all__ = ["LABEL_TIME", "CheckedLabels", "LabelsApplied", "apply_labels", "check_labels", "read_label_file"]

LABEL_TIME = "label_time"
_TRUE = frozenset({"1", "true", "yes"})
_FALSE = frozenset({"0", "false", "no"})


@dataclass
class CheckedLabels:
    """Labels that can be applied (``transaction_id`` text, ``is_fraud`` int, ``label_time`` or NaT) and
    the rows refused, as (0-based row, reason)."""

    valid: pd.DataFrame
    refused: list[tuple[int, str]] = field(default_factory=list)


@dataclass(frozen=True)
class LabelsApplied:
    """What `apply_labels` did: rows received, labels applied, how many name a transaction this
    workspace scored, and the rows refused (their count, and the first few with their reasons)."""

    received: int
    applied: int
    scored: int
    refused: int
    refusals: list[tuple[int, str]]

    def to_json(self) -> dict[str, Any]:
        return {"received": self.received, "applied": self.applied, "scored": self.scored, "refused": self.refused,
                "refusals": [{"row": row, "reason": reason} for row, reason in self.refusals]}  # fmt: skip


def apply_labels(scorer: Scorer, records: Iterable[Mapping[str, Any]], *, shown: int = 20) -> LabelsApplied:
    """Check ``records`` and give the labels to ``scorer`` (the ``labels`` table and the feature state).

    A label for an id the workspace never scored is kept too (it may be for history it was trained on);
    ``scored`` says how many matched a scored transaction, so a file of the wrong ids shows at once.
    """
    checked = check_labels(records)
    applied = scorer.add_labels(checked.valid)
    ids = checked.valid[C.TRANSACTION_ID].unique().tolist()
    scored = 0
    if ids:
        scorer.flush()  # transactions staged but not yet written count as scored
        scored = int(scorer.store.scalar(
            "SELECT count(DISTINCT transaction_id) FROM transactions WHERE transaction_id IN (SELECT unnest(?::VARCHAR[]))",
            [ids],
        ) or 0)  # fmt: skip
    return LabelsApplied(
        received=applied + len(checked.refused), applied=applied, scored=scored, refused=len(checked.refused),
        refusals=checked.refused[:shown],
    )  # fmt: skip


def read_label_file(path: Path) -> list[Any]:
    """The rows of a .csv, .parquet or .jsonl labels file, read as `selfheal score` reads transactions
    (`scorer.sources.read_records`: handbook names, a BOM, broken lines kept as `UnreadableRecord`).

    Raises:
        FileNotFoundError: no such file.
        DataFormatError: not a supported type, or not readable as one.
    """
    records: list[Any] = []
    for batch in read_records(path):
        records += batch.to_dict("records") if isinstance(batch, pd.DataFrame) else batch
    return records


def check_labels(records: Iterable[Mapping[str, Any]]) -> CheckedLabels:
    """Each record is a label (see the module docstring) or is refused with its reason."""
    ids: list[str] = []
    frauds: list[int] = []
    times: list[pd.Timestamp | None] = []
    refused: list[tuple[int, str]] = []
    for row, record in enumerate(records):
        if isinstance(record, UnreadableRecord):
            refused.append((row, record.reason))
            continue
        if not isinstance(record, Mapping):
            refused.append((row, "a label is an object with transaction_id and is_fraud"))
            continue
        problem, transaction_id, label, when = _check_one(record)
        if problem is not None:
            refused.append((row, problem))
            continue
        ids.append(transaction_id)
        frauds.append(label)
        times.append(when)
    valid = pd.DataFrame(
        {
            C.TRANSACTION_ID: pd.Series(ids, dtype=object),
            C.LABEL: pd.Series(frauds, dtype="int64"),
            LABEL_TIME: pd.to_datetime(pd.Series([t if t is not None else pd.NaT for t in times], dtype=object)),
        }
    )
    return CheckedLabels(valid=valid, refused=refused)


def _check_one(record: Mapping[str, Any]) -> tuple[str | None, str, int, pd.Timestamp | None]:
    raw_id = record.get(C.TRANSACTION_ID)
    if _missing(raw_id) or isinstance(raw_id, bool):
        return f"missing {C.TRANSACTION_ID}", "", 0, None
    if isinstance(raw_id, float) and raw_id.is_integer():
        raw_id = int(raw_id)  # a numeric column read with NaNs holds 17.0 for the id 17
    transaction_id = str(raw_id).strip()
    if not transaction_id:
        return f"missing {C.TRANSACTION_ID}", "", 0, None
    if len(transaction_id) > MAX_ID_LENGTH:
        return f"{C.TRANSACTION_ID} longer than {MAX_ID_LENGTH} characters", "", 0, None
    label = _label(record.get(C.LABEL))
    if label is None:
        return f"{C.LABEL} must be 0 or 1 (or true / false)", "", 0, None
    when = None
    if not _missing(record.get(LABEL_TIME)):
        when = parse_time(record[LABEL_TIME])
        if when is None:
            return TIMESTAMP_REASON.replace("timestamp", LABEL_TIME, 1), "", 0, None
    return None, transaction_id, label, when


def _missing(value: Any) -> bool:
    """None, empty text, or a reader's NaN / NaT for an empty cell."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return True
    return value is pd.NaT or (isinstance(value, float) and math.isnan(value))


def _label(value: Any) -> int | None:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)) and value in (0, 1):
        return int(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return 1 if value.strip().lower() in _TRUE else 0
    return None
