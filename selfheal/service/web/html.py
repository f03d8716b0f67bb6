"""Building HTML that is escaped by default: text is always escaped, only `Raw` passes through.

Everything the pages show from the record (merchant names, notes, model output, runbook text) is
untrusted. Instead of remembering to escape each value, pages are built with `h(tag, attrs, *children)`:
a ``str`` child or attribute value is escaped; a `Raw` child is HTML this package built itself (with
`h`), or that a trusted renderer produced from untrusted text (markdown-it with raw HTML disabled, the
report's SVG charts, which escape their own text). Nothing else becomes markup.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Mapping
from typing import Any, Final

from markdown_it import MarkdownIt

__all__ = ["Raw", "e", "h", "join", "json_text", "markdown", "table"]

# Elements without content (never closed).
_VOID: Final = frozenset({"br", "hr", "img", "input", "link", "meta"})


class Raw(str):
    """HTML that is already safe: built with `h`, or rendered by a renderer that escapes its input."""

    __slots__ = ()


def e(text: object) -> str:
    """Text as HTML: ``<``, ``>``, ``&`` and both quotes escaped (safe in content and quoted attributes)."""
    return html.escape(str(text), quote=True)


def _children(items: Iterable[Any]) -> str:
    out = []
    for item in items:
        if item is None or item is False:
            continue
        if isinstance(item, Raw):
            out.append(str(item))
        elif isinstance(item, (list, tuple)):
            out.append(_children(item))
        else:
            out.append(e(item))
    return "".join(out)


def h(tag: str, attrs: Mapping[str, Any] | None = None, *children: Any) -> Raw:
    """``<tag attrs>children</tag>``. Attribute values and ``str`` children are escaped; an attribute
    whose value is None or False is left out, True writes it bare (``disabled``)."""
    parts = [tag]
    for name, value in (attrs or {}).items():
        if value is None or value is False:
            continue
        attribute = name.rstrip("_").replace("_", "-")  # class_ -> class, data_incident -> data-incident
        parts.append(attribute if value is True else f'{attribute}="{e(value)}"')
    opening = f"<{' '.join(parts)}>"
    if tag in _VOID:
        return Raw(opening)
    return Raw(f"{opening}{_children(children)}</{tag}>")


def join(*children: Any) -> Raw:
    """Several children as one `Raw` fragment (strings escaped)."""
    return Raw(_children(children))


def table(headers: Iterable[str], rows: Iterable[Iterable[Any]], *, class_: str | None = None) -> Raw:
    """A table of cells (escaped unless `Raw`)."""
    head = h("thead", None, h("tr", None, [h("th", None, header) for header in headers]))
    body = h("tbody", None, [h("tr", None, [h("td", None, cell) for cell in row]) for row in rows])
    return h("table", {"class": class_}, head, body)


def json_text(value: Any, limit: int = 400) -> str:
    """A value as compact JSON text, cut to ``limit`` characters (shown inside ``<code>``, escaped)."""
    text = json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# CommonMark with GFM tables; raw HTML in the source is shown as text, never passed through, and
# markdown-it refuses javascript:/vbscript:/data: link targets (its validateLink).
_MARKDOWN = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table")


def markdown(text: str) -> Raw:
    """Untrusted markdown (runbooks, chat answers) as HTML that cannot carry markup of its own."""
    return Raw(_MARKDOWN.render(text))
