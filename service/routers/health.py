"""Liveness, readiness and metrics."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel

from service import __version__
from service.deps import ProbeExecutorDep
from service.metrics import CONTENT_TYPE, Metrics
from service.openapi import UNAVAILABLE
from service.probes.errors import ProbesUnavailableError

router = APIRouter(tags=["health"])


class HealthResponse(BaseModel):
    """The process is up and answering."""

    status: Literal["ok"] = "ok"
    version: str


@router.get("/healthz", response_model=HealthResponse)
def healthz() -> HealthResponse:
    """Liveness probe: the process answers and knows its version."""
    return HealthResponse(version=__version__)


@router.get("/readyz", response_model=HealthResponse, responses=UNAVAILABLE)
def readyz(executor: ProbeExecutorDep) -> HealthResponse:
    """Readiness probe: the probe executor runs and its database answers (503 otherwise)."""
    if not executor.running:
        raise ProbesUnavailableError
    try:
        executor.db.ping()
    except Exception as exc:
        raise ProbesUnavailableError(f"the probe database is unreachable ({type(exc).__name__})") from None
    return HealthResponse(version=__version__)


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"description": "Prometheus text format.", "content": {"text/plain": {"schema": {"type": "string"}}}}
    },
)
def metrics(request: Request) -> Response:
    """Prometheus metrics: requests by route and status, latency histograms, probe queue depth and outcomes."""
    registry: Metrics = request.app.state.metrics
    return Response(registry.render(), media_type=CONTENT_TYPE)
