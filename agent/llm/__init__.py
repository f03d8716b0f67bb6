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
"""

from agent.llm.client import LLMClient, LLMReply, LLMUsage, TokenUsage
from agent.llm.config import LLMConfig
from agent.llm.errors import LLMError, LLMRequestError, LLMUnavailable, ReplayMiss
from agent.llm.replay import ExchangeLog, Recorder, Replayer, normalise_request, request_key

__all__ = [
    "ExchangeLog",
    "LLMClient",
    "LLMConfig",
    "LLMError",
    "LLMReply",
    "LLMRequestError",
    "LLMUnavailable",
    "LLMUsage",
    "Recorder",
    "ReplayMiss",
    "Replayer",
    "TokenUsage",
    "normalise_request",
    "request_key",
]
