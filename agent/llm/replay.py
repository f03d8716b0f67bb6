"""Record model exchanges to files and serve them back, so the offline eval harness needs no endpoint.

`LLMClient` hands every request to its `ExchangeLog` together with a `send` callable that makes the live,
retried HTTP call. `Recorder` calls `send` and writes the exchange to a file; `Replayer` never calls it:
it answers from the recordings or raises `ReplayMiss`. A replayed run therefore cannot reach the network.

A recording is found by a key: the sha256 of the canonical JSON (sorted keys, no spaces) of the request's
`model`, `messages`, `tools` and `tool_choice` after normalisation. Temperature is not part of the key.
Normalisation removes what changes between two runs of the same scenario and nothing else:

| what | example | becomes |
|---|---|---|
| ISO date-times (date alone is kept) | `2024-05-01T10:00:00.123Z`, `2024-05-01 10:00` | `<time>` |
| UUIDs | `3f2a...-...-...` | `<uuid:1>`, `<uuid:2>`, ... |
| audit ids | `rollback_model-3f2a9c1b0d4e-1` | `<audit:1>`, ... |
| incident ids | `INC-12` | `<incident:1>`, ... |
| lowercase hex runs, 8+ long, with a digit and a letter (sha prefixes) | `9f86d081884c7d65` | `<hex:1>`, ... |
| tool-call ids (`tool_calls[].id`, `tool_call_id`) | `call_Xy12` | `<call:1>`, ... |
| durations: values of JSON keys with latency/elapsed/duration in the name | `"p99_latency_ms": 12.71` | `<duration>` |
| ... or ending in `_ms`, `_s`, `_secs`, `_seconds` | `"took_s": 3` | `<duration>` |
| ... and numbers with a unit `ms`, `s`, `sec`, `secs`, `seconds` | `35.2 ms` | `<duration>` |
| decimals, in text and as JSON floats, to 4 significant digits | `0.41234567`, `0.30000000000000004` | `0.4123`, `0.3` |
| JSON in tool-call arguments | `{"b": 1, "a": 2}` | `{"a":2,"b":1}` |
| `null` fields of messages | `"content": null` | dropped |

Ids are numbered by first appearance within one request, so two different incidents in one conversation
stay two different placeholders, and a run whose incident is INC-12 replays a recording made with INC-3.
Integers are kept: counts and thresholds are what the model reasons about.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import hashlib
import json
import re
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from agent.llm.errors import ReplayMiss

Json = dict[str, Any]

_TIMESTAMP = re.compile(
    r"\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?"
)
_UUID = re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b")
# tools/audit.py: "{action}-{idempotency_key[:12] or 'nokey'}-{attempt}".
_AUDIT_ID = re.compile(r"\b[a-z][a-z0-9_]*-(?:[0-9a-f]{12}|nokey)-\d+\b")
_INCIDENT_ID = re.compile(r"\bINC-\d+\b")
_HEX = re.compile(r"\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{8,}\b")
_DURATION_KEY = re.compile(
    r'("(?:\w*(?:latency|elapsed|duration)\w*|\w+_(?:ms|s|secs|seconds))"\s*:\s*)'
    r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?",
    re.IGNORECASE,
)
_DURATION_UNIT = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?\s?(?:ms|s|sec|secs|seconds)\b")
_DECIMAL = re.compile(r"(?<![\w.])-?\d+\.\d+(?:[eE][-+]?\d+)?(?![\w.])")
_NUMBERED = (("uuid", _UUID), ("audit", _AUDIT_ID), ("incident", _INCIDENT_ID), ("hex", _HEX))
SIGNIFICANT_DIGITS = 4


class ExchangeLog(Protocol):
    """Where a request's answer comes from: `send()` (live, retried) or a recording."""

    def exchange(self, request: Json, send: Callable[[], Json]) -> Json:
        """The chat-completion JSON answering `request`; call `send()` only if this log goes live."""
        ...


