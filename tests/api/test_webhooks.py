"""Webhooks against a real receiver on loopback: signatures verify (derived and own secrets), failed deliveries
are retried with backoff and stop after the first success, every attempt is recorded, redelivery keeps the alert
id, filters apply, and bad registrations get 422 naming the field."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from harness.servers import free_port
from service.api.auth import Scope
from service.api.webhooks import SIGNATURE_HEADER, sign, verify
from service.schemas.scoring import Severity
from tests.api.conftest import Harness, api_settings, harness, make_alert, wait_for


@dataclass
class Receiver:
    url: str
    fail_first: int = 0
    calls: list[tuple[float, dict[str, str], bytes]] = field(default_factory=list)


@contextlib.asynccontextmanager
async def receiver(fail_first: int = 0) -> AsyncIterator[Receiver]:
    port = free_port()
    rec = Receiver(f"http://127.0.0.1:{port}/hook", fail_first)

    async def hook(request: Request) -> Response:
        rec.calls.append((time.monotonic(), dict(request.headers), await request.body()))
        return Response(status_code=500 if len(rec.calls) <= rec.fail_first else 204)

    app = Starlette(routes=[Route("/hook", hook, methods=["POST"])])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    try:
        yield rec
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


@pytest.fixture
async def hooks(redis_url: str, unique: str) -> AsyncIterator[Harness]:
    async with harness(api_settings(redis_url, unique, api_webhook_max_attempts=4)) as h:
        yield h


def test_sign_and_verify() -> None:
    body = b'{"id":"a"}'
    header = sign("s3cret-s3cret-s3cret", body, timestamp_ms=1_000_000)
    assert verify("s3cret-s3cret-s3cret", header, body, now_ms=1_000_500)
    assert not verify("other-secret-value", header, body, now_ms=1_000_500)
    assert not verify("s3cret-s3cret-s3cret", header, body + b" ", now_ms=1_000_500)
    assert not verify("s3cret-s3cret-s3cret", header, body, now_ms=1_000_000 + 301_000), "stale timestamp"
    _t, mac = header.split(",")
    assert not verify("s3cret-s3cret-s3cret", f"t=1000001,{mac}", body, now_ms=1_000_500), "timestamp is signed"
    assert not verify("s3cret-s3cret-s3cret", "garbage", body)


async def test_retries_with_backoff_stop_after_success_and_signatures_verify(hooks: Harness) -> None:
    c = hooks.client
    h = hooks.h("subscribe")
    async with receiver(fail_first=2) as rx:
        r = await c.post("/v1/webhooks", json={"url": rx.url, "symbols": ["PUMPUSDT"]}, headers=h)
        assert r.status_code == 201, r.text
        sub = r.json()
        secret = sub["secret"]
        assert sub["signature_header"] == SIGNATURE_HEADER and len(secret) == 64
        await asyncio.sleep(0.1)  # the dispatcher starts from "now"
        alert = make_alert(7)
        other = make_alert(8, symbol="OTHERUSDT")
        await hooks.ctx.alert_log.append(other)  # filtered out
        await hooks.ctx.alert_log.append(alert)
        await wait_for(lambda: len(rx.calls) >= 3, timeout=10)
        await asyncio.sleep(0.4)  # would be time for more attempts if retries did not stop
        assert len(rx.calls) == 3, "two failures, one success, then no more"
        times = [t for t, _, _ in rx.calls]
        assert times[1] - times[0] >= 0.04 and times[2] - times[1] >= 0.09, "backoff doubles (0.05 s, 0.1 s)"
        for i, (_, headers, body) in enumerate(rx.calls, start=1):
            assert verify(secret, headers[SIGNATURE_HEADER.lower()], body)
            assert headers["x-rmad-alert-id"] == alert.id and headers["x-rmad-delivery-attempt"] == str(i)
            assert body == alert.model_dump_json().encode()
        deliveries = (await c.get(f"/v1/webhooks/{sub['id']}/deliveries", headers=h)).json()
        assert [(d["attempt"], d["outcome"], d["http_status"]) for d in reversed(deliveries)] == [
            (1, "retry", 500),
            (2, "retry", 500),
            (3, "delivered", 204),
        ]
        listed = (await c.get("/v1/webhooks", headers=h)).json()
        assert [w["id"] for w in listed] == [sub["id"]] and listed[0]["status"]["delivered"] == 1
        # redelivery: same body, same alert id, fresh signature
        r = await c.post(f"/v1/webhooks/{sub['id']}/redeliver", json={"alert_id": alert.id}, headers=h)
        assert r.status_code == 202 and r.json()["accepted"] is True
        await wait_for(lambda: len(rx.calls) == 4)
        _, headers, body = rx.calls[3]
        assert headers["x-rmad-alert-id"] == alert.id and body == rx.calls[2][2]
        assert verify(secret, headers[SIGNATURE_HEADER.lower()], body)
        r = await c.post(f"/v1/webhooks/{sub['id']}/redeliver", json={"alert_id": "nope"}, headers=h)
        assert r.status_code == 404
        # another key does not see or touch this subscription; delete
        other_key, _ = await hooks.ctx.keys.create("other", [Scope.SUBSCRIBE])
        assert (await c.get(f"/v1/webhooks/{sub['id']}", headers={"X-API-Key": other_key})).status_code == 404
        assert (await c.get("/v1/webhooks", headers={"X-API-Key": other_key})).json() == []
        assert (await c.delete(f"/v1/webhooks/{sub['id']}", headers=h)).status_code == 204
        assert (await c.get(f"/v1/webhooks/{sub['id']}", headers=h)).status_code == 404
    metrics = (await c.get("/metrics")).text
    assert 'rmad_webhook_deliveries_total{outcome="delivered"}' in metrics


async def test_own_secret_and_giving_up(redis_url: str, unique: str) -> None:
    settings = api_settings(redis_url, unique, api_webhook_max_attempts=2, api_webhook_backoff_s=0.02)
    async with harness(settings) as hk, receiver(fail_first=100) as rx:
        h = hk.h("subscribe")
        own = "my-own-webhook-secret-1234"
        r = await hk.client.post("/v1/webhooks", json={"url": rx.url, "secret": own, "min_severity": "high"}, headers=h)
        assert r.status_code == 201 and r.json()["secret"] == own
        sub_id = r.json()["id"]
        await asyncio.sleep(0.1)
        await hk.ctx.alert_log.append(make_alert(1, severity=Severity.LOW))
        alert = make_alert(2)
        await hk.ctx.alert_log.append(alert)
        await wait_for(lambda: len(rx.calls) >= 2)
        await asyncio.sleep(0.2)
        assert len(rx.calls) == 2, "max_attempts=2, then it gives up"
        assert all(verify(own, hd[SIGNATURE_HEADER.lower()], b) for _, hd, b in rx.calls)
        outcomes = [d["outcome"] for d in (await hk.client.get(f"/v1/webhooks/{sub_id}/deliveries", headers=h)).json()]
        assert outcomes == ["failed", "retry"]


async def test_webhook_registration_errors(hooks: Harness) -> None:
    c = hooks.client
    h = hooks.h("subscribe")
    r = await c.post("/v1/webhooks", json={"url": "ftp://x.example/hook"}, headers=h)
    assert r.status_code == 422 and r.json()["fields"] == ["body.url"]
    r = await c.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/h", "secret": "short"}, headers=h)
    assert r.status_code == 422 and r.json()["fields"] == ["body.secret"]
    r = await c.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/h", "types": ["meteor"]}, headers=h)
    assert r.status_code == 422 and r.json()["fields"] == ["body.types.0"]
    r = await c.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/h", "colour": "red"}, headers=h)
    assert r.status_code == 422 and r.json()["fields"] == ["body.colour"]
    assert (await c.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/h"})).status_code == 401
    assert (
        await c.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/h"}, headers=hooks.h("score"))
    ).status_code == 403
    assert (await c.get("/v1/webhooks/wh_nope/deliveries", headers=h)).status_code == 404
    assert (await c.delete("/v1/webhooks/wh_nope", headers=h)).status_code == 404


async def test_alerts_logged_while_no_dispatcher_runs_are_delivered_after_restart(redis_url: str, unique: str) -> None:
    """Each subscription keeps its own cursor in Redis: alerts logged while the API is down are delivered, in order
    and once, by the next dispatcher."""
    settings = api_settings(redis_url, unique)
    async with receiver() as rx:
        async with harness(settings) as first:
            r = await first.client.post("/v1/webhooks", json={"url": rx.url}, headers=first.h("subscribe"))
            assert r.status_code == 201
            secret = r.json()["secret"]
        # the API is down; the log keeps growing (another process's follower, or this one's backlog)
        missed = [make_alert(100 + i) for i in range(3)]
        async with harness(settings, components=False) as offline:
            for a in missed:
                await offline.ctx.alert_log.append(a)
        assert rx.calls == []
        async with harness(settings):
            await wait_for(lambda: len(rx.calls) >= 3, timeout=10)
            await asyncio.sleep(0.3)
        assert [hd["x-rmad-alert-id"] for _, hd, _ in rx.calls] == [a.id for a in missed]
        assert all(verify(secret, hd[SIGNATURE_HEADER.lower()], body) for _, hd, body in rx.calls)
