"""The action audit log, and `run_action`: the one door every action tool goes through.

Every attempt to change something (applied or refused) is a row in ``audit_log``: who, why, for which
incident, with which arguments, what happened, under which approval, its idempotency key, and the action
that undoes it (``inverse``, ``{"action": name, "args": {...}}``, callable through `call_tool` as is).

`run_action(ctx, name, args, apply)` does, in order:

1. computes the idempotency key: sha256 of (incident, action, canonical JSON of the arguments);
2. if an applied row has that key and its effect is still in force, returns that row's result with
   ``"repeat": true`` and writes nothing: a retried call (a resumed graph node, an LLM that forgot) has
   no second effect;
3. runs ``apply``, which checks preconditions and rate limits first and raises `ToolRefused` with a clear
   message, or makes the change and returns an `Effect` (result + inverse);
4. records the audit row: ``applied`` with the inverse, or ``refused`` with the message (then re-raises).

Why "still in force" in step 2: a key alone would turn "roll back to v1, promote v2 again (the inverse),
roll back to v1 again" into a silent no-op that reports a champion that is not serving. So a repeat is a
repeat only while what the first call did still holds (the champion is still v1, the fallback still on);
once something has changed it back, the same call is a new request, with its own checks and rate limits.

Times come from ``ctx.clock`` (simulated time in evals). Actions run one at a time per process (DuckDB has
one owner process, DESIGN 4), so the check-then-write of steps 2-4 cannot interleave with another action.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict

from scorer.serving import as_naive_utc
from store import Store, where_equal
from tools.context import ToolContext
from tools.errors import ToolRefused

__all__ = [
    "MAX_REASON_CHARS",
    "ActionLog",
    "AuditRecord",
    "Effect",
    "Inverse",
    "bounded_text",
    "canonical_json",
    "finite",
    "idempotency_key",
    "run_action",
]

Status = Literal["applied", "refused"]
# Free text from the agent (reasons, notes) is untrusted data: stored as is, but never without a bound.
MAX_REASON_CHARS: Final = 500
_CUT_MARKER: Final = " …[cut]"
_COLUMNS: Final = (
    "audit_id",
    "recorded_at",
    "actor",
    "action",
    "incident_id",
    "args",
    "result",
    "reason",
    "approval",
    "idempotency_key",
    "inverse",
)
_JSON_COLUMNS: Final = ("args", "result", "inverse")
_SELECT: Final = f"SELECT {', '.join(_COLUMNS)} FROM audit_log"
# One action at a time per process: the repeat check, the change and the audit row must not interleave.
_ACTIONS_LOCK = threading.RLock()


@dataclass(frozen=True)
class Inverse:
    """The action call that undoes an applied action."""

    action: str
    args: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"action": self.action, "args": self.args}


@dataclass(frozen=True)
class Effect:
    """What an applied action did (`result`, JSON-able) and how to undo it (None: nothing to undo)."""

    result: dict[str, Any]
    inverse: Inverse | None = None


class AuditRecord(BaseModel):
    """One row of the audit log."""

    model_config = ConfigDict(frozen=True)

    audit_id: str
    recorded_at: datetime
    actor: str
    action: str
    incident_id: str | None
    args: dict[str, Any]
    result: dict[str, Any]
    reason: str | None
    approval: str | None
    idempotency_key: str | None
    inverse: dict[str, Any] | None

    @property
    def status(self) -> str:
        return str(self.result.get("status", ""))


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no spaces: equal arguments give equal text (and equal keys).

    NaN and infinities become null, so the text is valid JSON for DuckDB's JSON functions.
    """
    return json.dumps(finite(value), sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=False)


def idempotency_key(incident_id: str | None, action: str, args: dict[str, Any]) -> str:
    """sha256 of (incident, action, canonical arguments), hex."""
    return hashlib.sha256(canonical_json([incident_id, action, args]).encode()).hexdigest()


def bounded_text(text: str, limit: int = MAX_REASON_CHARS) -> str:
    """`text` stripped and cut to `limit` characters, with a visible marker when cut."""
    text = text.strip()
    if len(text) <= limit:
        return text
    return text[: limit - len(_CUT_MARKER)] + _CUT_MARKER


