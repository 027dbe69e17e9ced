"""Request limits as pure ASGI middleware, checked before FastAPI parses anything: body size (413), the time a
body may take to arrive (408), its media type (415), and JSON that the parser cannot take (422 with a location):
invalid UTF-8, nesting deeper than the limit, integers longer than Python converts."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from typing import Any

import anyio
from starlette.datastructures import Headers
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import validation_response

__all__ = ["RequestLimitsMiddleware", "huge_int_path", "json_depth_exceeds"]

_SPECIAL = re.compile(rb'[\[\]{}"\\]')  # the only bytes that change nesting or string state
_OPEN, _CLOSE = frozenset(b"[{"), frozenset(b"]}")
_QUOTE, _BACKSLASH = ord('"'), ord("\\")
THREAD_SCAN_BYTES = 65_536  # larger bodies are scanned in a worker thread (≈0.2 s for 1 MiB of "[]"), off the loop


def json_depth_exceeds(body: bytes, limit: int) -> bool:
    """True when `[`/`{` outside strings nest deeper than `limit`.

    One linear pass over the bytes (a regex finds the candidates), no recursion and no parsing, so 100,000
    opening brackets cost microseconds. Malformed input (a stray closing bracket) returns False and is left to
    the JSON parser to report.
    """
    if body.count(b"[") + body.count(b"{") <= limit:
        return False  # cannot nest deeper than the number of openers
    depth, in_string, escaped_pos = 0, False, -1
    for match in _SPECIAL.finditer(body):
        pos = match.start()
        if pos == escaped_pos:
            continue
        char = body[pos]
        if in_string:
            if char == _BACKSLASH:
                escaped_pos = pos + 1
            elif char == _QUOTE:
                in_string = False
        elif char == _QUOTE:
            in_string = True
        elif char in _OPEN:
            depth += 1
            if depth > limit:
                return True
        elif char in _CLOSE:
            depth -= 1
            if depth < 0:
                return False
    return False


def _is_json(content_type: str | None) -> bool:
    """application/json or any +json type (what FastAPI parses as JSON)."""
    if content_type is None:
        return False
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json" or (media_type.startswith("application/") and media_type.endswith("+json"))


class _TooLong:
    """Stands for an integer literal with more digits than int() converts (sys.get_int_max_str_digits)."""

    def __init__(self, digits: int) -> None:
        self.digits = digits


def _paths(value: Any, path: tuple[str | int, ...] = ()) -> Iterator[tuple[tuple[str | int, ...], Any]]:
    yield path, value
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        yield from _paths(item, (*path, key))


def huge_int_path(text: str) -> tuple[tuple[str | int, ...], int] | None:
    """(JSON path, digits) of the first integer literal too long for int(), or None (also for invalid JSON).

    Python's json module raises a bare ValueError for such a literal, which names no field; parsing it here with
    a hook that keeps the digit count instead finds where it is. Call it only on JSON nested within the depth limit.
    """
    limit = sys.get_int_max_str_digits()
    if limit == 0 or not re.search(rf"\d{{{limit + 1}}}", text):
        return None

    def parse_int(literal: str) -> int | _TooLong:
        digits = len(literal.lstrip("-"))
        return _TooLong(digits) if digits > limit else int(literal)

    try:
        document = json.loads(text, parse_int=parse_int)
    except ValueError:
        return None
    return next(((path, v.digits) for path, v in _paths(document) if isinstance(v, _TooLong)), None)


class RequestLimitsMiddleware:
    """Reject, before any parsing: bodies over `max_body_bytes` (413), bodies that take longer than
    `body_timeout_s` to arrive (408, the connection is closed), bodies that are not JSON (415), and JSON the app's
    parser would choke on (422 located in the body): invalid UTF-8, deeper than `max_json_depth`, huge integers.

    The Content-Length header is checked up front; chunked bodies are counted as they stream and reading stops
    at the limit. An accepted body is buffered (at most `max_body_bytes`) and replayed to the app.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int, max_json_depth: int, body_timeout_s: float = 30.0) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_json_depth = max_json_depth
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            await self._too_large()(scope, receive, send)
            return
        with anyio.move_on_after(self.body_timeout_s) as deadline:
            body, complete = await self._read_body(receive)
        if deadline.cancelled_caught:
            await self._too_slow()(scope, receive, send)
            return
        if not complete:
            if body is None:
                await self._too_large()(scope, receive, send)
            return  # the client disconnected
        if body and (rejection := await self._check_body(body, headers.get("content-type"))) is not None:
            await rejection(scope, receive, send)
            return
        await self.app(scope, _replay(body or b"", receive), send)

    async def _check_body(self, body: bytes, content_type: str | None) -> Response | None:
        """415 for a body that is not JSON; 422 for JSON the parser cannot take; None when it may be parsed."""
        if not _is_json(content_type):
            detail = f"the body must be JSON (Content-Type: application/json), not {content_type or 'undeclared'}"
            return JSONResponse({"detail": detail[:200]}, status_code=415)
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            msg = f"invalid UTF-8 at byte {exc.start} (JSON text is UTF-8)"
            return validation_response([{"loc": ["body", exc.start], "msg": msg, "type": "json_invalid"}])
        if await self._too_deep(body):
            msg = f"JSON nested deeper than {self.max_json_depth} levels"
            return validation_response([{"loc": ["body"], "msg": msg, "type": "json_too_deep"}])
        if (found := huge_int_path(text)) is not None:
            path, digits = found
            msg = f"an integer of {digits:,} digits; at most {sys.get_int_max_str_digits():,} are read"
            return validation_response([{"loc": ["body", *path], "msg": msg, "type": "int_too_long"}])
        return None

    async def _read_body(self, receive: Receive) -> tuple[bytes | None, bool]:
        """(body, True) when read whole; (None, False) past the limit; (b"", False) on disconnect."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return b"", False
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None, False
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks), True

    async def _too_deep(self, body: bytes) -> bool:
        if len(body) <= THREAD_SCAN_BYTES:
            return json_depth_exceeds(body, self.max_json_depth)
        return await anyio.to_thread.run_sync(json_depth_exceeds, body, self.max_json_depth)

    def _too_slow(self) -> JSONResponse:
        detail = f"the request body did not arrive within {self.body_timeout_s:g} s (MEMPLAN_BODY_TIMEOUT_S)"
        return JSONResponse({"detail": detail}, status_code=408, headers={"Connection": "close"})

    def _too_large(self) -> JSONResponse:
        detail = f"request body larger than {self.max_body_bytes} bytes (MEMPLAN_MAX_BODY_BYTES)"
        return JSONResponse({"detail": detail}, status_code=413)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive() that hands the buffered body over once, then defers to the server (e.g. http.disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
