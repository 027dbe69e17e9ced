"""Dependencies the routes declare, as Annotated aliases."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, Request

from planner import Catalog, load_catalog
from service.probes.db import Database
from service.probes.errors import ProbesUnavailableError
from service.probes.executor import ProbeExecutor
from service.settings import Settings, get_settings

__all__ = ["CatalogDep", "ProbeDatabaseDep", "ProbeExecutorDep", "SettingsDep", "get_catalog", "get_probe_executor"]


def get_catalog() -> Catalog:
    """The model and GPU catalog (read once per process by planner.load_catalog)."""
    return load_catalog()


def get_probe_executor(request: Request) -> ProbeExecutor:
    """The app's probe executor (create_app builds it; the app's lifespan starts and stops it)."""
    return cast(ProbeExecutor, request.app.state.probe_executor)


def get_probe_database(executor: Annotated[ProbeExecutor, Depends(get_probe_executor)]) -> Database:
    """The probe-job database of the app's executor, once the app has started (503 before)."""
    if not executor.running:
        raise ProbesUnavailableError
    return executor.db


SettingsDep = Annotated[Settings, Depends(get_settings)]
CatalogDep = Annotated[Catalog, Depends(get_catalog)]
ProbeExecutorDep = Annotated[ProbeExecutor, Depends(get_probe_executor)]
ProbeDatabaseDep = Annotated[Database, Depends(get_probe_database)]