class ActionLog:
    """Reads and appends the ``audit_log`` table.

    Args:
        store: The workspace database.
        clock: "Now" for ``recorded_at`` (the tool context's clock: simulated time in evals).
    """

    def __init__(self, store: Store, clock: Callable[[], datetime]) -> None:
        self.store = store
        self.clock = clock

    def find(self, idempotency_key: str) -> AuditRecord | None:
        """The latest *applied* row with this key (refusals never make a later call a repeat)."""
        rows = self.store.execute(
            f"{_SELECT} WHERE idempotency_key = ? AND json_extract_string(result, '$.status') = 'applied' "
            "ORDER BY rowid DESC LIMIT 1",
            [idempotency_key],
        )
        return _record(rows[0]) if rows else None

    def recorded(self, idempotency_key: str) -> AuditRecord | None:
        """The latest row with this key, whatever its status (a denial, say)."""
        rows = self.store.execute(f"{_SELECT} WHERE idempotency_key = ? ORDER BY rowid DESC LIMIT 1", [idempotency_key])
        return _record(rows[0]) if rows else None

    def record(
        self,
        *,
        actor: str,
        action: str,
        incident_id: str | None,
        args: dict[str, Any],
        result: dict[str, Any],
        reason: str | None,
        approval: str | None,
        idempotency_key: str | None,
        inverse: dict[str, Any] | None,
    ) -> AuditRecord:
        """Append one row; `result` should carry ``"status"`` (``applied`` or ``refused``)."""
        attempt = int(
            self.store.scalar(
                "SELECT count(*) FROM audit_log WHERE idempotency_key IS NOT DISTINCT FROM ?",
                [idempotency_key],
            )
        )
        record = AuditRecord(
            # Readable and deterministic (a replayed eval gets the same ids): the key's prefix, then the attempt.
            audit_id=f"{action}-{(idempotency_key or 'nokey')[:12]}-{attempt + 1}",
            recorded_at=as_naive_utc(self.clock()),
            actor=actor,
            action=action,
            incident_id=incident_id,
            args=args,
            result=result,
            reason=reason,
            approval=approval,
            idempotency_key=idempotency_key,
            inverse=inverse,
        )
        values = record.model_dump()
        for column in _JSON_COLUMNS:
            values[column] = None if values[column] is None else canonical_json(values[column])
        self.store.execute(
            f"INSERT INTO audit_log ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' for _ in _COLUMNS)})",
            [values[column] for column in _COLUMNS],
        )
        return record

    def since(self, action: str, since: datetime, **match: Any) -> list[AuditRecord]:
        """Applied rows of `action` recorded at or after `since`, oldest first, whose result has `match`.

        ``match`` compares top-level fields of the recorded result, e.g. ``from_version=3``.
        """
        rows = self.store.execute(
            f"{_SELECT} WHERE action = ? AND recorded_at >= ? "
            "AND json_extract_string(result, '$.status') = 'applied' ORDER BY rowid",
            [action, as_naive_utc(since)],
        )
        records = [_record(row) for row in rows]
        return [r for r in records if all(r.result.get(k) == v for k, v in match.items())]

    def count_since(self, action: str, since: datetime, **match: Any) -> int:
        """How many applied `action` rows since `since` match (what rate limits count)."""
        return len(self.since(action, since, **match))

    def rows(
        self, *, incident_id: str | None = None, action: str | None = None, actor: str | None = None
    ) -> list[AuditRecord]:
        """Rows in the order they were written, optionally for one incident, action and/or actor."""
        clause, params = where_equal(incident_id=incident_id, action=action, actor=actor)
        return [_record(row) for row in self.store.execute(f"{_SELECT}{clause} ORDER BY rowid", params)]


def run_action(
    ctx: ToolContext,
    name: str,
    args: dict[str, Any],
    apply: Callable[[], Effect],
    *,
    in_force: Callable[[dict[str, Any]], bool] | None = None,
    key_args: dict[str, Any] | None = None,
    reason: str | None = None,
    atomic: bool = False,
) -> dict[str, Any]:
    """Run one action with idempotency, refusal auditing and an audit row (see the module docstring).

    Args:
        ctx: The tool context (who acts, for which incident, under which approval, on what clock).
        name: The action's tool name.
        args: Its arguments, as the caller gave them (recorded, and hashed into the key).
        apply: Checks preconditions and rate limits (raising `ToolRefused` before changing anything),
            then makes the change and returns its `Effect`.
        in_force: Given the recorded result of an earlier identical call, whether its effect still holds;
            default: always (a page or a note cannot be taken back).
        key_args: What identifies a repeat, if not `args` (a page is one per incident, whatever it says).
        reason: The audit row's "why"; default the context's reason.
        atomic: Run `apply` and the audit row in one store transaction. Only for changes that do not open
            their own transaction (the registry's promotions and rollbacks do).

    Returns:
        The result, with ``status``, ``audit_id``, ``repeat`` and ``inverse``.

    Raises:
        ToolRefused: A precondition or a rate limit said no (the refusal is in the audit log).
    """
    log = ActionLog(ctx.store, ctx.clock)
    key = idempotency_key(ctx.incident_id, name, args if key_args is None else key_args)
    why = bounded_text(reason if reason is not None else ctx.reason) or None
    common: dict[str, Any] = {
        "actor": ctx.actor,
        "action": name,
        "incident_id": ctx.incident_id,
        "args": args,
        "reason": why,
        "approval": ctx.approval,
        "idempotency_key": key,
    }
    with _ACTIONS_LOCK:
        earlier = log.find(key)
        if earlier is not None and (in_force is None or in_force(earlier.result)):
            return {
                **earlier.result,
                "audit_id": earlier.audit_id,
                "repeat": True,
                "inverse": earlier.inverse,
                "first_recorded_at": earlier.recorded_at.isoformat(),
            }
        try:
            if atomic:
                with ctx.store.transaction():
                    record = _apply_and_record(log, apply, common)
            else:
                record = _apply_and_record(log, apply, common)
        except ToolRefused as refusal:
            log.record(**common, result={"status": "refused", "message": str(refusal)}, inverse=None)
            raise
        finally:
            # A rolled-back transaction may have left an uncommitted serving state in the shared cache.
            ctx.serving.invalidate()
    return {**record.result, "audit_id": record.audit_id, "repeat": False, "inverse": record.inverse}


def _apply_and_record(log: ActionLog, apply: Callable[[], Effect], common: dict[str, Any]) -> AuditRecord:
    effect = apply()
    result = {"status": "applied", **effect.result}
    inverse = effect.inverse.to_json() if effect.inverse is not None else None
    return log.record(**common, result=result, inverse=inverse)


def finite(value: Any) -> Any:
    """``value`` with NaN and infinities as None, inside dicts and lists: strict JSON accepts it (a metric
    on a window without fraud is NaN, and an audit row or an API answer must still be valid JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def _record(row: tuple[Any, ...]) -> AuditRecord:
    fields = dict(zip(_COLUMNS, row, strict=True))
    for column in _JSON_COLUMNS:
        fields[column] = None if fields[column] is None else json.loads(fields[column])
    return AuditRecord.model_validate(fields)
