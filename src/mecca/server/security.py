"""Request guards: body size limit, token check, error replies without internals.

* Body size: a pure ASGI middleware counts the bytes of every request body as they
  stream in and answers 413 as soon as ``max_bytes`` is passed (or at once from the
  Content-Length header), so an oversized upload is never spooled whole.
* Token: with a token set, every request except the page's static files needs
  ``Authorization: Bearer <token>``; compared in constant time.
* Errors: MECCA's own errors become 4xx with their message (server paths replaced by
  the file name); anything else is a 500 saying only "internal error" and an id that the
  server log repeats next to the exception's type (never a traceback in a reply).
"""

from __future__ import annotations

import hmac
import logging
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from mecca.errors import MeccaError, OverwriteError

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyTooLarge(Exception):
    """The request body passed the limit while streaming."""


class BodyLimit:
    """ASGI middleware: refuse request bodies larger than ``max_bytes`` with 413."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = int(max_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await _too_large(self.max_bytes)(scope, receive, send)
            return
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await _too_large(self.max_bytes)(scope, receive, send)


def _too_large(limit: int) -> JSONResponse:
    return JSONResponse(
        {"error": f"request body larger than this server accepts ({limit} bytes)"},
        status_code=413,
    )


def token_ok(request: Request, token: str | None) -> bool:
    """Whether the request carries the server's token (always true without one): in the
    ``Authorization: Bearer`` header, or for a GET in a ``token`` query parameter (a
    viewer fetching an image URL cannot set headers)."""
    if not token:
        return True
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(value.strip(), token):
        return True
    query = request.query_params.get("token")
    return request.method == "GET" and query is not None and hmac.compare_digest(query, token)


def error_reply(exc: MeccaError) -> JSONResponse:
    """A MECCA error as a 4xx reply; server paths shown as their file name only."""
    text = str(exc)
    if exc.path is not None:
        text = text.replace(str(exc.path), exc.path.name)
    status = 409 if isinstance(exc, OverwriteError) else 400
    return JSONResponse({"error": text}, status_code=status)


def internal_error(exc: Exception) -> JSONResponse:
    """A 500 reply that names nothing but an incident id."""
    incident = secrets.token_hex(4)
    log.error("internal error %s: %s", incident, type(exc).__name__)
    return JSONResponse({"error": "internal error", "incident": incident}, status_code=500)
