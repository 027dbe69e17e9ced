"""The one place that turns exceptions into HTTP responses.

Every 422 has FastAPI's validation shape, `{"detail": [{"loc": [...], "msg": ..., "type": ...}]}`, with locations
rooted at "body"; pydantic's `input` and `ctx` are dropped so that an error never echoes a large request back.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from planner import SpecError, UnknownIdError
from service.auth import AccessDeniedError
from service.probes.errors import ProbeQueueFullError, ProbesUnavailableError, UnknownProbeJobError

__all__ = ["MAX_MSG_CHARS", "install_error_handlers", "problem", "validation_response"]

logger = logging.getLogger(__name__)

MAX_MSG_CHARS = 500  # a message longer than this is cut: it can only be an echo of the input


def problem(loc: Sequence[str | int], msg: str, type_: str) -> dict[str, Any]:
    """One entry of a 422 `detail` list."""
    short = msg if len(msg) <= MAX_MSG_CHARS else msg[: MAX_MSG_CHARS - 1] + "…"
    return {"loc": list(loc), "msg": short, "type": type_}


def validation_response(problems: Iterable[Mapping[str, Any]]) -> JSONResponse:
    """422 with the given problems, each reduced to loc, msg and type."""
    detail = [problem(p["loc"], str(p["msg"]), str(p["type"])) for p in problems]
    return JSONResponse({"detail": detail}, status_code=422)


async def _request_validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return validation_response(exc.errors())


async def _spec_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, SpecError)
    return validation_response({"loc": ("body", *p.loc), "msg": p.msg, "type": p.type} for p in exc.problems)


async def _unknown_id(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, UnknownIdError)
    return JSONResponse({"detail": str(exc)}, status_code=404)


async def _unknown_probe_job(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, UnknownProbeJobError)
    return JSONResponse({"detail": str(exc)}, status_code=404)


async def _probe_queue_full(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ProbeQueueFullError)
    return JSONResponse({"detail": str(exc)}, status_code=429, headers={"Retry-After": str(exc.retry_after_s)})


async def _probes_unavailable(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ProbesUnavailableError)
    return JSONResponse({"detail": str(exc)}, status_code=503)


async def _access_denied(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AccessDeniedError)
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return JSONResponse({"detail": str(exc)}, status_code=exc.status, headers=headers)


HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
_PARAMETER = re.compile(r"\{[^}]+\}")


def _documented_methods(request: Request) -> set[str] | None:
    """The methods the OpenAPI document lists for the path template that serves this path (a literal template
    before a parameterized one, as routing prefers: /v1/models/import is not /v1/models/{model_id}); None when
    the path is not documented."""
    paths: dict[str, dict[str, Any]] = request.app.openapi()["paths"]
    path = request.url.path
    templates = [t for t in paths if re.fullmatch("[^/]+".join(map(re.escape, _PARAMETER.split(t))), path)]
    if not templates:
        return None
    best = min(templates, key=lambda t: len(_PARAMETER.findall(t)))
    return {method.upper() for method in paths[best]}


def allowed_methods(request: Request) -> list[str]:
    """Every method served at this path (Starlette's 405 names only the first route's), sorted, as the OpenAPI
    document lists them; for undocumented paths (/docs), each method is asked of the routes as a request would be."""
    served = _documented_methods(request)
    if served is None:
        routes = request.app.router.routes
        served = {
            method
            for method in HTTP_METHODS
            if any(route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes)
        }
    return sorted(served | {"OPTIONS"})


async def _http_error(request: Request, exc: Exception) -> Response:
    """405 (and OPTIONS, which no route declares) with an Allow header that lists every route at the path."""
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code != 405:
        return await http_exception_handler(request, exc)
    allow = ", ".join(allowed_methods(request))
    if request.method == "OPTIONS":
        return Response(status_code=204, headers={"Allow": allow})
    return JSONResponse({"detail": "Method Not Allowed"}, status_code=405, headers={"Allow": allow})


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"detail": "internal server error"}, status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    """Map domain errors to 4xx/503, shrink validation errors, list every allowed method on 405 and OPTIONS, and
    answer anything unexpected with a logged 500."""
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(SpecError, _spec_error)
    app.add_exception_handler(UnknownIdError, _unknown_id)
    app.add_exception_handler(UnknownProbeJobError, _unknown_probe_job)
    app.add_exception_handler(ProbeQueueFullError, _probe_queue_full)
    app.add_exception_handler(ProbesUnavailableError, _probes_unavailable)
    app.add_exception_handler(AccessDeniedError, _access_denied)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
