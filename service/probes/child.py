"""The probe process: what runs after `spawn`. It imports the runner (and so torch) here, never in the server.

It sends ("phase", name) as the probe goes (importing the runner; then the runner's own phases when it takes a
`progress` callback), then one final message, ("done", ProbeResult JSON) or ("failed", reason, traceback), and exits.
"""

from __future__ import annotations

import importlib
import inspect
import os
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
    "describe_failure",
    "load_runner",
    "main",
    "run_with_progress",
]

OUT_OF_MEMORY = "out of memory"
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
    """MemoryError, or torch's OutOfMemoryError (matched by name: this module does not import torch)."""
    return isinstance(exc, MemoryError) or any(cls.__name__ == "OutOfMemoryError" for cls in type(exc).__mro__)


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


def main(runner_path: str, request_json: str, cuda_visible_devices: str, conn: Connection, parent_pid: int) -> None:
    """Run one probe and send its outcome through `conn`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the server's to handle; it stops probes itself
    os.environ["CUDA_VISIBLE_DEVICES"] = cuda_visible_devices  # before the runner imports torch
    _exit_when_orphaned(parent_pid)
    message: tuple[str, ...]

    def progress(phase: str) -> None:
        conn.send(("phase", phase))

    try:
        progress(IMPORTING_RUNNER)
        runner = load_runner(runner_path)
        result = run_with_progress(runner, ProbeRequest.model_validate_json(request_json), progress)
        message = ("done", ProbeResult.model_validate(result).model_dump_json(by_alias=True))
    except BaseException as exc:  # everything the runner raises is the job's failure, not this process's
        message = ("failed", describe_failure(exc, runner_path), traceback.format_exc())
    try:
        conn.send(message)
    finally:
        conn.close()
