"""POST /v1/score/transaction(s) and /v1/score/window with the real Scorer and ONNX session (a small contract model
exported by harness/modelgen), live market context from followed trades, chain address features from Redis,
503 when no model is loaded, 422 naming the field, and GET /v1/models + POST /v1/models/{name}/reload."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from service.features.spec import MARKET_FEATURES
from service.scoring.live_state import LiveContext, LivePublisher
from service.scoring.windows import WindowStore
from tests.api.conftest import Harness, api_settings, export_models, harness

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

WINDOW = 8
NOW = int(time.time() * 1000) // 5000 * 5000  # event times must be near now (RMAD_EVENT_TIME_*)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_models(tmp_path_factory.mktemp("api-models"), WINDOW)


@pytest.fixture
async def scored(redis_url: str, unique: str, model_dir: Path) -> AsyncIterator[Harness]:
    async with harness(api_settings(redis_url, unique, model_dir=str(model_dir), api_batch_max=4)) as h:
        yield h


def trade(**over: Any) -> dict[str, Any]:
    body = {"kind": "trade", "venue": "sim", "symbol": "PUMPUSDT", "price": 100.0, "size": 1.0, "side": "buy",
            "time_ms": NOW}  # fmt: skip
    body.update(over)
    return body


async def test_no_model_answers_503(api: Harness) -> None:
    c, h = api.client, api.h("score")
    r = await c.post("/v1/score/transaction", json=trade(), headers=h)
    assert r.status_code == 503 and r.json()["detail"].startswith("model not loaded")
    assert r.headers["retry-after"] == "10"
    r = await c.post("/v1/score/window", json={"features": [[0.0] * len(MARKET_FEATURES)] * 4}, headers=h)
    assert r.status_code == 503
    r = await c.get("/v1/models", headers=api.h("subscribe"))
    assert r.status_code == 200 and r.json()["models"] == []
    assert (await c.post("/v1/models/market/reload", headers=api.h("admin"))).status_code == 503


async def test_score_trade_with_and_without_live_context(scored: Harness) -> None:
    c, h = scored.client, scored.h("score")
    r = await c.post("/v1/score/transaction", json=trade(symbol="COLDUSDT"), headers=h)
    assert r.status_code == 200, r.text
    cold = r.json()
    assert cold["model_name"] == "market" and cold["model_version"] == "v1" and cold["threshold"] == 20.0
    assert cold["warm"] is False and cold["context_bars"] == 0 and cold["verdict"] == "normal"
    assert set(cold["branches"]) == {"md", "trans", "clust"} and len(cold["top_features"]) == 3
    assert "Only 0 bars of live context" in cold["explanation"]
    # the worker scores PUMPUSDT's market (a quiet minute, then a pump) and publishes its newest window and trades
    model = scored.ctx.scoring.model("market")
    store = WindowStore(WINDOW, model.n_features, 5000, warmup_bars=0)
    base = NOW - 3_600_000
    price, last = 100.0, None
    for i in range(300):  # 5-second bars: 60 s quiet, then the price runs up on heavy buying
        pump = i >= 250
        price = price * (1.01 if pump else 1.0 + 0.0005 * ((-1) ** i))
        for w in store.on_trade("sim:PUMPUSDT", base + i * 1000, price, 50.0 if pump else 1.0, True):
            last = w
    assert last is not None
    ctx = LiveContext("sim:PUMPUSDT", last.features, last.window_end_ms, model.name, model.version, True, False,
                      store.keys["sim:PUMPUSDT"].prints)  # fmt: skip
    await LivePublisher(scored.runtime.state, 60.0).publish([ctx])
    r = await c.post(
        "/v1/score/transaction", json=trade(price=price * 1.02, size=80.0, time_ms=base + 300_000), headers=h
    )
    hot = r.json()
    assert r.status_code == 200 and hot["warm"] is True and hot["context_bars"] == WINDOW
    assert hot["fused"] > cold["fused"]
    assert hot["transaction"]["context"] == 256 and hot["transaction"]["drivers"][0]["name"] == "size"
    if hot["verdict"] in ("anomalous", "critical"):
        assert hot["anomaly_type"] is not None and hot["severity"] is not None
    # the window is the worker's, as published: the API adds nothing to it
    r2 = (await c.post("/v1/score/transaction", json=trade(price=1.0, time_ms=base + 301_000), headers=h)).json()
    assert r2["fused"] == hot["fused"]


async def test_batch_window_chain_and_validation(scored: Harness) -> None:
    c, h = scored.client, scored.h("score")
    items = [trade(symbol="AUSDT"), trade(symbol="BUSDT", price=5.0), trade(symbol="CUSDT", side="sell")]
    r = await c.post("/v1/score/transactions", json={"items": items}, headers=h)
    assert r.status_code == 200, r.text
    assert [x["key"] for x in r.json()["items"]] == ["sim:AUSDT", "sim:BUSDT", "sim:CUSDT"]
    r = await c.post("/v1/score/transactions", json={"items": [trade()] * 5}, headers=h)
    assert r.status_code == 422 and r.json()["fields"] == ["body.items"] and "at most 4" in r.json()["detail"]
    r = await c.post("/v1/score/transactions", json={"items": []}, headers=h)
    assert r.status_code == 422 and r.json()["fields"] == ["body.items"]
    # 422 names the field
    cases = [
        ({k: v for k, v in trade().items() if k != "price"}, "body.trade.price"),
        (trade(size=-1), "body.trade.size"),
        (trade(side="up"), "body.trade.side"),
        (trade(symbol="a b"), "body.trade.symbol"),
        ({"kind": "bond"}, "body"),
    ]
    for body, field in cases:
        r = await c.post("/v1/score/transaction", json=body, headers=h)
        assert r.status_code == 422, body
        assert field in r.json()["fields"][0], (field, r.json())
    r = await c.post("/v1/score/transaction", content=b"{not json", headers={**h, "content-type": "application/json"})
    assert r.status_code == 422
    # a window of features, of bars, and of the wrong shape
    f = len(MARKET_FEATURES)
    r = await c.post("/v1/score/window", json={"features": [[0.0] * f] * WINDOW, "key": "x:y"}, headers=h)
    assert r.status_code == 200 and r.json()["warm"] is True and r.json()["key"] == "x:y"
    r = await c.post("/v1/score/window", json={"features": [[0.0] * (f - 1)] * WINDOW}, headers=h)
    assert r.status_code == 422 and r.json()["fields"] == ["body.features"]
    r = await c.post("/v1/score/window", json={"features": [[0.0] * f, [0.0]]}, headers=h)
    assert r.status_code == 422 and r.json()["fields"] == ["body.features"]
    bars = [{"start_ms": i * 5000, "open": 10, "high": 11, "low": 9, "close": 10.5, "volume": 3} for i in range(20)]
    r = await c.post("/v1/score/window", json={"bars": bars}, headers=h)
    assert r.status_code == 200 and r.json()["context_bars"] == 20
    r = await c.post("/v1/score/window", json={}, headers=h)
    assert r.status_code == 422 and r.json()["fields"] == ["body.features"]
    r = await c.post("/v1/score/window", json={"model": "nope", "features": [[0.0] * f]}, headers=h)
    assert r.status_code == 404 and "no model named 'nope'" in r.json()["detail"]
    # on-chain: address features from Redis (an address never seen scores from zeros)
    tx = {"kind": "chain", "chain": "ethereum", "hash": "0xabc", "from": "0x" + "1" * 40, "to": "0x" + "2" * 40,
          "value": "1000000000000000000", "fee": "21000", "time_ms": NOW}  # fmt: skip
    r = await c.post("/v1/score/transaction", json=tx, headers=h)
    assert r.status_code == 200, r.text
    assert r.json()["model_name"] == "chain" and r.json()["key"] == "ethereum:0x" + "1" * 40
    r = await c.post("/v1/score/transaction", json={**tx, "value": "-5"}, headers=h)
    assert r.status_code == 422 and r.json()["fields"] == ["body.chain.value"]
    assert (await c.post("/v1/score/transaction", json=trade(), headers=scored.h("subscribe"))).status_code == 403


async def test_models_list_and_reload(scored: Harness) -> None:
    c = scored.client
    r = await c.get("/v1/models", headers=scored.h("subscribe"))
    assert r.status_code == 200
    models = {m["name"]: m for m in r.json()["models"]}
    assert models["market"]["version"] == "v1" and models["market"]["window"] == WINDOW
    assert models["market"]["card"].startswith("# tiny market model")
    assert models["market"]["thresholds"]["alert"] == 20.0 and models["market"]["features"] == list(MARKET_FEATURES)
    r = await c.post("/v1/models/market/reload", headers=scored.h("admin"))
    assert r.status_code == 200 and r.json()["version"] == "v1"
    assert (await c.post("/v1/models/market/reload", headers=scored.h("score"))).status_code == 403
    r = await c.post("/v1/models/ghost/reload", headers=scored.h("admin"))
    assert r.status_code == 404 and "no model named 'ghost'" in r.json()["detail"]
    assert (await c.post("/v1/models/bad%20name/reload", headers=scored.h("admin"))).status_code == 422


async def _both_ways(h: Harness, body: Any, headers: dict[str, str] | list[tuple[str, str]]) -> tuple[Any, Any]:
    """The same request through the fast path (exact `application/json`) and through the FastAPI route (a content
    type the fast path leaves to the route): (status, Retry-After, WWW-Authenticate, JSON body) of each."""
    raw = orjson.dumps(body) if not isinstance(body, bytes) else body
    out = []
    pairs = list(headers.items()) if isinstance(headers, dict) else headers
    for ctype in ("application/json", "application/json; charset=utf-8"):
        r = await h.client.post("/v1/score/transaction", content=raw, headers=[*pairs, ("content-type", ctype)])
        out.append((r.status_code, r.headers.get("retry-after"), r.headers.get("www-authenticate"), r.json()))
    return out[0], out[1]


async def test_fast_path_answers_exactly_as_the_route(scored: Harness) -> None:
    h, ctx = scored, scored.ctx
    tx = {"kind": "chain", "chain": "ethereum", "hash": "0xabc", "from": "0x" + "3" * 40, "value": "5", "fee": "1",
          "time_ms": NOW}  # fmt: skip
    key = h.keys["score"]
    taken = [
        (trade(symbol="FASTUSDT"), {"X-API-Key": key}),
        (trade(symbol="FASTUSDT", side="sell", price=3.5), {"Authorization": f"Bearer {key}"}),
        (tx, {"X-API-Key": h.keys["admin"]}),  # admin holds every scope
        (trade(), [("Authorization", "Bearer rmad_abc_def"), ("X-API-Key", key)]),  # X-API-Key comes first
        (trade(), [("Authorization", f"Bearer {key}"), ("Authorization", "Basic eA==")]),  # the first one counts
    ]
    left = [
        ({k: v for k, v in trade().items() if k != "price"}, {"X-API-Key": key}),  # 422 naming the field
        (trade(size=-1), {"X-API-Key": key}),
        ({"kind": "bond"}, {"X-API-Key": key}),
        (b"{not json", {"X-API-Key": key}),
        (trade(), {}),  # 401 missing
        (trade(), {"X-API-Key": "rmad_abc_def"}),  # 401 wrong
        (trade(), {"X-API-Key": h.keys["subscribe"]}),  # 403 scope
        (trade(), [("X-API-Key", "rmad_abc_def"), ("Authorization", f"Bearer {key}")]),  # 401: X-API-Key is used
        (trade(), [("Authorization", "Basic eA=="), ("Authorization", f"Bearer {key}")]),  # 401: the first one
        (trade(), [("X-API-Key", "rmad_abc_def"), ("X-API-Key", key)]),  # 401: the first one
    ]
    for body, headers in taken + left:
        before = ctx.fast_path_served
        fast, route = await _both_ways(h, body, headers)
        assert fast == route, (body, headers)
        assert ctx.fast_path_served == before + (1 if (body, headers) in taken else 0), (body, headers)
        assert (fast[0] == 200) == ((body, headers) in taken), (body, headers, fast)
    assert (await _both_ways(h, trade(symbol="FASTUSDT"), {"X-API-Key": key}))[0][0] == 200
    # the fast path's requests are counted under the route's template like any other
    metrics = (await h.client.get("/metrics")).text
    assert 'rmad_http_requests_total{method="POST",route="/v1/score/transaction",status="2xx"}' in metrics
    assert 'rmad_http_requests_total{method="POST",route="/v1/score/transaction",status="4xx"}' in metrics


async def test_fast_path_503_and_429_as_the_route(redis_url: str, unique: str, model_dir: Path) -> None:
    async with harness(api_settings(redis_url, unique), components=False) as h:  # no model
        fast, route = await _both_ways(h, trade(), h.h("score"))
        assert fast == route and fast[0] == 503 and fast[1] == "10"
        assert h.ctx.fast_path_served == 1  # answered there: the model is missing, not the key or body
    settings = api_settings(redis_url, unique + "r", model_dir=str(model_dir), api_rate_burst=6, api_rate_per_s=0.01)
    async with harness(settings, components=False) as h:
        rs = await asyncio.gather(
            *(h.client.post("/v1/score/transaction", json=trade(time_ms=NOW + i), headers=h.h("score"))
              for i in range(20))
        )  # fmt: skip
        assert sorted(r.status_code for r in rs) == [200] * 6 + [429] * 14
        assert all(int(r.headers["retry-after"]) >= 1 for r in rs if r.status_code == 429)
        assert all("rate limit" in r.json()["detail"] for r in rs if r.status_code == 429)
        assert h.ctx.fast_path_served == 6
