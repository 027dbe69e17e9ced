"""Serving engine profiles: which engine versions memplan models, with every default and its source."""

from __future__ import annotations

from fastapi import APIRouter

from planner.serving.engines import EngineProfile, engine_profiles

router = APIRouter(prefix="/v1/engines", tags=["engines"])


@router.get("", response_model=list[EngineProfile])
def list_engines() -> list[EngineProfile]:
    """Every engine profile (planner/catalog/engines.json): engine, version range, defaults with their sources."""
    return list(engine_profiles())
