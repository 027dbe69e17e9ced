"""Swagger UI and ReDoc that work with no internet: their assets come from the installed fastapi_offline package.

ReDoc's bundle shows the Redocly logo from cdn.redoc.ly in its side menu; /docs-assets/redoc.standalone.js is that
bundle with the logo pointed at service/static/redoc-logo-mini.svg, so that no page fetches anything from outside.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

__all__ = ["REDOC_CDN_LOGO", "REDOC_JS_URL", "STATIC_DOCS_URL", "install_offline_docs", "redoc_bundle"]

STATIC_DOCS_URL = "/static-docs"
REDOC_JS_URL = "/docs-assets/redoc.standalone.js"
_ASSETS = ("fastapi_offline", "static")  # swagger-ui-bundle.js, swagger-ui.css, redoc.standalone.js, favicon.png
REDOC_CDN_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"
LOCAL_LOGO = "static/redoc-logo-mini.svg"  # relative to /redoc, served by service.routers.page

router = APIRouter(include_in_schema=False)


def _urls(request: Request) -> tuple[str, str, str]:
    """(openapi.json URL, static assets prefix, page title), honouring a proxy's root_path."""
    root = root_of(request)
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
        redoc_js_url=f"{root_of(request)}{REDOC_JS_URL}",
        redoc_favicon_url=f"{static}/favicon.png",
        with_google_fonts=False,
    )


def root_of(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


@cache
def redoc_bundle() -> bytes:
    """fastapi_offline's redoc.standalone.js with the CDN logo replaced by the package's."""
    text = resources.files(_ASSETS[0]).joinpath(_ASSETS[1], "redoc.standalone.js").read_text(encoding="utf-8")
    return text.replace(REDOC_CDN_LOGO, LOCAL_LOGO).encode("utf-8")


@router.get(REDOC_JS_URL)
def redoc_js() -> Response:
    """ReDoc's bundle, logo from the package."""
    return Response(redoc_bundle(), media_type="text/javascript")


def install_offline_docs(app: FastAPI) -> None:
    """Serve /docs and /redoc from local assets; create the app with docs_url=None and redoc_url=None."""
    app.mount(STATIC_DOCS_URL, StaticFiles(packages=[_ASSETS]), name="static-docs")
    app.include_router(router)
