"""The service's front gate: the bearer-token check and the request size limit, before any route runs.

Both are plain ASGI, outside FastAPI, so that they act before anything reads the body: a client without the token
never gets its upload buffered, and an oversized upload is refused from its Content-Length (or as soon as the
streamed bytes pass the limit) without ever being parsed. The body is then buffered in memory — never in a
temporary file — and handed to the app, which parses it from memory (see `enroll.server`).
"""
from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Paths anyone may read without the token: the page and its script (it asks for the token itself), the API's
# description, and the liveness probe. None of them reveal or change anything in the gallery.
PUBLIC_PATHS = frozenset({"/", "/app.js", "/docs", "/openapi.json", "/healthz", "/favicon.ico"})


def token_matches(sent: str | None, token: str) -> bool:
    """Constant-time comparison, so response timing does not reveal how much of a guess was right."""
    if sent is None:
        return False
    return hmac.compare_digest(sent.encode("utf-8", "surrogateescape"), token.encode("utf-8", "surrogateescape"))


def bearer(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, else None."""
    for key, value in headers:
        if key.lower() == b"authorization":
            scheme, _, credentials = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and credentials.strip():
                return credentials.strip()
    return None


class Gate:
    """Wraps the app: 401 without the right token (when one is set) on every non-public path, 413 for a body over
    `max_bytes`; otherwise the whole body is read into memory and replayed to the app."""

    def __init__(self, app: ASGIApp, *, token: str | None, max_bytes: int) -> None:
        self.app = app
        self.token = token
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers: list[tuple[bytes, bytes]] = list(scope.get("headers") or [])
        if self.token is not None and scope.get("path") not in PUBLIC_PATHS \
                and not token_matches(bearer(headers), self.token):
            await _reply(send, 401, "this service needs a token: send the header 'Authorization: Bearer <token>'",
                         [(b"www-authenticate", b"Bearer")])
            return
        declared = _content_length(headers)
        if declared is not None and declared > self.max_bytes:
            await _reply(send, 413, self._too_large(declared))
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_bytes:
                await _reply(send, 413, self._too_large(None))
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _too_large(self, size: int | None) -> str:
        got = f"{size / 1e6:.1f} MB; " if size is not None else ""
        return f"request is too large ({got}the limit is {self.max_bytes / 1e6:.1f} MB)"


def _content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    for key, value in headers:
        if key.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _reply(send: Send, status: int, message: str, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    """A JSON error in the service's one shape: {"error": "<one line>"}."""
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(extra or [])]})
    await send({"type": "http.response.body", "body": body})
