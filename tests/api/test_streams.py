"""WebSocket and SSE alert streams on a real uvicorn server: filters, resume from the last id without gaps or
repeats, heartbeats, auth close codes, and a slow subscriber cut (told why) while a fast one keeps receiving."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from service.api.alertlog import AlertFilter
from service.api.hub import SubscriberCut
from service.schemas.scoring import Alert, Severity
from tests.api.conftest import Harness, api_settings, harness, make_alert, wait_for


@pytest.fixture
async def live(redis_url: str, unique: str) -> AsyncIterator[Harness]:
    async with harness(api_settings(redis_url, unique), serve=True) as h:
        yield h


def ws_url(h: Harness, **params: Any) -> str:
    q = urlencode(params, doseq=True)
    return h.base_url.replace("http://", "ws://") + "/v1/alerts/stream" + (f"?{q}" if q else "")


async def next_alert(ws: ClientConnection, timeout: float = 5.0) -> dict[str, Any]:  # noqa: ASYNC109
    """The next alert message, skipping heartbeats."""
    while True:
        msg = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        if msg["type"] == "alert":
            return msg
        assert msg["type"] == "heartbeat", msg


async def append(h: Harness, alerts: list[Alert]) -> None:
    for a in alerts:
        await h.ctx.alert_log.append(a)
    h.ctx.hub.wake()


async def test_ws_reconnect_with_last_id_misses_nothing(live: Harness) -> None:
    key = live.keys["subscribe"]
    alerts = [make_alert(i) for i in range(40)]
    got: list[str] = []
    async with connect(ws_url(live, api_key=key)) as ws:
        await asyncio.sleep(0.05)
        await append(live, alerts[:5])
        for _ in range(5):
            got.append((await next_alert(ws))["alert"]["id"])
    last = got[-1]
    # while disconnected, more alerts arrive; and more keep arriving while it reconnects
    await append(live, alerts[5:15])

    async def trickle() -> None:
        for a in alerts[15:40]:
            await live.ctx.alert_log.append(a)
            live.ctx.hub.wake()
            await asyncio.sleep(0.004)

    feeder = asyncio.create_task(trickle())
    async with connect(ws_url(live, api_key=key, last_id=last)) as ws:
        while len(got) < 40:
            got.append((await next_alert(ws))["alert"]["id"])
        await feeder
        with pytest.raises(TimeoutError):  # nothing more, nothing twice
            await next_alert(ws, timeout=0.3)
    assert got == [a.id for a in alerts]


async def test_ws_filters_heartbeats_and_resume_by_seq(live: Harness) -> None:
    key = live.keys["subscribe"]
    async with connect(ws_url(live, api_key=key, venue="binance-spot", min_severity="high")) as ws:
        await asyncio.sleep(0.05)
        await append(live, [
            make_alert(1, venue="bybit-spot"),
            make_alert(2, venue="binance-spot", severity=Severity.LOW),
            make_alert(3, venue="binance-spot", severity=Severity.CRITICAL),
        ])  # fmt: skip
        msg = await next_alert(ws)
        assert msg["alert"]["venue"] == "binance-spot" and msg["alert"]["severity"] == "critical"
        # heartbeats carry the position (every 0.5 s in tests)
        hb = json.loads(await asyncio.wait_for(ws.recv(), 3))
        assert hb["type"] == "heartbeat" and hb["position"] == msg["seq"]
    # resuming from a log sequence works like resuming from an alert id
    first = (await live.ctx.alert_log.page(AlertFilter(), None, 10, 100))[0]
    oldest = first[-1].seq
    async with connect(ws_url(live, api_key=key, last_id=oldest)) as ws:
        ids = [(await next_alert(ws))["alert"]["id"] for _ in range(2)]
    assert ids == [
        make_alert(2, venue="binance-spot", severity=Severity.LOW).id,
        make_alert(3, venue="binance-spot").id,
    ]


async def test_ws_auth_and_unknown_last_id(live: Harness) -> None:
    async def closed_with(url: str) -> tuple[int, str]:
        async with connect(url) as ws:
            with contextlib.suppress(ConnectionClosed):
                while True:
                    await asyncio.wait_for(ws.recv(), 5)
            assert ws.close_code is not None
            return ws.close_code, ws.close_reason or ""

    assert (await closed_with(ws_url(live)))[0] == 4401
    assert (await closed_with(ws_url(live, api_key="rmad_x_y")))[0] == 4401
    code, reason = await closed_with(ws_url(live, api_key=live.keys["score"]))
    assert code == 4403 and "subscribe" in reason
    code, reason = await closed_with(ws_url(live, api_key=live.keys["subscribe"], last_id="deadbeef"))
    assert code == 4404 and "unknown last_id" in reason


def _tiny_socket(port: int) -> socket.socket:
    """A client socket with a small receive buffer, so a subscriber that stops reading pushes back quickly."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    s.setblocking(False)
    return s


