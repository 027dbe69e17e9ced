"""The probe-job repository on a SQLite file and on PostgreSQL (MEMPLAN_TEST_DATABASE_URL), and its SQL compiled
for PostgreSQL (no SQLite-only SQL)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.dialects import postgresql
from sqlalchemy.schema import CreateIndex, CreateTable

from planner.probe import ProbeRequest
from service.examples import QWEN2_5_0_5B_CONFIG
from service.probes import repository
from service.probes.db import Database, ProbeJobRow, connect
from service.probes.errors import UnknownProbeJobError
from service.probes.repository import INTERRUPTED
from service.settings import Settings
from tests.service.probe_runners import canned

OWNER = "here"
# A raw config.json as the model (the deepest ModelRef) must survive the JSON round trip.
REQUEST = ProbeRequest.model_validate(
    {"model": QWEN2_5_0_5B_CONFIG, "training": {"method": {"kind": "lora", "rank": 4}}}
)


@pytest.fixture
def db(store_url: str) -> Iterator[Database]:
    database = connect(store_url)
    database.migrate()
    yield database
    database.dispose()


def new(db: Database, request: ProbeRequest = REQUEST, **changes: Any) -> str:
    fields: dict[str, Any] = {"model": "qwen2", "backend": "cpu", "device": "cpu", "owner": OWNER, "timeout_s": 60.0}
    return repository.create(db, request, **(fields | changes)).id


def test_create_and_get_round_trip(db: Database) -> None:
    created = repository.create(db, REQUEST, model="qwen2", backend="cpu", device="cpu", owner=OWNER, timeout_s=60)
    read = repository.get(db, created.id)
    assert read == created
    assert (read.status, read.kind, read.request, read.result, read.error) == (
        "queued",
        "training",
        REQUEST,
        None,
        None,
    )
    assert read.created_at.tzinfo is UTC
    assert read.started_at is read.finished_at is None


def test_get_unknown_raises(db: Database) -> None:
    with pytest.raises(UnknownProbeJobError, match="no probe job with id 'nope'"):
        repository.get(db, "nope")


def test_a_job_is_claimed_once(db: Database) -> None:
    job_id = new(db)
    claimed = repository.mark_running(db, job_id, device="cuda:1", backend="cuda")
    assert claimed is not None
    assert (claimed.status, claimed.device, claimed.backend) == ("running", "cuda:1", "cuda")
    assert claimed.started_at is not None and claimed.started_at >= claimed.created_at
    assert repository.mark_running(db, job_id, device="cpu", backend="cpu") is None


def test_finish_and_fail_end_a_job_once(db: Database) -> None:
    done, failed = new(db), new(db)
    result = canned(REQUEST.model_copy(update={"backend": "cpu"}))
    assert repository.finish(db, done, result)
    assert repository.fail(db, failed, "timed out after 300 s")
    assert not repository.fail(db, done, "too late")  # an ended job keeps its outcome
    assert not repository.finish(db, failed, result)
    finished = repository.get(db, done)
    assert (finished.status, finished.result, finished.error) == ("done", result, None)
    assert finished.finished_at is not None
    assert (repository.get(db, failed).status, repository.get(db, failed).error) == ("failed", "timed out after 300 s")


def test_recovery_touches_only_the_owners_unfinished_jobs(db: Database) -> None:
    running, queued_first, queued_second, done = new(db), new(db), new(db), new(db)
    other_running, other_queued = new(db, owner="other"), new(db, owner="other")
    for job_id in (running, done, other_running):
        repository.mark_running(db, job_id, device="cpu", backend="cpu")
    repository.finish(db, done, canned(REQUEST.model_copy(update={"backend": "cpu"})))

    assert repository.mark_interrupted(db, owner=OWNER) == [running]
    assert (repository.get(db, running).status, repository.get(db, running).error) == ("failed", INTERRUPTED)
    assert [job.id for job in repository.queued(db, owner=OWNER)] == [queued_first, queued_second]  # oldest first
    assert repository.get(db, done).status == "done"
    assert repository.get(db, other_running).status == "running"
    assert [job.id for job in repository.queued(db, owner="other")] == [other_queued]


def test_list_filters_pages_and_counts(db: Database) -> None:
    inference = ProbeRequest(kind="inference", model="llama-3-8b")
    a, b, c = new(db), new(db, backend="fake"), new(db, inference)
    repository.fail(db, b, "out of memory")
    assert repository.list_jobs(db)[1] == 3
    assert [job.id for job in repository.list_jobs(db)[0]] == [c, b, a]
    assert [job.id for job in repository.list_jobs(db, status="queued")[0]] == [c, a]
    assert [job.id for job in repository.list_jobs(db, kind="training", backend="cpu")[0]] == [a]
    page, total = repository.list_jobs(db, kind="training", limit=1, offset=1)
    assert ([job.id for job in page], total) == ([a], 2)


def test_the_schema_and_queries_compile_for_postgresql() -> None:
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    table = ProbeJobRow.__table__
    ddl = str(CreateTable(table).compile(dialect=dialect))  # type: ignore[arg-type]
    assert "JSONB" in ddl and "CHECK (status IN ('queued', 'running', 'done', 'failed'))" in ddl
    for index in table.indexes:  # type: ignore[attr-defined]
        str(CreateIndex(index).compile(dialect=dialect))
    query = select(ProbeJobRow).where(ProbeJobRow.status == "queued").order_by(ProbeJobRow.created_at.desc())
    assert "ORDER BY probe_jobs.created_at DESC" in str(query.compile(dialect=dialect))


def test_default_database_is_a_sqlite_file_in_the_working_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEMPLAN_DATABASE_URL", raising=False)
    assert Settings().database_url == "sqlite:///./memplan.db"
