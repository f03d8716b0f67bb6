"""Label faults: the feedback that fraud labels bring stops arriving."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

import pandas as pd

from evals.faults.base import Fault, FaultFamily, IncidentKind, RootCause, register_fault
from scorer.simulate import LABEL_TIME


@register_fault
class LabelStall(Fault):
    """The label pipeline stalls (a chargeback feed stops, an ETL job hangs): labels stop arriving.

    Labels whose ``label_time`` falls inside the window are withheld and never arrive, so performance on
    matured labels cannot be measured and terminal-risk features stop learning. Nothing else changes.

    Parameters: none.

    Root cause ``label_pipeline_stall``; expected incident: ``label_freshness``.
    """

    kind: ClassVar[str] = "label_stall"
    family: ClassVar[FaultFamily] = "labels"
    root_cause: ClassVar[RootCause] = "label_pipeline_stall"
    expected_kinds: ClassVar[tuple[IncidentKind, ...]] = ("label_freshness",)
    example_params: ClassVar[dict[str, Any]] = {}

    def filter_labels(self, labels: pd.DataFrame, now: datetime) -> pd.DataFrame:
        return labels.loc[~self.in_window(labels[LABEL_TIME])]
