"""Exact accounting of live tensor storages during a step: the cpu and fake backends.

A TorchDispatchMode registers every storage an op returns, once (keyed by the storage, so views and aliases count
once), and a weak reference to the storage's Python object reports its release: torch keeps that object alive
exactly as long as the storage, so the callback fires when the memory is freed. Storages that exist before the
step (parameters, optimizer state, the batch) are registered first, by category. Agrees with
torch.distributed._tools.mem_tracker.MemTracker to the byte (tests/models/test_backends.py).
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from models.measurement import BackendName, Measurement, Step, is_out_of_memory

__all__ = ["measure_live"]


class _LiveStorages(TorchDispatchMode):
    """Counts each storage once from the op that first returns it until Python sees it freed."""

    def __init__(self, explain: bool = False) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.explain = explain
        self.op = ""  # the op whose outputs are being registered (explain mode)
        self.origin: dict[int, str] = {}
        self.snapshot: list[tuple[str, int]] = []
        self.live: dict[int, tuple[int, str, weakref.ref[torch.UntypedStorage]]] = {}
        self.by_category: dict[str, int] = {}
        self.total = self.peak = 0
        self.region = "start"
        self.peak_region = "start"
        self.region_peaks: dict[str, int] = {}
        self.categories_at_peak: dict[str, int] = {}
        self.closed = False

    # accounting
    def add(self, t: torch.Tensor, category: str) -> None:
        st = t.untyped_storage()
        key, nbytes = st._cdata, st.nbytes()
        entry = self.live.get(key)
        if entry is not None:
            old, old_category, ref = entry
            if old == nbytes:
                return
            self._account(old_category, -old)
            self.live[key] = (nbytes, old_category, ref)
            self._account(old_category, nbytes)
        else:
            self.live[key] = (nbytes, category, weakref.ref(st, self._freed_callback(key)))
            self._account(category, nbytes)
            if self.explain:
                where = self.op if category.startswith("allocated/") else category
                dtype = str(t.dtype).removeprefix("torch.")
                self.origin[key] = f"{where}:{dtype}{list(t.shape)}@{self.region}"
        self._update_peak()

    def retag(self, t: torch.Tensor, category: str) -> None:
        key = t.untyped_storage()._cdata
        entry = self.live.get(key)
        if entry is None:
            self.add(t, category)
            return
        nbytes, old, ref = entry
        self._account(old, -nbytes)
        self._account(category, nbytes)
        self.live[key] = (nbytes, category, ref)

    def _freed_callback(self, key: int) -> Callable[[weakref.ref[torch.UntypedStorage]], None]:
        def freed(ref: weakref.ref[torch.UntypedStorage]) -> None:
            entry = self.live.get(key)
            if self.closed or entry is None or entry[2] is not ref:
                return
            del self.live[key]
            self.origin.pop(key, None)
            self._account(entry[1], -entry[0])

        return freed

    def _account(self, category: str, nbytes: int) -> None:
        self.total += nbytes
        self.by_category[category] = self.by_category.get(category, 0) + nbytes

    def _update_peak(self) -> None:
        if self.total > self.region_peaks.get(self.region, -1):
            self.region_peaks[self.region] = self.total
        if self.total > self.peak:
            self.peak, self.peak_region = self.total, self.region
            self.categories_at_peak = {k: v for k, v in self.by_category.items() if v}
            if self.explain:
                self.snapshot = [(self.origin.get(key, "?"), entry[0]) for key, entry in self.live.items()]

    def live_at_peak(self) -> tuple[tuple[str, int, int], ...]:
        """Storages live at the peak, grouped by the op (or held category) that created them, largest first."""
        groups: dict[str, list[int]] = {}
        for label, nbytes in self.snapshot:
            group = groups.setdefault(label, [0, 0])
            group[0] += nbytes
            group[1] += 1
        return tuple(sorted(((k, v[0], v[1]) for k, v in groups.items()), key=lambda g: -g[1]))

    # StepContext
    def mark(self, region: str) -> None:
        self.region = region
        self.region_peaks[region] = max(self.region_peaks.get(region, 0), self.total)

    def tag(self, category: str, tensors: Iterable[torch.Tensor]) -> None:
        for t in tensors:
            self.retag(t, category)

    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        if self.explain:
            self.op = func.__name__
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.add(t, f"allocated/{self.region}")
        return out


def measure_live(
    name: BackendName, fn: Step, held: Mapping[str, Iterable[torch.Tensor]] | None, explain: bool
) -> Measurement:
    """Run `fn` under the tracker; `held` names, by category, the storages that exist before it."""
    tracker = _LiveStorages(explain)
    for category, tensors in (held or {}).items():
        for t in tensors:
            tracker.add(t, category)
    start = tracker.total
    tracker.region_peaks.clear()
    tracker.peak, tracker.categories_at_peak = start, {k: v for k, v in tracker.by_category.items() if v}
    tracker.snapshot = [(tracker.origin.get(k, "?"), e[0]) for k, e in tracker.live.items()] if explain else []
    began = time.perf_counter()
    oom = False
    try:
        with tracker:
            fn(tracker)
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        oom = True
    finally:
        tracker.closed = True
    return Measurement(
        backend=name,
        peak_bytes=tracker.peak,
        start_bytes=start,
        end_bytes=tracker.total,
        peak_region=tracker.peak_region,
        region_peaks=dict(tracker.region_peaks),
        categories_at_peak=tracker.categories_at_peak,
        wall_s=time.perf_counter() - began,
        out_of_memory=oom,
        live_at_peak=tracker.live_at_peak() if explain else (),
    )
