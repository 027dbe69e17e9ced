"""The page for people at `/`: forms and charts over the estimate and plan endpoints, from the package (no CDN)."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

__all__ = ["STATIC_URL", "install_page", "router"]

STATIC_URL = "/static"  # page.js, page.css and the vendored Chart.js (service/static/vendor/chart.js/VENDOR.md)

router = APIRouter(include_in_schema=False)


@router.get("/")
def page() -> HTMLResponse:
    """The page."""
    html = resources.files("service").joinpath("static", "index.html").read_text(encoding="utf-8")
    return HTMLResponse(html)


def install_page(app: FastAPI) -> None:
    """Serve `/` and its assets under /static from service/static."""
    app.mount(STATIC_URL, StaticFiles(packages=[("service", "static")]), name="static")
    app.include_router(router)