def normalise_request(request: Json) -> Json:
    """The parts of a request that identify it, with run-to-run noise replaced (see the module docstring)."""
    normaliser = _Normaliser()
    return {
        "model": request.get("model"),
        "messages": [normaliser.message(message) for message in request.get("messages") or []],
        "tools": normaliser.value(request.get("tools")),
        "tool_choice": normaliser.value(request.get("tool_choice")),
    }


def request_key(request: Json) -> str:
    """sha256 (hex) of the canonical JSON of the normalised request."""
    return hashlib.sha256(_canonical(normalise_request(request)).encode()).hexdigest()


class Recorder:
    """Makes every call live and writes it to `directory` as `NNNN-<key prefix>.json` (request + response).

    Only answered calls are written: a 429 or a timeout is not worth replaying. Recording into a directory
    that already holds recordings appends after them.
    """

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._count = len(list(self.directory.glob("*.json")))

    def exchange(self, request: Json, send: Callable[[], Json]) -> Json:
        response = send()
        key = request_key(request)
        with self._lock:
            self._count += 1
            path = self.directory / f"{self._count:04d}-{key[:12]}.json"
            text = json.dumps(
                {"key": key, "request": request, "response": response}, indent=2, sort_keys=True
            )
            # Written aside and renamed, so a run killed mid-write leaves no half file for the next replay.
            partial = path.with_suffix(".part")
            partial.write_text(text + "\n", encoding="utf-8")
            partial.replace(path)
        return response

    @property
    def paths(self) -> list[Path]:
        """The recordings in `directory`, in order."""
        return sorted(self.directory.glob("*.json"))


@dataclass(frozen=True)
class _Recording:
    path: Path
    normalised: Json
    response: Json


class Replayer:
    """Answers from the recordings in `directory`; a request without one raises `ReplayMiss`.

    Keys are recomputed from each file's stored request, so recordings survive a change of the normalisation
    rules. When one key was recorded several times, the n-th identical request gets the n-th answer, and
    requests beyond the last get the last answer again (same request, temperature 0).
    """

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise FileNotFoundError(f"no recordings directory {self.directory}")
        self._recordings: dict[str, list[_Recording]] = {}
        for path in sorted(self.directory.glob("*.json")):
            stored = json.loads(path.read_text(encoding="utf-8"))
            request, response = stored["request"], stored["response"]
            self._recordings.setdefault(request_key(request), []).append(
                _Recording(path, normalise_request(request), response)
            )
        self._served: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return sum(len(recordings) for recordings in self._recordings.values())

    def exchange(self, request: Json, send: Callable[[], Json]) -> Json:
        # `send` is deliberately never called: a replayed run makes no network call, whatever happens.
        key = request_key(request)
        with self._lock:
            recordings = self._recordings.get(key)
            if not recordings:
                raise ReplayMiss(self._miss_message(request, key), key=key)
            served = self._served[key]
            self._served[key] += 1
        return copy.deepcopy(recordings[min(served, len(recordings) - 1)].response)

    def _miss_message(self, request: Json, key: str) -> str:
        wanted = normalise_request(request)
        messages = wanted["messages"]
        head = (
            f"no recording for request {key[:16]} (model {wanted['model']!r}, {len(messages)} messages) "
            f"among {len(self)} in {self.directory}"
        )
        candidates = [recordings[0] for recordings in self._recordings.values()]
        if not candidates:
            return head + ". Record them first with Recorder."
        closest = max(candidates, key=lambda recording: _similarity(wanted, recording.normalised))
        return f"{head}. Closest recording: {closest.path.name}, {_difference(wanted, closest.normalised)}"


