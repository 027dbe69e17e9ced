"""GPU specifications as the planner needs them: memory, bandwidth, peak FLOP/s, interconnect."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from planner._base import MAX_BYTES, FrozenSpec, Source

__all__ = ["ComputeDType", "GpuSpec"]

ComputeDType = Literal["fp32", "tf32", "bf16", "fp16", "fp8", "int8"]

FlopsPerS = Annotated[float, Field(ge=1e9, le=1e18)]  # 1 GFLOP/s .. 1 EFLOP/s
BytesPerS = Annotated[float, Field(ge=1e6, le=1e15)]  # 1 MB/s .. 1 PB/s


class GpuSpec(FrozenSpec):
    """One GPU model. FLOP/s are dense (no structured sparsity); bandwidths are bytes per second."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9.\-]*$", max_length=64, description="Catalog id, e.g. 'h100-sxm'.")
    name: str = Field(max_length=120)
    vendor: Literal["nvidia", "amd"]
    memory_bytes: int = Field(
        gt=0,
        le=MAX_BYTES,
        description="Device memory in bytes (datasheet capacity; HBM/GDDR 'GB' on datasheets of these parts "
        "are binary GiB unless the entry's memory_note says otherwise).",
    )
    memory_note: str = Field(max_length=300, description="How memory_bytes was read off the datasheet.")
    driver_memory_bytes: int | None = Field(
        default=None,
        gt=0,
        le=MAX_BYTES,
        description="Device memory as the CUDA driver reports it (cudaMemGetInfo total, torch.cuda.mem_get_info()[1]): "
        "what vLLM multiplies by gpu_memory_utilization and TensorRT-LLM sizes its KV cache from. Null where no "
        "published measurement exists (the planner then assumes the datasheet less the median driver reserve).",
    )
    smi_memory_mib: int | None = Field(
        default=None, gt=0, le=1 << 30, description="nvidia-smi memory.total in MiB (SGLang sizes its defaults by it)."
    )
    driver_memory_note: str | None = Field(default=None, max_length=500, description="Where driver_memory_bytes "
                                           "and smi_memory_mib were measured.")  # fmt: skip
    memory_bandwidth_bytes_per_s: BytesPerS = Field(description="Peak DRAM (HBM/GDDR) bandwidth.")
    peak_flops_per_s: dict[ComputeDType, FlopsPerS] = Field(
        min_length=1,
        description="Dense peak tensor FLOP/s (OP/s for int8) by compute dtype; a missing key means unsupported.",
    )
    interconnect: str = Field(max_length=120, description="GPU-to-GPU link, e.g. 'NVLink 4' or 'PCIe 4.0 x16'.")
    interconnect_bandwidth_bytes_per_s: BytesPerS = Field(
        description="Per-GPU, per-direction GPU-to-GPU bandwidth (half of a datasheet's bidirectional figure)."
    )
    source: Source

    @model_validator(mode="after")
    def _driver_within_datasheet(self) -> GpuSpec:
        if self.driver_memory_bytes is not None and self.driver_memory_bytes > self.memory_bytes:
            raise ValueError(
                f"driver_memory_bytes ({self.driver_memory_bytes}) exceeds memory_bytes ({self.memory_bytes}): the "
                "driver reports the datasheet memory less what it reserves"
            )
        return self
