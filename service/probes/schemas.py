"""What the API shows of a probe job. The request and result schemas are the planner's (planner.probe)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from planner.probe import ProbeRequest, ProbeResult

__all__ = ["JobStatus", "ProbeAcceptedResponse", "ProbeJob", "ProbeJobListResponse", "ProbeKind", "RunBackend"]

JobStatus = Literal["queued", "running", "done", "failed"]
ProbeKind = Literal["training", "inference"]
RunBackend = Literal["cuda", "cpu", "fake"]


class ProbeJob(BaseModel):
    """One probe: what was asked, where it runs, and its result (done) or the reason it failed."""

    model_config = ConfigDict(frozen=True)

    id: str
    status: JobStatus
    kind: ProbeKind
    model: str = Field(description="Catalog id, spec name or config family of the probed model.")
    backend: RunBackend = Field(description="The backend it runs on ('auto' resolved when it was queued).")
    device: str = Field(description="The probe worker: cpu or cuda:<index>.")
    timeout_s: float = Field(description="The request's timeout_s, capped by MEMPLAN_PROBE_MAX_TIMEOUT_S.")
    request: ProbeRequest
    result: ProbeResult | None = Field(default=None, description="When done (an OOM run is a result too).")
    error: str | None = Field(default=None, description="When failed: timeout, crash, out of memory, interrupted.")
    phase: str | None = Field(
        default=None,
        description="What the probe is doing: 'queued', 'starting the probe process', 'importing the probe runner "
        "(torch)', 'building the scaled-down model', 'measuring on cpu', 'comparing with the planner', then 'done' "
        "or 'failed'.",
    )
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None


class ProbeAcceptedResponse(BaseModel):
    """A probe was queued; poll `location`."""

    id: str
    status: JobStatus
    location: str


class ProbeJobListResponse(BaseModel):
    """A page of probe jobs, newest first."""

    items: list[ProbeJob]
    total: int = Field(description="Jobs matching the filters, all pages.")
    limit: int
    offset: int