class _Normaliser:
    """One request's worth of state: which id got which placeholder number."""

    def __init__(self) -> None:
        self._numbers: dict[str, dict[str, int]] = {}

    def message(self, message: Json) -> Json:
        message = dict(message)
        if isinstance(message.get("tool_call_id"), str):
            message["tool_call_id"] = self._placeholder("call", message["tool_call_id"])
        calls = message.get("tool_calls")
        if isinstance(calls, list):
            message["tool_calls"] = [
                self._tool_call(call) if isinstance(call, dict) else call for call in calls
            ]
        normalised: Json = self.value(message)
        return normalised

    def _tool_call(self, call: Json) -> Json:
        call = copy.deepcopy(call)
        if isinstance(call.get("id"), str):
            call["id"] = self._placeholder("call", call["id"])
        function = call.get("function")
        if isinstance(function, dict) and isinstance(function.get("arguments"), str):
            # Malformed arguments are part of what was asked: they stay as text.
            with contextlib.suppress(ValueError):
                function["arguments"] = _canonical(json.loads(function["arguments"]))
        return call

    def value(self, value: Any) -> Any:
        if isinstance(value, dict):
            return {key: self.value(item) for key, item in value.items() if item is not None}
        if isinstance(value, list):
            return [self.value(item) for item in value]
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, float):
            return float(f"{value:.{SIGNIFICANT_DIGITS}g}")
        return value

    def text(self, text: str) -> str:
        text = _TIMESTAMP.sub("<time>", text)
        for kind, pattern in _NUMBERED:
            text = pattern.sub(self._replacer(kind), text)
        text = _DURATION_KEY.sub(r"\1<duration>", text)
        text = _DURATION_UNIT.sub("<duration>", text)
        return _DECIMAL.sub(lambda match: f"{float(match.group()):.{SIGNIFICANT_DIGITS}g}", text)

    def _replacer(self, kind: str) -> Callable[[re.Match[str]], str]:
        return lambda match: self._placeholder(kind, match.group())

    def _placeholder(self, kind: str, original: str) -> str:
        numbers = self._numbers.setdefault(kind, {})
        number = numbers.setdefault(original, len(numbers) + 1)
        return f"<{kind}:{number}>"


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _common_prefix(wanted: list[Any], recorded: list[Any]) -> int:
    shared = 0
    for mine, theirs in zip(wanted, recorded, strict=False):
        if mine != theirs:
            break
        shared += 1
    return shared


def _similarity(wanted: Json, recorded: Json) -> tuple[bool, int, float]:
    # Same model first, then the longest shared conversation, then how alike the first differing message is.
    shared = _common_prefix(wanted["messages"], recorded["messages"])
    mine, theirs = wanted["messages"][shared:], recorded["messages"][shared:]
    alike = difflib.SequenceMatcher(
        None, _canonical(mine[0]) if mine else "", _canonical(theirs[0]) if theirs else ""
    ).quick_ratio()
    return wanted["model"] == recorded["model"], shared, alike


def _difference(wanted: Json, recorded: Json) -> str:
    """Where the request leaves the closest recording, both sides shown around the first difference."""
    shared = _common_prefix(wanted["messages"], recorded["messages"])
    if wanted["model"] != recorded["model"]:
        where, mine, theirs = "the model", wanted["model"], recorded["model"]
    elif shared < max(len(wanted["messages"]), len(recorded["messages"])):
        where = (
            f"message {shared} (the first {shared} of {len(recorded['messages'])} recorded messages match)"
        )
        mine = wanted["messages"][shared] if shared < len(wanted["messages"]) else "(none)"
        theirs = recorded["messages"][shared] if shared < len(recorded["messages"]) else "(none)"
    else:
        where = "the tools or tool_choice (every message matches)"
        mine = {"tools": wanted["tools"], "tool_choice": wanted["tool_choice"]}
        theirs = {"tools": recorded["tools"], "tool_choice": recorded["tool_choice"]}
    mine_text, theirs_text = _canonical(mine), _canonical(theirs)
    start = next(
        (i for i, (a, b) in enumerate(zip(mine_text, theirs_text, strict=False)) if a != b),
        min(len(mine_text), len(theirs_text)),
    )
    lo = max(0, start - 80)
    return (
        f"differs at {where}, after normalisation:\n"
        f"  requested: ...{mine_text[lo : start + 160]}...\n"
        f"  recorded:  ...{theirs_text[lo : start + 160]}..."
    )
