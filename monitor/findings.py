"""What a check reports about one window, and the vocabulary incidents share with the agent (DESIGN 5)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, Literal

IncidentKind = Literal[
    "data_quality",
    "data_drift",
    "prediction_drift",
    "performance_decay",
    "latency",
    "error_rate",
    "volume",
    "label_freshness",
    "model_integrity",
]
INCIDENT_KINDS: Final[tuple[str, ...]] = IncidentKind.__args__  # type: ignore[attr-defined]

RootCause = Literal[
    "feature_pipeline_break",
    "schema_change",
    "upstream_volume_drop",
    "benign_seasonal_shift",
    "population_shift",
    "new_fraud_pattern",
    "bad_model_deploy",
    "slow_model_deploy",
    "corrupted_artifact",
    "threshold_misconfig",
    "label_pipeline_stall",
    "none",
]
ROOT_CAUSES: Final[tuple[str, ...]] = RootCause.__args__  # type: ignore[attr-defined]

Severity = Literal["low", "medium", "high", "critical"]
SEVERITY_RANK: Final = {"low": 0, "medium": 1, "high": 2, "critical": 3}

Cadence = Literal["hour", "day"]


@dataclass
class Finding:
    """One check's verdict on one subject in one window.

    ``value`` and ``threshold`` are oriented so that larger is worse: a breach means value > threshold.
    ``evidence`` holds the numbers an on-call engineer (or the agent) needs: sample sizes, reference vs
    current, the no-drift percentile, per-bin contributions.
    """

    check: str
    kind: IncidentKind
    subject: str
    breached: bool
    metric: str
    value: float
    threshold: float
    severity: Severity = "medium"
    features: list[str] = field(default_factory=list)
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str]:
        return (self.kind, self.subject)
