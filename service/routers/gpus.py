"""Catalog GPUs."""

from __future__ import annotations

from fastapi import APIRouter

from planner import GpuSpec
from service.deps import CatalogDep
from service.openapi import NOT_FOUND

router = APIRouter(prefix="/v1/gpus", tags=["gpus"])


@router.get("", response_model=list[GpuSpec])
def list_gpus(catalog: CatalogDep) -> list[GpuSpec]:
    """Every catalog GPU: memory, bandwidth, peak FLOP/s by dtype, interconnect, and the datasheet."""
    return list(catalog.gpus)


@router.get("/{gpu_id}", response_model=GpuSpec, responses=NOT_FOUND)
def get_gpu(gpu_id: str, catalog: CatalogDep) -> GpuSpec:
    """One catalog GPU by id (e.g. 'h100-sxm')."""
    return catalog.gpu(gpu_id)
