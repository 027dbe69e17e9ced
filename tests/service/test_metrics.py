"""GET /metrics (Prometheus text) and GET /readyz (the database answers)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from service.app import create_app
from service.metrics import probe_outcome
from service.settings import Settings
from tests.service import probe_runners

SMALL = {"model": "llama-3-8b", "training": {"sequence_length": 64, "micro_batch_size": 1}}


def samples(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def test_requests_are_counted_by_route_template_and_status(client: TestClient) -> None:
    client.get("/v1/models/llama-3-8b")
    client.get("/v1/models/gpt-9")
    client.get("/v1/models/gpt-9")
    client.get("/no/such/path")
    seen = samples(client)
    route = "/v1/models/{model_id}"
    assert seen[("memplan_http_requests_total", (("method", "GET"), ("route", route), ("status", "200")))] == 1
    assert seen[("memplan_http_requests_total", (("method", "GET"), ("route", route), ("status", "404")))] == 2
    assert seen[("memplan_http_requests_total", (("method", "GET"), ("route", "<unmatched>"), ("status", "404")))] == 1
    latency = ("memplan_http_request_duration_seconds_count", (("method", "GET"), ("route", route), ("status", "404")))
    assert seen[latency] == 2
    assert not any("gpt-9" in str(key) for key in seen)  # raw paths are never labels


def test_probe_queue_depth_outcomes_and_durations(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'jobs.db'}", probe_runner=f"{probe_runners.MODULE}:canned")
    with TestClient(create_app(settings)) as client:
        assert samples(client)[("memplan_probe_queue_depth", ())] == 0
        job_id = client.post("/v1/probes", json=SMALL).json()["id"]
        deadline = time.monotonic() + 30
        while client.get(f"/v1/probes/{job_id}").json()["status"] != "done":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        seen = samples(client)
    assert seen[("memplan_probe_outcomes_total", (("outcome", "done"),))] == 1
    assert seen[("memplan_probe_duration_seconds_count", (("outcome", "done"),))] == 1


@pytest.mark.parametrize(
    ("error", "oom", "label"),
    [
        (None, False, "done"),
        (None, True, "out_of_memory"),
        ("out of memory", False, "out_of_memory"),
        ("timed out after 1 s", False, "timeout"),
        ("interrupted: the server stopped while the probe ran", False, "interrupted"),
        ("RuntimeError: boom", False, "failed"),
    ],
)
def test_probe_outcome_labels(error: str | None, oom: bool, label: str) -> None:
    assert probe_outcome(error, oom) == label


def test_readyz_checks_the_database(tmp_path: Path) -> None:
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'jobs.db'}"))
    assert TestClient(app).get("/readyz").status_code == 503  # not started
    with TestClient(app) as client:
        assert client.get("/readyz").json()["status"] == "ok"
        (tmp_path / "jobs.db").unlink()
        (tmp_path / "jobs.db").mkdir()  # the file is gone and cannot be made again: the database is unreachable
        app.state.probe_executor.db.dispose()
        response = client.get("/readyz")
        assert response.status_code == 503, response.text
        assert "unreachable" in response.json()["detail"]
        (tmp_path / "jobs.db").rmdir()
