"""The alert log fed from the alerts topic (idempotent, survives a restart), GET /v1/alerts filters and cursor
pages, GET /v1/alerts/{id}, feedback (stored, counted, exported), latest scores, tape, status, 422 naming fields."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from service.api.followers import FRESHNESS_KEY
from service.schemas.scoring import AnomalyType, BranchScores, Score, Severity
from tests.api.conftest import Harness, api_settings, harness, make_alert, publish_alerts, wait_for


async def _logged(h: Harness, n: int) -> None:
    await wait_for(lambda: h.runtime.state.xlen("alerts:log"), timeout=10)

    async def enough() -> bool:
        return await h.runtime.state.xlen("alerts:log") >= n

    await wait_for(enough, timeout=10)


async def test_alert_log_follows_the_topic_without_duplicates_and_survives_restart(redis_url: str, unique: str) -> None:
    settings = api_settings(redis_url, unique)
    alerts = [make_alert(i) for i in range(5)]
    async with harness(settings) as h:
        # at-least-once: the same alerts delivered twice are logged once
        await publish_alerts(h.runtime, alerts + alerts[:3])
        await _logged(h, 5)
        await wait_for(lambda: h.ctx.alert_log.get(alerts[0].id))
        r = await h.client.get("/v1/alerts", headers=h.h("subscribe"))
        assert r.status_code == 200
        ids = [it["alert"]["id"] for it in r.json()["items"]]
        assert ids == [a.id for a in reversed(alerts)]  # newest first, each once
        metrics = (await h.client.get("/metrics")).text
        assert "rmad_api_alert_duplicates_total 3.0" in metrics or "rmad_api_alert_duplicates_total" in metrics
    # a new API process on the same Redis (in-process bus gone) still serves the log
    async with harness(settings, components=False) as h2:
        r = await h2.client.get(f"/v1/alerts/{alerts[2].id}", headers=h2.h("subscribe"))
        assert r.status_code == 200
        body = r.json()
        assert body["alert"]["id"] == alerts[2].id and body["alert"]["explanation"].endswith("(#2)")
        assert body["feedback"] is None
        assert len((await h2.client.get("/v1/alerts", headers=h2.h("subscribe"))).json()["items"]) == 5


async def test_filters_and_cursor_pagination(api: Harness) -> None:
    log = api.ctx.alert_log
    made = []
    for i in range(30):
        a = make_alert(
            i,
            venue="binance-spot" if i % 2 else "bybit-spot",
            symbol="AUSDT" if i % 3 else "BUSDT",
            severity=[Severity.LOW, Severity.MEDIUM, Severity.HIGH, Severity.CRITICAL][i % 4],
            anomaly=AnomalyType.CRASH if i % 5 == 0 else AnomalyType.PUMP_AND_DUMP,
        )
        await log.append(a)
        made.append(a)
    h = api.h("subscribe")
    c = api.client
    # pages of 7, newest first, no overlap, everything once
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, str | int] = {"limit": 7}
        if cursor:
            params["cursor"] = cursor
        page = (await c.get("/v1/alerts", params=params, headers=h)).json()
        seen += [it["alert"]["id"] for it in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [a.id for a in reversed(made)]

    async def q(**params: object) -> list[str]:
        r = await c.get("/v1/alerts", params={**params, "limit": 500}, headers=h)
        assert r.status_code == 200, r.text
        return [it["alert"]["id"] for it in r.json()["items"]]

    assert set(await q(venue="binance-spot")) == {a.id for a in made if a.venue == "binance-spot"}
    assert set(await q(venue="binance-spot", symbol="BUSDT")) == {
        a.id for a in made if a.venue == "binance-spot" and a.symbol == "BUSDT"
    }
    assert set(await q(type="crash")) == {a.id for a in made if a.anomaly_type is AnomalyType.CRASH}
    assert set(await q(min_severity="high")) == {a.id for a in made if a.severity.rank >= 2}
    lo, hi = made[10].created_ms, made[19].created_ms
    assert set(await q(since_ms=lo, until_ms=hi)) == {a.id for a in made[10:20]}
    assert await q(symbol="NOPE") == []


async def test_alert_errors_name_the_field(api: Harness) -> None:
    h = api.h("subscribe")
    c = api.client
    r = await c.get("/v1/alerts", params={"min_severity": "huge"}, headers=h)
    assert r.status_code == 422 and r.json()["fields"] == ["query.min_severity"]
    assert "query.min_severity" in r.json()["detail"]
    r = await c.get("/v1/alerts", params={"cursor": "not-a-cursor", "limit": 0}, headers=h)
    assert r.status_code == 422 and set(r.json()["fields"]) == {"query.cursor", "query.limit"}
    assert (await c.get("/v1/alerts/doesnotexist", headers=h)).status_code == 404
    assert (await c.get("/v1/alerts/bad%20id", headers=h)).status_code == 422


async def test_feedback_is_stored_counted_and_exported(api: Harness) -> None:
    a, b = make_alert(1), make_alert(2, anomaly=AnomalyType.CRASH)
    await api.ctx.alert_log.append(a)
    await api.ctx.alert_log.append(b)
    c = api.client
    fb = api.h("feedback")
    r = await c.post(f"/v1/alerts/{a.id}/feedback", json={"verdict": "confirm", "note": "clear pump"}, headers=fb)
    assert r.status_code == 201, r.text
    assert r.json()["verdict"] == "confirm" and r.json()["note"] == "clear pump"
    r = await c.post(f"/v1/alerts/{b.id}/feedback", json={"verdict": "dismiss"}, headers=fb)
    assert r.status_code == 201
    # bad bodies name the field; unknown alert 404; wrong scope 403
    r = await c.post(f"/v1/alerts/{a.id}/feedback", json={"verdict": "maybe"}, headers=fb)
    assert r.status_code == 422 and r.json()["fields"] == ["body.verdict"]
    r = await c.post(f"/v1/alerts/{a.id}/feedback", json={"note": "x"}, headers=fb)
    assert r.status_code == 422 and r.json()["fields"] == ["body.verdict"]
    r = await c.post(f"/v1/alerts/{a.id}/feedback", json={"verdict": "confirm", "note": "x" * 2001}, headers=fb)
    assert r.status_code == 422 and r.json()["fields"] == ["body.note"]
    assert (await c.post("/v1/alerts/nope/feedback", json={"verdict": "confirm"}, headers=fb)).status_code == 404
    assert (
        await c.post(f"/v1/alerts/{a.id}/feedback", json={"verdict": "confirm"}, headers=api.h("subscribe"))
    ).status_code == 403
    got = (await c.get(f"/v1/alerts/{a.id}", headers=api.h("subscribe"))).json()
    assert got["feedback"]["verdict"] == "confirm"
    metrics = (await c.get("/metrics")).text
    assert 'rmad_alert_feedback_total{anomaly_type="crash",verdict="dismiss"}' in metrics
    r = await c.get("/v1/feedback/export", headers=fb)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
    rows = [orjson.loads(line) for line in r.content.splitlines()]
    assert [(x["alert_id"], x["verdict"]) for x in rows] == [(a.id, "confirm"), (b.id, "dismiss")]
    assert rows[0]["alert"]["anomaly_type"] == "pump_and_dump" and rows[0]["note"] == "clear pump"


async def test_latest_scores_tape_symbols_and_status(api: Harness) -> None:
    producer = api.runtime.bus.producer()
    await producer.start()
    s = api.settings
    for i in range(5):
        score = Score(
            key="sim:PUMPUSDT",
            window_end_ms=1_700_000_000_000 + i * 5000,
            fused=0.1 * i,
            branches=BranchScores(md=0, trans=0, clust=0),
            weights=BranchScores(md=0.3, trans=0.3, clust=0.4),
            threshold=0.35,
            model_name="market",
            model_version="v-test",
            last_event_ms=1_700_000_000_000 + i * 5000,
            scored_ms=1_700_000_000_100 + i * 5000,
        )
        await producer.send(s.topic_scores, score.model_dump_json().encode(), key=b"sim:PUMPUSDT")
    base = 1_700_000_000_000
    for i in range(30):  # 3 seconds of trades, 10 a second
        t = base + i * 100
        ev = {"type": "trade", "venue": "sim", "symbol": "PUMPUSDT", "event_time_ms": t, "ingest_time_ms": t + 40,
              "trade_id": str(i), "price": str(100 + i), "size": "1.5", "side": "buy"}  # fmt: skip
        await producer.send(s.topic_trades, orjson.dumps(ev), key=b"sim:PUMPUSDT")
    bar = {"type": "bar", "venue": "binance-spot", "symbol": "BTCUSDT", "event_time_ms": base,
           "ingest_time_ms": base + 40, "interval": "1m", "open_time_ms": base - 60000, "close_time_ms": base,
           "open": "1", "high": "2", "low": "0.5", "close": "1.5", "volume": "10"}  # fmt: skip
    await producer.send(s.topic_bars, orjson.dumps(bar), key=b"binance-spot:BTCUSDT")
    await producer.send(s.topic_trades, b"not json", key=b"x")
    await producer.flush()
    await producer.stop()
    h = api.h("subscribe")

    async def tape_ready() -> bool:
        r = await api.client.get("/v1/tape/sim/PUMPUSDT", headers=h)
        return len(r.json()["bars"]) >= 3

    await wait_for(tape_ready, timeout=10)
    bars = (await api.client.get("/v1/tape/sim/PUMPUSDT", headers=h)).json()["bars"]
    assert [b["t"] for b in bars[:3]] == [base, base + 1000, base + 2000]
    assert bars[0]["o"] == 100 and bars[0]["c"] == 109 and bars[0]["h"] == 109 and bars[0]["v"] == pytest.approx(15)

    async def scores_ready() -> bool:
        r = await api.client.get("/v1/scores/sim/PUMPUSDT", headers=h)
        return len(r.json()["items"]) == 5

    await wait_for(scores_ready)
    items = (await api.client.get("/v1/scores/sim/PUMPUSDT", params={"limit": 2}, headers=h)).json()["items"]
    assert [round(x["fused"], 2) for x in items] == [0.4, 0.3]
    keys = (await api.client.get("/v1/symbols", headers=h)).json()["keys"]
    assert set(keys) == {"sim:PUMPUSDT", "binance-spot:BTCUSDT"}
    st = (await api.client.get("/v1/status", headers=h)).json()
    assert st["parts"]["state"]["ok"] and st["model_version"] == "v-test"
    assert st["ingest_lag_s"] == pytest.approx(0.04) and st["score_lag_s"] == pytest.approx(0.1)
    assert {"market", "scores"} <= set(st["consumer_lag_s"])
    assert (await api.runtime.state.hget(FRESHNESS_KEY, "model_name")) == b"market"
    r = await api.client.get("/v1/scores/sim/bad%20symbol", headers=h)
    assert r.status_code == 422 and r.json()["fields"] == ["path.symbol"]


@pytest.mark.integration
async def test_alert_log_follows_the_alerts_topic_on_kafka(redis_url: str, kafka_bootstrap: str, unique: str) -> None:
    """The same path on the Tansu broker: alerts produced to Kafka reach the log once, even when produced twice."""
    settings = api_settings(
        redis_url,
        unique,
        kafka_bootstrap_servers=kafka_bootstrap,
        topic_alerts=f"alerts.{unique}",
        topic_scores=f"scores.{unique}",
        topic_trades=f"trades.{unique}",
        topic_bars=f"bars.{unique}",
        topic_partitions=2,
        kafka_session_timeout_ms=6_000,
        kafka_heartbeat_interval_ms=500,
    )
    alerts = [make_alert(i, symbol="KAFKAUSDT") for i in range(4)]
    async with harness(settings) as h:
        await publish_alerts(h.runtime, alerts + alerts[:2])

        async def logged() -> bool:
            return await h.runtime.state.xlen("alerts:log") >= 4

        await wait_for(logged, timeout=60)
        await asyncio.sleep(0.5)
        r = await h.client.get("/v1/alerts", params={"symbol": "KAFKAUSDT"}, headers=h.h("subscribe"))
        assert sorted(it["alert"]["id"] for it in r.json()["items"]) == sorted(a.id for a in alerts)
