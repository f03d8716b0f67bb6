"""One chat-completion call with tools: sent through the `openai` client, retried by tenacity, accounted.

The `openai` client runs with `max_retries=0`: tenacity is the only retry layer, so what is retried is
decided here (errors.py) and every attempt is counted. The answer is read from the raw JSON rather than
the SDK's models, so a live answer and a replayed recording go through the same parser, and tool-call
arguments reach the planner exactly as the model wrote them, malformed or not.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, cast

import httpx
import httpx2
import openai
from pydantic import BaseModel, ConfigDict, Field
from tenacity import RetryCallState, RetryError, Retrying, stop_after_attempt, wait_exponential, wait_random

from agent.llm.config import LLMConfig
from agent.llm.errors import LLMError, LLMRequestError, LLMUnavailable
from agent.llm.replay import ExchangeLog, Json
from tools.pagers.transport import retry_after_seconds

log = logging.getLogger(__name__)

# The SDK insists on some key; keyless local servers (Ollama, llama.cpp, vLLM) ignore the header.
NO_KEY = "no-key"
ERROR_EXCERPT_CHARS = 300
# A chat completion is kilobytes; a body past this is a broken or hostile server, never read whole.
MAX_RESPONSE_BYTES = 8 * 1024 * 1024


class ResponseTooLarge(Exception):
    """The endpoint's answer grew past `MAX_RESPONSE_BYTES` (raised while reading it; `_post` reports it)."""


class _BoundedBody(httpx2.SyncByteStream):
    """A response body read within a deadline and a size cap.

    httpx's timeout bounds each socket read, not the answer: a server that sends a byte of whitespace
    (valid before JSON) every few seconds kept one call going for as long as it liked, and the chat and
    the responder hold the service's responder lock while they wait. Past the deadline the read fails as
    a timeout (retried like any other); past the cap it fails as an unusable answer (not retried).
    """

    def __init__(self, inner: httpx2.SyncByteStream, *, seconds: float, max_bytes: int) -> None:
        self._inner, self._deadline, self._max_bytes = inner, time.monotonic() + seconds, max_bytes

    def __iter__(self) -> Iterator[bytes]:
        received = 0
        for chunk in self._inner:
            received += len(chunk)
            if received > self._max_bytes:
                raise ResponseTooLarge(f"the answer is larger than {self._max_bytes:,} bytes")
            if time.monotonic() > self._deadline:
                raise httpx2.ReadTimeout("the answer did not arrive in time (sent too slowly)")
            yield chunk

    def close(self) -> None:
        self._inner.close()


class TokenUsage(BaseModel):
    """Token counts of one call, as the endpoint reported them (0 when it did not)."""

    model_config = ConfigDict(frozen=True)

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class LLMReply(BaseModel):
    """What the model answered, in plain JSON-able form.

    `message` is ``{"role": "assistant", "content": str | None, "tool_calls": [{"id", "name",
    "arguments"}]}`` with `arguments` the model's raw string: validating it is the planner's job.
    """

    model_config = ConfigDict(frozen=True)

    message: dict[str, Any]
    finish_reason: str | None
    usage: TokenUsage
    cost_usd: float = Field(description="at the configured prices; 0 when they are unknown")
    latency_ms: float = Field(description="the whole call, retries and backoff included")
    attempts: int = Field(description="HTTP requests made; 0 when the answer was replayed")
    replayed: bool = False

    @property
    def content(self) -> str | None:
        content = self.message.get("content")
        return content if isinstance(content, str) else None

    @property
    def tool_calls(self) -> list[dict[str, str]]:
        return list(self.message.get("tool_calls") or [])

    def as_message(self) -> dict[str, Any]:
        """The assistant message in the wire form the next request's `messages` needs."""
        return _wire_message(self.message)


