"""Liveness, readiness (naming the part that is down), metrics and OpenAPI of the foundation app."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from harness.servers import free_port
from service.api.app import create_app
from service.runtime import Runtime
from service.settings import load_settings


async def _client(runtime: Runtime) -> httpx.AsyncClient:
    app = create_app(runtime, manage_runtime=False)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def test_embedded_runtime_is_ready() -> None:
    runtime = Runtime.from_settings(load_settings(redis_url=None, kafka_bootstrap_servers=None))
    async with await _client(runtime) as c:
        assert (await c.get("/healthz")).json() == {"status": "ok"}
        r = await c.get("/readyz")
        assert r.status_code == 200 and r.json()["ready"] is True
        assert set(r.json()["parts"]) >= {"bus", "state"}
        metrics = (await c.get("/metrics")).text
        assert "rmad_build_info" in metrics and 'rmad_ready{component="state"} 1.0' in metrics
        assert 'rmad_http_requests_total{method="GET",route="/readyz",status="2xx"}' in metrics
        schema = (await c.get("/openapi.json")).json()
        assert {"healthz", "readyz"} <= {op["operationId"] for p in schema["paths"].values() for op in p.values()}
        assert (await c.get("/docs")).status_code == 200


async def test_readyz_names_the_unreachable_state_store() -> None:
    runtime = Runtime.from_settings(load_settings(redis_url="redis://127.0.0.1:1", kafka_bootstrap_servers=None))
    async with await _client(runtime) as c:
        assert (await c.get("/healthz")).status_code == 200
        r = await c.get("/readyz")
    await runtime.stop()
    assert r.status_code == 503
    assert r.json()["not_ready"] == ["state"]
    assert "redis" in r.json()["parts"]["state"]["detail"].lower()


@pytest.mark.integration
async def test_real_kafka_and_redis_are_ready(redis_url: str, kafka_bootstrap: str) -> None:
    runtime = Runtime.from_settings(load_settings(redis_url=redis_url, kafka_bootstrap_servers=kafka_bootstrap))
    async with await _client(runtime) as c:
        r = await c.get("/readyz")
    await runtime.stop()
    assert r.status_code == 200, r.text
    assert r.json()["parts"]["bus"]["detail"] == "kafka" and r.json()["parts"]["state"]["detail"] == "redis"


@pytest.mark.slow
def test_rmad_run_serves_and_stops_on_sigterm() -> None:
    port = free_port()
    env = dict(os.environ, RMAD_PORT=str(port), RMAD_REDIS_URL="redis://127.0.0.1:1")
    env.pop("RMAD_KAFKA_BOOTSTRAP_SERVERS", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "run", "--source", "none"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                time.sleep(0.1)
        if proc.poll() is not None:
            raise AssertionError(f"rmad run exited early ({proc.returncode}): {proc.communicate()[1]}")
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
        r = httpx.get(f"http://127.0.0.1:{port}/readyz")
        assert r.status_code == 503 and "state" in r.json()["not_ready"]
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
        # uvicorn re-raises the captured SIGTERM after a clean lifespan shutdown
        assert proc.returncode in (0, -signal.SIGTERM)
        assert "Application shutdown complete" in err
    finally:
        if proc.poll() is None:
            proc.kill()
