"""Mount the /v1 routers, the dashboard and the error handlers on the foundation app (called by create_app)."""

from __future__ import annotations

from fastapi import FastAPI

from service.api import (
    dashboard,
    routes_alerts,
    routes_desk,
    routes_keys,
    routes_scoring,
    routes_streams,
    routes_webhooks,
)
from service.api.errors import install_errors


def install_v1(app: FastAPI) -> None:
    install_errors(app)

    app.include_router(routes_streams.router)  # before /v1/alerts/{alert_id}, which would swallow /v1/alerts/sse
    app.include_router(routes_alerts.router)
    app.include_router(routes_desk.router)
    app.include_router(routes_keys.router)
    app.include_router(routes_webhooks.router)
    app.include_router(routes_scoring.router)
    app.include_router(dashboard.router)
