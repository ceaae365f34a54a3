"""Schemathesis against the app's own OpenAPI schema on a real uvicorn server: no generated request gets a 5xx.

The server runs the real app on the session's Redis, with a small contract model loaded (so the scoring routes
answer 200/422, not only 503) and a few alerts in the log. Requests carry an admin key, so they get past auth and
reach the handlers. No components run (no webhook dispatcher), so generated webhook URLs are stored, never called.
The SSE stream is left out: a valid request never ends, by design.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

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


STRICT = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


@pytest.mark.integration
def test_strict_validation(api_schema: Any, served: dict[str, Any]) -> None:
    """The same operations with strict checks: every status is one the spec declares, every body (errors included)
    matches its declared schema and content type, and schema-invalid data is refused (4xx), never accepted."""
    failures: list[str] = []
    for result in api_schema.get_all_operations():
        op = result.ok()

        @given(case=op.as_strategy())
        @settings(
            max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None
        )
        def run(case: Any) -> None:
            case.call_and_validate(headers={"X-API-Key": served["key"]}, checks=STRICT, timeout=30)

        try:
            run()
        except Exception as exc:
            failures.append(f"{op.label}: {str(exc)[:2000]}")
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


def _nested(depth: int, open_: str) -> bytes:
    close = "]" if open_ == "[" else "}"
    inner = "1" if open_ == "[" else ""
    if open_ == "{":
        return (('{"a":' * depth) + "1" + "}" * depth).encode()
    return (open_ * depth + inner + close * depth).encode()


EDGE_BODIES = st.one_of(
    st.builds(_nested, st.integers(1, 200_000), st.sampled_from(["[", "{"])),
    st.integers(1, 12).map(lambda mb: b'{"pad":"' + b"x" * (mb * 2**20) + b'"}'),  # around the 4 MiB limit
    st.recursive(
        st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers() | st.text(max_size=20),
        lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
        max_leaves=40,
    ).map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=200),
)
CTYPES = st.sampled_from(
    ["application/json", "application/json; charset=utf-8", "text/plain", "application/x-www-form-urlencoded", None]
)


@pytest.mark.integration
def test_body_size_and_nesting_generator(served: dict[str, Any]) -> None:
    """Every operation that takes a body, fed oversized, deeply nested, mistyped and random bodies under every
    content type: always a 4xx in the one error shape (or a 2xx for a body that happens to be valid), never 5xx."""
    import httpx

    spec = httpx.get(served["url"] + "/openapi.json").json()
    ops = [(m.upper(), p) for p, item in spec["paths"].items() for m, op in item.items() if "requestBody" in op]
    assert len(ops) >= 5
    seen: set[int] = set()
    with httpx.Client(base_url=served["url"], timeout=30) as client:

        @given(op=st.sampled_from(ops), body=EDGE_BODIES, ctype=CTYPES)
        @settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def run(op: tuple[str, str], body: bytes, ctype: str | None) -> None:
            method, path = op
            path = path.replace("{name}", "market").replace("{alert_id}", "x").replace("{webhook_id}", "x")
            headers = {"X-API-Key": served["key"], **({"content-type": ctype} if ctype else {})}
            r = client.request(method, path, content=body, headers=headers)
            seen.add(r.status_code)
            assert r.status_code < 500, (method, path, r.status_code, r.text[:300])
            if r.status_code >= 400:
                problem = r.json()
                assert set(problem) == {"detail", "fields", "errors"}, problem

        run()
    assert {400, 413, 415} <= seen


_NOW = int(time.time() * 1000)
_ANY = st.one_of(st.none(), st.booleans(), st.text(max_size=12), st.integers(), st.floats())
_TIMES = st.one_of(st.integers(-(2**63), 2**63), st.integers(_NOW - 10**9, _NOW + 10**9), _ANY)
_PRICES = st.one_of(st.floats(), st.floats(1e-18, 1e18), st.sampled_from([1e-320, 1e308, 0.0, -1.0, "100", True]))
_TRADES = st.fixed_dictionaries(
    {"kind": st.just("trade"), "venue": st.sampled_from(["sim", "binance-spot", "SIM", "x"]) | _ANY,
     "symbol": st.sampled_from(["BTCUSDT", "btc/usdt", "[[[", ""]) | _ANY, "price": _PRICES, "size": _PRICES,
     "side": st.sampled_from(["buy", "sell"]) | _ANY, "time_ms": _TIMES},
    optional={"extra": _ANY},
)  # fmt: skip
_CHAIN = st.fixed_dictionaries(
    {"kind": st.just("chain"), "chain": st.sampled_from(["ethereum", "bitcoin"]) | _ANY,
     "hash": st.sampled_from(["0xabc", "ab" * 32]) | _ANY,
     "from": st.sampled_from(["0x" + "1" * 40, "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2", "not an address!"]) | _ANY,
     "value": st.integers(0, 10**80).map(str) | _ANY, "time_ms": _TIMES},
    optional={"to": _ANY, "fee": _ANY, "outputs": st.lists(st.fixed_dictionaries({"address": _ANY, "value": _ANY}))},
)  # fmt: skip


@pytest.mark.integration
def test_scoring_request_path_fuzz(served: dict[str, Any]) -> None:
    """POST /v1/score/transaction(s) with adversarial values in every field (absurd times, subnormal and huge
    prices, strings and booleans for numbers, odd symbols and addresses): a score or a 422 naming a field."""
    import httpx

    with httpx.Client(base_url=served["url"], timeout=30) as client:

        @given(body=_TRADES | _CHAIN, batch=st.booleans())
        @settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def run(body: dict[str, Any], batch: bool) -> None:
            path, payload = ("/v1/score/transactions", {"items": [body]}) if batch else ("/v1/score/transaction", body)
            r = client.post(path, content=json.dumps(payload), headers={"X-API-Key": served["key"],
                                                                       "content-type": "application/json"})  # fmt: skip
            assert r.status_code in (200, 422), (body, r.status_code, r.text[:300])
            if r.status_code == 422:
                assert r.json()["fields"], r.text

        run()
