"""Swagger UI and ReDoc that work with no internet: their assets come from the installed fastapi_offline package."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

__all__ = ["STATIC_DOCS_URL", "install_offline_docs"]

STATIC_DOCS_URL = "/static-docs"
_ASSETS = ("fastapi_offline", "static")  # swagger-ui-bundle.js, swagger-ui.css, redoc.standalone.js, favicon.png

router = APIRouter(include_in_schema=False)


def _urls(request: Request) -> tuple[str, str, str]:
    """(openapi.json URL, static assets prefix, page title), honouring a proxy's root_path."""
    root = request.scope.get("root_path", "").rstrip("/")
    return f"{root}{request.app.openapi_url}", f"{root}{STATIC_DOCS_URL}", str(request.app.title)


@router.get("/docs")
def swagger_ui(request: Request) -> HTMLResponse:
    """Swagger UI."""
    openapi_url, static, title = _urls(request)
    return get_swagger_ui_html(
        openapi_url=openapi_url,
        title=f"{title} - Swagger UI",
        swagger_js_url=f"{static}/swagger-ui-bundle.js",
        swagger_css_url=f"{static}/swagger-ui.css",
        swagger_favicon_url=f"{static}/favicon.png",
        swagger_ui_parameters={"validatorUrl": None},  # no badge fetched from validator.swagger.io
    )


@router.get("/redoc")
def redoc(request: Request) -> HTMLResponse:
    """ReDoc."""
    openapi_url, static, title = _urls(request)
    return get_redoc_html(
        openapi_url=openapi_url,
        title=f"{title} - ReDoc",
        redoc_js_url=f"{static}/redoc.standalone.js",
        redoc_favicon_url=f"{static}/favicon.png",
        with_google_fonts=False,
    )


def install_offline_docs(app: FastAPI) -> None:
    """Serve /docs and /redoc from local assets; create the app with docs_url=None and redoc_url=None."""
    app.mount(STATIC_DOCS_URL, StaticFiles(packages=[_ASSETS]), name="static-docs")
    app.include_router(router)
