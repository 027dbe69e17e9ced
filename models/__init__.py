"""memplan's PyTorch side, the only package that imports torch: probe models, measurement backends, the runner.

`run_probe(ProbeRequest) -> ProbeResult` builds a scaled-down model of the requested architecture, runs it on a
backend (cuda, cpu or fake), and compares every measured component with the planner's estimate of the same run.
"""

from models.backends import BackendUnavailableError, CpuBackend, CudaBackend, FakeBackend, get_backend
from models.build import ProbeTimeoutError
from models.grid import GridCase, default_grid, full_size_grid, quick_grid
from models.measurement import Measurement
from models.runner import ProbeDetails, run_probe, run_probe_detailed

__all__ = [
    "BackendUnavailableError",
    "CpuBackend",
    "CudaBackend",
    "FakeBackend",
    "GridCase",
    "Measurement",
    "ProbeDetails",
    "ProbeTimeoutError",
    "default_grid",
    "full_size_grid",
    "get_backend",
    "quick_grid",
    "run_probe",
    "run_probe_detailed",
]
