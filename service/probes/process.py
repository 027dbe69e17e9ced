"""One probe in its own spawned process, seen from the server: start it, wait with a deadline, stop it."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import wait

from pydantic import ValidationError

from planner.probe import ProbeRequest, ProbeResult
from service.probes import child
from service.probes.devices import visible_cuda_devices

__all__ = ["Outcome", "ProbeProcess"]

logger = logging.getLogger(__name__)

# 'spawn', not 'fork': a fresh interpreter that imports torch itself, with no server threads or sockets copied.
_CONTEXT = multiprocessing.get_context("spawn")
EXIT_GRACE_S = 5.0  # how long a process that sent its result, or was terminated, gets to exit before SIGKILL
# Starting a probe process (a fresh interpreter importing torch, transformers and peft) takes about 8 s on a busy
# 2-core machine; it does not count against the probe's timeout, but it may not take longer than this.
STARTUP_TIMEOUT_S = 180.0


@dataclass(frozen=True, slots=True)
class Outcome:
    """A result, or the reason there is none."""

    result: ProbeResult | None = None
    error: str | None = None


def _death(exitcode: int | None) -> str:
    """Why a process that sent nothing ended."""
    if exitcode is None:
        return "the probe process did not exit"
    if exitcode >= 0:
        return f"the probe process exited with code {exitcode} without a result"
    try:
        name = signal.Signals(-exitcode).name
    except ValueError:
        name = f"signal {-exitcode}"
    hint = " (out of host memory? the kernel's OOM killer sends it)" if -exitcode == signal.SIGKILL else ""
    return f"the probe process was killed by {name}{hint}"


class ProbeProcess:
    """A spawned process running `runner` on one request, on one device."""

    def __init__(
        self, runner: str, request: ProbeRequest, device: str, label: str, memory_limit_bytes: int | None = None
    ) -> None:
        self._receiver, sender = _CONTEXT.Pipe(duplex=False)
        args = (
            runner,
            request.model_dump_json(by_alias=True),
            visible_cuda_devices(device, os.environ),
            sender,
            os.getpid(),
            memory_limit_bytes,
        )
        self._process = _CONTEXT.Process(target=child.main, args=args, name=f"memplan-probe-{label}")
        self._sender = sender
        self._label = label
        self._lock = threading.Lock()  # terminate() comes from another thread than wait()
        self._closed = False

    def start(self) -> None:
        self._process.start()
        self._sender.close()  # the child holds the only sending end now: its death reads as EOF here

    def terminate(self) -> None:
        """Ask the process to stop (SIGTERM); wait() then returns."""
        with self._lock:
            if not self._closed and self._process.is_alive():
                self._process.terminate()

    def wait(
        self,
        timeout_s: float,
        on_phase: Callable[[str], object] | None = None,
        startup_timeout_s: float = STARTUP_TIMEOUT_S,
    ) -> Outcome:
        """The outcome within `timeout_s` of the probe starting (its runner imported); after it the process is
        killed and the outcome is a timeout. Starting may take up to `startup_timeout_s` more. Each
        ("phase", name) the probe sends on the way goes to `on_phase`."""
        started = False
        deadline = time.monotonic() + startup_timeout_s
        try:
            while True:
                message = self._next_message(max(0.0, deadline - time.monotonic()))
                if message is None:
                    if started:
                        return Outcome(error=f"timed out after {timeout_s:g} s")
                    return Outcome(error=f"the probe process did not start within {startup_timeout_s:g} s")
                if message and message[0] == "phase":
                    if on_phase is not None:
                        on_phase(message[1])
                    continue
                if message and message[0] == child.STARTED and not started:
                    started, deadline = True, time.monotonic() + timeout_s
                    continue
                return self._outcome(message) if message else Outcome(error=self._death())
        finally:
            self._close()

    def _next_message(self, timeout_s: float) -> tuple[str, ...] | None:
        """The next message; () when the process ended without one; None (the process killed) past `timeout_s`."""
        if not wait([self._receiver, self._process.sentinel], timeout=timeout_s):
            self._process.kill()
            return None
        return self._receive() or ()

    def _receive(self) -> tuple[str, ...] | None:
        if not self._receiver.poll(0):
            return None
        try:
            message: tuple[str, ...] = self._receiver.recv()
        except (EOFError, OSError):
            return None
        return message

    def _outcome(self, message: tuple[str, ...]) -> Outcome:
        if message[0] == "done":
            try:
                return Outcome(result=ProbeResult.model_validate_json(message[1]))
            except ValidationError as exc:
                return Outcome(error=f"{child.INVALID_RESULT}: {exc.errors()[0]['msg']}")
        logger.warning("probe %s failed: %s\n%s", self._label, message[1], message[2] if len(message) > 2 else "")
        return Outcome(error=message[1])

    def _death(self) -> str:
        self._process.join(EXIT_GRACE_S)
        return _death(self._process.exitcode)

    def _close(self) -> None:
        """Wait for the process to exit (it has sent its result, died or been killed), then release its handles."""
        with self._lock:
            self._process.join(EXIT_GRACE_S)
            if self._process.is_alive():
                self._process.kill()
                self._process.join()
            self._process.close()
            self._receiver.close()
            self._closed = True
