"""Schemathesis against the app's own OpenAPI schema on a real uvicorn server: no generated request gets a 5xx.

The server runs the real app on the session's Redis, with a small contract model loaded (so the scoring routes
answer 200/422, not only 503) and a few alerts in the log. Requests carry an admin key, so they get past auth and
reach the handlers. No components run (no webhook dispatcher), so generated webhook URLs are stored, never called.
The SSE stream is left out: a valid request never ends, by design.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from harness.servers import free_port
from service.api.app import create_app
from service.api.auth import Scope
from service.api.context import context_for
from service.runtime import Runtime
from tests.api.conftest import api_settings, export_models, make_alert

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def served(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    models = export_models(tmp_path_factory.mktemp("schemathesis-models"))
    unique = f"st{time.monotonic_ns() % 10**8}"
    settings_ = api_settings(redis_url, unique, model_dir=str(models))
    runtime = Runtime.from_settings(settings_)
    app = create_app(runtime, manage_runtime=True)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    info: dict[str, Any] = {"url": f"http://127.0.0.1:{port}"}

    def serve() -> None:
        async def main() -> None:
            ctx = context_for(runtime)
            key, _ = await ctx.keys.create("schemathesis", [Scope.ADMIN])
            info["key"] = key
            for i in range(3):
                await ctx.alert_log.append(make_alert(i))
            await server.serve()

        asyncio.run(main())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the API server did not start")
        time.sleep(0.05)
    try:
        yield info
    finally:
        server.should_exit = True
        thread.join(20)


@pytest.fixture(scope="module")
def api_schema(served: dict[str, Any]) -> Any:
    return schemathesis.openapi.from_url(served["url"] + "/openapi.json").exclude(path="/v1/alerts/sse")


@pytest.mark.integration
def test_no_server_errors(api_schema: Any, served: dict[str, Any]) -> None:
    """Every operation, 25 generated requests each (positive and negative data), none answered 5xx.

    Why a loop and not `schema.parametrize`: schemathesis' lazy pytest fixture does not run on pytest 9; the
    same strategies are driven by hypothesis directly here, one operation at a time.
    """
    failures: list[str] = []
    seen: list[str] = []
    for result in api_schema.get_all_operations():
        op = result.ok()
        seen.append(op.label)

        @given(case=op.as_strategy())
        @settings(
            max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None
        )
        def run(case: Any) -> None:
            case.call_and_validate(headers={"X-API-Key": served["key"]}, checks=[not_a_server_error], timeout=30)

        try:
            run()
        except Exception as exc:
            failures.append(f"{op.label}: {str(exc)[:2000]}")
    assert len(seen) >= 20, seen
    assert not failures, "\n\n".join(failures)


def test_every_operation_has_a_stable_id(served: dict[str, Any]) -> None:
    import httpx

    spec = httpx.get(served["url"] + "/openapi.json").json()
    ops = [op for p in spec["paths"].values() for op in p.values()]
    ids = [op.get("operationId") for op in ops]
    assert all(ids) and len(ids) == len(set(ids))
    assert {
        "score_transaction",
        "score_transactions",
        "score_window",
        "get_latest_scores",
        "list_alerts",
        "get_alert",
        "post_alert_feedback",
        "alerts_sse",
        "create_webhook",
        "list_models",
        "reload_model",
    } <= set(ids)
    assert not any("__" in i for i in ids), "no auto-generated FastAPI ids"
    assert "X-API-Key" in str(spec["components"]["securitySchemes"])