async def test_slow_subscriber_is_cut_while_fast_one_keeps_receiving(redis_url: str, unique: str) -> None:
    settings = api_settings(redis_url, unique, api_stream_queue=16, api_stream_send_timeout_s=2.0)
    async with harness(settings, serve=True) as h:
        key = h.keys["subscribe"]
        port = int(h.base_url.rsplit(":", 1)[1])
        n = 800  # ~6 MB uncompressed: more than the kernel's socket buffers (4 MB send + the tiny receive)
        alerts = [make_alert(i, padding=8000) for i in range(n)]
        # no permessage-deflate: the padding would compress to nothing and never fill a buffer
        slow = await connect(ws_url(h, api_key=key), sock=_tiny_socket(port), max_queue=1, compression=None)
        fast = await connect(ws_url(h, api_key=key), compression=None)
        try:
            await asyncio.sleep(0.1)
            received: list[str] = []

            async def read_fast() -> None:
                while len(received) < n:
                    received.append((await next_alert(fast, timeout=10))["alert"]["id"])

            reader = asyncio.create_task(read_fast())
            for i in range(0, n, 50):  # bursts of 50 against queues of 16: a reader that keeps up catches up
                await append(h, alerts[i : i + 50])  # from the log and is never cut by the size of a burst
                await asyncio.sleep(0.01)
            await asyncio.wait_for(reader, 30)
            assert received == [a.id for a in alerts], "the fast subscriber got everything, in order, once"
            # the slow one's socket stopped taking messages: cut within the send timeout (2 s), never waited for
            await wait_for(lambda: len(h.ctx.hub.subscribers) == 1, timeout=10)
            assert not any(s for s in h.ctx.hub.subscribers if s.cut_reason), "cut subscribers leave the hub"
            # the slow one now reads what reached it: some alerts, then the reason, then the close
            slow_msgs: list[dict[str, Any]] = []
            with contextlib.suppress(ConnectionClosed, TimeoutError):
                while True:
                    slow_msgs.append(json.loads(await asyncio.wait_for(slow.recv(), 5)))
            assert slow.close_code == 4008 and "slow consumer" in (slow.close_reason or "")
            assert len([m for m in slow_msgs if m["type"] == "alert"]) < n
            errors = [m for m in slow_msgs if m["type"] == "error"]
            assert not errors or "slow consumer" in errors[0]["reason"]
            metrics = (await h.client.get("/metrics")).text
            assert 'rmad_api_stream_disconnects_total{reason="slow",transport="ws"}' in metrics
        finally:
            await fast.close()
            await slow.close()


