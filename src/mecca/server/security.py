"""Request guards: body size limit, token and cross-site checks, security headers, error
replies without internals, and server paths kept out of the logs.

* Body size: a pure ASGI middleware counts the bytes of every request body as they
  stream in and answers 413 as soon as ``max_bytes`` is passed (or at once from the
  Content-Length header), so an oversized upload is never spooled whole.
* Token: with a token set, every request except the page's static files needs
  ``Authorization: Bearer <token>`` (never a URL parameter: URLs end up in histories,
  logs and Referer headers); compared as bytes in constant time.
* Cross-site requests: a POST/PUT/PATCH/DELETE under ``/api/`` needs the valid bearer
  token or an ``X-Mecca-Client`` header. A form or a simple ``fetch`` from another site
  cannot send either without a CORS preflight, which this server never grants.
* Headers: every response carries a strict Content-Security-Policy (scripts, styles and
  frames from this server only; no framing by others), ``X-Frame-Options: DENY``,
  ``X-Content-Type-Options: nosniff`` and ``Referrer-Policy: no-referrer``.
* Errors: MECCA's own errors become 4xx with their message (server paths replaced by
  the file name); anything else is a 500 saying only "internal error" and an id that the
  server log repeats next to the exception's type (never a traceback in a reply).
  Echoed inputs are capped: request validation errors are a short 422 with inputs cut to
  ~100 characters, and MECCA errors' messages to 300.
* Logs: :class:`PathFilter` replaces the image roots, state folder and temporary folder
  in every log record (message, arguments, traceback) by ``<root0>``, ``<state>``,
  ``<tmp>``.
"""

from __future__ import annotations

import hmac
import itertools
import logging
import re
import reprlib
import secrets
import tempfile
import weakref
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from pathlib import Path, PurePath
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import MutableHeaders

from mecca.errors import MeccaError, MethodError, OverwriteError, SaveError, ServerBusy

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' blob: data:",  # thumbnails as blob URLs, NiiVue's inline images
        "connect-src 'self' blob: data:",  # NiiVue fetches the images it gets as blob URLs
        "worker-src 'self' blob:",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
        "form-action 'self'",
    ]
)
"""What the page may load: its own scripts and styles only (nothing inline), images and
data the page fetched itself (blob:, data:), never framed by another site."""
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CLIENT_HEADER = "x-mecca-client"
"""A header that marks a request as sent by a MECCA client (any non-empty value): a page
of another site cannot add it without a CORS preflight, which this server never grants."""
MAX_ECHO = 100
"""Characters of an input echoed in an error reply."""
MAX_MESSAGE = 300
"""Characters of an error reply's message."""


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


class SecurityHeaders:
    """ASGI middleware: :data:`SECURITY_HEADERS` on every response (refusals included)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)


def same_secret(given: str, expected: str) -> bool:
    """Whether two strings are equal, compared as UTF-8 bytes in constant time (a
    non-ASCII value is simply unequal, not an error as with ``hmac`` on ``str``)."""
    return hmac.compare_digest(
        given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass")
    )


def bearer_ok(request: Request, token: str) -> bool:
    """Whether ``Authorization: Bearer <token>`` carries ``token``."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and same_secret(value.strip(), token)


def token_ok(request: Request, token: str | None) -> bool:
    """Whether the request carries the server's token (always true without one), in the
    ``Authorization: Bearer`` header only: a token in a URL would be kept in browser
    histories, logs and Referer headers, so a ``?token=`` parameter counts for nothing."""
    return not token or bearer_ok(request, token)


def refusal(request: Request, token: str | None, public: Sequence[str]) -> JSONResponse | None:
    """The reply refusing ``request``, or None: the token (except on ``public`` paths and
    ``/static/``), then the cross-site rule: a POST/PUT/PATCH/DELETE under ``/api/``
    needs the valid bearer token or an ``X-Mecca-Client`` header (:data:`CLIENT_HEADER`).
    One rule for every route, so a new route cannot forget it."""
    path = request.url.path
    if not (path in public or path.startswith("/static/")) and not token_ok(request, token):
        return JSONResponse(
            {"error": "missing or wrong token (send it as Authorization: Bearer <token>)"},
            status_code=401,
            headers={"www-authenticate": "Bearer"},
        )
    if request.method in UNSAFE_METHODS and path.startswith("/api/"):
        authorised = bool(token) and bearer_ok(request, token or "")
        if not authorised and not request.headers.get(CLIENT_HEADER, "").strip():
            return JSONResponse(
                {
                    "error": f"a {request.method} under /api/ needs an X-Mecca-Client header "
                    "(any value) or the bearer token: refused as a possible cross-site request"
                },
                status_code=403,
            )
    return None


def capped(text: str, limit: int = MAX_ECHO) -> str:
    """``text`` cut to ``limit`` characters (an ellipsis marks the cut)."""
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "\u2026"


_SHORT_REPR = reprlib.Repr()
"""Bounded work for a huge input: only its start is ever turned into text."""
_SHORT_REPR.maxlevel = 3
_SHORT_REPR.maxlist = _SHORT_REPR.maxtuple = _SHORT_REPR.maxdict = _SHORT_REPR.maxset = 8
_SHORT_REPR.maxstring = _SHORT_REPR.maxother = MAX_ECHO


def shown(value: Any) -> str:
    """``value`` as text for an error message: its start only, at most ~100 characters."""
    return capped(_SHORT_REPR.repr(value))


