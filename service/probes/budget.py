"""How many bytes a probe may plan to use on each device, and the OS limit its process runs under.

Nothing here imports torch: the host's memory comes from the OS (and the cgroup the server runs in, if it is
tighter), a GPU's from nvidia-smi. MEMPLAN_PROBE_MAX_BYTES, when set, is the budget on every device.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from service.probes.devices import visible_cuda_devices
from service.settings import CPU_DEVICE

__all__ = [
    "GPU_FRACTION",
    "HOST_FRACTION",
    "PROCESS_BASELINE_BYTES",
    "gpu_memory_bytes",
    "host_memory_bytes",
    "probe_budgets",
    "process_memory_limit",
]

logger = logging.getLogger(__name__)

HOST_FRACTION = 0.5  # of the host's memory, for cpu probes: the server and everything else keep the other half
GPU_FRACTION = 0.9  # of a GPU's memory, for cuda probes: the CUDA context and allocator reserve take the rest
# A probe process's own data memory before its model exists: the interpreter, torch, transformers and peft
# (about 400 MB of RLIMIT_DATA-counted memory measured on the 2-core CI machine kind), with room to spare.
PROCESS_BASELINE_BYTES = 1 << 30
CGROUP_MEMORY_MAX = Path("/sys/fs/cgroup/memory.max")
NVIDIA_SMI_TIMEOUT_S = 10.0


def host_memory_bytes(cgroup_limit: Path = CGROUP_MEMORY_MAX) -> int:
    """Physical memory, or the cgroup's memory.max when that is lower."""
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        text = cgroup_limit.read_text().strip()
    except OSError:
        return physical
    return min(physical, int(text)) if text.isdigit() else physical


def gpu_memory_bytes(device: str, environ: Mapping[str, str]) -> int | None:
    """Total memory of the GPU behind `device` (cuda:<i>) as nvidia-smi reports it; None when it cannot say."""
    index = visible_cuda_devices(device, environ)
    command = ["nvidia-smi", f"--id={index}", "--query-gpu=memory.total", "--format=csv,noheader,nounits"]
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT_S, check=True)
        return int(out.stdout.strip().splitlines()[0]) << 20  # MiB
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def probe_budgets(devices: Sequence[str], max_bytes: int | None, environ: Mapping[str, str]) -> dict[str, int]:
    """device → the largest planned peak a probe there may have."""
    host = int(HOST_FRACTION * host_memory_bytes())
    budgets: dict[str, int] = {}
    for device in devices:
        if max_bytes is not None:
            budgets[device] = max_bytes
        elif device == CPU_DEVICE:
            budgets[device] = host
        elif (gpu := gpu_memory_bytes(device, environ)) is not None:
            budgets[device] = int(GPU_FRACTION * gpu)
        else:
            logger.warning("%s: nvidia-smi cannot tell its memory; probes there are sized against the host's", device)
            budgets[device] = host
    return budgets


def process_memory_limit(device: str, budget_bytes: int) -> int | None:
    """The RLIMIT_DATA of a probe process on `device`: its budget plus the baseline on cpu, none on a GPU (the
    device is its own hard limit, and the CUDA runtime maps host memory that no process limit should break)."""
    return budget_bytes + PROCESS_BASELINE_BYTES if device == CPU_DEVICE else None