async def _sse_events(client: httpx.AsyncClient, url: str, want: int, headers: dict[str, str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    async with client.stream("GET", url, headers=headers) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        event: dict[str, Any] = {}
        async for line in r.aiter_lines():
            if line.startswith("id: "):
                event["id"] = line[4:]
            elif line.startswith("event: "):
                event["event"] = line[7:]
            elif line.startswith("data: "):
                event["data"] = json.loads(line[6:])
            elif line == "" and event:
                out.append(event)
                event = {}
                if len(out) >= want:
                    return out
    return out


async def test_sse_stream_resume_and_heartbeat(live: Harness) -> None:
    key = live.keys["subscribe"]
    alerts = [make_alert(i, symbol="SSEUSDT") for i in range(6)]
    await append(live, alerts[:3])
    first = await live.ctx.alert_log.get(alerts[0].id)
    assert first is not None
    url = "/v1/alerts/sse?" + urlencode({"api_key": key, "symbol": "SSEUSDT"})
    # resume with Last-Event-ID (the seq of alert 0): alerts 1 and 2 from the backlog, then a heartbeat
    events = await asyncio.wait_for(_sse_events(live.client, url, 3, {"Last-Event-ID": first.seq}), 10)
    assert [e["data"]["alert"]["id"] for e in events[:2]] == [alerts[1].id, alerts[2].id]
    assert events[0]["event"] == "alert" and events[0]["id"] == events[0]["data"]["seq"]
    assert events[2]["event"] == "heartbeat"
    # live: resume by alert id, then new alerts arrive
    url2 = url + "&" + urlencode({"last_id": alerts[2].id})

    async def later() -> None:
        await asyncio.sleep(0.2)
        await append(live, alerts[3:])

    task = asyncio.create_task(later())
    events = await asyncio.wait_for(_sse_events(live.client, url2, 3, {}), 10)
    await task
    assert [e["data"]["alert"]["id"] for e in events if e["event"] == "alert"][:3] == [a.id for a in alerts[3:]] or [
        e["event"] for e in events
    ].count("heartbeat") > 0
    r = await live.client.get("/v1/alerts/sse", params={"api_key": key, "last_id": "nope"})
    assert r.status_code == 404 and "unknown last_id" in r.json()["detail"]
    assert (await live.client.get("/v1/alerts/sse")).status_code == 401
    r = await live.client.get("/v1/alerts/sse", params={"api_key": key, "min_severity": "x"})
    assert r.status_code == 422 and r.json()["fields"] == ["query.min_severity"]


async def test_lagging_subscriber_catches_up_from_the_log_or_is_cut_when_too_far_behind(api: Harness) -> None:
    """Unit level, on the real log: a subscriber whose queue overflowed reads the rest from the log, rejoins the
    live queue exactly at the hub's position, and is cut (with the reason) when it is further behind than allowed."""
    hub, log = api.ctx.hub, api.ctx.alert_log
    alerts = [make_alert(i) for i in range(10)]
    sub = hub.subscribe(AlertFilter())
    sub.queue = asyncio.Queue(3)
    for a in alerts:
        await log.append(a)
    await hub.poll_once()
    assert sub.lagging and sub.queue.qsize() == 3
    got = [sub.queue.get_nowait().alert["id"] for _ in range(3)]
    got += [e.alert["id"] for e in await sub.catch_up(log, 100, max_lag_s=60)]
    assert got == [a.id for a in alerts] and not sub.lagging, "caught up: back on the live queue"
    await log.append(make_alert(10))
    await hub.poll_once()
    assert sub.queue.get_nowait().alert["id"] == make_alert(10).id, "live again, nothing missed or repeated"
    # far behind: cut, and told why
    sub.lagging, sub.handled_seq = True, "1-0"
    with pytest.raises(SubscriberCut, match=r"slow consumer: .* s behind the live alerts"):
        await sub.catch_up(log, 100, max_lag_s=60)
    assert sub not in hub.subscribers


async def test_ws_key_as_subprotocol(live: Harness) -> None:
    """Browsers cannot set headers on a WebSocket: the key may come as the `rmad-key.<key>` subprotocol."""
    await append(live, [make_alert(1)])
    first = await live.ctx.alert_log.last_seq()
    await append(live, [make_alert(2)])
    url = ws_url(live, last_id=first)
    async with connect(url, subprotocols=[f"rmad-key.{live.keys['subscribe']}"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == f"rmad-key.{live.keys['subscribe']}"
        assert (await next_alert(ws))["alert"]["id"] == make_alert(2).id
    async with connect(url, subprotocols=["rmad-key.rmad_bad_key"]) as ws:  # type: ignore[list-item]
        with contextlib.suppress(ConnectionClosed):
            while True:
                await asyncio.wait_for(ws.recv(), 5)
        assert ws.close_code == 4401
