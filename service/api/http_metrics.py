"""Request count and latency per route template, as plain ASGI middleware.

Why not `@app.middleware("http")`: Starlette's BaseHTTPMiddleware wraps every request in extra tasks and streams;
measured here it cost more than the rest of a /healthz request. This wrapper only watches the response start.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.metrics import HTTP_LATENCY, HTTP_REQUESTS


class HttpMetricsMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # label children cached: route templates, methods and status classes are few
        self._counters: dict[tuple[str, str, str], Counter] = {}
        self._histograms: dict[tuple[str, str], Histogram] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            self._observe(scope, status[0], time.perf_counter() - start)

    def _observe(self, scope: Scope, status: int, seconds: float) -> None:
        route: Any = scope.get("route")
        path = str(getattr(route, "path", "unmatched"))
        method = str(scope.get("method", "GET"))
        ckey = (path, method, f"{status // 100}xx")
        counter = self._counters.get(ckey)
        if counter is None:
            counter = self._counters[ckey] = HTTP_REQUESTS.labels(route=path, method=method, status=ckey[2])
        counter.inc()
        hkey = (path, method)
        hist = self._histograms.get(hkey)
        if hist is None:
            hist = self._histograms[hkey] = HTTP_LATENCY.labels(route=path, method=method)
        hist.observe(seconds)
