"""What can go wrong when the responder asks the model.

    LLMError
    ├── LLMUnavailable     transient failures (connection refused or reset, timeouts, HTTP 408,
    │                      429, 5xx) outlasted the retries: the planner falls back to the
    │                      deterministic planner and says so in the page
    └── LLMRequestError    the endpoint refused the request (any other 4xx: a bad payload, a wrong
                           key, an unknown model), no endpoint is configured, or the answer is not
                           a chat completion; never retried: it would be as wrong the next time

    ReplayMiss             a Replayer holds no recording for this request; deliberately *not* an LLMError,
                           so an `except LLMError:` fallback can never hide a stale recording

Anything else raised from the client is our bug and propagates.
"""

from __future__ import annotations

from typing import Any


class _KeywordError(Exception):
    """An exception whose extra fields survive pickling.

    Python pickles an exception as ``cls(*args)``, which drops keyword-only fields and fails to rebuild
    these classes: a `ReplayMiss` raised in an eval worker process then reached the parent as a
    `BrokenProcessPool` instead of the miss that names the request.
    """

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.args, dict(self.__dict__)))


def _rebuild(cls: type[_KeywordError], args: tuple[Any, ...], fields: dict[str, Any]) -> _KeywordError:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(fields)
    return error


class LLMError(_KeywordError):
    """Base class for failures of a model call the caller is expected to handle."""


class LLMUnavailable(LLMError):
    """The endpoint did not answer after `attempts` tries; `last_error` says what the last one saw."""

    def __init__(self, message: str, *, attempts: int, last_error: str) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.last_error = last_error


class LLMRequestError(LLMError):
    """The request was refused or the answer unusable; `status_code` is the HTTP status if there was one."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class ReplayMiss(_KeywordError):
    """Replay found no recorded answer for a request: re-record, or fix what made the request change."""

    def __init__(self, message: str, *, key: str) -> None:
        super().__init__(message)
        self.key = key
