"""Action tools: every change the agent, or a person through the same door, can make.

Each action checks its preconditions in code, is idempotent per (incident, action, arguments), writes an
audit row (who, why, incident, arguments, result, approval) with the call that undoes it, and respects
its rate limits (`tools.audit.run_action`). Importing this package registers them in `tools.registry`.

| action | risk | inverse |
|---|---|---|
| rollback_model(to_version) | high | promote_model(replaced champion) |
| promote_model(version) | high | rollback_model(replaced champion) |
| enable_fallback_rules(reason) | medium | disable_fallback_rules() |
| disable_fallback_rules() | medium | enable_fallback_rules(old reason) |
| set_threshold(value, review_threshold?) | medium | set_threshold(old values) |
| quarantine_feature(feature) | medium | release_feature(feature) |
| release_feature(feature) | low | quarantine_feature(feature) |
| retrain_model(window_days) | high | none: registers a challenger, serving is unchanged |
| page(summary, severity, details) | low | none: a page cannot be unsent |
| add_note(text) | none | none: a note is history |
"""

from tools.actions.models import promote_model, rollback_model
from tools.actions.notify import add_note, page
from tools.actions.retrain import retrain_model
from tools.actions.serving import (
    disable_fallback_rules,
    enable_fallback_rules,
    quarantine_feature,
    release_feature,
    set_threshold,
)

ACTION_NAMES = (
    "rollback_model",
    "promote_model",
    "enable_fallback_rules",
    "disable_fallback_rules",
    "set_threshold",
    "quarantine_feature",
    "release_feature",
    "retrain_model",
    "page",
    "add_note",
)

__all__ = [
    "ACTION_NAMES",
    "add_note",
    "disable_fallback_rules",
    "enable_fallback_rules",
    "page",
    "promote_model",
    "quarantine_feature",
    "release_feature",
    "retrain_model",
    "rollback_model",
    "set_threshold",
]
