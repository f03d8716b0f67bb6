"""A chat answer as server-sent events: what ``POST /v1/incidents/{id}/chat/stream`` sends.

Events, in order (each ``data`` is one line of JSON):

- ``start``: ``{"incident_id", "message"}``, at once, so the page can show the question is being worked on;
- a ``: thinking`` comment every few seconds while the chat hook runs (keeps proxies and readers awake);
- ``delta``: ``{"text"}``, the answer's markdown in pieces, in order (joined, they are the whole answer);
- ``done``: the whole `ChatReply` (answer, mode, intent, facts, sources, actions) plus ``html``, the
  answer rendered by markdown-it with raw HTML disabled (safe to insert as markup);
- or ``error``: ``{"status", "detail"}`` with the status the JSON endpoint would have answered.

The chat engine (`agent.chat.reply`) returns its answer whole, so the pieces are cut from it here; the
stream's shape stays the same when an engine yields tokens as they come.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator, Callable
from typing import Any, Final

from starlette.concurrency import run_in_threadpool

from selfheal.service.hooks import ChatMessage, hook_error
from selfheal.service.web.html import markdown
from tools.audit import finite

logger = logging.getLogger(__name__)

KEEPALIVE_S: Final = 5.0
WORDS_PER_DELTA: Final = 4
_WORD: Final = re.compile(r"\s*\S+\s*")


def event(name: str, data: Any) -> bytes:
    """One server-sent event (JSON on a single ``data`` line: JSON never contains a raw newline)."""
    return f"event: {name}\ndata: {json.dumps(finite(data), ensure_ascii=False)}\n\n".encode()


def pieces(text: str, words: int = WORDS_PER_DELTA) -> list[str]:
    """``text`` in pieces of a few words each, whitespace kept, so joining them gives ``text`` back."""
    found = _WORD.findall(text)
    if "".join(found) != text:  # only whitespace, or nothing
        return [text] if text else []
    return ["".join(found[i : i + words]) for i in range(0, len(found), words)]


async def chat_events(
    hook: Callable[[ChatMessage], dict[str, Any]], message: ChatMessage, *, keepalive_s: float = KEEPALIVE_S
) -> AsyncIterator[bytes]:
    """Run the chat hook in a worker thread and stream its answer (see the module docstring)."""
    yield event("start", {"incident_id": message.incident_id, "message": message.message})
    task = asyncio.ensure_future(run_in_threadpool(hook, message))
    while not task.done():
        await asyncio.wait({task}, timeout=keepalive_s)
        if not task.done():
            yield b": thinking\n\n"
    try:
        reply = task.result()
    except Exception as error:  # the stream has begun (200 is sent): the failure can only be an event now
        known = hook_error(error)
        if known is None:
            logger.exception("chat about %s failed", message.incident_id)
            known = 500, f"the chat failed: {type(error).__name__}"
        yield event("error", {"status": known[0], "detail": known[1]})
        return
    answer = str(reply.get("answer") or "")
    for piece in pieces(answer):
        yield event("delta", {"text": piece})
        await asyncio.sleep(0)  # hand each piece to the socket before cutting the next
    yield event("done", {**reply, "html": str(markdown(answer))})
