"""What the OpenAPI document says each operation can answer, beyond its success: the error statuses, their bodies
and headers (Retry-After on 429, WWW-Authenticate on 401). Routers attach these; create_app adds the ones every
operation shares (middleware answers them before any route runs)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

__all__ = [
    "AUTH",
    "BODY",
    "COMMON",
    "NOT_FOUND",
    "QUEUE_FULL",
    "UNAVAILABLE",
    "ErrorMessage",
    "drop_security",
]


class ErrorMessage(BaseModel):
    """An error that concerns the request as a whole."""

    detail: str


def _error(description: str, **extra: Any) -> dict[str, Any]:
    return {"description": description, "model": ErrorMessage, **extra}


# Answered by middleware, so possible on every operation.
COMMON: dict[int | str, dict[str, Any]] = {
    400: {
        "description": "The Host header is not one of MEMPLAN_ALLOWED_HOSTS (DNS-rebinding guard).",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    },
    408: _error("The request body did not arrive within MEMPLAN_BODY_TIMEOUT_S."),
    413: _error("The request body is larger than MEMPLAN_MAX_BODY_BYTES."),
}
# Operations that read a JSON body.
BODY: dict[int | str, dict[str, Any]] = {
    415: _error("The body is not JSON (Content-Type must be application/json)."),
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: _error("No such id.")}
QUEUE_FULL: dict[int | str, dict[str, Any]] = {
    429: _error(
        "MEMPLAN_PROBE_QUEUE_LIMIT probes are already waiting.",
        headers={"Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}},
    )
}
AUTH: dict[int | str, dict[str, Any]] = {
    401: _error(
        "MEMPLAN_API_KEY is set and the request has no 'Authorization: Bearer <key>'.",
        headers={"WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}},
    ),
    403: _error("The bearer key is not MEMPLAN_API_KEY."),
}
UNAVAILABLE: dict[int | str, dict[str, Any]] = {503: _error("The probe executor or its database is not available.")}


def drop_security(app: FastAPI) -> None:
    """Serve the OpenAPI document without security requirements (no MEMPLAN_API_KEY: nothing asks for a key)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        document = build()
        for operations in document.get("paths", {}).values():
            for operation in operations.values():
                operation.pop("security", None)
        document.get("components", {}).pop("securitySchemes", None)
        return document

    app.openapi = openapi  # type: ignore[method-assign]
