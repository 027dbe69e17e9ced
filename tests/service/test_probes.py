"""POST/GET /v1/probes end to end: real spawned probe processes running the runners of probe_runners.py."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from fastapi.testclient import TestClient

from planner import ServingSpec, TrainingSpec, load_catalog
from planner.probe import ProbeRequest, ProbeResult
from planner.training.estimate import TrainingRequest, estimate_training
from service.app import create_app
from service.examples import QWEN2_5_0_5B_CONFIG
from service.probes import repository
from service.probes.db import connect
from service.probes.executor import RETRY_AFTER_S
from service.probes.repository import INTERRUPTED
from service.readable import planner_json
from service.settings import Settings
from tests.service import probe_runners
from tests.service.probe_runners import canned

PROBES = "/v1/probes"
WAIT_S = 20.0  # generous: a spawned process imports the planner in about 0.3 s
SMALL = {"model": "llama-3-8b", "training": {"sequence_length": 64, "micro_batch_size": 1}}

MakeClient = Callable[..., Any]


@pytest.fixture
def database_url(store_url: str) -> str:
    """Each test here gets an empty database of its own, SQLite and PostgreSQL (the session-wide one is for tests
    that queue nothing)."""
    return store_url


@pytest.fixture
def make_client(database_url: str) -> MakeClient:
    """A started app running `runner` from probe_runners.py; every app of a test shares the test's database."""

    @contextmanager
    def make(runner: str = "canned", **changes: Any) -> Iterator[TestClient]:
        settings = Settings(
            database_url=database_url,
            probe_runner=f"{probe_runners.MODULE}:{runner}",
            probe_executor_id="test-executor",
            **changes,
        )
        with TestClient(create_app(settings)) as client:
            yield client

    return make


def submit(client: TestClient, body: dict[str, Any] | None = None) -> str:
    response = client.post(PROBES, json=SMALL if body is None else body)
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    assert response.headers["location"] == response.json()["location"] == f"{PROBES}/{job_id}"
    return job_id


def wait_for(client: TestClient, job_id: str, *statuses: str) -> dict[str, Any]:
    """The job once its status is one of `statuses`."""
    deadline = time.monotonic() + WAIT_S
    while True:
        job: dict[str, Any] = client.get(f"{PROBES}/{job_id}").json()
        if job["status"] in statuses or time.monotonic() > deadline:
            assert job["status"] in statuses, job
            return job
        time.sleep(0.02)


@pytest.mark.parametrize(
    ("body", "label"),
    [(SMALL, "llama-3-8b"), ({**SMALL, "model": QWEN2_5_0_5B_CONFIG}, "qwen2")],
    ids=["catalog-id", "config-json"],
)
def test_a_probe_runs_and_its_result_is_stored(make_client: MakeClient, body: dict[str, Any], label: str) -> None:
    with make_client() as client:
        job_id = submit(client, body)
        job = wait_for(client, job_id, "done", "failed")
    assert job["status"] == "done", job["error"]
    request = ProbeRequest.model_validate(body)
    assert ProbeRequest.model_validate(job["request"]) == request
    # The runner got the request with 'auto' resolved (cpu: no GPU is listed) and ran with no GPU visible.
    expected = canned(request.model_copy(update={"backend": "cpu"}))
    assert ProbeResult.model_validate(job["result"]) == expected.model_copy(
        update={"device": "cpu (CUDA_VISIBLE_DEVICES='')"}
    )
    assert (job["kind"], job["model"], job["backend"], job["device"], job["error"]) == (
        "training",
        label,
        "cpu",
        "cpu",
        None,
    )
    assert job["created_at"] <= job["started_at"] <= job["finished_at"]


def test_a_probe_past_its_time_limit_is_killed(make_client: MakeClient) -> None:
    # The request allows 300 s; the server caps it at 1 s.
    with make_client("sleep_forever", probe_max_timeout_s=1) as client:
        started = time.monotonic()
        job = wait_for(client, submit(client, {**SMALL, "timeout_s": 300}), "done", "failed")
        elapsed = time.monotonic() - started
    assert (job["status"], job["error"], job["timeout_s"]) == ("failed", "timed out after 1 s", 1.0)
    assert 1 <= elapsed < 10


@pytest.mark.parametrize(
    ("runner", "error"),
    [
        ("raise_error", "RuntimeError: boom in layer 3"),
        ("raise_memory_error", "out of memory"),
        ("exit_abruptly", "the probe process exited with code 3 without a result"),
        ("return_garbage", "the probe runner returned an invalid ProbeResult"),
        ("no_such_function", "the probe runner tests.service.probe_runners:no_such_function cannot be"),
    ],
)
def test_a_failing_probe_fails_with_its_reason(make_client: MakeClient, runner: str, error: str) -> None:
    with make_client(runner) as client:
        job = wait_for(client, submit(client), "done", "failed")
    assert job["status"] == "failed"
    assert job["error"].startswith(error), job["error"]
    assert job["result"] is None


