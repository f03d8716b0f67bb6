"""The skeleton `selfheal runbooks new` writes: every required part present, prose left to fill in."""

from __future__ import annotations

import re

from monitor.findings import INCIDENT_KINDS
from tools.runbooks.model import ID_PATTERN

_TEMPLATE = """---
id: {id}
title: "<FILL IN: one line an on-call engineer recognises the problem by>"
root_cause: {root_cause}
triggers:
  kinds: [{kind}]
severity: medium
actions:
  add_note: auto
verification:
  check: {check}
  within: 2h
paging: if_unverified
---

# {id}

## When it applies

<FILL IN: the symptom, the incident kind and the numbers that point at this cause.>

## Investigate

```tool
tool: get_incident
args: {{incident_id: "{{{{ incident.incident_id }}}}"}}
```

<FILL IN: what to look at and which numbers tell this cause from its look-alikes.>

## Decide

<FILL IN: the rule for acting or not, with thresholds.>

## Remediate

```action
action: add_note
args: {{text: "<FILL IN: what was done and why>"}}
```

## Verify

<FILL IN: which check must be back under its threshold, and by when.>

## Escalate

<FILL IN: who to page, when, and with which numbers.>
"""

# The check a new runbook watches by default, per incident kind.
_DEFAULT_CHECK = {
    "data_quality": "feature_quality",
    "data_drift": "data_drift",
    "prediction_drift": "score_drift",
    "performance_decay": "performance",
    "latency": "latency",
    "error_rate": "dead_letters",
    "volume": "volume",
    "label_freshness": "label_freshness",
    "model_integrity": "model_integrity",
}


def runbook_template(runbook_id: str, kind: str = "data_quality", root_cause: str = "none") -> str:
    """A new runbook's text: it lints clean once every ``<FILL IN ...>`` is replaced.

    Raises:
        ValueError: A bad id or an unknown incident kind.
    """
    if not re.match(ID_PATTERN, runbook_id):
        raise ValueError(f"runbook id {runbook_id!r} must be lower_snake_case (letters, digits, _)")
    if kind not in INCIDENT_KINDS:
        raise ValueError(f"unknown incident kind {kind!r}; known: {', '.join(INCIDENT_KINDS)}")
    return _TEMPLATE.format(id=runbook_id, kind=kind, check=_DEFAULT_CHECK[kind], root_cause=root_cause)
