"""HTTP basic auth over every route (API, UI, static files, docs), compared in constant time.

A1111 protects only the routes its API class registers; here the check is an ASGI middleware
in front of the whole app, so nothing the app serves is reachable without credentials.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Sequence

from starlette.types import ASGIApp, Receive, Scope, Send

from brushwork.core.errors import ConfigError

Credential = tuple[str, str]


def parse_credentials(text: str) -> tuple[Credential, ...]:
    """``user:pass[,user:pass]`` -> pairs (a password may contain ':')."""
    pairs = []
    for item in text.split(","):
        user, sep, password = item.strip().partition(":")
        if not sep or not user or not password:
            raise ConfigError(
                f"--api-auth: {item.strip()!r} is not USER:PASSWORD",
                hint="for example --api-auth alice:secret,bob:hunter2",
            )
        pairs.append((user, password))
    return tuple(pairs)


def credentials_match(header: str | None, credentials: Sequence[Credential]) -> bool:
    """Whether an ``Authorization`` header carries one of the pairs (no early exit)."""
    if not header or not header.lower().startswith("basic "):
        return False
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return False
    user, _, password = decoded.partition(":")
    found = False
    for known_user, known_password in credentials:
        same_user = hmac.compare_digest(user.encode(), known_user.encode())
        same_password = hmac.compare_digest(password.encode(), known_password.encode())
        found |= same_user and same_password
    return found


class BasicAuthMiddleware:
    """Answers 401 with ``WWW-Authenticate: Basic`` unless the request authenticates."""

    def __init__(self, app: ASGIApp, credentials: Sequence[Credential]) -> None:
        self.app = app
        self.credentials = tuple(credentials)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        header = None
        for key, value in scope.get("headers", []):
            if key == b"authorization":
                header = value.decode("latin-1")
        if credentials_match(header, self.credentials):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        body = b'{"detail":"Not authenticated"}'
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", b'Basic realm="brushwork"'),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
