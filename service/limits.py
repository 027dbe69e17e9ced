"""Request limits as pure ASGI middleware: body size (413) and JSON nesting depth (422), checked before parsing."""

from __future__ import annotations

import re

import anyio
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import validation_response

__all__ = ["RequestLimitsMiddleware", "json_depth_exceeds"]

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


def _may_be_json(content_type: str | None) -> bool:
    if content_type is None:
        return True
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json" or media_type.endswith("+json")


class RequestLimitsMiddleware:
    """Reject bodies over `max_body_bytes` (413) and JSON deeper than `max_json_depth` (422) before any parsing.

    The Content-Length header is checked up front; chunked bodies are counted as they stream and reading stops
    at the limit. An accepted body is buffered (at most `max_body_bytes`) and replayed to the app.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int, max_json_depth: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_json_depth = max_json_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            await self._too_large()(scope, receive, send)
            return
        body, complete = await self._read_body(receive)
        if not complete:
            if body is None:
                await self._too_large()(scope, receive, send)
            return  # the client disconnected
        if body and _may_be_json(headers.get("content-type")) and await self._too_deep(body):
            msg = f"JSON nested deeper than {self.max_json_depth} levels"
            await validation_response([{"loc": ["body"], "msg": msg, "type": "json_too_deep"}])(scope, receive, send)
            return
        await self.app(scope, _replay(body or b"", receive), send)

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