def test_a_full_queue_answers_429_with_retry_after(make_client: MakeClient) -> None:
    limit = 2
    with make_client("sleep_forever", probe_queue_limit=limit) as client:
        first = submit(client)
        wait_for(client, first, "running")  # the cpu worker is busy from now on
        waiting = [submit(client) for _ in range(limit)]
        response = client.post(PROBES, json=SMALL)
        assert response.status_code == 429, response.text
        assert response.headers["retry-after"] == str(RETRY_AFTER_S)
        assert "MEMPLAN_PROBE_QUEUE_LIMIT" in response.json()["detail"]
        validated = client.post("/v1/estimates/training?validate=true", json=SMALL)
        assert validated.status_code == 429
        listed = client.get(PROBES, params={"status": "queued"}).json()
        assert {job["id"] for job in listed["items"]} == set(waiting)
    # Stopping the server interrupted the running probe; the waiting ones stay queued for the next start.
    with make_client("sleep_forever", probe_queue_limit=limit) as client:
        assert client.get(f"{PROBES}/{first}").json()["error"] == INTERRUPTED


def test_a_restart_fails_interrupted_jobs_and_runs_queued_ones(make_client: MakeClient, database_url: str) -> None:
    with make_client() as client:
        done_id = submit(client)
        done = wait_for(client, done_id, "done")
    with make_client("sleep_forever") as client:
        running_id, queued_id = submit(client), submit(client)
        wait_for(client, running_id, "running")
    # A server that died without stopping (no shutdown ran) leaves jobs running: one of ours, one of a replica's.
    db = connect(database_url)
    request = ProbeRequest.model_validate(SMALL)
    fields: dict[str, Any] = {"model": "llama-3-8b", "backend": "cpu", "device": "cpu", "timeout_s": 60.0}
    crashed = repository.create(db, request, owner="test-executor", **fields).id
    replicas = repository.create(db, request, owner="another-replica", **fields).id
    for job_id in (crashed, replicas):
        repository.mark_running(db, job_id, device="cpu", backend="cpu")
    db.dispose()

    with make_client() as client:
        assert wait_for(client, queued_id, "done")["result"] is not None  # queued before the restart, run after it
        assert client.get(f"{PROBES}/{done_id}").json() == done  # written before the restart, read back after it
        for job_id in (running_id, crashed):
            job = client.get(f"{PROBES}/{job_id}").json()
            assert (job["status"], job["error"], job["result"]) == ("failed", INTERRUPTED, None)
        assert client.get(f"{PROBES}/{replicas}").json()["status"] == "running"  # not this server's to recover


def test_cuda_devices_take_auto_and_cuda_probes(make_client: MakeClient) -> None:
    with make_client(probe_devices="cuda:0,cuda:1") as client:
        auto = wait_for(client, submit(client), "done", "failed")
        cpu = wait_for(client, submit(client, {**SMALL, "backend": "fake"}), "done", "failed")
    assert (auto["backend"], auto["device"], auto["result"]["backend"]) == ("cuda", "cuda:0", "cuda")
    assert auto["result"]["device"] == "cpu (CUDA_VISIBLE_DEVICES='0')"  # the probe process sees its GPU only
    assert (cpu["backend"], cpu["device"], cpu["result"]["device"]) == ("fake", "cpu", "cpu (CUDA_VISIBLE_DEVICES='')")


@pytest.mark.parametrize("kind", ["training", "inference"])
def test_validate_true_queues_a_probe_of_the_estimate(make_client: MakeClient, kind: str) -> None:
    body = {"model": "qwen2.5-7b", "gpu": "a100-80gb"} | (
        {"training": {"method": {"kind": "lora", "rank": 8}, "sequence_length": 256}}
        if kind == "training"
        else {"serving": {"prompt_tokens": 256, "output_tokens": 16, "concurrency": 2}}
    )
    with make_client() as client:
        plain = client.post(f"/v1/estimates/{kind}", json=body)
        validated = client.post(f"/v1/estimates/{kind}", params={"validate": "true"}, json=body)
        assert "x-memplan-probe" not in plain.headers
        assert validated.status_code == 200, validated.text
        assert validated.json() == plain.json()
        job_id = validated.headers["x-memplan-probe"]
        assert validated.headers["link"] == f'<{PROBES}/{job_id}>; rel="probe"'
        job = wait_for(client, job_id, "done", "failed")
    assert (job["status"], job["kind"], job["model"], job["backend"]) == ("done", kind, "qwen2.5-7b", "cpu")
    probe = ProbeRequest.model_validate(job["request"])
    assert probe.backend == "auto"
    if kind == "training":
        assert probe.training == TrainingSpec.model_validate(body["training"])
    else:  # the closest configuration a probe runs: the transformers engine, same lengths and concurrency
        assert probe.serving == ServingSpec.model_validate({**body["serving"], "engine": "transformers"})


