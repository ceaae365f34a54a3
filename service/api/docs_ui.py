"""Swagger UI at /docs and ReDoc at /redoc, served from assets packaged with the service.

Why not FastAPI's defaults: they load Swagger UI and ReDoc from a CDN (and ReDoc's fonts from Google), so the pages
render blank on a machine without internet access, which is where a self-hosted detector often runs. The assets are
swagger-ui-dist 5.35.0 (Apache-2.0) and redoc 2.5.4 (MIT) from npm, unmodified, with their licence files beside
them in service/api/static/docs/.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

ASSETS = Path(__file__).resolve().parent / "static" / "docs"
PREFIX = "/static/docs"
_TYPES = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "redoc.standalone.js": "text/javascript",
    "favicon-32x32.png": "image/png",
}

router = APIRouter(include_in_schema=False)


def _root(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


@router.get("/docs", response_class=HTMLResponse)
async def swagger_ui(request: Request) -> HTMLResponse:
    root = _root(request)
    return get_swagger_ui_html(
        openapi_url=root + (request.app.openapi_url or "/openapi.json"),
        title=f"{request.app.title} - Swagger UI",
        swagger_js_url=f"{root}{PREFIX}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{PREFIX}/swagger-ui.css",
        swagger_favicon_url=f"{root}{PREFIX}/favicon-32x32.png",
        swagger_ui_parameters={"validatorUrl": None},  # the default validator badge calls an external service
    )


@router.get("/redoc", response_class=HTMLResponse)
async def redoc(request: Request) -> HTMLResponse:
    root = _root(request)
    return get_redoc_html(
        openapi_url=root + (request.app.openapi_url or "/openapi.json"),
        title=f"{request.app.title} - ReDoc",
        redoc_js_url=f"{root}{PREFIX}/redoc.standalone.js",
        redoc_favicon_url=f"{root}{PREFIX}/favicon-32x32.png",
        with_google_fonts=False,
    )


@router.get(PREFIX + "/{name}")
async def asset(name: str) -> FileResponse:
    """Only the listed files; the bundles are versioned with the package, so browsers may cache them for a day."""
    if name not in _TYPES:
        raise HTTPException(404, detail="not found")
    return FileResponse(ASSETS / name, media_type=_TYPES[name], headers={"Cache-Control": "public, max-age=86400"})
