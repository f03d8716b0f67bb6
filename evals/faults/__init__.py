"""The fault library: what goes wrong in a fraud-scoring platform, as small registered classes.

Every fault kind is a key of `FAULTS`; `make_fault(kind, params, start, end)` builds one from a scenario
file's values and names the unknown kind or bad parameter when it cannot. Families (the seam each acts
through, see `evals.faults.base`):

| kind | family | root cause |
|---|---|---|
| ``feature_nulls``, ``feature_constant`` | serving (feature hook) | ``feature_pipeline_break`` |
| ``schema_change``, ``amount_shift`` | stream | ``schema_change`` |
| ``volume_drop`` | stream | ``upstream_volume_drop`` |
| ``benign_seasonal`` | stream | ``benign_seasonal_shift`` (no incident expected) |
| ``population_shift`` | stream | ``population_shift`` |
| ``new_fraud_pattern``, ``card_testing`` | stream | ``new_fraud_pattern`` |
| ``bad_deploy`` | serving (deploy) | ``bad_model_deploy`` |
| ``slow_deploy``, ``latency`` | serving | ``slow_model_deploy`` |
| ``corrupt_artifact`` | serving | ``corrupted_artifact`` |
| ``threshold_misconfig`` | serving | ``threshold_misconfig`` |
| ``label_stall`` | labels | ``label_pipeline_stall`` |
| ``text_injection`` | stream | ``none`` (a security probe for the agent) |
"""

from evals.faults import deploy, labels, serving, stream, world
from evals.faults.base import (
    FAULTS,
    INCIDENT_KINDS,
    ROOT_CAUSES,
    SCENARIO_CARD_TESTING,
    SCENARIO_NEW_PATTERN,
    WIRE_EDITS,
    Fault,
    FaultContext,
    FaultError,
    FaultFamily,
    FaultParameterError,
    IncidentKind,
    PlatformLike,
    RootCause,
    UnknownFaultKindError,
    affected_rows,
    make_fault,
    register_fault,
)
from evals.faults.deploy import BadDeploy, SlowDeploy
from evals.faults.labels import LabelStall
from evals.faults.serving import CorruptArtifact, FeatureConstant, FeatureNulls, Latency, ThresholdMisconfig
from evals.faults.stream import AmountShift, SchemaChange, TextInjection, VolumeDrop
from evals.faults.world import BenignSeasonal, CardTesting, NewFraudPattern, PopulationShift

__all__ = [
    "FAULTS",
    "INCIDENT_KINDS",
    "ROOT_CAUSES",
    "SCENARIO_CARD_TESTING",
    "SCENARIO_NEW_PATTERN",
    "WIRE_EDITS",
    "AmountShift",
    "BadDeploy",
    "BenignSeasonal",
    "CardTesting",
    "CorruptArtifact",
    "Fault",
    "FaultContext",
    "FaultError",
    "FaultFamily",
    "FaultParameterError",
    "FeatureConstant",
    "FeatureNulls",
    "IncidentKind",
    "LabelStall",
    "Latency",
    "NewFraudPattern",
    "PlatformLike",
    "PopulationShift",
    "RootCause",
    "SchemaChange",
    "SlowDeploy",
    "TextInjection",
    "ThresholdMisconfig",
    "UnknownFaultKindError",
    "VolumeDrop",
    "affected_rows",
    "deploy",
    "labels",
    "make_fault",
    "register_fault",
    "serving",
    "stream",
    "world",
]
