"""Mount the /v1 routers, the dashboard and the 422 handler on the foundation app (called by create_app)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from service.api import (
    dashboard,
    routes_alerts,
    routes_desk,
    routes_keys,
    routes_scoring,
    routes_streams,
    routes_webhooks,
)


def _field(loc: Any) -> str:
    """`body.items.0.price` style name of a failing field (the leading `body`/`query` kept: it says where)."""
    return ".".join(str(p) for p in loc) if isinstance(loc, list | tuple) else str(loc)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    """422 whose message names every failing field, keeping FastAPI's `detail` list for machines."""
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    fields = [_field(e.get("loc", ())) for e in errors]
    message = "; ".join(f"{f}: {e.get('msg', 'invalid')}" for f, e in zip(fields, errors, strict=True))
    detail = [
        {"type": e.get("type"), "loc": list(e.get("loc", ())), "msg": e.get("msg"), "field": f}
        for f, e in zip(fields, errors, strict=True)
    ]
    return JSONResponse({"detail": detail, "message": message or "invalid request", "fields": fields}, status_code=422)


def install_v1(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_error)

    app.include_router(routes_streams.router)  # before /v1/alerts/{alert_id}, which would swallow /v1/alerts/sse
    app.include_router(routes_alerts.router)
    app.include_router(routes_desk.router)
    app.include_router(routes_keys.router)
    app.include_router(routes_webhooks.router)
    app.include_router(routes_scoring.router)
    app.include_router(dashboard.router)
