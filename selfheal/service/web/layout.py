"""The frame of every page (header, navigation, the token panel) and small pieces the pages share.

The pages hold no secret: the token that approve / deny / chat need is typed into the token panel and kept
in the tab's ``sessionStorage`` by ``static/app.js`` (why: `selfheal.service.web`).
"""

from __future__ import annotations

from typing import Any

from selfheal.service.web.html import Raw, h, join

STATIC = "/ui/static"


def layout(title: str, body: Raw, *, section: str) -> str:
    """The whole document: header with navigation and the token panel, then ``body``."""
    nav = [
        h("a", {"href": "/ui/", "class": "active" if section == "incidents" else None}, "Incidents"),
        h("a", {"href": "/ui/runbooks", "class": "active" if section == "runbooks" else None}, "Runbooks"),
        h("a", {"href": "/openapi.json"}, "API"),
        h("a", {"href": "/metrics"}, "Metrics"),
    ]
    token_panel = h(
        "form",
        {"id": "token-panel", "class": "token", "autocomplete": "off"},
        h(
            "label",
            None,
            "name ",
            h(
                "input",
                {
                    "id": "actor",
                    "name": "actor",
                    "size": "10",
                    "placeholder": "you",
                    "pattern": r"[\w.@:\-]{1,64}",
                },
            ),
        ),
        h(
            "label",
            None,
            " token ",
            h(
                "input",
                {
                    "id": "token",
                    "name": "token",
                    "type": "password",
                    "size": "14",
                    "placeholder": "service token",
                    "autocomplete": "off",
                },
            ),
        ),
        h("button", {"type": "submit"}, "keep for this tab"),
        h("button", {"type": "button", "id": "token-forget"}, "forget"),
        h("span", {"id": "token-state", "class": "muted"}, ""),
    )
    document = join(
        Raw("<!DOCTYPE html>"),
        h(
            "html",
            {"lang": "en"},
            h(
                "head",
                None,
                h("meta", {"charset": "utf-8"}),
                h("meta", {"name": "viewport", "content": "width=device-width, initial-scale=1"}),
                h("title", None, f"{title} · selfheal"),
                h("link", {"rel": "stylesheet", "href": f"{STATIC}/app.css"}),
                h("script", {"src": f"{STATIC}/app.js", "defer": True}),
            ),
            h(
                "body",
                None,
                h("header", None, h("strong", None, "selfheal"), h("nav", None, nav), token_panel),
                h("main", None, body),
            ),
        ),
    )
    return str(document)


def badge(text: str | None, kind: str = "") -> Raw:
    return h("span", {"class": f"badge {kind} {slug(text)}".strip()}, text or "–")


def slug(text: str | None) -> str:
    return "".join(c if c.isalnum() else "-" for c in (text or "none").lower())


def when(value: Any) -> str:
    return "–" if value in (None, "") else str(value).replace("T", " ")[:19]


def error_page(status: int, detail: str) -> str:
    return layout(f"{status}", join(h("h1", None, f"{status}"), h("p", None, detail)), section="")
