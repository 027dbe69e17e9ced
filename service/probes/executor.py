"""The bounded probe executor: one worker thread per device, each running one probe at a time in its own process.

Lifecycle: start() creates the tables, fails this executor's jobs left running by a stopped server (interrupted)
and queues its jobs left queued again; stop() terminates running probes (failed, interrupted) and leaves waiting
jobs queued in the database for the next start. Nothing is lost silently.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Sequence

from planner import Catalog, SpecError
from planner.probe import ProbeRequest
from service.probes import repository
from service.probes.admission import admit, check_probe_side
from service.probes.db import Database
from service.probes.devices import candidate_devices, visible_cuda_devices
from service.probes.errors import ProbeQueueFullError, ProbesUnavailableError
from service.probes.process import Outcome, ProbeProcess
from service.probes.repository import INTERRUPTED
from service.probes.schemas import ProbeJob
from service.settings import Settings

__all__ = ["RETRY_AFTER_S", "ProbeExecutor"]

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
        started = self._start(request, job_id)
        if isinstance(started, ProbeProcess):
            outcome = started.wait(job.timeout_s, lambda phase: repository.set_phase(self._executor.db, job_id, phase))
            with self._lock:
                self._process = None
        else:
            outcome = started
        if outcome.error is not None and self._executor.stopping:
            outcome = Outcome(error=INTERRUPTED)
        self._executor.record(job_id, outcome)

    def _start(self, request: ProbeRequest, job_id: str) -> ProbeProcess | Outcome:
        """The started probe process, or the outcome of a probe that could not start."""
        with self._lock:
            if self._executor.stopping:
                return Outcome(error=INTERRUPTED)
            try:
                process = ProbeProcess(self._executor.runner, request, self.device, label=job_id[:8])
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
    """Queues probe jobs per device, runs them in spawned processes with a timeout, and records the outcome."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.runner = settings.probe_runner
        self._devices: Sequence[str] = settings.probe_devices
        self._queue_limit = settings.probe_queue_limit
        self._max_timeout_s = settings.probe_max_timeout_s
        self._owner = settings.probe_executor_id
        self._workers: dict[str, _Worker] = {}
        self._lock = threading.Lock()  # queue limit check and enqueue are one step
        self._stopping = threading.Event()
        self._started = False

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    @property
    def running(self) -> bool:
        """Started and not stopping: it takes jobs, and its database has its tables."""
        return self._started and not self.stopping

    def start(self) -> None:
        """Create the tables, recover this executor's unfinished jobs, start the workers (again after a stop)."""
        for device in self._devices:
            visible_cuda_devices(device, os.environ)  # a GPU this server cannot see fails here, not per probe
        self._stopping.clear()
        self._workers = {device: _Worker(device, self) for device in self._devices}
        self.db.create_tables()
        for job_id in repository.mark_interrupted(self.db, owner=self._owner):
            logger.warning("probe %s: %s", job_id, INTERRUPTED)
        for job in repository.queued(self.db, owner=self._owner):
            self._requeue(job)
        for worker in self._workers.values():
            worker.start()
        self._started = True

    def stop(self) -> None:
        """Terminate running probes (recorded as interrupted), leave waiting ones queued, release the database."""
        self._stopping.set()
        for worker in self._workers.values():
            worker.jobs.put(None)
            worker.interrupt()
        for worker in self._workers.values():
            worker.join(STOP_JOIN_S)
        self._started = False
        self.db.dispose()

    def submit(self, request: ProbeRequest, catalog: Catalog) -> ProbeJob:
        """Check the request with the planner (SpecError), then queue it (ProbeQueueFullError beyond the limit)."""
        if not self.running:
            raise ProbesUnavailableError
        check_probe_side(self.runner)
        label = admit(request, catalog)
        backend, devices = candidate_devices(request, self._devices)
        with self._lock:
            if sum(w.jobs.qsize() for w in self._workers.values()) >= self._queue_limit:
                raise ProbeQueueFullError(self._queue_limit, RETRY_AFTER_S)
            worker = min((self._workers[d] for d in devices), key=lambda w: w.load)
            job = repository.create(
                self.db,
                request,
                model=label,
                backend=backend,
                device=worker.device,
                owner=self._owner,
                timeout_s=min(request.timeout_s, self._max_timeout_s),
            )
            worker.jobs.put(job.id)
        return job

    def claim(self, job_id: str, device: str) -> ProbeJob | None:
        """Mark a queued job running on `device`; None when it is no longer queued."""
        backend, _ = candidate_devices(repository.get(self.db, job_id).request, self._devices)
        return repository.mark_running(self.db, job_id, device=device, backend=backend)

    def record(self, job_id: str, outcome: Outcome) -> None:
        if outcome.result is not None:
            repository.finish(self.db, job_id, outcome.result)
        else:
            repository.fail(self.db, job_id, outcome.error or "no result")

    def _requeue(self, job: ProbeJob) -> None:
        """Queue a job found waiting at start on a worker of today's devices (the queue limit does not apply)."""
        try:
            backend, devices = candidate_devices(job.request, self._devices)
        except SpecError as exc:
            repository.fail(self.db, job.id, str(exc))
            return
        worker = min((self._workers[d] for d in devices), key=lambda w: w.load)
        worker.jobs.put(job.id)
        logger.info("probe %s: queued again after a restart, on %s (%s)", job.id, worker.device, backend)
