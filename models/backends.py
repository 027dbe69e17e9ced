"""Measurement backends: what one step allocates, measured three ways behind one interface, `measure_step(fn)`.

- `cpu`:  every op output's storage is counted once while it lives (models.live_storages), on top of the
          storages held before the step. Exact, runs anywhere.
- `fake`: the same accounting under FakeTensorMode: nothing is allocated, so full-size shapes can be traced.
- `cuda`: the caching allocator's counters (`max_memory_allocated`, `max_memory_reserved`) and CUDA events.

Tensors allocated inside a kernel and never returned (workspaces) are invisible to cpu/fake; CUDA sees them.
"""

from __future__ import annotations

import contextlib
import platform
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Literal, Protocol

import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from models.live_storages import measure_live
from models.measurement import (
    OUT_OF_MEMORY,
    BackendName,
    Measurement,
    Step,
    StepContext,
    is_out_of_memory,
    storage_bytes,
)

__all__ = [
    "OUT_OF_MEMORY",
    "Backend",
    "BackendName",
    "BackendUnavailableError",
    "CpuBackend",
    "CudaBackend",
    "FakeBackend",
    "Measurement",
    "StepContext",
    "default_dtype",
    "get_backend",
    "storage_bytes",
]


class BackendUnavailableError(RuntimeError):
    """The requested backend cannot run here (cuda without a CUDA device)."""


class Backend(Protocol):
    name: BackendName

    @property
    def device(self) -> torch.device: ...

    def device_name(self) -> str: ...

    def building(self) -> contextlib.AbstractContextManager[Any]:
        """The context in which models, inputs and optimizers for this backend are created."""
        ...

    def measure_step(self, fn: Step, held: Mapping[str, Iterable[torch.Tensor]] | None = None) -> Measurement:
        """Run `fn` once and measure it; `held` names the storages that exist before it (by category)."""
        ...


class CpuBackend:
    """Real tensors on the CPU, live storages counted exactly; `explain` also lists what is live at the peak."""

    name: BackendName = "cpu"

    def __init__(self, explain: bool = False) -> None:
        self.explain = explain

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def device_name(self) -> str:
        return platform.processor() or "cpu"

    def building(self) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext()

    def measure_step(self, fn: Step, held: Mapping[str, Iterable[torch.Tensor]] | None = None) -> Measurement:
        return measure_live(self.name, fn, held, self.explain)


class FakeBackend:
    """FakeTensorMode on device cpu: shapes and dtypes propagate, no memory is allocated.

    Fake tensors stay on the cpu device (autograd on fake cuda tensors aborts a CPU-only build). Inputs and
    optimizers are created inside `building()`; models are built on the meta device in their dtype and then given
    fake cpu tensors (models.build), because Module.to() cannot swap fake parameters.
    """

    name: BackendName = "fake"

    def __init__(self, explain: bool = False) -> None:
        self.fake_mode = FakeTensorMode()
        self.explain = explain

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def device_name(self) -> str:
        return "fake"

    def building(self) -> contextlib.AbstractContextManager[Any]:
        return self.fake_mode

    def measure_step(self, fn: Step, held: Mapping[str, Iterable[torch.Tensor]] | None = None) -> Measurement:
        def faked(ctx: StepContext) -> object:
            with self.fake_mode:
                return fn(ctx)

        return measure_live(self.name, faked, held, self.explain)


class _CudaRegions:
    """Region peaks from the caching allocator: read and reset the peak counter at each mark."""

    def __init__(self) -> None:
        self.region = "start"
        self.region_peaks: dict[str, int] = {}
        self.reserved_peak = 0

    def mark(self, region: str) -> None:
        self._close()
        self.region = region

    def tag(self, category: str, tensors: Iterable[torch.Tensor]) -> None:
        return None  # the allocator knows no roles

    def _close(self) -> None:
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
        self.region_peaks[self.region] = max(self.region_peaks.get(self.region, 0), peak)
        self.reserved_peak = max(self.reserved_peak, torch.cuda.max_memory_reserved())
        torch.cuda.reset_peak_memory_stats()


class CudaBackend:
    """torch.cuda allocator statistics; the only backend whose timings mean anything."""

    name: BackendName = "cuda"

    def __init__(self) -> None:
        if not torch.cuda.is_available():
            raise BackendUnavailableError(
                "the cuda backend needs a CUDA device and a CUDA build of torch; this process has none "
                f"(torch {torch.__version__}); use backend 'cpu' or 'fake'"
            )

    @property
    def device(self) -> torch.device:
        return torch.device("cuda", torch.cuda.current_device())

    def device_name(self) -> str:
        return torch.cuda.get_device_name()

    def building(self) -> contextlib.AbstractContextManager[Any]:
        return torch.device(self.device)

    def measure_step(self, fn: Step, held: Mapping[str, Iterable[torch.Tensor]] | None = None) -> Measurement:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = torch.cuda.memory_allocated()
        regions = _CudaRegions()
        begin = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
        end = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
        began = time.perf_counter()
        begin.record()
        oom = False
        try:
            fn(regions)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            oom = True
        end.record()
        regions.mark("end")
        wall = time.perf_counter() - began
        peaks = {k: v for k, v in regions.region_peaks.items() if k != "end"} or regions.region_peaks
        peak_region = max(peaks, key=lambda k: peaks[k])
        return Measurement(
            backend=self.name,
            peak_bytes=max(regions.region_peaks.values()),
            start_bytes=start,
            end_bytes=torch.cuda.memory_allocated(),
            peak_region=peak_region,
            region_peaks=peaks,
            reserved_peak_bytes=regions.reserved_peak,
            wall_s=wall,
            device_s=begin.elapsed_time(end) / 1000,
            out_of_memory=oom,
        )


def get_backend(
    name: Literal["auto", "cpu", "fake", "cuda"], explain: bool = False
) -> CpuBackend | FakeBackend | CudaBackend:
    """`auto` is cuda where a CUDA device exists, else cpu (never the always-zero cuda counters of a CPU build).
    `explain` (cpu, fake) records which storages are live at the peak."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        return CudaBackend()
    return FakeBackend(explain) if name == "fake" else CpuBackend(explain)


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Create parameters in `dtype` (works inside FakeTensorMode, unlike module.to(dtype))."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)