class LLMUsage(BaseModel):
    """Running totals over a client's calls; read it, or `model_dump()` it into a report."""

    calls: int = 0
    failed_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cost_usd: float = 0.0

    def add(self, reply: LLMReply) -> None:
        self.calls += 1
        self.prompt_tokens += reply.usage.prompt_tokens
        self.completion_tokens += reply.usage.completion_tokens
        self.total_tokens += reply.usage.total_tokens
        self.cost_usd += reply.cost_usd


class LLMClient:
    """Calls the configured chat model; see the package docstring for the errors it raises.

    Args:
        config: Endpoint, model, retries and prices.
        http_client: An `httpx.Client` (or `httpx2.Client`) to send through instead of the SDK's own, e.g.
            one with a test transport. The caller keeps ownership: `close()` leaves it open.
        exchanges: A `Recorder` to record every exchange, or a `Replayer` to answer from recordings with
            no HTTP call at all.
        sleep: How to wait between attempts (as `tools.pagers.transport.post_json` takes it): tests pass a
            recorder to see the waits asked for without spending them.
    """

    def __init__(
        self,
        config: LLMConfig,
        *,
        http_client: httpx.Client | httpx2.Client | None = None,
        exchanges: ExchangeLog | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.config = config
        self.exchanges = exchanges
        self._sleep = sleep
        self.usage = LLMUsage()
        self._usage_lock = threading.Lock()
        self._owns_http_client = http_client is None
        if http_client is None:
            http_client = openai.DefaultHttpxClient(event_hooks={"response": [self._bound_body]})
        self._openai = openai.OpenAI(
            api_key=config.api_key.get_secret_value() if config.api_key is not None else NO_KEY,
            # Always explicit: the SDK would otherwise read OPENAI_BASE_URL itself, a second source of truth.
            base_url=config.endpoint,
            timeout=config.timeout_s,
            max_retries=0,
            http_client=cast(
                Any, http_client
            ),  # the SDK accepts httpx.Client too; its hint names httpx2 only
        )

    def __repr__(self) -> str:
        exchanges = type(self.exchanges).__name__ if self.exchanges is not None else None
        config = self.config
        return f"LLMClient(model={config.model!r}, endpoint={config.endpoint!r}, exchanges={exchanges})"

    def __enter__(self) -> LLMClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _bound_body(self, response: httpx2.Response) -> None:
        """Called with each response's headers, before its body is read: bound the body (`_BoundedBody`).
        The body gets `timeout_s` after the headers, so one attempt takes at most about twice that."""
        response.stream = _BoundedBody(
            cast(httpx2.SyncByteStream, response.stream), seconds=self.config.timeout_s, max_bytes=MAX_RESPONSE_BYTES
        )

    def close(self) -> None:
        """Release the SDK's connection pool (an injected `http_client` is the caller's to close)."""
        if self._owns_http_client:
            self._openai.close()

    def complete(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        *,
        tool_choice: str | dict[str, Any] | None = None,
    ) -> LLMReply:
        """Ask the model for the next assistant message.

        Args:
            messages: The conversation in OpenAI chat form; assistant messages may carry `tool_calls` in
                the flat form `LLMReply.message` has, they are sent in wire form.
            tools: OpenAI tool schemas (``{"type": "function", "function": {...}}``); None or empty for none.
            tool_choice: ``"auto"``, ``"none"``, ``"required"`` or a named-tool dict; None leaves it unset.

        Raises:
            LLMUnavailable: transient failures outlasted `config.max_attempts`.
            LLMRequestError: the request was refused, no endpoint is configured, or the answer is unusable.
            ReplayMiss: replaying, and no recording matches this request.
        """
        request: Json = {
            "model": self.config.model,
            "messages": [_wire_message(message) for message in messages],
            "temperature": self.config.temperature,
        }
        if tools:
            request["tools"] = tools
        if tool_choice is not None:
            request["tool_choice"] = tool_choice
        attempts = 0

        def send() -> Json:
            nonlocal attempts
            if not self.config.configured:
                raise LLMRequestError("no LLM endpoint is configured: set OPENAI_BASE_URL or OPENAI_API_KEY")

            def attempt() -> Json:
                nonlocal attempts
                attempts += 1
                return self._post(request)

            try:
                return self._retrying()(attempt)
            except RetryError as gave_up:
                last = gave_up.last_attempt.exception()
                described = _describe(last)
                raise LLMUnavailable(
                    f"the LLM endpoint gave no answer after {attempts} attempt{'s' if attempts != 1 else ''} "
                    f"(model {self.config.model!r}); last error: {described}",
                    attempts=attempts,
                    last_error=described,
                ) from last

        started = time.perf_counter()
        try:
            response = self.exchanges.exchange(request, send) if self.exchanges is not None else send()
            usage = _token_usage(response)
            reply = LLMReply(
                message=_assistant_message(response),
                finish_reason=_finish_reason(response),
                usage=usage,
                cost_usd=self.config.cost_usd(usage.prompt_tokens, usage.completion_tokens),
                latency_ms=round((time.perf_counter() - started) * 1000, 1),
                attempts=attempts,
                replayed=self.exchanges is not None and attempts == 0,
            )
        except LLMError:
            with self._usage_lock:
                self.usage.failed_calls += 1
            raise
        with self._usage_lock:
            self.usage.add(reply)
        log.debug(
            "llm call: model=%s attempts=%d tokens=%d latency=%.0fms finish=%s",
            self.config.model,
            reply.attempts,
            usage.total_tokens,
            reply.latency_ms,
            reply.finish_reason,
        )
        return reply

    def _post(self, request: Json) -> Json:
        """One HTTP request; transient errors propagate as the SDK raised them, so tenacity can retry."""
        completions = cast(Any, self._openai.chat.completions)
        try:
            raw = completions.with_raw_response.create(**request)
        except openai.APIStatusError as error:
            if _transient(error):
                raise
            raise LLMRequestError(
                f"the LLM endpoint refused the request (HTTP {error.status_code}): {_describe(error)}",
                status_code=error.status_code,
            ) from error
        except openai.APIConnectionError:
            raise  # timeouts included (APITimeoutError is a subclass): transient
        except openai.OpenAIError as error:
            raise LLMRequestError(f"the LLM client failed: {_describe(error)}") from error
        except ResponseTooLarge as error:
            raise LLMRequestError(f"the LLM endpoint's answer is unusable: {error}") from error
        text = raw.http_response.text
        try:
            response = json.loads(text)
        except (ValueError, RecursionError):  # RecursionError: JSON nested deeper than Python recurses
            response = None
        if not isinstance(response, dict):
            raise LLMRequestError(
                f"the LLM endpoint answered with something other than JSON: {text[:ERROR_EXCERPT_CHARS]!r}"
            )
        return response

    def _retrying(self) -> Retrying:
        config = self.config
        backoff = wait_exponential(
            multiplier=config.backoff_initial_s, max=config.backoff_max_s
        ) + wait_random(0, config.backoff_jitter_s)

        def wait(state: RetryCallState) -> float:
            failure = state.outcome.exception() if state.outcome is not None else None
            seconds = float(backoff(state))
            asked = _retry_after_s(failure)
            if asked is not None:
                seconds = max(seconds, asked)
            # Never longer than the cap, even when the server asks: the responder has a deterministic
            # planner to fall back on and should not stall an incident waiting for a rate limit.
            return min(seconds, config.backoff_max_s)

        def note_retry(state: RetryCallState) -> None:
            failure = state.outcome.exception() if state.outcome is not None else None
            log.warning(
                "LLM attempt %d of %d failed (%s); retrying in %.2fs",
                state.attempt_number,
                config.max_attempts,
                _describe(failure),
                state.next_action.sleep if state.next_action is not None else 0.0,
            )

        return Retrying(
            stop=stop_after_attempt(config.max_attempts),
            wait=wait,
            retry=_retry_if_transient,
            before_sleep=note_retry,
            sleep=self._sleep,
        )


def _transient(error: BaseException | None) -> bool:
    """Worth another try: no connection, a timeout, 408, 429 or 5xx. Never another 4xx."""
    if isinstance(error, openai.APIStatusError):
        return error.status_code in (408, 429) or error.status_code >= 500
    return isinstance(error, openai.APIConnectionError)


def _retry_if_transient(state: RetryCallState) -> bool:
    return state.outcome is not None and state.outcome.failed and _transient(state.outcome.exception())


def _retry_after_s(error: BaseException | None) -> float | None:
    return retry_after_seconds(error.response.headers) if isinstance(error, openai.APIStatusError) else None


def _describe(error: BaseException | None) -> str:
    if error is None:
        return "no error recorded"
    status = f" (HTTP {error.status_code})" if isinstance(error, openai.APIStatusError) else ""
    return f"{type(error).__name__}{status}: {str(error)[:ERROR_EXCERPT_CHARS]}"


def _wire_message(message: dict[str, Any]) -> dict[str, Any]:
    """`message` with flat tool calls (``{"id", "name", "arguments"}``) turned into OpenAI's wire form."""
    calls = message.get("tool_calls")
    if calls is None:
        return dict(message)
    wire = {key: value for key, value in message.items() if key != "tool_calls"}
    if calls:  # OpenAI rejects an empty tool_calls list
        wire["tool_calls"] = [_wire_tool_call(call) for call in calls]
    return wire


def _wire_tool_call(call: dict[str, Any]) -> dict[str, Any]:
    if "function" in call:
        return dict(call)
    arguments = call.get("arguments", "")
    return {
        "id": call["id"],
        "type": "function",
        "function": {
            "name": call["name"],
            "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments),
        },
    }


def _first_choice(response: Json) -> dict[str, Any]:
    choices = response.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        excerpt = json.dumps(response)[:ERROR_EXCERPT_CHARS]
        raise LLMRequestError(f"the LLM endpoint's answer holds no choices: {excerpt}")
    return choices[0]


def _assistant_message(response: Json) -> dict[str, Any]:
    raw = _first_choice(response).get("message")
    raw = raw if isinstance(raw, dict) else {}
    content = raw.get("content")
    if content is not None and not isinstance(content, str):
        content = json.dumps(content)  # some servers send content parts; the planner reads text
    calls = raw.get("tool_calls") or []
    return {
        "role": "assistant",
        "content": content,
        "tool_calls": [
            _flat_tool_call(index, call) for index, call in enumerate(calls) if isinstance(call, dict)
        ],
    }


def _flat_tool_call(index: int, call: dict[str, Any]) -> dict[str, str]:
    function = call.get("function")
    function = function if isinstance(function, dict) else {}
    arguments = function.get("arguments")
    if arguments is None:
        arguments = ""
    elif not isinstance(arguments, str):
        arguments = json.dumps(arguments)  # a few servers send an object; the planner always gets text
    return {
        # Some local servers omit ids; the planner needs one to answer the call.
        "id": str(call.get("id") or f"call_{index}"),
        "name": str(function.get("name") or ""),
        "arguments": arguments,
    }


def _finish_reason(response: Json) -> str | None:
    reason = _first_choice(response).get("finish_reason")
    return str(reason) if reason is not None else None


def _token_usage(response: Json) -> TokenUsage:
    raw = response.get("usage")
    raw = raw if isinstance(raw, dict) else {}

    def count(name: str) -> int:
        value = raw.get(name)
        # Only a finite count >= 0: Infinity raised OverflowError here, and a negative count would have let
        # an endpoint hold the planner's token budget open forever.
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0:
            return int(value)
        return 0

    prompt, completion = count("prompt_tokens"), count("completion_tokens")
    return TokenUsage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=count("total_tokens") or prompt + completion,
    )
