"""The bounded probe executor: one worker thread per device, each running one probe at a time in its own process.

Lifecycle: start() migrates the database, fails this executor's jobs left running by a stopped server
(interrupted) and queues its jobs left queued again; stop() terminates running probes (failed, interrupted) and
leaves waiting jobs queued in the database for the next start. Nothing is lost silently.

`ProbeExecutor` holds what every executor shares (admission, the job store, recovery, outcomes, metrics);
`LocalProbeExecutor` runs probes on this machine, `service.probes.ray_executor.RayProbeExecutor` on a Ray cluster.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Sequence

from planner import Catalog, SpecError
from planner.probe import ProbeRequest
from service.metrics import Metrics, probe_outcome
from service.probes import repository
from service.probes.admission import admit, check_probe_side
from service.probes.budget import probe_budgets, process_memory_limit
from service.probes.db import Database
from service.probes.devices import candidate_devices, visible_cuda_devices
from service.probes.errors import ProbeQueueFullError, ProbesUnavailableError
from service.probes.process import Outcome, ProbeProcess
from service.probes.repository import INTERRUPTED
from service.probes.schemas import ProbeJob, RunBackend
from service.settings import Settings

__all__ = ["RETRY_AFTER_S", "LocalProbeExecutor", "ProbeExecutor", "make_executor"]

logger = logging.getLogger(__name__)

# Retry-After of a 429: the scaled-down probes of DESIGN §4 take seconds each, so a slot frees within a minute.
RETRY_AFTER_S = 30
STOP_JOIN_S = 15.0  # how long stop() waits for each worker (its probe gets SIGTERM, then SIGKILL after 5 s)


class _Worker(threading.Thread):
    """Runs the jobs queued for one device, one at a time."""

    def __init__(self, device: str, executor: ProbeExecutor) -> None:
        super().__init__(name=f"memplan-probes-{device}", daemon=True)
        self.device = device
        self.jobs: queue.SimpleQueue[str | None] = queue.SimpleQueue()  # None wakes the thread to stop
        self.busy = False
        self._executor = executor
        self._process: ProbeProcess | None = None
        self._lock = threading.Lock()

    @property
    def load(self) -> int:
        return self.jobs.qsize() + self.busy

    def run(self) -> None:
        while (job_id := self.jobs.get()) is not None and not self._executor.stopping:
            self.busy = True
            try:
                self._run(job_id)
            except Exception:  # a database error must not end the worker; the job is recovered at next start
                logger.exception("probe %s: the worker failed to run or record it", job_id)
            finally:
                self.busy = False

    def _run(self, job_id: str) -> None:
        job = self._executor.claim(job_id, self.device)
        if job is None:
            return
        request = job.request.model_copy(update={"backend": job.backend, "timeout_s": job.timeout_s})
        began = time.monotonic()
        started = self._start(request, job_id)
        if isinstance(started, ProbeProcess):
            outcome = started.wait(job.timeout_s, lambda phase: repository.set_phase(self._executor.db, job_id, phase))
            with self._lock:
                self._process = None
        else:
            outcome = started
        if outcome.error is not None and self._executor.stopping:
            outcome = Outcome(error=INTERRUPTED)
        self._executor.record(job_id, outcome, time.monotonic() - began)

    def _start(self, request: ProbeRequest, job_id: str) -> ProbeProcess | Outcome:
        """The started probe process, or the outcome of a probe that could not start."""
        with self._lock:
            if self._executor.stopping:
                return Outcome(error=INTERRUPTED)
            try:
                limit = self._executor.memory_limit(self.device)
                process = ProbeProcess(self._executor.runner, request, self.device, job_id[:8], limit)
                process.start()
            except Exception as exc:  # no process (fork limit, file descriptors): the job fails, the worker goes on
                logger.exception("probe %s: the probe process could not start", job_id)
                return Outcome(error=f"the probe process could not start: {exc}")
            self._process = process
            return process

    def interrupt(self) -> None:
        """Terminate the running probe, if any (stop() has already been flagged)."""
        with self._lock:
            if self._process is not None:
                self._process.terminate()


class ProbeExecutor:
    """Admission, the job store, recovery at start and outcomes: what every executor shares. Subclasses say where
    a queued job runs (_dispatch), start and stop their workers, and count the jobs waiting."""

    def __init__(self, db: Database, settings: Settings, metrics: Metrics | None = None) -> None:
        self.db = db
        self.metrics = metrics or Metrics()
        self.runner = settings.probe_runner
        self._devices: Sequence[str] = settings.probe_devices
        self._queue_limit = settings.probe_queue_limit
        self._max_timeout_s = settings.probe_max_timeout_s
        self._max_bytes = settings.probe_max_bytes
        self._budgets: dict[str, int] = {}
        self._owner = settings.probe_executor_id
        self._lock = threading.Lock()  # queue limit check and enqueue are one step
        self._stopping = threading.Event()
        self._started = False
        self.metrics.watch_queue(self.queue_depth)

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    @property
    def running(self) -> bool:
        """Started and not stopping: it takes jobs, and its database has its tables."""
        return self._started and not self.stopping

    def queue_depth(self) -> int:
        """Jobs waiting to start."""
        raise NotImplementedError

    def budget(self, device: str) -> int:
        """The largest planned peak a probe on `device` may have."""
        return self._budgets[device]

    def memory_limit(self, device: str) -> int | None:
        """The OS memory limit of a probe process on `device`."""
        return process_memory_limit(device, self.budget(device))

    def start(self) -> None:
        """Migrate the database, recover this executor's unfinished jobs, start the workers (again after a stop)."""
        self._stopping.clear()
        self._budgets = self._compute_budgets()
        self._start_workers()
        self.db.migrate()
        for job_id in repository.mark_interrupted(self.db, owner=self._owner):
            logger.warning("probe %s: %s", job_id, INTERRUPTED)
        for job in repository.queued(self.db, owner=self._owner):
            self._requeue(job)
        self._run_workers()
        self._started = True

    def stop(self) -> None:
        """Terminate running probes (recorded as interrupted), leave waiting ones queued, release the database."""
        self._stopping.set()
        self._stop_workers()
        self._started = False
        self.db.dispose()

    def submit(self, request: ProbeRequest, catalog: Catalog) -> ProbeJob:
        """Check the request with the planner (SpecError: model, caps, planned peak against this server's budget),
        then queue it (ProbeQueueFullError beyond the limit)."""
        if not self.running:
            raise ProbesUnavailableError
        check_probe_side(self.runner)
        backend, devices = self._candidates(request)
        label = admit(request, catalog, backend, min(self.budget(d) for d in devices))
        with self._lock:
            if self.queue_depth() >= self._queue_limit:
                raise ProbeQueueFullError(self._queue_limit, RETRY_AFTER_S)
            device = self._choose(devices)
            job = repository.create(
                self.db,
                request,
                model=label,
                backend=backend,
                device=device,
                owner=self._owner,
                timeout_s=min(request.timeout_s, self._max_timeout_s),
            )
            self._dispatch(job, device)
        return job

    def claim(self, job_id: str, device: str) -> ProbeJob | None:
        """Mark a queued job running on `device`; None when it is no longer queued."""
        backend, _ = self._candidates(repository.get(self.db, job_id).request)
        return repository.mark_running(self.db, job_id, device=device, backend=backend)

    def record(self, job_id: str, outcome: Outcome, duration_s: float) -> None:
        """Store the outcome of a job (once: a job that already ended keeps its outcome) and count it."""
        if outcome.result is not None:
            ended = repository.finish(self.db, job_id, outcome.result)
        else:
            ended = repository.fail(self.db, job_id, outcome.error or "no result")
        if ended:
            oom = outcome.result is not None and outcome.result.out_of_memory
            self.metrics.probe_ended(probe_outcome(outcome.error, oom), duration_s)

    def _requeue(self, job: ProbeJob) -> None:
        """Queue a job found waiting at start on a worker of today's devices (the queue limit does not apply)."""
        try:
            backend, devices = self._candidates(job.request)
        except SpecError as exc:
            repository.fail(self.db, job.id, str(exc))
            return
        device = self._choose(devices)
        self._dispatch(job, device)
        logger.info("probe %s: queued again after a restart, on %s (%s)", job.id, device, backend)

    def _candidates(self, request: ProbeRequest) -> tuple[RunBackend, list[str]]:
        return candidate_devices(request, self._devices)

    def _choose(self, devices: list[str]) -> str:
        return devices[0]

    def _compute_budgets(self) -> dict[str, int]:
        return probe_budgets(self._devices, self._max_bytes, os.environ)

    def _start_workers(self) -> None:
        """Before recovery: be ready to take dispatched jobs."""

    def _run_workers(self) -> None:
        """After recovery: start running them."""

    def _stop_workers(self) -> None:
        raise NotImplementedError

    def _dispatch(self, job: ProbeJob, device: str) -> None:
        raise NotImplementedError


