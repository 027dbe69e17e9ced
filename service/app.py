"""The FastAPI application factory, and the server entry point shared by `python -m service` and `memplan serve`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import anyio
import uvicorn
from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware

from service import __version__
from service.docs import install_offline_docs
from service.errors import install_error_handlers
from service.limits import RequestLimitsMiddleware
from service.metrics import Metrics, MetricsMiddleware
from service.openapi import COMMON, drop_security
from service.probes.db import connect
from service.probes.executor import ProbeExecutor, make_executor
from service.routers import engines, estimates, gpus, health, models, plans, probes
from service.routers.page import install_page
from service.settings import Settings, get_settings, is_loopback

__all__ = ["InsecureBindError", "create_app", "run_server"]

DESCRIPTION = """\
Will this LLM fit on this GPU, how many sequences fit, and how fast will it run.

A model is a catalog id, an inline ModelSpec, or a raw Hugging Face `config.json`. Every byte count is an
integer; every memory term names its formula and source. 1 GiB = 2^30 B. Estimate answers add a `summary`
and readable siblings (`*_gib`, `*_ms`, `*_pct`); `?detail=summary` skips the spec echo, `?format=csv` gives a
table. A page for people, with charts, is at `/`.
"""

# uvicorn against slow or idle clients (the body itself has MEMPLAN_BODY_TIMEOUT_S, in RequestLimitsMiddleware)
KEEP_ALIVE_S = 5  # an idle keep-alive connection is closed after this
MAX_HEADER_BYTES = 16_384  # h11: a request line and headers larger than this are refused (uvicorn's 400)
MAX_CONNECTIONS = 1024  # concurrent connections and tasks; beyond it uvicorn answers 503
GRACEFUL_SHUTDOWN_S = 30  # open requests get this long to finish on shutdown


class InsecureBindError(RuntimeError):
    """The server was asked to listen beyond loopback without MEMPLAN_API_KEY."""


def _lifespan(executor: ProbeExecutor) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Startup: migrations, recovery of unfinished jobs, workers. Shutdown: running probes stop (interrupted)."""

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
    metrics = Metrics()
    executor = make_executor(connect(resolved.database_url), resolved, metrics)
    app = FastAPI(
        title="memplan",
        description=DESCRIPTION,
        version=__version__,
        docs_url=None,
        redoc_url=None,
        lifespan=_lifespan(executor),
    )
    app.state.probe_executor = executor
    app.state.metrics = metrics
    if settings is not None:
        app.dependency_overrides[get_settings] = lambda: settings
    _install_middleware(app, resolved, metrics)
    install_error_handlers(app)
    install_offline_docs(app)
    install_page(app)
    routers = (health, models, gpus, engines, estimates, plans, probes)
    for router in (r.router for r in routers):
        app.include_router(router, responses=COMMON)
    if resolved.api_key is None:
        drop_security(app)
    return app


def _install_middleware(app: FastAPI, settings: Settings, metrics: Metrics) -> None:
    """Outermost first: metrics (everything is counted), the Host allow-list, CORS (only when configured), then
    the body limits. add_middleware puts each one outside the ones before it."""
    app.add_middleware(
        RequestLimitsMiddleware,
        max_body_bytes=settings.max_body_bytes,
        max_json_depth=settings.max_json_depth,
        body_timeout_s=settings.body_timeout_s,
    )
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
            expose_headers=["Location", "Link", "Retry-After", "X-Memplan-Probe"],
        )
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(settings.allowed_hosts), www_redirect=False)
    app.add_middleware(MetricsMiddleware, metrics=metrics)


def check_bind(settings: Settings) -> None:
    """InsecureBindError when the server would listen beyond loopback with no API key."""
    if not is_loopback(settings.host) and settings.api_key is None:
        raise InsecureBindError(
            f"refusing to listen on {settings.host}: beyond loopback, set MEMPLAN_API_KEY (at least 16 characters; "
            "clients send 'Authorization: Bearer <key>' to queue probes) and MEMPLAN_ALLOWED_HOSTS (the names "
            "clients reach this server by), or bind 127.0.0.1 behind a reverse proxy"
        )


def run_server(settings: Settings) -> None:
    """Run uvicorn on a new app until interrupted; InsecureBindError for a non-loopback bind without a key."""
    check_bind(settings)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        timeout_keep_alive=KEEP_ALIVE_S,
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        limit_concurrency=MAX_CONNECTIONS,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        server_header=False,
    )
