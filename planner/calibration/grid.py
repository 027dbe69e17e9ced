"""A measured quantity on a regular grid of log-spaced axes, read back by multilinear interpolation.

Kernel tables (planner.calibration.kernels) store log(efficiency) — achieved / roofline time — on grids whose axes
are shapes (tokens, widths, sequence lengths). Efficiency varies smoothly in log(shape), so interpolating it in
log-log space reproduces off-grid measurements far better than interpolating latency: on aiconfigurator-core's
H200 GEMM tables a 15 × 9 × 9 grid reproduces the 28,000 off-grid shapes with a median error of 3–5 %
(benchmarks/fit_kernels.py reports the held-out error of every table it writes). Outside the grid the nearest
edge value is used (efficiency saturates for large shapes; the kernel's latency floor bounds small ones).
"""

from __future__ import annotations

import itertools
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from math import exp, log

__all__ = ["LogGrid"]


@dataclass(frozen=True, slots=True)
class _Axis:
    log_points: tuple[float, ...]

    def locate(self, value: float) -> tuple[int, float]:
        """(index i, weight w) with log(value) = (1 − w)·point[i] + w·point[i + 1], clamped to the axis."""
        pts = self.log_points
        if len(pts) == 1:
            return 0, 0.0
        x = log(value)
        if x <= pts[0]:
            return 0, 0.0
        if x >= pts[-1]:
            return len(pts) - 2, 1.0
        i = bisect_right(pts, x) - 1
        return i, (x - pts[i]) / (pts[i + 1] - pts[i])


@dataclass(frozen=True, slots=True)
class LogGrid:
    """Values v(x_1, …, x_d) on the product of log-spaced axes; `values` is row-major (last axis fastest)."""

    axes: tuple[_Axis, ...]
    values: tuple[float, ...]
    strides: tuple[int, ...]

    @classmethod
    def build(cls, axes: Sequence[Sequence[float]], values: Sequence[float]) -> LogGrid:
        """From axis points (each positive and strictly increasing) and the row-major values."""
        size, strides = 1, []
        for points in reversed(axes):
            strides.append(size)
            size *= len(points)
        if size != len(values):
            raise ValueError(f"grid of {size} points given {len(values)} values")
        for points in axes:
            if any(b <= a for a, b in itertools.pairwise(points)) or points[0] <= 0:
                raise ValueError("axis points must be positive and strictly increasing")
        return cls(
            tuple(_Axis(tuple(log(p) for p in points)) for points in axes), tuple(values), tuple(reversed(strides))
        )

    def __call__(self, *coords: float) -> float:
        """v at `coords`: multilinear in log(coords) between the 2^d surrounding grid points."""
        base, corners = 0, [(0, 1.0)]
        for axis, stride, c in zip(self.axes, self.strides, coords, strict=True):
            i, w = axis.locate(c)
            base += i * stride
            if w == 0.0:
                continue
            if w == 1.0:
                base += stride
                continue
            corners = [(off, wt * (1.0 - w)) for off, wt in corners] + [(off + stride, wt * w) for off, wt in corners]
        vals = self.values
        return sum(vals[base + off] * wt for off, wt in corners)

    def exp_at(self, *coords: float) -> float:
        """exp(v): the grids hold logarithms."""
        return exp(self(*coords))
