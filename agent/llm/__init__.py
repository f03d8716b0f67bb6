"""Calling a chat model with tools, safely: the responder's only door to an LLM.

    from agent.llm import LLMClient, LLMConfig

    with LLMClient(LLMConfig.from_env()) as llm:
        reply = llm.complete(messages, tools)
        for call in reply.tool_calls:  # {"id", "name", "arguments" (raw JSON text)}
            ...
        messages.append(reply.as_message())

Any OpenAI-compatible endpoint works (OpenAI, vLLM, Ollama, llama.cpp server); config.py lists the
settings. Transport errors, timeouts, 429 and 5xx are retried; what is left is a small taxonomy:

    LLMError
    ├── LLMUnavailable     transient failures outlasted the retries: use the deterministic planner
    └── LLMRequestError    refused (other 4xx), not configured, or an unusable answer: never retried
    ReplayMiss             no recording for this request (not an LLMError, so no fallback can hide it)

For the offline eval harness, `Recorder(dir)` writes every exchange to files and `Replayer(dir)` serves
them back by a normalised request key (replay.py documents what is normalised) without any HTTP call.

The names below are loaded on first use (PEP 562): importing `agent.llm.config` or `agent.llm.errors`
must not import the openai package (~0.8 s), which a run without a configured endpoint never needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from store.lazy import lazy_attributes

if TYPE_CHECKING:  # the real names for type checkers ("X as X": re-exported)
    from agent.llm.client import LLMClient as LLMClient
    from agent.llm.client import LLMReply as LLMReply
    from agent.llm.client import LLMUsage as LLMUsage
    from agent.llm.client import TokenUsage as TokenUsage
    from agent.llm.config import LLMConfig as LLMConfig
    from agent.llm.config import LLMConfigError as LLMConfigError
    from agent.llm.errors import LLMError as LLMError
    from agent.llm.errors import LLMRequestError as LLMRequestError
    from agent.llm.errors import LLMUnavailable as LLMUnavailable
    from agent.llm.errors import ReplayMiss as ReplayMiss
    from agent.llm.replay import ExchangeLog as ExchangeLog
    from agent.llm.replay import Recorder as Recorder
    from agent.llm.replay import Replayer as Replayer
    from agent.llm.replay import normalise_request as normalise_request
    from agent.llm.replay import request_key as request_key

# Where each name lives: loaded from there on first use.
_HOMES = {
    "ExchangeLog": "agent.llm.replay",
    "LLMClient": "agent.llm.client",
    "LLMConfig": "agent.llm.config",
    "LLMConfigError": "agent.llm.config",
    "LLMError": "agent.llm.errors",
    "LLMReply": "agent.llm.client",
    "LLMRequestError": "agent.llm.errors",
    "LLMUnavailable": "agent.llm.errors",
    "LLMUsage": "agent.llm.client",
    "Recorder": "agent.llm.replay",
    "ReplayMiss": "agent.llm.errors",
    "Replayer": "agent.llm.replay",
    "TokenUsage": "agent.llm.client",
    "normalise_request": "agent.llm.replay",
    "request_key": "agent.llm.replay",
}

__all__ = list(_HOMES)
__getattr__ = lazy_attributes(__name__, _HOMES, globals())