def test_list_filters_and_pages(client: TestClient, database_url: str) -> None:
    db = connect(database_url)
    request = ProbeRequest.model_validate(SMALL)
    inference = ProbeRequest(kind="inference", model="llama-3-8b")
    common: dict[str, Any] = {"model": "llama-3-8b", "device": "cpu", "owner": "elsewhere", "timeout_s": 60.0}
    ids = {
        "done-cpu": repository.create(db, request, backend="cpu", **common).id,
        "failed-fake": repository.create(db, request, backend="fake", **common).id,
        "queued-inference": repository.create(db, inference, backend="cpu", **common).id,
    }
    repository.mark_running(db, ids["done-cpu"], device="cpu", backend="cpu")
    repository.finish(db, ids["done-cpu"], canned(request.model_copy(update={"backend": "cpu"})))
    repository.fail(db, ids["failed-fake"], "out of memory")
    db.dispose()

    def listed(**params: Any) -> list[str]:
        response = client.get(PROBES, params=params)
        assert response.status_code == 200, response.text
        return [job["id"] for job in response.json()["items"]]

    assert listed() == [ids["queued-inference"], ids["failed-fake"], ids["done-cpu"]]  # newest first
    assert listed(status="done") == [ids["done-cpu"]]
    assert listed(status="failed", backend="fake") == [ids["failed-fake"]]
    assert listed(kind="inference") == [ids["queued-inference"]]
    assert listed(kind="inference", status="done") == []
    assert listed(limit=1, offset=1) == [ids["failed-fake"]]
    assert listed(offset=3) == []
    page = client.get(PROBES, params={"kind": "training", "limit": 1}).json()
    assert (page["total"], page["limit"], page["offset"], len(page["items"])) == (2, 1, 0, 1)


def test_unknown_job_is_404(client: TestClient) -> None:
    response = client.get(f"{PROBES}/00000000-0000-0000-0000-000000000000")
    assert response.status_code == 404
    assert response.json() == {"detail": "no probe job with id '00000000-0000-0000-0000-000000000000'"}


def test_an_app_that_was_never_started_answers_503(settings: Settings) -> None:
    client = TestClient(create_app(settings))  # no `with`: no lifespan, no executor
    assert client.post(PROBES, json=SMALL).status_code == 503
    assert client.get(PROBES).status_code == 503
    assert client.get(f"{PROBES}/00000000-0000-0000-0000-000000000000").status_code == 503


def test_an_app_can_be_started_again(settings: Settings) -> None:
    app = create_app(settings)
    for _ in range(2):
        with TestClient(app) as client:
            assert client.get(PROBES).status_code == 200


def test_a_queued_job_no_device_can_run_fails_at_restart(make_client: MakeClient, database_url: str) -> None:
    db = connect(database_url)
    db.migrate()
    fields: dict[str, Any] = {"model": "llama-3-8b", "device": "cuda:0", "owner": "test-executor", "timeout_s": 60.0}
    job_id = repository.create(db, ProbeRequest(backend="cuda"), backend="cuda", **fields).id
    db.dispose()
    with make_client() as client:  # the cuda:0 worker is gone: MEMPLAN_PROBE_DEVICES is cpu now
        job = client.get(f"{PROBES}/{job_id}").json()
    assert job["status"] == "failed"
    assert "no CUDA probe device is configured" in job["error"]


def test_validate_false_needs_no_executor(settings: Settings) -> None:
    client = TestClient(create_app(settings))
    body = {"model": "llama-3-8b"}
    response = client.post("/v1/estimates/training", json=body)
    assert response.status_code == 200
    expected = estimate_training(TrainingRequest.model_validate(body), load_catalog())
    assert planner_json(response.json()) == expected.model_dump(mode="json")


def test_validate_on_a_vllm_estimate_queues_a_probe_it_can_run() -> None:
    # The default serving request (vLLM, 2048 + 256 tokens) maps to the transformers engine, bf16, one GPU.
    from planner import InferenceRequest
    from planner.probe import MAX_PROBE_TOKENS
    from service.probes.admission import probe_request_for

    request = InferenceRequest(
        model="llama-3-8b",
        serving={"weight_format": "int4_awq", "kv_cache_dtype": "fp8", "tensor_parallel": 2, "concurrency": 64},
    )
    serving = probe_request_for(request).serving
    assert (serving.engine, serving.weight_format, serving.kv_cache_dtype) == ("transformers", "bf16", "bf16")
    assert serving.tensor_parallel == 1
    assert serving.concurrency * serving.context_tokens <= MAX_PROBE_TOKENS
    assert serving.prompt_tokens == request.serving.prompt_tokens
