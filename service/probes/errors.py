"""Probe-job errors; service.errors maps each to one HTTP status."""

from __future__ import annotations

__all__ = ["ProbeQueueFullError", "ProbesUnavailableError", "UnknownProbeJobError"]

MAX_ID_CHARS = 64  # a job id is a 36-character UUID; anything longer is only echoed this far


class UnknownProbeJobError(LookupError):
    """No probe job has this id (HTTP 404)."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        shown = job_id if len(job_id) <= MAX_ID_CHARS else job_id[: MAX_ID_CHARS - 1] + "…"
        super().__init__(f"no probe job with id '{shown}'")


class ProbeQueueFullError(RuntimeError):
    """Too many probes are waiting to start (HTTP 429 with Retry-After)."""

    def __init__(self, limit: int, retry_after_s: int) -> None:
        self.limit, self.retry_after_s = limit, retry_after_s
        super().__init__(f"{limit} probes are already waiting (MEMPLAN_PROBE_QUEUE_LIMIT); retry later")


class ProbesUnavailableError(RuntimeError):
    """The probe executor is not running (the app was built but never started) or its database is unreachable
    (HTTP 503)."""

    def __init__(self, message: str = "the probe executor is not running") -> None:
        super().__init__(message)