class LocalProbeExecutor(ProbeExecutor):
    """Queues probe jobs per device, runs them in spawned processes with a timeout, and records the outcome."""

    def __init__(self, db: Database, settings: Settings, metrics: Metrics | None = None) -> None:
        super().__init__(db, settings, metrics)
        self._workers: dict[str, _Worker] = {}

    def queue_depth(self) -> int:
        return sum(w.jobs.qsize() for w in self._workers.values())

    def _start_workers(self) -> None:
        for device in self._devices:
            visible_cuda_devices(device, os.environ)  # a GPU this server cannot see fails here, not per probe
        self._workers = {device: _Worker(device, self) for device in self._devices}

    def _run_workers(self) -> None:
        for worker in self._workers.values():
            worker.start()

    def _stop_workers(self) -> None:
        for worker in self._workers.values():
            worker.jobs.put(None)
            worker.interrupt()
        for worker in self._workers.values():
            worker.join(STOP_JOIN_S)

    def _choose(self, devices: list[str]) -> str:
        return min((self._workers[d] for d in devices), key=lambda w: w.load).device

    def _dispatch(self, job: ProbeJob, device: str) -> None:
        self._workers[device].jobs.put(job.id)


def make_executor(db: Database, settings: Settings, metrics: Metrics) -> ProbeExecutor:
    """The executor MEMPLAN_EXECUTOR names: local (default) or ray (imported only then)."""
    if settings.executor == "ray":
        from service.probes.ray_executor import RayProbeExecutor

        return RayProbeExecutor(db, settings, metrics)
    return LocalProbeExecutor(db, settings, metrics)
