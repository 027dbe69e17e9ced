"""Liveness."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel

from service import __version__

router = APIRouter(tags=["health"])


class HealthResponse(BaseModel):
    """The process is up and answering."""

    status: Literal["ok"] = "ok"
    version: str


@router.get("/healthz", response_model=HealthResponse)
def healthz() -> HealthResponse:
    """Liveness probe: the process answers and knows its version."""
    return HealthResponse(version=__version__)
