"""MEMPLAN_EXECUTOR=ray on a local Ray instance (2 CPUs and one logical H100, no real GPU): probes are Ray tasks
asking for what they run on, their outcomes come back to the job store, and a worker killed in the middle of a
probe fails that job as interrupted while the others complete. Skipped without ray (pip install -e '.[ray]')."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from planner import load_catalog
from service.app import create_app
from service.settings import Settings
from tests.service import probe_runners

ray = pytest.importorskip("ray")
from service.probes.ray_executor import INTERRUPTED_RAY, RAY_ACCELERATOR_TYPES, accelerator_type  # noqa: E402

pytestmark = pytest.mark.ray

PROBES = "/v1/probes"
WAIT_S = 60.0
SMALL = {"model": "llama-3-8b", "training": {"sequence_length": 64, "micro_batch_size": 1}}
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pid_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ray-pids")


@pytest.fixture(scope="module")
def local_ray(pid_dir: Path) -> Iterator[None]:
    """A Ray instance of this process's own: 2 CPUs, and one GPU declared as an H100 (nothing uses CUDA)."""
    ray.init(
        num_cpus=2,
        num_gpus=1,
        resources={"accelerator_type:H100": 1},
        include_dashboard=False,
        logging_level="ERROR",
        runtime_env={"env_vars": {"PYTHONPATH": str(REPO), probe_runners.PID_DIR_ENV: str(pid_dir)}},
    )
    yield
    ray.shutdown()


@pytest.fixture
def make_client(local_ray: None, tmp_path: Path) -> Any:
    def make(runner: str = "canned") -> TestClient:
        settings = Settings(
            database_url=f"sqlite:///{tmp_path / 'jobs.db'}",
            executor="ray",
            probe_runner=f"{probe_runners.MODULE}:{runner}",
            probe_executor_id="ray-tests",
            probe_queue_limit=4,
        )
        return TestClient(create_app(settings))

    return make


def wait_for(client: TestClient, job_id: str, *statuses: str) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT_S
    while (job := client.get(f"{PROBES}/{job_id}").json())["status"] not in statuses:
        assert time.monotonic() < deadline, job
        time.sleep(0.1)
    return job


def submit(client: TestClient, body: dict[str, Any]) -> str:
    response = client.post(PROBES, json=body)
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


def test_catalog_gpus_have_ray_accelerator_types() -> None:
    ids = {gpu.id for gpu in load_catalog().gpus}
    assert set(RAY_ACCELERATOR_TYPES) <= ids
    assert accelerator_type("h100-sxm") == accelerator_type("h100-pcie") == "H100"
    assert accelerator_type("rtx-4090") is None and accelerator_type(None) is None  # any GPU


def test_probes_run_as_ray_tasks_and_land_in_the_job_store(make_client: Any) -> None:
    with make_client() as client:
        cpu = wait_for(client, submit(client, {**SMALL, "backend": "cpu"}), "done", "failed")
        h100 = wait_for(client, submit(client, {**SMALL, "gpu": "h100-sxm"}), "done", "failed")
        refused = client.post(PROBES, json={**SMALL, "backend": "cuda", "gpu": "a100-80gb"})
        auto_a100 = wait_for(client, submit(client, {**SMALL, "gpu": "a100-80gb"}), "done", "failed")
        metrics = client.get("/metrics").text
    assert (cpu["status"], cpu["backend"], cpu["device"]) == ("done", "cpu", "ray"), cpu["error"]
    assert cpu["result"]["device"] == "cpu (CUDA_VISIBLE_DEVICES='')"
    # auto goes to cuda on the cluster's H100; Ray gave the task its GPU, and the probe process saw only it
    assert (h100["status"], h100["backend"]) == ("done", "cuda"), h100["error"]
    assert h100["result"]["device"] == "cpu (CUDA_VISIBLE_DEVICES='0')"
    assert refused.status_code == 422 and "no a100-80gb GPUs" in refused.text
    assert auto_a100["backend"] == "cpu"  # auto without such a GPU: the cpu
    assert 'memplan_probe_outcomes_total{outcome="done"} 3.0' in metrics


def test_a_worker_killed_mid_probe_fails_its_job_and_loses_nothing(make_client: Any, pid_dir: Path) -> None:
    with make_client("report_parent_and_sleep") as client:
        doomed = submit(client, {**SMALL, "backend": "cpu"})
        wait_for(client, doomed, "running")
        deadline = time.monotonic() + WAIT_S
        while not (pids := list(pid_dir.glob("*.pid"))):
            assert time.monotonic() < deadline, "the probe never started"
            time.sleep(0.1)
        os.kill(int(pids[0].read_text()), signal.SIGKILL)  # the Ray worker running the task
        job = wait_for(client, doomed, "done", "failed")
    assert (job["status"], job["result"]) == ("failed", None)
    assert job["error"].startswith(INTERRUPTED_RAY), job["error"]
    with make_client() as client:  # the same store, a new server: the old job kept, new ones run
        assert client.get(f"{PROBES}/{doomed}").json() == job
        assert wait_for(client, submit(client, {**SMALL, "backend": "cpu"}), "done", "failed")["status"] == "done"
