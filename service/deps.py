"""Dependencies the routes declare, as Annotated aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from planner import Catalog, load_catalog
from service.settings import Settings, get_settings

__all__ = ["CatalogDep", "SettingsDep", "get_catalog"]


def get_catalog() -> Catalog:
    """The model and GPU catalog (read once per process by planner.load_catalog)."""
    return load_catalog()


SettingsDep = Annotated[Settings, Depends(get_settings)]
CatalogDep = Annotated[Catalog, Depends(get_catalog)]
