"""The FastAPI application factory, and the server entry point shared by `python -m service` and `memplan serve`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import anyio
import uvicorn
from fastapi import FastAPI

from service import __version__
from service.docs import install_offline_docs
from service.errors import install_error_handlers
from service.limits import RequestLimitsMiddleware
from service.probes.db import connect
from service.probes.executor import ProbeExecutor
from service.routers import engines, estimates, gpus, health, models, probes
from service.routers.page import install_page
from service.settings import Settings, get_settings

__all__ = ["create_app", "run_server"]

DESCRIPTION = """\
Will this LLM fit on this GPU, how many sequences fit, and how fast will it run.

A model is a catalog id, an inline ModelSpec, or a raw Hugging Face `config.json`. Every byte count is an
integer; every memory term names its formula and source. 1 GiB = 2^30 B. Estimate answers add a `summary`
and readable siblings (`*_gib`, `*_ms`, `*_pct`); `?detail=summary` skips the spec echo, `?format=csv` gives a
table. A page for people, with charts, is at `/`.
"""


def _lifespan(executor: ProbeExecutor) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Startup: probe tables, recovery of unfinished jobs, workers. Shutdown: running probes stop (interrupted)."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await anyio.to_thread.run_sync(executor.start)
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(executor.stop)

    return lifespan


def create_app(settings: Settings | None = None) -> FastAPI:
    """A new app; `settings` (default: the MEMPLAN_* environment) also answers the app's SettingsDep.

    Nothing connects to the probe database until the app starts (its lifespan), as under uvicorn or a
    `with TestClient(app)` block.
    """
    resolved = settings or get_settings()
    executor = ProbeExecutor(connect(resolved.database_url), resolved)
    app = FastAPI(
        title="memplan",
        description=DESCRIPTION,
        version=__version__,
        docs_url=None,
        redoc_url=None,
        lifespan=_lifespan(executor),
    )
    app.state.probe_executor = executor
    if settings is not None:
        app.dependency_overrides[get_settings] = lambda: settings
    app.add_middleware(
        RequestLimitsMiddleware, max_body_bytes=resolved.max_body_bytes, max_json_depth=resolved.max_json_depth
    )
    install_error_handlers(app)
    install_offline_docs(app)
    install_page(app)
    for router in (health.router, models.router, gpus.router, engines.router, estimates.router, probes.router):
        app.include_router(router)
    return app


def run_server(settings: Settings) -> None:
    """Run uvicorn on a new app until interrupted."""
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level)
