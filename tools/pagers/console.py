"""The console pager: a page printed for whoever watches the process (the demo, a terminal, the logs).

Page text comes from incident data, so it is untrusted: control characters (terminal escape sequences
could recolour, hide or rewrite what is on screen) and bidirectional overrides are replaced before
printing.
"""

from __future__ import annotations

import re
import sys
from typing import Final, TextIO

from tools.pagers.base import Delivery, Page

_UNSAFE: Final = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


class ConsolePager:
    """Writes each page, readable, to a text stream (standard error unless told otherwise)."""

    name = "console"

    def __init__(self, stream: TextIO | None = None) -> None:
        # Resolved at send time, so a redirected sys.stderr (pytest, a daemon) is honoured.
        self._stream = stream

    def send(self, page: Page) -> Delivery:
        stream = self._stream or sys.stderr
        try:
            stream.write(render_console(page))
            stream.flush()
        except (OSError, ValueError) as error:  # a closed or broken stream
            return Delivery(channel=self.name, ok=False, attempts=1, error=f"{type(error).__name__}: {error}")
        return Delivery(channel=self.name, ok=True, attempts=1)


def render_console(page: Page) -> str:
    """The page as plain text lines."""
    lines = [
        f"=== PAGE {page.action.upper()} [{page.severity.upper()}] {safe_text(page.incident_id)} ===",
        safe_text(page.summary),
        f"dedup key: {safe_text(page.dedup_key)}    source: {safe_text(page.source)}",
    ]
    if page.body:
        lines += ["", safe_text(page.body)]
    for link in page.links:
        lines.append(f"- {safe_text(link.text or 'link')}: {safe_text(link.href)}")
    return "\n".join(lines) + "\n\n"


def safe_text(text: str) -> str:
    """`text` with control characters (except newline and tab) and bidi overrides shown as `?`."""
    return _UNSAFE.sub("?", text)
