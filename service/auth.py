"""Write access: when MEMPLAN_API_KEY is set, requests that queue probes need 'Authorization: Bearer <key>'."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param

from service.settings import Settings, get_settings

__all__ = [
    "AccessDeniedError",
    "BearerDep",
    "WriteAccess",
    "check_write_access",
    "credentials_of",
    "require_write_access",
]

bearer = HTTPBearer(auto_error=False, description="MEMPLAN_API_KEY, needed for writes when the server sets one.")
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


class AccessDeniedError(PermissionError):
    """No key (HTTP 401) or the wrong key (HTTP 403) where MEMPLAN_API_KEY is required."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


def check_write_access(credentials: HTTPAuthorizationCredentials | None, settings: Settings) -> None:
    """Nothing when no key is configured or the bearer key is it; AccessDeniedError otherwise."""
    if settings.api_key is None:
        return
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise AccessDeniedError(401, "this server needs 'Authorization: Bearer <MEMPLAN_API_KEY>' to queue probes")
    expected = settings.api_key.get_secret_value().encode()
    if not secrets.compare_digest(credentials.credentials.encode(), expected):
        raise AccessDeniedError(403, "the bearer key is not this server's MEMPLAN_API_KEY")


def credentials_of(request: Request) -> HTTPAuthorizationCredentials | None:
    """The request's Authorization header as scheme and credentials (for routes where only some requests write)."""
    scheme, credentials = get_authorization_scheme_param(request.headers.get("authorization"))
    return HTTPAuthorizationCredentials(scheme=scheme, credentials=credentials) if scheme and credentials else None


def require_write_access(credentials: BearerDep, settings: Annotated[Settings, Depends(get_settings)]) -> None:
    """A route dependency: check_write_access on every request (the operation declares bearer security)."""
    check_write_access(credentials, settings)


WriteAccess = Depends(require_write_access)
