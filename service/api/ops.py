"""The operations-only app for `rmad ingest` and `rmad worker`: /healthz, /readyz and /metrics, nothing else.

Why: every process must answer Kubernetes probes and Prometheus scrapes, but only `rmad api` serves the /v1 API.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from service import __version__
from service.api.health import router as health_router
from service.api.http_metrics import HttpMetricsMiddleware
from service.runtime import Runtime


def create_ops_app(runtime: Runtime) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    app = FastAPI(title="rmad-crypto (operations)", version=__version__, lifespan=lifespan)
    app.state.runtime = runtime
    app.add_middleware(HttpMetricsMiddleware)
    app.include_router(health_router)
    return app
