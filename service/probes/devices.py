"""Which probe worker runs a backend, and which GPU its process may see. Nothing here imports torch.

`auto` never asks CUDA: the API process does not import torch. It goes to a cuda device listed in
MEMPLAN_PROBE_DEVICES when there is one (timings only mean something on CUDA), else to the cpu worker.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from planner import FieldProblem, SpecError
from planner.probe import ProbeRequest
from service.probes.schemas import RunBackend
from service.settings import CPU_DEVICE

__all__ = ["candidate_devices", "visible_cuda_devices"]


def _cuda_devices(devices: Sequence[str]) -> list[str]:
    return [d for d in devices if d.startswith("cuda:")]


def candidate_devices(request: ProbeRequest, devices: Sequence[str]) -> tuple[RunBackend, list[str]]:
    """The backend the probe runs on and the workers that may run it; SpecError (loc backend) when none can."""
    if request.backend in ("cpu", "fake"):
        return request.backend, [CPU_DEVICE]
    if cuda := _cuda_devices(devices):
        return "cuda", cuda
    if request.backend == "auto":
        return "cpu", [CPU_DEVICE]
    msg = "no CUDA probe device is configured on this server (MEMPLAN_PROBE_DEVICES); use backend cpu, fake or auto"
    raise SpecError([FieldProblem(("backend",), msg, "no_device")])


def visible_cuda_devices(device: str, environ: Mapping[str, str]) -> str:
    """CUDA_VISIBLE_DEVICES for a probe process on `device`: none for cpu, the one GPU for cuda:<i>.

    <i> counts the GPUs this server sees, so under CUDA_VISIBLE_DEVICES=2,3 cuda:1 is physical GPU 3.
    """
    if device == CPU_DEVICE:
        return ""
    index = int(device.removeprefix("cuda:"))
    if not (inherited := environ.get("CUDA_VISIBLE_DEVICES", "").strip()):
        return str(index)
    visible = [entry.strip() for entry in inherited.split(",")]
    if index >= len(visible):
        raise ValueError(f"{device} is listed in MEMPLAN_PROBE_DEVICES but CUDA_VISIBLE_DEVICES={inherited}")
    return visible[index]
