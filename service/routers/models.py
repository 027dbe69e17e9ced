"""Catalog models and config.json import."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body

from planner import CatalogModel, HFConfig
from planner.model.describe import ImportDescription, describe_import
from service.deps import CatalogDep
from service.examples import IMPORT_EXAMPLES
from service.openapi import BODY, NOT_FOUND

router = APIRouter(prefix="/v1/models", tags=["models"])


@router.get("", response_model=list[CatalogModel])
def list_models(catalog: CatalogDep) -> list[CatalogModel]:
    """Every catalog model: its published config.json, normalized spec, parameter counts and KV bytes per token."""
    return list(catalog.models)


@router.get("/{model_id}", response_model=CatalogModel, responses=NOT_FOUND)
def get_model(model_id: str, catalog: CatalogDep) -> CatalogModel:
    """One catalog model by id (e.g. 'llama-3-8b')."""
    return catalog.model(model_id)


@router.post("/import", response_model=ImportDescription, responses=BODY)
def import_model(config: Annotated[HFConfig, Body(openapi_examples=IMPORT_EXAMPLES)]) -> ImportDescription:
    """Read a Hugging Face config.json (the body): normalized spec, parameter counts, KV cache bytes per token."""
    return describe_import(config)
