"""What a measurement backend reports, and the interface a measured step sees."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal, Protocol

import torch

__all__ = [
    "OUT_OF_MEMORY",
    "BackendName",
    "Measurement",
    "Step",
    "StepContext",
    "is_out_of_memory",
    "storage_bytes",
]

BackendName = Literal["cpu", "fake", "cuda"]
OUT_OF_MEMORY = (torch.OutOfMemoryError, MemoryError)  # OOM is a result, not a crash
# What torch's CPU allocator raises (a plain RuntimeError) when malloc fails, e.g. under the probe process's
# memory limit: "[enforce fail at alloc_cpu.cpp:127] ... DefaultCPUAllocator: can't allocate memory: ...".
CPU_ALLOCATOR_FAILURE = "DefaultCPUAllocator: can't allocate memory"


def is_out_of_memory(exc: BaseException) -> bool:
    """An allocation failure: CUDA's OutOfMemoryError, Python's MemoryError, or the CPU allocator's RuntimeError."""
    return isinstance(exc, OUT_OF_MEMORY) or (isinstance(exc, RuntimeError) and CPU_ALLOCATOR_FAILURE in str(exc))


@dataclass(frozen=True, slots=True)
class Measurement:
    """Bytes one step held: at its peak, at its start and end, per marked region, per category at the peak."""

    backend: BackendName
    peak_bytes: int
    start_bytes: int
    end_bytes: int
    peak_region: str = ""
    region_peaks: dict[str, int] = field(default_factory=dict)
    categories_at_peak: dict[str, int] = field(default_factory=dict)  # cpu/fake only
    reserved_peak_bytes: int | None = None  # cuda only: the caching allocator's reserve
    wall_s: float = 0.0
    device_s: float | None = None  # cuda only: CUDA events around the step
    out_of_memory: bool = False  # the step raised an out-of-memory error; the peak is the one reached before it
    live_at_peak: tuple[tuple[str, int, int], ...] = ()  # explain mode: (op:dtype[shape]@region, bytes, storages)


class StepContext(Protocol):
    """Handed to the measured function: name regions of the step and label storages by role."""

    def mark(self, region: str) -> None: ...

    def tag(self, category: str, tensors: Iterable[torch.Tensor]) -> None: ...


Step = Callable[[StepContext], object]


def storage_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes of the distinct storages behind `tensors` (views and tied weights count once)."""
    seen: dict[int, int] = {}
    for t in tensors:
        st = t.untyped_storage()
        seen.setdefault(st._cdata, st.nbytes())
    return sum(seen.values())