def validation_reply(exc: RequestValidationError) -> JSONResponse:
    """A 422 naming what was wrong where, with every echoed input cut to ~100 characters
    (FastAPI's own reply echoes whole inputs, of any size)."""
    errors = list(exc.errors())
    problems = []
    for err in errors[:5]:
        where = ".".join(str(part) for part in err.get("loc", ()))
        item = {"where": capped(where), "problem": capped(str(err.get("msg", "")), 200)}
        if "input" in err:
            item["input"] = shown(err["input"])
        problems.append(item)
    if problems:
        first = problems[0]
        text = f"invalid request: {first['where']}: {first['problem']}"
        if len(errors) > 1:
            text += f" (and {len(errors) - 1} more)"
    else:
        text = "invalid request"
    return JSONResponse({"error": text, "problems": problems}, status_code=422)


STATUS_OF: tuple[tuple[type[MeccaError], int], ...] = (
    (OverwriteError, 409),
    (MethodError, 422),  # the method could not use this input; the step was not kept
    (ServerBusy, 503),  # full, or a step past its deadline: try again later
    (SaveError, 507),  # disk full or read-only: the change was not kept
)
"""HTTP status of each MECCA error kind (any other: 400)."""


def error_reply(exc: MeccaError) -> JSONResponse:
    """A MECCA error as a 4xx reply; server paths shown as their file name only."""
    text = str(exc)
    if exc.path is not None:
        text = text.replace(str(exc.path), exc.path.name)
    status = next((code for kind, code in STATUS_OF if isinstance(exc, kind)), 400)
    return JSONResponse({"error": capped(text, MAX_MESSAGE)}, status_code=status)


def internal_error(exc: Exception) -> JSONResponse:
    """A 500 reply that names nothing but an incident id (with the security headers: it
    is sent outside the middleware that adds them)."""
    incident = secrets.token_hex(4)
    log.error("internal error %s: %s", incident, type(exc).__name__)
    return JSONResponse(
        {"error": "internal error", "incident": incident},
        status_code=500,
        headers=SECURITY_HEADERS,
    )


class PathFilter(logging.Filter):
    """A logging filter that replaces server paths in a record (message, arguments,
    traceback, stack) by placeholders: ``roots`` by ``<root0>``, ``<root1>``, ...,
    ``state_dir`` by ``<state>`` and the temporary folder by ``<tmp>``. Why: logs are
    shared and shipped, and the paths name people's folders and data."""

    def __init__(self, roots: Sequence[Path], state_dir: Path) -> None:
        super().__init__()
        places: dict[str, str] = {}
        named = [(f"<root{n}>", Path(r)) for n, r in enumerate(roots)]
        named += [("<state>", Path(state_dir)), ("<tmp>", Path(tempfile.gettempdir()))]
        for placeholder, path in named:
            for form in (str(path), str(path.resolve())):
                if len(form) > 1:  # never "/" alone
                    places.setdefault(form, placeholder)
        self._use(places)
        self.serial = next(_SERIALS)

    def _use(self, places: dict[str, str]) -> None:
        # one pattern, longest path first: a state folder under /tmp is <state>, not <tmp>/..
        longest_first = sorted(places, key=len, reverse=True)
        self._places = places
        alternatives = "|".join(re.escape(p) for p in longest_first) or r"(?!x)x"
        self._pattern = re.compile(f"(?:{alternatives})" + r"(?![\w.-])")

    @classmethod
    def merged(cls, filters: Sequence[PathFilter]) -> PathFilter:
        """One filter with the paths of all ``filters`` (several apps in one process)."""
        places: dict[str, str] = {}
        for f in filters:
            for path, placeholder in f._places.items():
                places.setdefault(path, placeholder)
        out = cls([], Path(tempfile.gettempdir()))
        out._use(places)
        return out

    def redact(self, text: str) -> str:
        """``text`` with every known server path replaced by its placeholder."""
        return self._pattern.sub(lambda m: self._places[m.group(0)], text)

    def _arg(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, PurePath):
            return self.redact(str(value))
        return value

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(self._arg(a) for a in record.args)
        elif isinstance(record.args, Mapping):
            record.args = {k: self._arg(v) for k, v in record.args.items()}
        if isinstance(record.msg, str):
            record.msg = self.redact(record.msg)
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a bad format: logging reports it later
            message = None
        if message is not None and self.redact(message) != message:  # a path in an object
            record.msg, record.args = self.redact(message), ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:  # formatters print exc_text; the raw exception is dropped
            record.exc_text = self.redact(record.exc_text)
            record.exc_info = None
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


_SERIALS = itertools.count()
_PATH_FILTERS: weakref.WeakSet[PathFilter] = weakref.WeakSet()
_merged: tuple[tuple[int, ...], PathFilter | None] = ((), None)
_factory_wrapped = False


def _active_filter() -> PathFilter | None:
    """The live filters merged into one (rebuilt when an app comes or goes)."""
    global _merged
    filters = sorted(_PATH_FILTERS, key=lambda f: f.serial)
    key = tuple(f.serial for f in filters)
    if key != _merged[0]:
        _merged = (key, PathFilter.merged(filters) if filters else None)
    return _merged[1]


def install_path_filter(path_filter: PathFilter) -> None:
    """Apply ``path_filter`` to every log record made from now on, by any logger, before
    any handler sees it (a filter on a logger misses its children's records, one on a
    handler misses handlers added later, such as uvicorn's). Kept while the filter lives
    (the app holds it)."""
    global _factory_wrapped
    _PATH_FILTERS.add(path_filter)
    if _factory_wrapped:
        return
    make = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        active = _active_filter()
        if active is not None:
            active.filter(record)
        return record

    logging.setLogRecordFactory(factory)
    _factory_wrapped = True
