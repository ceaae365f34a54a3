"""The FastAPI application factory. Routers of each part are mounted here; the runtime is owned by lifespan."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response

from service import __version__
from service.api.health import router as health_router
from service.metrics import BUILD_INFO, HTTP_LATENCY, HTTP_REQUESTS
from service.runtime import Runtime


def _route_template(request: Request) -> str:
    """The matched route's path template (set by the router), so metric labels stay bounded."""
    return str(getattr(request.scope.get("route"), "path", "unmatched"))


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
    )
    app.state.runtime = runtime
    BUILD_INFO.info({"version": __version__})

    @app.middleware("http")
    async def observe(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        start = time.perf_counter()
        status = "5xx"
        try:
            response = await call_next(request)
            status = f"{response.status_code // 100}xx"
            return response
        finally:
            route = _route_template(request)
            HTTP_REQUESTS.labels(route=route, method=request.method, status=status).inc()
            HTTP_LATENCY.labels(route=route, method=request.method).observe(time.perf_counter() - start)

    app.include_router(health_router)
    from service.api.v1 import install_v1  # the /v1 API, streams and dashboard (issue 7)

    install_v1(app)
    return app
