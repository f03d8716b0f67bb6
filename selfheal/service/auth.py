"""Token auth for mutating endpoints: deny by default, checked before a request body is even read.

`TokenGuard` is a plain ASGI middleware: every request whose method can change something (anything but
GET, HEAD, OPTIONS) needs ``Authorization: Bearer <token>``, except the paths in ``open_paths`` (scoring,
the data plane). A new POST route is therefore protected without anyone remembering to protect it, and a
request without the token gets 401 before FastAPI parses or validates its body, so it cannot learn
anything from a 422 or change anything by a side effect of parsing.

The comparison is constant-time (`secrets.compare_digest`).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final

from fastapi.security import HTTPBearer

SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
# Documents the scheme in OpenAPI; the guard below is what enforces it.
bearer_scheme = HTTPBearer(auto_error=False, description="the service token (see `selfheal serve --help`)")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def token_matches(header: str | None, token: str) -> bool:
    """Whether an ``Authorization`` header value carries ``token`` as a bearer token."""
    if not header:
        return False
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        return False
    return secrets.compare_digest(presented.strip().encode(), token.encode())


class TokenGuard:
    """ASGI middleware: 401 for unsafe methods without the token (see the module docstring)."""

    def __init__(self, app: ASGIApp, *, token: str, open_paths: frozenset[str], hint: str) -> None:
        self.app = app
        self.token = token
        self.open_paths = open_paths
        self.hint = hint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in SAFE_METHODS or scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
            return
        header = None
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                header = value.decode("latin-1")
                break
        if token_matches(header, self.token):
            await self.app(scope, receive, send)
            return
        body = json.dumps({"detail": f"missing or wrong token: send 'Authorization: Bearer <token>' ({self.hint})"})
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"www-authenticate", b'Bearer realm="selfheal"'),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body.encode()})
