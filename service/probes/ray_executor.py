"""Probes on a Ray cluster: each probe is one Ray task that asks for what it runs on, and its outcome comes back
to the same job store as the local executor's.

A cuda probe asks for one GPU (`num_gpus=1`) of the probe's GPU type (`accelerator_type`, from the catalog id in
ProbeRequest.gpu), so an H100 estimate is probed on an H100 node; a cpu or fake probe asks for one CPU. Inside the
task the probe runs exactly as on the local executor, in a spawned process (service.probes.process) with its
timeout and memory limit; the task returns the outcome. A task whose worker dies (a node lost, a process killed)
fails the job as interrupted; jobs queued here when the server stops are dispatched again at its next start.

`auto` goes to cuda when the cluster has GPUs of the probe's type (or any GPU, for a probe that names none), else
to cpu. Only this module imports ray, and only when MEMPLAN_EXECUTOR=ray.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayError, TaskCancelledError

from planner import FieldProblem, SpecError, load_catalog
from planner.probe import ProbeRequest, ProbeResult
from service.metrics import Metrics
from service.probes.budget import GPU_FRACTION, HOST_FRACTION, host_memory_bytes, process_memory_limit
from service.probes.db import Database
from service.probes.executor import ProbeExecutor
from service.probes.process import STARTUP_TIMEOUT_S, Outcome, ProbeProcess
from service.probes.repository import INTERRUPTED
from service.probes.schemas import ProbeJob, RunBackend
from service.settings import CPU_DEVICE, Settings

__all__ = ["RAY_ACCELERATOR_TYPES", "RayProbeExecutor", "accelerator_type", "run_probe_task"]

logger = logging.getLogger(__name__)

# Catalog GPU id → the accelerator type Ray detects on such a node (ray.util.accelerators, Ray 2.x).
RAY_ACCELERATOR_TYPES: Mapping[str, str] = {
    "a100-40gb": "A100-40G",
    "a100-80gb": "A100-80G",
    "a800-80gb": "A800",
    "h100-sxm": "H100",
    "h100-pcie": "H100",
    "h200": "H200",
    "h20": "H20",
    "l40s": "L40S",
    "l4": "L4",
    "a10g": "A10G",
    "mi300x": "AMD-Instinct-MI300X-OAM",
    "b200": "B200",
}
RAY_DEVICE = "ray"  # the device a job records until its task reports the node it ran on
POLL_S = 0.2  # how often the monitor thread collects finished tasks
# A task the cluster cannot place (no node with its resources) is cancelled after this long past its own limit.
PLACEMENT_TIMEOUT_S = 600.0
INTERRUPTED_RAY = "interrupted: the Ray worker running the probe died"


def accelerator_type(gpu: str | None) -> str | None:
    """The Ray accelerator type of a catalog GPU id; None for no GPU named or one Ray has no type for."""
    return None if gpu is None else RAY_ACCELERATOR_TYPES.get(gpu)


def run_probe_task(
    runner: str, request_json: str, device: str, memory_limit_bytes: int | None, timeout_s: float
) -> tuple[str | None, str | None, str]:
    """The body of a probe's Ray task: (ProbeResult JSON or None, error or None, node) of one probe process."""
    request = ProbeRequest.model_validate_json(request_json)
    process = ProbeProcess(runner, request, device, f"ray-{request.kind}", memory_limit_bytes)
    process.start()
    outcome = process.wait(timeout_s)
    node = ray.get_runtime_context().get_node_id()[:12]
    return (None if outcome.result is None else outcome.result.model_dump_json(by_alias=True), outcome.error, node)


@functools.cache
def _remote_task() -> Any:
    """run_probe_task as a Ray remote function (exported to the cluster once per process)."""
    return ray.remote(run_probe_task)


@dataclass
class _InFlight:
    job_id: str
    dispatched: float
    deadline_s: float


