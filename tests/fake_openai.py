"""A scripted OpenAI-compatible chat server on 127.0.0.1, so tests run the real `openai` client end to end.

    from tests.fake_openai import error, text, tool_call

    def test_rollback_plan(fake_openai):
        fake_openai.script([
            error(429),                                         # rate limited once: the client retries
            tool_call("rollback_model", {"version": 1}),        # then the model calls a tool
            text("Rolled back to v1."),                         # and answers
        ])
        with LLMClient(fake_openai.config()) as llm:
            ...
        assert fake_openai.requests[1]["messages"][-1]["role"] == "user"

A script is a list of turns, served in order and once each, or a function ``(messages, tools) -> turn``
that sees each request. A turn is a reply (`text`, `tool_call`, `tool_calls`), an HTTP answer (`error`,
`raw`) or a `delay` before another turn (to make the client time out).

Nothing unscripted passes quietly: a request after the last turn, before any script, to another path, with
a malformed body, or a script function that raises is answered 500 with the reason *and* recorded in
`failures`; the `fake_openai` fixture raises them at teardown. Turns never cycle. Turns still unused at
teardown are a failure too, unless the script was set with ``allow_unused=True``. A test that provokes a
failure on purpose reads it with `take_failures()`.
"""

from __future__ import annotations

import itertools
import json
import threading
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

from agent.llm import LLMConfig

CHAT_PATH = "/v1/chat/completions"
Usage = tuple[int, int] | Literal["estimate"] | None


@dataclass(frozen=True)
class Completion:
    """A 200 chat completion: `content` and/or tool `calls` as (id or None, name, arguments text)."""

    content: str | None = None
    calls: tuple[tuple[str | None, str, str], ...] = ()
    finish_reason: str | None = None  # None: "tool_calls" when there are calls, else "stop"
    usage: Usage = "estimate"  # (prompt, completion) tokens; "estimate": ~4 characters a token; None: omitted


@dataclass(frozen=True)
class HttpAnswer:
    """Any status with any body (a dict is sent as JSON, a string as text)."""

    status: int
    body: Any
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Delay:
    """Wait `seconds` (cut short when the server stops), then serve `then`."""

    seconds: float
    then: Turn


@dataclass(frozen=True)
class Drip:
    """Send `spaces` bytes of whitespace (valid before JSON), one every `every_s` seconds, then `then`'s body:
    a server whose every read arrives within the client's timeout but whose answer never ends in time."""

    spaces: int
    every_s: float
    then: Turn


Turn = Completion | HttpAnswer | Delay | Drip
ScriptFunction = Callable[[list[dict[str, Any]], list[dict[str, Any]] | None], Turn]


def text(content: str, *, finish_reason: str = "stop", usage: Usage = "estimate") -> Completion:
    """The model answers in words."""
    return Completion(content=content, finish_reason=finish_reason, usage=usage)


def tool_call(
    name: str,
    args: dict[str, Any] | str,
    *,
    id: str | None = None,
    content: str | None = None,
    usage: Usage = "estimate",
) -> Completion:
    """The model calls one tool; `args` as a dict is sent as JSON, a string exactly as given (even malformed)."""
    return tool_calls([(name, args)], ids=[id], content=content, usage=usage)


def tool_calls(
    calls: Sequence[tuple[str, dict[str, Any] | str]],
    *,
    ids: Sequence[str | None] | None = None,
    content: str | None = None,
    usage: Usage = "estimate",
) -> Completion:
    """The model calls several tools in one turn; ids default to the server's ``call_<n>`` counter."""
    ids = list(ids) if ids is not None else [None] * len(calls)
    return Completion(
        content=content,
        calls=tuple(
            (call_id, name, args if isinstance(args, str) else json.dumps(args))
            for call_id, (name, args) in zip(ids, calls, strict=True)
        ),
        usage=usage,
    )


def error(status: int, body: Any = None, *, headers: Mapping[str, str] | None = None) -> HttpAnswer:
    """An HTTP error; the body defaults to OpenAI's error shape. Use `headers={"retry-after": "0"}` etc."""
    if body is None:
        body = {"error": {"message": f"scripted HTTP {status}", "type": "fake_openai_error", "code": None}}
    return HttpAnswer(status, body, dict(headers or {}))


def raw(body: Any, *, status: int = 200, headers: Mapping[str, str] | None = None) -> HttpAnswer:
    """Exactly this body (for answers a real server should not give: no choices, not JSON, ...)."""
    return HttpAnswer(status, body, dict(headers or {}))


