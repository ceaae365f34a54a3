"""The dashboard at /: one static HTML page with plain JS and canvas, served by the API (no build step)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse

STATIC = Path(__file__).resolve().parent / "static"
_FILES = {"app.js": "text/javascript", "style.css": "text/css"}

router = APIRouter(include_in_schema=False)


@router.get("/", response_class=HTMLResponse)
async def index(request: Request) -> HTMLResponse:
    """The page; in RMAD_ENV=development the development key is filled in so `make run` works at once."""
    html = (STATIC / "index.html").read_text(encoding="utf-8")
    s = request.app.state.runtime.settings
    dev = s.api_dev_key.get_secret_value() if s.env == "development" else ""
    html = html.replace("__RMAD_DEV_KEY__", dev.replace('"', "").replace("<", ""))
    return HTMLResponse(html, headers={"Cache-Control": "no-store"})


@router.get("/static/{name}")
async def static(name: str) -> FileResponse:
    if name not in _FILES:
        raise HTTPException(404, detail="not found")
    return FileResponse(STATIC / name, media_type=_FILES[name], headers={"Cache-Control": "no-cache"})
