"""Probes: a real PyTorch run of a scaled-down model of the same architecture, measured against the planner."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from planner.probe import ProbeRequest
from service.auth import WriteAccess
from service.deps import CatalogDep, ProbeDatabaseDep, ProbeExecutorDep
from service.hub import with_hub_model
from service.openapi import AUTH, BODY, NOT_FOUND, QUEUE_FULL, UNAVAILABLE
from service.probes import repository
from service.probes.schemas import (
    JobStatus,
    ProbeAcceptedResponse,
    ProbeJob,
    ProbeJobListResponse,
    ProbeKind,
    RunBackend,
)

__all__ = ["job_location", "probe_link_headers", "router"]

router = APIRouter(prefix="/v1/probes", tags=["probes"], responses=UNAVAILABLE)
MAX_PAGE = 100


def job_location(job_id: str) -> str:
    return f"{router.prefix}/{job_id}"


def probe_link_headers(job: ProbeJob) -> dict[str, str]:
    """Headers pointing a response at a probe job: `X-Memplan-Probe: <id>` and `Link: </v1/probes/<id>>`."""
    return {"X-Memplan-Probe": job.id, "Link": f'<{job_location(job.id)}>; rel="probe"'}


@router.post(
    "",
    status_code=202,
    response_model=ProbeAcceptedResponse,
    dependencies=[WriteAccess],
    responses={**BODY, **QUEUE_FULL, **AUTH},
)
def submit(
    request: ProbeRequest, executor: ProbeExecutorDep, catalog: CatalogDep, response: Response
) -> ProbeAcceptedResponse:
    """Queue a probe: 202 and Location; 422 when the planner rejects or over-sizes it, 429 + Retry-After if full."""
    job = executor.submit(with_hub_model(request), catalog)
    response.headers["Location"] = job_location(job.id)
    return ProbeAcceptedResponse(id=job.id, status=job.status, location=job_location(job.id))


@router.get("/{job_id}", response_model=ProbeJob, responses=NOT_FOUND)
def get(job_id: str, db: ProbeDatabaseDep) -> ProbeJob:
    """One probe job: status, request, and its result (measured vs estimated per component) or why it failed."""
    return repository.get(db, job_id)


@router.get("", response_model=ProbeJobListResponse)
def list_jobs(
    db: ProbeDatabaseDep,
    status: JobStatus | None = None,
    kind: ProbeKind | None = None,
    backend: RunBackend | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 20,
    offset: Annotated[int, Query(ge=0, le=1 << 31)] = 0,
) -> ProbeJobListResponse:
    """Probe jobs, newest first, filtered by status, kind and backend."""
    items, total = repository.list_jobs(db, status=status, kind=kind, backend=backend, limit=limit, offset=offset)
    return ProbeJobListResponse(items=items, total=total, limit=limit, offset=offset)
