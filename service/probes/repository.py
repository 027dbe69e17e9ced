"""Probe-job persistence: one short transaction per function, frozen ProbeJob snapshots out."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import func, select, update

from planner.probe import ProbeRequest, ProbeResult
from service.probes.db import PHASE_CHARS, Database, ProbeJobRow, utc_now
from service.probes.errors import UnknownProbeJobError
from service.probes.schemas import JobStatus, ProbeJob, ProbeKind, RunBackend

__all__ = [
    "create",
    "fail",
    "finish",
    "get",
    "list_jobs",
    "mark_interrupted",
    "mark_running",
    "queued",
    "set_phase",
]

INTERRUPTED = "interrupted: the server stopped while the probe ran"
QUEUED_PHASE = "queued"
STARTING_PHASE = "starting the probe process"
MAX_LABEL_CHARS = 200


def _job(row: ProbeJobRow) -> ProbeJob:
    return ProbeJob(
        id=row.id,
        status=row.status,  # validated: the table's CHECK constraints and ProbeJob's Literal types agree
        kind=row.kind,
        model=row.model,
        backend=row.backend,
        device=row.device,
        timeout_s=row.timeout_s,
        request=ProbeRequest.model_validate(row.request),
        result=None if row.result is None else ProbeResult.model_validate(row.result),
        error=row.error,
        phase=row.phase,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
    )


def create(
    db: Database, request: ProbeRequest, *, model: str, backend: RunBackend, device: str, owner: str, timeout_s: float
) -> ProbeJob:
    """A new queued job."""
    row = ProbeJobRow(
        id=str(uuid.uuid4()),
        status="queued",
        kind=request.kind,
        model=model[:MAX_LABEL_CHARS],
        backend=backend,
        device=device,
        owner=owner,
        timeout_s=timeout_s,
        request=request.model_dump(mode="json", by_alias=True),
        result=None,
        error=None,
        phase=QUEUED_PHASE,
        created_at=utc_now(),
    )
    with db.sessions.begin() as session:
        session.add(row)
    return _job(row)


def get(db: Database, job_id: str) -> ProbeJob:
    """The job; UnknownProbeJobError when there is none."""
    with db.sessions() as session:
        row = session.get(ProbeJobRow, job_id)
        if row is None:
            raise UnknownProbeJobError(job_id)
        return _job(row)


def list_jobs(
    db: Database,
    *,
    status: JobStatus | None = None,
    kind: ProbeKind | None = None,
    backend: RunBackend | None = None,
    limit: int = 20,
    offset: int = 0,
) -> tuple[list[ProbeJob], int]:
    """A page of jobs matching every given filter, newest first, and how many match in all."""
    where = [
        column == value
        for column, value in ((ProbeJobRow.status, status), (ProbeJobRow.kind, kind), (ProbeJobRow.backend, backend))
        if value is not None
    ]
    page = select(ProbeJobRow).where(*where).order_by(ProbeJobRow.created_at.desc(), ProbeJobRow.id.desc())
    with db.sessions() as session:
        rows = session.scalars(page.limit(limit).offset(offset)).all()
        total = session.scalar(select(func.count()).select_from(ProbeJobRow).where(*where)) or 0
        return [_job(row) for row in rows], total


def mark_running(db: Database, job_id: str, *, device: str, backend: RunBackend) -> ProbeJob | None:
    """Claim a queued job for `device`; None when it is no longer queued (another worker took it, or it ended)."""
    claim = (
        update(ProbeJobRow)
        .where(ProbeJobRow.id == job_id, ProbeJobRow.status == "queued")
        .values(status="running", device=device, backend=backend, started_at=utc_now(), phase=STARTING_PHASE)
    )
    with db.sessions.begin() as session:
        if session.execute(claim).rowcount != 1:  # type: ignore[attr-defined]  # a CursorResult for an UPDATE
            return None
        row = session.get(ProbeJobRow, job_id)
        assert row is not None
        return _job(row)


def _end(db: Database, job_id: str, status: JobStatus, result: ProbeResult | None, error: str | None) -> bool:
    """Record the end of a job that had not ended yet; False when it had."""
    end = (
        update(ProbeJobRow)
        .where(ProbeJobRow.id == job_id, ProbeJobRow.status.in_(("queued", "running")))
        .values(
            status=status,
            result=None if result is None else result.model_dump(mode="json", by_alias=True),
            error=error,
            phase=status,
            finished_at=utc_now(),
        )
    )
    with db.sessions.begin() as session:
        return bool(session.execute(end).rowcount)  # type: ignore[attr-defined]


def finish(db: Database, job_id: str, result: ProbeResult) -> bool:
    """Done with a result (an out-of-memory run included)."""
    return _end(db, job_id, "done", result, None)


def fail(db: Database, job_id: str, error: str) -> bool:
    """Failed with a reason."""
    return _end(db, job_id, "failed", None, error)


def set_phase(db: Database, job_id: str, phase: str) -> bool:
    """Record what a running job is doing now; False when it is not running."""
    change = (
        update(ProbeJobRow)
        .where(ProbeJobRow.id == job_id, ProbeJobRow.status == "running")
        .values(phase=phase[:PHASE_CHARS])
    )
    with db.sessions.begin() as session:
        return bool(session.execute(change).rowcount)  # type: ignore[attr-defined]


def mark_interrupted(db: Database, *, owner: str) -> list[str]:
    """Fail the owner's jobs left running by a server that stopped; their ids."""
    running = select(ProbeJobRow.id).where(ProbeJobRow.owner == owner, ProbeJobRow.status == "running")
    with db.sessions.begin() as session:
        ids = list(session.scalars(running).all())
        if ids:
            session.execute(
                update(ProbeJobRow)
                .where(ProbeJobRow.id.in_(ids), ProbeJobRow.status == "running")
                .values(status="failed", error=INTERRUPTED, phase="failed", finished_at=utc_now())
            )
    return ids


def queued(db: Database, *, owner: str) -> Sequence[ProbeJob]:
    """The owner's queued jobs, oldest first."""
    waiting = (
        select(ProbeJobRow)
        .where(ProbeJobRow.owner == owner, ProbeJobRow.status == "queued")
        .order_by(ProbeJobRow.created_at, ProbeJobRow.id)
    )
    with db.sessions() as session:
        return [_job(row) for row in session.scalars(waiting).all()]