class RayProbeExecutor(ProbeExecutor):
    """Dispatches each probe job as a Ray task and records the outcomes a monitor thread collects."""

    def __init__(self, db: Database, settings: Settings, metrics: Metrics | None = None) -> None:
        super().__init__(db, settings, metrics)
        self._address = settings.ray_address
        self._in_flight: dict[Any, _InFlight] = {}  # ObjectRef → job
        self._pending: list[ProbeJob] = []  # recovered at start, dispatched once Ray is up
        self._monitor: threading.Thread | None = None
        self._resources: dict[str, float] = {}
        self._flights = threading.Lock()  # _in_flight is written by submitting threads and the monitor

    def queue_depth(self) -> int:
        """Probes dispatched to the cluster and not ended (waiting for a node or running there)."""
        with self._flights:
            return len(self._in_flight)

    def budget(self, device: str) -> int:
        return self._budgets.get(device, self._budgets[CPU_DEVICE])

    def _start_workers(self) -> None:
        if not ray.is_initialized():
            ray.init(address=self._address, include_dashboard=False, logging_level=logging.WARNING)
        self._resources = dict(ray.cluster_resources())

    def _run_workers(self) -> None:
        for job in self._pending:
            self._submit_task(job)
        self._pending.clear()
        self._monitor = threading.Thread(target=self._collect, name="memplan-probes-ray", daemon=True)
        self._monitor.start()

    def _stop_workers(self) -> None:
        """Cancel the tasks in flight (their jobs fail as interrupted) and leave the cluster."""
        if self._monitor is not None:
            self._monitor.join(POLL_S * 10)
            self._monitor = None
        with self._flights:
            flights, self._in_flight = self._in_flight, {}
        for ref, flight in flights.items():
            ray.cancel(ref, force=True)
            self.record(flight.job_id, Outcome(error=INTERRUPTED), 0.0)

    def _candidates(self, request: ProbeRequest) -> tuple[RunBackend, list[str]]:
        if request.backend in ("cpu", "fake"):
            return request.backend, [CPU_DEVICE]
        if self._has_gpus(request.gpu):
            return "cuda", [f"cuda:{request.gpu or 'any'}"]
        if request.backend == "auto":
            return "cpu", [CPU_DEVICE]
        wanted = f"{request.gpu} GPUs" if request.gpu else "GPUs"
        msg = f"the Ray cluster has no {wanted} (ray.cluster_resources()); use backend cpu, fake or auto"
        raise SpecError([FieldProblem(("backend",), msg, "no_device")])

    def _has_gpus(self, gpu: str | None) -> bool:
        if not self._resources.get("GPU"):
            return False
        kind = accelerator_type(gpu)
        return kind is None or self._resources.get(f"accelerator_type:{kind}", 0) > 0

    def _compute_budgets(self) -> dict[str, int]:
        """cpu: MEMPLAN_PROBE_MAX_BYTES or half of this machine's memory; cuda:<gpu id>: it or 90% of the catalog
        GPU's memory (the node the task lands on has that GPU); cuda:any falls back to the cpu budget."""
        budgets = {CPU_DEVICE: self._max_bytes or int(HOST_FRACTION * host_memory_bytes())}
        for gpu in load_catalog().gpus:
            budgets[f"cuda:{gpu.id}"] = self._max_bytes or int(GPU_FRACTION * gpu.memory_bytes)
        return budgets

    def _dispatch(self, job: ProbeJob, device: str) -> None:
        if self._monitor is None:  # recovered at start, before Ray's monitor runs
            self._pending.append(job)
            return
        self._submit_task(job)

    def _submit_task(self, job: ProbeJob) -> None:
        claimed = self.claim(job.id, RAY_DEVICE)
        if claimed is None:
            return
        request = claimed.request.model_copy(update={"backend": claimed.backend, "timeout_s": claimed.timeout_s})
        options: dict[str, Any] = {"max_retries": 0, "num_cpus": 1}
        device = CPU_DEVICE
        if claimed.backend == "cuda":
            device = "cuda:0"  # the one GPU Ray gives the task (it sets CUDA_VISIBLE_DEVICES)
            options |= {"num_gpus": 1, "num_cpus": 0}
            if (kind := accelerator_type(request.gpu)) is not None:
                options["accelerator_type"] = kind
        limit = process_memory_limit(device, self.budget(device))  # none on a GPU
        ref = (
            _remote_task()
            .options(**options)
            .remote(self.runner, request.model_dump_json(by_alias=True), device, limit, claimed.timeout_s)
        )
        deadline = claimed.timeout_s + STARTUP_TIMEOUT_S + PLACEMENT_TIMEOUT_S
        with self._flights:
            self._in_flight[ref] = _InFlight(job.id, time.monotonic(), deadline)

    def _collect(self) -> None:
        """Until stopped: record each finished task's outcome; cancel tasks past their deadline."""
        while not self.stopping:
            with self._flights:
                refs = list(self._in_flight)
            if not refs:
                time.sleep(POLL_S)
                continue
            done, _ = ray.wait(refs, num_returns=len(refs), timeout=POLL_S)
            for ref in done:
                self._finish(ref)
            now = time.monotonic()
            with self._flights:
                late = [ref for ref, f in self._in_flight.items() if now - f.dispatched > f.deadline_s]
            for ref in late:
                ray.cancel(ref, force=True)

    def _finish(self, ref: Any) -> None:
        with self._flights:
            flight = self._in_flight.get(ref)
        if flight is None:
            return
        outcome = self._outcome(ref, flight)
        self.record(flight.job_id, outcome, time.monotonic() - flight.dispatched)
        with self._flights:
            self._in_flight.pop(ref, None)

    def _outcome(self, ref: Any, flight: _InFlight) -> Outcome:
        try:
            result_json, error, _node = ray.get(ref, timeout=POLL_S * 10)
        except TaskCancelledError:
            return Outcome(error=f"the Ray task did not finish within {flight.deadline_s:g} s (cancelled)")
        except GetTimeoutError:
            return Outcome(error="the Ray task's outcome could not be read")
        except RayError as exc:  # WorkerCrashedError, NodeDiedError, RayTaskError, …
            logger.warning("probe %s: the Ray task failed: %s", flight.job_id, exc)
            return Outcome(error=f"{INTERRUPTED_RAY} ({type(exc).__name__})")
        if result_json is not None:
            return Outcome(result=ProbeResult.model_validate_json(result_json))
        return Outcome(error=error or "no result")
