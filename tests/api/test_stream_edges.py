"""Stream edges on a real uvicorn server: a bad query answers 422 naming the field, a revoked key's open streams
close within a second with the reason, and the alert hub and webhook dispatcher back off from a down Redis and
log once per state change."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from harness.servers import free_port
from service.api.alertlog import AlertLog
from service.api.auth import Scope
from service.api.hub import AlertHub
from service.api.retry import RetryState
from service.state.redis import RedisState
from tests.api.conftest import Harness, api_settings, harness, wait_for
from tests.api.test_streams import ws_url


@pytest.fixture
async def live(redis_url: str, unique: str) -> AsyncIterator[Harness]:
    async with harness(api_settings(redis_url, unique, api_stream_revoke_check_s=0.2), serve=True) as h:
        yield h


async def test_ws_bad_query_is_a_422_naming_the_field(live: Harness) -> None:
    with pytest.raises(InvalidStatus) as err:
        async with connect(ws_url(live, api_key=live.keys["subscribe"], min_severity="bogus")):
            pass
    resp = err.value.response
    assert resp.status_code == 422
    body = json.loads(resp.body or b"{}")
    assert body["fields"] == ["query.min_severity"] and "query.min_severity" in body["detail"]
    r = await live.client.get("/v1/alerts/sse", params={"min_severity": "bogus"}, headers=live.h("subscribe"))
    assert r.status_code == 422 and r.json()["fields"] == ["query.min_severity"]


async def test_revoking_a_key_closes_its_streams_within_a_second(live: Harness) -> None:
    key, info = await live.ctx.keys.create("doomed", [Scope.SUBSCRIBE])
    other = live.keys["subscribe"]
    async with connect(ws_url(live, api_key=key)) as ws, connect(ws_url(live, api_key=other)) as kept:
        async with httpx.AsyncClient(base_url=live.base_url, timeout=10) as c:
            async with c.stream("GET", "/v1/alerts/sse", headers={"X-API-Key": key}) as sse:
                assert sse.status_code == 200
                lines = sse.aiter_lines()
                assert (await anext(lines)).startswith("retry:")
                assert await live.ctx.keys.revoked(info.key_id) is False
                t0 = time.monotonic()
                assert await live.ctx.keys.revoke(info.key_id)
                msg = json.loads(await asyncio.wait_for(ws.recv(), 2.0))
                assert msg == {"type": "error", "reason": f"API key {info.key_id} was revoked"}
                with pytest.raises(ConnectionClosed) as closed:
                    await asyncio.wait_for(ws.recv(), 2.0)
                assert time.monotonic() - t0 < 1.0
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
                assert "revoked" in closed.value.rcvd.reason
                sse_lines = []
                async for line in lines:
                    sse_lines.append(line)
                    if line.startswith("data:") and "revoked" in line:
                        break
                assert time.monotonic() - t0 < 1.5
        await kept.send("ping")  # the other key's stream is untouched
        assert kept.state.name == "OPEN"


async def test_hub_backs_off_from_a_down_redis_and_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    dead = RedisState(f"redis://127.0.0.1:{free_port()}/0", "x:", socket_timeout_s=0.2)
    hub = AlertHub(AlertLog(dead, 1000, 3600.0), poll_s=0.01, queue_size=8)
    caplog.set_level(logging.WARNING, logger="service.api.hub")
    await hub.start()
    try:
        await wait_for(lambda: hub._retry.failures >= 6, timeout=20)
        assert not hub.health().ok
    finally:
        await hub.stop()
        await dead.close()
    warnings = [r for r in caplog.records if r.name == "service.api.hub"]
    assert len(warnings) == 1 and "failing, retrying with back-off" in warnings[0].getMessage()


def test_retry_state_doubles_caps_and_logs_state_changes(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("test.retry")
    caplog.set_level(logging.WARNING, logger="test.retry")
    r = RetryState("thing", log, base_s=0.1, max_s=1.0)
    delays = [r.failed(ConnectionError("down")) for _ in range(8)]
    assert all(0.08 <= d <= 0.1 for d in delays[:1]) and all(0.8 <= d <= 1.0 for d in delays[4:])
    assert all(b >= a * 1.5 for a, b in itertools.pairwise(delays[:4]))
    r.failed(ConnectionError("other"))  # a new error is a new state
    r.ok()
    r.ok()
    msgs: list[Any] = [x.getMessage() for x in caplog.records]
    assert len(msgs) == 3 and "down" in msgs[0] and "other" in msgs[1] and "recovered after 9" in msgs[2]
