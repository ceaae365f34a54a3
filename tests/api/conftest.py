"""Fixtures of the API tests: a runtime on the session's real Redis (own key prefix per test) with the api
components, an in-process HTTP client, keys for every scope, and a real uvicorn server for WebSocket/SSE tests."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from harness.servers import free_port
from service.api.app import create_app
from service.api.auth import Scope
from service.api.context import ApiContext, context_for
from service.roles import build
from service.runtime import Runtime
from service.schemas.scoring import Action, Alert, AnomalyType, BranchScores, FeatureContribution, Severity, alert_id
from service.settings import Settings, load_settings


def make_alert(
    n: int,
    venue: str = "sim",
    symbol: str = "PUMPUSDT",
    severity: Severity = Severity.HIGH,
    anomaly: AnomalyType = AnomalyType.PUMP_AND_DUMP,
    created_ms: int | None = None,
    padding: int = 0,
) -> Alert:
    key = f"{venue}:{symbol}"
    end = 1_700_000_000_000 + n * 5000
    return Alert(
        id=alert_id("v-test", key, end),
        key=key,
        venue=venue,
        symbol=symbol,
        window_end_ms=end,
        created_ms=created_ms if created_ms is not None else end,
        anomaly_type=anomaly,
        severity=severity,
        action=Action.REVIEW_NOW,
        score=2.5,
        threshold=1.0,
        branches=BranchScores(md=1.0, trans=2.0, clust=3.0),
        weights=BranchScores(md=0.2, trans=0.5, clust=0.3),
        top_features=[FeatureContribution(name="ret_1", value=0.08, normal=0.0, error=4.0)],
        explanation=f"{key}: a pump-and-dump suspected (#{n})" + " " * padding,
        model_name="market",
        model_version="v-test",
    )


def export_models(root: Path, window: int = 8) -> Path:
    """Small contract models for `market` and `chain` (harness/modelgen; needs torch) under `root`."""
    from harness.modelgen import export_tiny_model
    from service.features import chain as chain_features

    export_tiny_model(root, name="market", version="v1", window=window, alert=20.0, created_ms=1)
    out = export_tiny_model(
        root,
        name="chain",
        version="c1",
        window=1,
        features=list(chain_features.CHAIN_FEATURES),
        spec_hash=chain_features.CHAIN_SPEC_HASH,
        transform=chain_features.CHAIN_MODEL_TRANSFORM,
        alert=20.0,
        created_ms=1,
    )
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["kind"] = "chain"
    (out / "manifest.json").write_text(json.dumps(manifest))
    (root / "market" / "v1" / "card.md").write_text("# tiny market model\n")
    return root


@dataclass
class Harness:
    settings: Settings
    runtime: Runtime
    ctx: ApiContext
    client: httpx.AsyncClient
    keys: dict[str, str] = field(default_factory=dict)
    base_url: str = ""

    def h(self, scope: str) -> dict[str, str]:
        return {"X-API-Key": self.keys[scope]}


def api_settings(redis_url: str, unique: str, **overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "redis_url": redis_url,
        "redis_key_prefix": f"t{unique}:",
        "kafka_bootstrap_servers": None,
        "env": "test",
        "api_stream_poll_s": 0.02,
        "api_stream_heartbeat_s": 0.5,
        "api_webhook_backoff_s": 0.05,
        "api_webhook_timeout_s": 2.0,
        "api_rate_burst": 10_000,
        "api_rate_per_s": 10_000.0,
        "model_dir": "/nonexistent-model-dir",
        "model_reload_interval_s": 0,
    }
    base.update(overrides)
    return load_settings(**base)


@contextlib.asynccontextmanager
async def harness(
    settings: Settings,
    *,
    serve: bool = False,
    components: bool = True,
    before_start: Callable[[Runtime], None] | None = None,
) -> AsyncIterator[Harness]:
    runtime = Runtime.from_settings(settings)
    if components:
        for c in build({"api"}, runtime, argparse.Namespace()):
            runtime.add(c)
    if before_start is not None:
        before_start(runtime)
    app = create_app(runtime, manage_runtime=False)
    await runtime.start()
    ctx = context_for(runtime)
    server: uvicorn.Server | None = None
    task: asyncio.Task[None] | None = None
    base_url = "http://test"
    try:
        if serve:
            port = free_port()
            config = uvicorn.Config(
                app, host="127.0.0.1", port=port, log_level="warning", lifespan="off", ws="websockets-sansio"
            )
            server = uvicorn.Server(config)
            task = asyncio.create_task(server.serve())
            deadline = time.monotonic() + 10
            while not server.started:
                if time.monotonic() > deadline or task.done():
                    raise RuntimeError("uvicorn did not start")
                await asyncio.sleep(0.02)
            base_url = f"http://127.0.0.1:{port}"
            client = httpx.AsyncClient(base_url=base_url, timeout=10)
        else:
            client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url, timeout=10)
        h = Harness(settings, runtime, ctx, client, base_url=base_url)
        for scope in Scope:
            key, _ = await ctx.keys.create(f"test-{scope.value}", [scope])
            h.keys[scope.value] = key
        try:
            yield h
        finally:
            await client.aclose()
    finally:
        if server is not None and task is not None:
            server.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 10)
        await runtime.stop()


@pytest.fixture
async def api(redis_url: str, unique: str) -> AsyncIterator[Harness]:
    async with harness(api_settings(redis_url, unique)) as h:
        yield h


async def publish_alerts(runtime: Runtime, alerts: list[Alert]) -> None:
    """Produce alerts to the alerts topic as the worker does (keyed by venue:symbol)."""
    producer = runtime.bus.producer()
    await producer.start()
    try:
        for a in alerts:
            await producer.send(runtime.settings.topic_alerts, a.model_dump_json().encode(), key=a.key.encode())
        await producer.flush()
    finally:
        await producer.stop()


async def wait_for(pred: Any, timeout: float = 10.0, interval: float = 0.02) -> None:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while True:
        res = pred()
        if asyncio.iscoroutine(res):
            res = await res
        if res:
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)