def drip(spaces: int, every_s: float, then: Turn | None = None) -> Drip:
    """Answer byte by byte, too slowly in all (see `Drip`), then send `then`."""
    return Drip(spaces, every_s, then if then is not None else text("(a late answer)"))


def delay(seconds: float, then: Turn | None = None) -> Delay:
    """Hold the answer `seconds` (longer than the client's timeout to provoke one), then send `then`."""
    return Delay(seconds, then if then is not None else text("(a late answer)"))


class ScriptError(AssertionError):
    """The fake server was asked something its script did not foresee."""


@dataclass
class Received:
    """One request as the server saw it, and the JSON it answered (None for errors and dropped delays)."""

    method: str
    path: str
    headers: dict[str, str]  # names lowercased
    body: Any
    response: dict[str, Any] | None = None


class FakeOpenAI:
    """The server: `start()`/`stop()` or use it as a context manager; `base_url` ends in ``/v1``."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.failures: list[str] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._turns: list[Turn] | None = None
        self._function: ScriptFunction | None = None
        self._next = 0
        self._allow_unused = False
        self._call_ids = itertools.count(1)
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------------------

    def start(self) -> FakeOpenAI:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 10  # a stuck client cannot hold a handler thread forever

            def do_POST(self) -> None:
                fake._handle(self)

            def do_GET(self) -> None:
                fake._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # tests read `received`, not stderr

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        # A short poll interval: `stop()` waits for the loop to notice, and every test stops a server.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.02,), name="fake-openai", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; a handler waiting out a `delay` wakes and answers nothing."""
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = self._thread = None

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self.stop()
        if exc_type is None:
            self.check()

    @property
    def base_url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("the fake OpenAI server is not running")
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def config(self, **overrides: Any) -> LLMConfig:
        """An `LLMConfig` pointing here, with retries fast enough for tests (override any field)."""
        values: dict[str, Any] = {
            "base_url": self.base_url,
            "api_key": "sk-test-fake",
            "model": "fake-model",
            # Generous: on a loaded 2-core machine a scripted answer can take seconds, and a timeout here
            # would be retried as a request the script does not expect (tests of timeouts set their own).
            "timeout_s": 30.0,
            "max_attempts": 3,
            "backoff_initial_s": 0.01,
            "backoff_max_s": 0.05,
            "backoff_jitter_s": 0.0,
        }
        values.update(overrides)
        return LLMConfig(**values)

    # -- scripting and assertions -----------------------------------------------------------------------

    def script(self, script: Sequence[Turn] | ScriptFunction, *, allow_unused: bool = False) -> None:
        """Replace the script: a list of turns served once each, or a function of (messages, tools)."""
        with self._lock:
            if callable(script):
                self._function, self._turns = script, None
            else:
                self._function, self._turns = None, list(script)
            self._next = 0
            self._allow_unused = allow_unused

    @property
    def requests(self) -> list[Any]:
        """The parsed JSON bodies received, in order."""
        return [request.body for request in self.received]

    def take_failures(self) -> list[str]:
        """The failures so far, cleared: for tests that provoke one on purpose."""
        with self._lock:
            taken, self.failures = self.failures, []
        return taken

    def check(self) -> None:
        """Raise `ScriptError` if anything went unscripted or scripted turns were never requested."""
        with self._lock:
            problems = list(self.failures)
            if self._turns is not None and self._next < len(self._turns) and not self._allow_unused:
                unused = [_describe(turn) for turn in self._turns[self._next :]]
                problems.append(f"{len(unused)} scripted turn(s) were never requested: {unused}")
        if problems:
            raise ScriptError("fake OpenAI server: " + "; ".join(problems))

    # -- serving ----------------------------------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        payload = handler.rfile.read(length) if length else b""
        try:
            body: Any = json.loads(payload) if payload else None
        except ValueError:
            body = payload.decode("utf-8", "replace")
        request = Received(
            handler.command, handler.path, {k.lower(): v for k, v in handler.headers.items()}, body
        )
        with self._lock:
            self.received.append(request)
            number = len(self.received)
        if handler.command != "POST" or handler.path != CHAT_PATH:
            turn: Turn = self._failure(f"request #{number}: unexpected {handler.command} {handler.path}")
        elif not isinstance(body, dict) or not isinstance(body.get("messages"), list) or "model" not in body:
            turn = self._failure(f"request #{number}: not a chat-completions body: {str(body)[:200]}")
        elif body.get("stream"):
            turn = self._failure(f"request #{number}: streaming is not scripted")
        else:
            turn = self._next_turn(number, body)
        self._serve(handler, request, turn)

    def _next_turn(self, number: int, body: dict[str, Any]) -> Turn:
        messages, tools = body["messages"], body.get("tools")
        with self._lock:
            function, turns, index = self._function, self._turns, self._next
            if turns is not None and index < len(turns):
                self._next += 1
        if function is not None:
            try:
                turn = function(messages, tools)
            except Exception:
                return self._failure(
                    f"request #{number}: the script function raised:\n{traceback.format_exc()}"
                )
            if not isinstance(turn, Completion | HttpAnswer | Delay | Drip):
                return self._failure(f"request #{number}: the script function returned {turn!r}, not a turn")
            return turn
        if turns is None:
            return self._failure(f"request #{number} arrived before any script was set")
        if index >= len(turns):
            last = json.dumps(messages[-1])[:200] if messages else "(no messages)"
            return self._failure(
                f"script exhausted: request #{number} arrived after all {len(turns)} scripted turns were "
                f"used; its last message: {last}"
            )
        return turns[index]

    def _failure(self, message: str) -> HttpAnswer:
        with self._lock:
            self.failures.append(message)
        return HttpAnswer(
            500, {"error": {"message": f"fake_openai: {message}", "type": "fake_openai_script_error"}}
        )

    def _serve(self, handler: BaseHTTPRequestHandler, request: Received, turn: Turn) -> None:
        dripping: Drip | None = None
        while isinstance(turn, Delay | Drip):
            if isinstance(turn, Drip):
                dripping = turn
            elif self._stopping.wait(turn.seconds):
                return  # stopping: the client has long given up
            turn = turn.then
        if isinstance(turn, Completion):
            answer = self._completion(request.body, turn)
            request.response = answer
            turn = HttpAnswer(200, answer)
        if isinstance(turn.body, str):
            data, content_type = turn.body.encode(), "text/plain; charset=utf-8"
        else:
            data, content_type = json.dumps(turn.body).encode(), "application/json"
        spaces = dripping.spaces if dripping is not None else 0
        try:
            handler.send_response(turn.status)
            handler.send_header("Content-Type", content_type)
            handler.send_header("Content-Length", str(spaces + len(data)))
            for name, value in turn.headers.items():
                handler.send_header(name, value)
            handler.end_headers()
            for _ in range(spaces):
                handler.wfile.write(b" ")
                handler.wfile.flush()
                if dripping is not None and self._stopping.wait(dripping.every_s):
                    return
            handler.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            pass  # the client timed out and hung up; that is what a delay is for

    def _completion(self, body: dict[str, Any], turn: Completion) -> dict[str, Any]:
        calls = [
            {
                "id": call_id or f"call_{next(self._call_ids)}",
                "type": "function",
                "function": {"name": name, "arguments": arguments},
            }
            for call_id, name, arguments in turn.calls
        ]
        message: dict[str, Any] = {"role": "assistant", "content": turn.content}
        if calls:
            message["tool_calls"] = calls
        answer: dict[str, Any] = {
            "id": f"chatcmpl-fake-{len(self.received)}",
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": turn.finish_reason or ("tool_calls" if calls else "stop"),
                    "logprobs": None,
                }
            ],
        }
        if turn.usage is not None:
            if turn.usage == "estimate":
                prompt = _tokens(json.dumps(body["messages"]) + json.dumps(body.get("tools") or []))
                completion = _tokens(
                    (turn.content or "") + "".join(name + args for _, name, args in turn.calls)
                )
            else:
                prompt, completion = turn.usage
            answer["usage"] = {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            }
        return answer


def _tokens(characters: str) -> int:
    return max(1, len(characters) // 4)


def _describe(turn: Turn) -> str:
    if isinstance(turn, Drip):
        return f"drip({turn.spaces} bytes every {turn.every_s}s, then {_describe(turn.then)})"
    if isinstance(turn, Delay):
        return f"delay({turn.seconds}s, then {_describe(turn.then)})"
    if isinstance(turn, HttpAnswer):
        return f"HTTP {turn.status}"
    if turn.calls:
        return "tool_calls(" + ", ".join(name for _, name, _ in turn.calls) + ")"
    return f"text({(turn.content or '')[:40]!r})"
