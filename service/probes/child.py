"""The probe process: what runs after `spawn`. It imports the runner (and so torch) here, never in the server.

It sends ("phase", name) as the probe goes (importing the runner; then the runner's own phases when it takes a
`progress` callback), ("started",) once the runner is imported (torch loaded: seconds that do not count against the
probe's timeout), then one final message, ("done", ProbeResult JSON) or ("failed", reason, traceback), and exits. A
memory limit (RLIMIT_DATA: heap and private anonymous mappings, where every allocation lands) is set before anything
is imported, so that an allocation past it fails inside the probe, as out of memory, instead of the kernel's OOM
killer choosing.
"""

from __future__ import annotations

import importlib
import inspect
import os
import resource
import signal
import threading
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from pydantic import ValidationError

from planner.probe import ProbeRequest, ProbeResult

__all__ = [
    "IMPORTING_RUNNER",
    "INVALID_RESULT",
    "OUT_OF_MEMORY",
    "STARTED",
    "describe_failure",
    "limit_memory",
    "load_runner",
    "main",
    "run_with_progress",
]

OUT_OF_MEMORY = "out of memory"
STARTED = "started"
# torch's CPU allocator raises a plain RuntimeError with this message when malloc fails (models.measurement)
CPU_ALLOCATOR_FAILURE = "DefaultCPUAllocator: can't allocate memory"
INVALID_RESULT = "the probe runner returned an invalid ProbeResult"
IMPORTING_RUNNER = "importing the probe runner (torch)"
MAX_REASON_CHARS = 2000
PARENT_POLL_S = 1.0  # how often an orphaned probe notices that the server is gone

Runner = Callable[..., Any]  # (ProbeRequest) -> ProbeResult, optionally with progress=Callable[[str], None]


def load_runner(path: str) -> Runner:
    """'package.module:function' → the function (importing the module); ImportError when there is none."""
    module_name, _, attribute = path.partition(":")
    module = importlib.import_module(module_name)
    try:
        runner = getattr(module, attribute)
    except AttributeError:
        raise ImportError(f"module {module_name} has no attribute {attribute!r}") from None
    if not callable(runner):
        raise TypeError(f"{path} is not callable")
    return runner  # type: ignore[no-any-return]


def run_with_progress(runner: Runner, request: ProbeRequest, progress: Callable[[str], None]) -> Any:
    """Call the runner, with `progress` when it takes one (models.runner.run_probe does; test runners may not)."""
    if "progress" in inspect.signature(runner).parameters:
        return runner(request, progress=progress)
    return runner(request)


def _is_out_of_memory(exc: BaseException) -> bool:
    """MemoryError, torch's OutOfMemoryError (matched by name: this module does not import torch), or the CPU
    allocator's RuntimeError."""
    return (
        isinstance(exc, MemoryError)
        or any(cls.__name__ == "OutOfMemoryError" for cls in type(exc).__mro__)
        or (isinstance(exc, RuntimeError) and CPU_ALLOCATOR_FAILURE in str(exc))
    )


def limit_memory(limit_bytes: int | None) -> None:
    """Cap this process's data memory (RLIMIT_DATA, soft and hard) at `limit_bytes`; None leaves it as it is.

    RLIMIT_DATA counts the heap and private writable mappings (malloc, torch's CPU allocator, Python objects),
    not address space reserved but unused (as RLIMIT_AS would, e.g. per-thread malloc arenas), and needs no root.
    """
    if limit_bytes is None:
        return
    _, hard = resource.getrlimit(resource.RLIMIT_DATA)
    limit = limit_bytes if hard == resource.RLIM_INFINITY else min(limit_bytes, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))


def _invalid_result(exc: ValidationError) -> str:
    first = exc.errors(include_url=False)[0]
    return f"{INVALID_RESULT} ({exc.error_count()} problems; {'.'.join(map(str, first['loc']))}: {first['msg']})"


def describe_failure(exc: BaseException, runner_path: str) -> str:
    """The reason a job shows: 'out of memory', a runner that cannot load, or 'ExceptionType: message'."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, ValidationError) and exc.title == ProbeResult.__name__:
        reason = _invalid_result(exc)
    elif _is_out_of_memory(exc):
        reason = OUT_OF_MEMORY + (f": {message}" if message else "")
    elif isinstance(exc, ImportError):
        reason = f"the probe runner {runner_path} cannot be imported: {exc}"
    else:
        reason = type(exc).__name__ + (f": {message}" if message else "")
    return reason if len(reason) <= MAX_REASON_CHARS else reason[: MAX_REASON_CHARS - 1] + "…"


def _exit_when_orphaned(parent_pid: int) -> None:
    """A daemon thread that ends this process if the server dies without stopping it."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_POLL_S)
        os._exit(1)

    threading.Thread(target=watch, name="memplan-probe-parent-watch", daemon=True).start()


def main(
    runner_path: str,
    request_json: str,
    cuda_visible_devices: str,
    conn: Connection,
    parent_pid: int,
    memory_limit_bytes: int | None = None,
) -> None:
    """Run one probe and send ("started",), then its outcome, through `conn`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the server's to handle; it stops probes itself
    os.environ["CUDA_VISIBLE_DEVICES"] = cuda_visible_devices  # before the runner imports torch
    _exit_when_orphaned(parent_pid)
    message: tuple[str, ...]

    def progress(phase: str) -> None:
        conn.send(("phase", phase))

    try:
        limit_memory(memory_limit_bytes)
        progress(IMPORTING_RUNNER)
        runner = load_runner(runner_path)
        request = ProbeRequest.model_validate_json(request_json)
        conn.send((STARTED,))
        result = run_with_progress(runner, request, progress)
        message = ("done", ProbeResult.model_validate(result).model_dump_json(by_alias=True))
    except BaseException as exc:  # everything the runner raises is the job's failure, not this process's
        message = ("failed", describe_failure(exc, runner_path), traceback.format_exc())
    try:
        conn.send(message)
    finally:
        conn.close()
