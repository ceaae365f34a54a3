"""The FastAPI application factory. Routers of each part are mounted here; the runtime is owned by lifespan."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from service import __version__
from service.api.docs_ui import router as docs_ui_router
from service.api.edges import EdgeGuard
from service.api.fastpath import ScoreFastPath
from service.api.health import router as health_router
from service.api.http_metrics import HttpMetricsMiddleware
from service.metrics import BUILD_INFO
from service.runtime import Runtime


def _no_otel() -> dict[str, Any]:
    """FastAPI's native OpenTelemetry off where the installed FastAPI has it (>= 0.16x): this service exports
    Prometheus metrics, and the per-request check for a configured OTel provider showed up in the API's profile."""
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters:
        return {"telemetry": {"tracing": False, "metrics": False, "logs": False}}
    return {}


def create_app(runtime: Runtime, *, manage_runtime: bool = True) -> FastAPI:
    """Build the app around a runtime; with `manage_runtime` the app starts and stops it."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if manage_runtime:
            await runtime.start()
        try:
            yield
        finally:
            if manage_runtime:
                await runtime.stop()

    app = FastAPI(
        title="rmad-crypto",
        version=__version__,
        description="Real-time anomaly detection for crypto markets and chains: scores, explained alerts, metrics.",
        lifespan=lifespan,
        docs_url=None,  # /docs and /redoc come from service.api.docs_ui, with packaged assets (no CDN)
        redoc_url=None,
        **_no_otel(),
    )
    app.state.runtime = runtime
    BUILD_INFO.info({"version": __version__})

    app.add_middleware(ScoreFastPath)  # added first, so inside the metrics: its requests are counted the same
    s = runtime.settings  # body limits hold for every route, the fast path included (service/api/edges.py)
    app.add_middleware(EdgeGuard, max_body_bytes=s.api_max_body_bytes, max_depth=s.api_max_json_depth)
    app.add_middleware(HttpMetricsMiddleware)
    app.include_router(health_router)
    app.include_router(docs_ui_router)
    from service.api.v1 import install_v1  # the /v1 API, streams and dashboard (issue 7)

    install_v1(app)
    return app
