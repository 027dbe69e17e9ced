"""Issue 12, probe caps checked too late: every check happens at submission, the planner sizes the probe, the
probe process runs under an OS memory limit, and its timeout counts from when it starts running."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from planner import load_catalog, resolve_model
from planner.probe import ProbeRequest, scale_down
from planner.probe_size import planned_peak_bytes
from service.app import create_app
from service.probes import budget
from service.probes.budget import PROCESS_BASELINE_BYTES, probe_budgets, process_memory_limit
from service.settings import Settings
from tests.service import probe_runners

PROBES = "/v1/probes"
GIB = 1 << 30
WAIT_S = 30.0
SMALL = {"model": "llama-3-8b", "training": {"sequence_length": 64, "micro_batch_size": 1}}
# The probe: one layer, 65,536 tokens, a 65,536-token vocabulary: about 48 GiB planned, on a 24 GiB machine.
HUGE = {
    "model": "llama-3-8b",
    "training": {"sequence_length": 65536, "micro_batch_size": 1},
    "scale": {"num_layers": 1, "vocab_size": 65536},
}

MakeClient = Callable[..., Any]


@pytest.fixture
def make_client(tmp_path: Path) -> MakeClient:
    @contextmanager
    def make(runner: str = "tests.service.probe_runners:canned", **changes: Any) -> Iterator[TestClient]:
        settings = Settings(
            database_url=f"sqlite:///{tmp_path / 'jobs.db'}",
            probe_runner=runner,
            probe_executor_id="admission-tests",
            **changes,
        )
        with TestClient(create_app(settings)) as client:
            yield client

    return make


def wait_for(client: TestClient, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT_S
    while (job := client.get(f"{PROBES}/{job_id}").json())["status"] not in ("done", "failed"):
        assert time.monotonic() < deadline, job
        time.sleep(0.05)
    return job


@pytest.mark.parametrize(
    ("body", "loc", "words"),
    [
        (
            {**SMALL, "training": {"sequence_length": 65536, "micro_batch_size": 2}},
            ["body", "training", "micro_batch_size"],
            "131,072 tokens per step exceed the cap 65,536",
        ),
        (
            {"kind": "inference", "model": "llama-3-8b", "serving": {"prompt_tokens": 4096, "concurrency": 32}},
            ["body", "serving", "concurrency"],
            "tokens per step exceed the cap",
        ),
        ({**SMALL, "scale": {"num_layers": 8, "head_dim": 256, "max_heads": 64}}, ["body", "scale"], "parameters"),
    ],
    ids=["training-tokens", "serving-tokens", "parameters"],
)
def test_caps_are_checked_at_submission(
    make_client: MakeClient, body: dict[str, Any], loc: list[Any], words: str
) -> None:
    """These were accepted (202) and failed seconds later in the probe process, holding the only worker."""
    with make_client() as client:
        response = client.post(PROBES, json=body)
        assert response.status_code == 422, response.text
        [problem] = response.json()["detail"]
        assert problem["loc"] == loc and words in problem["msg"] and problem["type"] == "probe_too_large"
        assert client.get(PROBES).json()["total"] == 0


def test_a_probe_the_planner_sizes_past_the_budget_is_422_with_its_planned_bytes(make_client: MakeClient) -> None:
    request = ProbeRequest.model_validate(HUGE)
    spec = scale_down(resolve_model(request.model, load_catalog()).spec, request.scale)
    planned = planned_peak_bytes(request, spec, "cpu", load_catalog())
    assert 40 * GIB < planned < 60 * GIB  # the "48 GiB"
    with make_client(probe_max_bytes=24 * GIB) as client:  # the 24 GiB machine
        response = client.post(PROBES, json=HUGE)
        assert response.status_code == 422, response.text
        [problem] = response.json()["detail"]
        assert problem["loc"] == ["body", "training", "micro_batch_size"]
        assert f"{planned:,} bytes" in problem["msg"] and "MEMPLAN_PROBE_MAX_BYTES" in problem["msg"]
        assert client.post(PROBES, json=SMALL).status_code == 202  # a small one still goes
        assert client.post(PROBES, json={**HUGE, "backend": "fake"}).status_code == 202  # fake allocates nothing


def test_validate_true_is_sized_too(make_client: MakeClient) -> None:
    with make_client(probe_max_bytes=1 << 20) as client:
        response = client.post("/v1/estimates/training?validate=true", json=SMALL)
        assert response.status_code == 422
        assert "MEMPLAN_PROBE_MAX_BYTES" in response.json()["detail"][0]["msg"]


def test_the_default_budget_is_half_the_host_and_most_of_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(budget, "host_memory_bytes", lambda: 24 * GIB)
    monkeypatch.setattr(budget, "gpu_memory_bytes", lambda device, environ: 80 * GIB if device == "cuda:0" else None)
    assert probe_budgets(["cpu", "cuda:0", "cuda:1"], None, {}) == {
        "cpu": 12 * GIB,
        "cuda:0": 72 * GIB,
        "cuda:1": 12 * GIB,  # nvidia-smi could not tell: sized against the host
    }
    assert probe_budgets(["cpu", "cuda:0"], GIB, {}) == {"cpu": GIB, "cuda:0": GIB}
    assert process_memory_limit("cpu", GIB) == GIB + PROCESS_BASELINE_BYTES
    assert process_memory_limit("cuda:0", GIB) is None


def test_host_memory_honours_a_tighter_cgroup(tmp_path: Path) -> None:
    limit = tmp_path / "memory.max"
    limit.write_text("1073741824\n")
    assert budget.host_memory_bytes(limit) == GIB
    limit.write_text("max\n")
    assert budget.host_memory_bytes(limit) > GIB


def test_the_probe_process_runs_under_a_memory_limit(make_client: MakeClient) -> None:
    """Without a limit the runner's 3 GiB allocation succeeds and the job is done; under it, out of memory."""
    runner = f"{probe_runners.MODULE}:allocate_past_the_limit"
    with make_client(runner, probe_max_bytes=64 << 20) as client:
        job = wait_for(client, client.post(PROBES, json=SMALL).json()["id"])
    assert (job["status"], job["error"]) == ("failed", "out of memory")


def test_the_timeout_counts_from_when_the_probe_starts(make_client: MakeClient) -> None:
    """The runner's module takes 3 s to import and its probe 0.5 s: a 2 s timeout is enough (it was not)."""
    with make_client("tests.service.slow_import_runner:run", probe_max_timeout_s=2) as client:
        job = wait_for(client, client.post(PROBES, json=SMALL).json()["id"])
    assert job["status"] == "done", job["error"]
