"""Probe runners for the service tests, named by MEMPLAN_PROBE_RUNNER and imported in the probe process.

They stand in for models.runner.run_probe (torch) with the same signature: a ProbeRequest in, a ProbeResult out.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from planner import count_params, load_catalog, resolve_model
from planner.probe import Comparison, ProbeRequest, ProbeResult, probe_hf_config, scale_down

MODULE = __name__
BF16_BYTES = 2
CANNED_TIMINGS_S = {"step": 0.125}


def canned(request: ProbeRequest) -> ProbeResult:
    """What a perfect probe would report: the planner's weight bytes of the scaled-down model, measured = estimated."""
    spec = scale_down(resolve_model(request.model, load_catalog()).spec, request.scale)
    weights_bytes = count_params(spec).total * BF16_BYTES
    comparisons = (
        Comparison(
            name="weights", measured_bytes=weights_bytes, estimated_bytes=weights_bytes, rel_error=0.0, exact=True
        ),
        Comparison(
            name="peak",
            measured_bytes=4 * weights_bytes,
            estimated_bytes=5 * weights_bytes,
            rel_error=0.25,
            exact=False,
        ),
    )
    return ProbeResult(
        backend="cpu" if request.backend == "auto" else request.backend,
        device=f"cpu (CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r})",
        torch_version="canned",
        transformers_version="canned",
        peft_version=None,
        kind=request.kind,
        spec=spec,
        hf_config=probe_hf_config(spec),
        training=request.training if request.kind == "training" else None,
        serving=request.serving if request.kind == "inference" else None,
        comparisons=comparisons,
        peak_rel_error=0.25,
        timings_s=CANNED_TIMINGS_S,
    )


def sleep_forever(request: ProbeRequest) -> ProbeResult:
    """A probe that never ends on its own."""
    time.sleep(3600)
    raise AssertionError("unreachable")


def raise_error(request: ProbeRequest) -> ProbeResult:
    raise RuntimeError("boom in layer 3\nsecond line of the message")


def raise_memory_error(request: ProbeRequest) -> ProbeResult:
    raise MemoryError


def exit_abruptly(request: ProbeRequest) -> ProbeResult:
    """A crash that skips Python's error handling (as a segfaulting extension would)."""
    os._exit(3)


def return_garbage(request: ProbeRequest) -> dict[str, str]:
    return {"backend": "tpu"}


ALLOCATE_BYTES = 3 << 30  # past the memory limit of a probe process whose budget is small (64 MiB + 1 GiB baseline)


def allocate_past_the_limit(request: ProbeRequest) -> ProbeResult:
    """Allocates 3 GiB (and touches it), then answers as `canned` would: only a memory limit stops it."""
    block = bytearray(ALLOCATE_BYTES)
    block[:: 1 << 20] = b"x" * len(block[:: 1 << 20])
    return canned(request)


PID_DIR_ENV = "MEMPLAN_TEST_PID_DIR"


def report_parent_and_sleep(request: ProbeRequest) -> ProbeResult:
    """Writes the pid of the process that started this probe (a Ray worker) into $MEMPLAN_TEST_PID_DIR, then
    sleeps until killed."""
    directory = os.environ[PID_DIR_ENV]
    with open(os.path.join(directory, f"{os.getppid()}.pid"), "w") as handle:
        handle.write(str(os.getppid()))
    time.sleep(3600)
    raise AssertionError("unreachable")


def phased(request: ProbeRequest, progress: Callable[[str], None]) -> ProbeResult:
    """Reports a phase, holds it for a moment (the test reads it), then answers like canned."""
    progress("measuring a canned step")
    time.sleep(float(os.environ.get("MEMPLAN_TEST_PHASE_HOLD_S", "1.0")))
    return canned(request)
