"""How far to trust an answer: the measured error of the model behind it, from the validation reports.

benchmarks/validate_memory.py scores each engine profile's memory model against published startup logs and writes
planner/calibration/validation/engine_memory.json; benchmarks/validate_serving.py scores the latency model against
measured serving runs per (GPU, engine) and writes planner/calibration/validation/serving.json. Every answer carries
the status of its group, so no number goes out without its validation.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

from pydantic import Field

from planner._base import FrozenSpec

__all__ = ["LatencyValidation", "MemoryValidation", "latency_validation", "memory_validation"]

_DIR = "validation"


class MemoryValidation(FrozenSpec):
    """The engine profile's memory model against published startup logs of that engine version range."""

    status: str = Field(description="'validated' (logs of this profile scored), or why not.")
    logs: int = Field(description="Published startup logs of this profile's versions that were scored.")
    kv_pool_median_error: float | None = Field(description="Median |predicted − logged| / logged KV pool.")
    kv_pool_max_error: float | None = None
    activation_median_error: float | None = Field(
        default=None, description="Median error of the profile-run activation peak where logs print it."
    )
    summary: str
    corpus: str = "benchmarks/data/engine_memory/*_logs.json"


class LatencyValidation(FrozenSpec):
    """The latency model against measured end-to-end serving runs of one (GPU, engine) group."""

    status: str
    runs: int
    ttft_median_ape: float | None = None
    tpot_median_ape: float | None = None
    summary: str
    corpus: str = "benchmarks/data/silicon/silicon_sample.csv (aiconfigurator-core 0.12.0)"


@lru_cache(maxsize=4)
def _report(name: str) -> dict[str, Any]:
    path = resources.files("planner.calibration").joinpath(_DIR, name)
    if not path.is_file():
        return {}
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def memory_validation(profile_id: str) -> MemoryValidation:
    """The memory-model validation of one engine profile."""
    entry = _report("engine_memory.json").get("profiles", {}).get(profile_id)
    if entry is None:
        return MemoryValidation(
            status="not validated",
            logs=0,
            kv_pool_median_error=None,
            summary=f"no published startup log of an engine version in profile {profile_id} was scored; the "
            "memory model follows the engine source without a measurement for this version",
        )
    return MemoryValidation.model_validate(entry)


def latency_validation(gpu: str, engine: str) -> LatencyValidation:
    """The latency-model validation of one (GPU, engine) group."""
    entry = _report("serving.json").get("groups", {}).get(f"{gpu}/{engine}")
    if entry is None:
        return LatencyValidation(
            status="not validated",
            runs=0,
            summary=f"no measured serving runs of {engine} on {gpu} were scored; treat latency as a roofline-level "
            "estimate",
        )
    return LatencyValidation.model_validate(entry)
