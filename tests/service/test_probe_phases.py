"""Probe jobs report their phase; a server without the probe side refuses probes when they are submitted."""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from fastapi.testclient import TestClient
from sqlalchemy import text

from service.app import create_app
from service.probes.admission import DEFAULT_RUNNER, PROBE_PACKAGES, check_probe_side
from service.probes.db import alembic_config, connect
from service.settings import Settings
from tests.service import probe_runners
from tests.service.conftest import error_text

PROBES = "/v1/probes"
SMALL = {"model": "llama-3-8b", "training": {"sequence_length": 64, "micro_batch_size": 1}}
WAIT_S = 60.0


@pytest.fixture
def phased_client(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'jobs.db'}", probe_runner=f"{probe_runners.MODULE}:phased")
    with TestClient(create_app(settings)) as client:
        yield client


def _job_until(client: TestClient, job_id: str, done: Any) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT_S
    while True:
        job: dict[str, Any] = client.get(f"{PROBES}/{job_id}").json()
        if done(job) or time.monotonic() > deadline:
            assert done(job), job
            return job
        time.sleep(0.02)


def test_a_running_probe_reports_its_phase(phased_client: TestClient) -> None:
    response = phased_client.post(PROBES, json=SMALL)
    assert response.status_code == 202
    job_id = response.json()["id"]
    assert phased_client.get(f"{PROBES}/{job_id}").json()["phase"] in ("queued", "starting the probe process")
    running = _job_until(phased_client, job_id, lambda j: j["phase"] == "measuring a canned step")
    assert running["status"] == "running"
    done = _job_until(phased_client, job_id, lambda j: j["status"] in ("done", "failed"))
    assert (done["status"], done["phase"]) == ("done", "done")


def test_an_old_table_gains_the_phase_column(tmp_path: Path) -> None:
    """A store at migration 0001 (no phase) is upgraded by 0002."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    db = connect(url)
    with db.engine.begin() as connection:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, "0001")
    db.migrate()
    with db.engine.connect() as connection:
        columns = {row[1] for row in connection.execute(text("PRAGMA table_info(probe_jobs)"))}
    assert "phase" in columns
    db.migrate()  # and again: nothing to add
    db.dispose()


def _without_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name in PROBE_PACKAGES else real(name, *a)
    )


def test_without_torch_a_probe_is_refused_at_submission(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _without_torch(monkeypatch)
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'jobs.db'}", probe_runner=DEFAULT_RUNNER)
    with TestClient(create_app(settings)) as client:
        response = client.post(PROBES, json=SMALL)
        assert response.status_code == 422
        assert "pip install -e '.[probe]'" in error_text(response)
        assert response.json()["detail"][0]["loc"] == ["body", "backend"]
        validate = client.post("/v1/estimates/training?validate=true", json={"model": "llama-3-8b"})
        assert validate.status_code == 422
        assert client.get(PROBES).json()["total"] == 0  # nothing was queued


def test_other_runners_bring_their_own_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    _without_torch(monkeypatch)
    check_probe_side(f"{probe_runners.MODULE}:canned")  # no error
