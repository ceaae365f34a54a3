"""The shared websocket session loop against a local websockets server: rotation, idle reconnect, pings, backoff."""

from __future__ import annotations

import asyncio
import contextlib
import random

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from service.ingest.metrics import RECONNECTS, sum_counter
from service.ingest.ws import SessionConfig, TokenBucket, WsSession, backoff_delay
from tests.ingest.conftest import eventually


def test_backoff_is_exponential_capped_and_jittered() -> None:
    rng = random.Random(1)
    delays = [backoff_delay(n, 0.5, 8.0, rng) for n in range(8)]
    for n, d in enumerate(delays):
        step = min(8.0, 0.5 * 2**n)
        assert step / 2 <= d <= step
    assert len({round(d, 6) for d in delays[4:]}) > 1  # jitter: capped steps still differ


async def test_token_bucket_allows_burst_then_paces() -> None:
    bucket = TokenBucket(rate=0.2, burst=3)  # one token per 5 s after the burst
    for _ in range(3):
        await asyncio.wait_for(bucket.acquire(), 1)  # the burst goes at once
    fourth = asyncio.create_task(bucket.acquire())
    await asyncio.sleep(0.05)
    assert not fourth.done()  # waits for a token instead of sending over the limit
    fourth.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await fourth


class _Server:
    def __init__(self, *, talk: bool, ping: bool = False) -> None:
        self.talk = talk
        self.ping = ping
        self.connections = 0
        self.pongs = 0
        self.port = 0

    async def handler(self, ws: ServerConnection) -> None:
        self.connections += 1
        try:
            if self.ping:
                waiter = await ws.ping(b"binance-style")
                await asyncio.wait_for(waiter, 2)
                self.pongs += 1
            if not self.talk:
                await ws.wait_closed()  # silent, but notices the client leaving
                return
            while True:
                await ws.send('{"x":1}')
                await asyncio.sleep(0.02)
        except (ConnectionClosed, TimeoutError):
            pass


async def _session(port: int, venue: str, **cfg: float) -> tuple[WsSession, list[str]]:
    frames: list[str] = []

    async def on_open(_: WsSession) -> None:
        return None

    async def on_frame(frame: bytes | str, _ms: int) -> None:
        frames.append(str(frame))

    config = SessionConfig(name=venue, venue=venue, url=f"ws://127.0.0.1:{port}", backoff_initial_s=0.01, **cfg)  # type: ignore[arg-type]
    return WsSession(config, on_open=on_open, on_frame=on_frame, rng=random.Random(0)), frames


async def test_rotates_before_max_age_and_answers_server_pings() -> None:
    srv = _Server(talk=True, ping=True)
    async with serve(srv.handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        before = sum_counter(RECONNECTS, venue="ws-rotate", reason="rotate")
        session, frames = await _session(port, "ws-rotate", max_age_s=0.3)
        session.start()
        try:
            await eventually(lambda: srv.connections >= 3, what="two rotations")
        finally:
            await session.stop()
        assert sum_counter(RECONNECTS, venue="ws-rotate", reason="rotate") - before >= 2
        assert srv.pongs >= 2 and frames


async def test_idle_feed_reconnects() -> None:
    srv = _Server(talk=False)
    async with serve(srv.handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        before = sum_counter(RECONNECTS, venue="ws-idle", reason="idle")
        session, _ = await _session(port, "ws-idle", idle_timeout_s=0.2)
        session.start()
        try:
            await eventually(lambda: srv.connections >= 2, what="reconnect after silence")
        finally:
            await session.stop()
        assert sum_counter(RECONNECTS, venue="ws-idle", reason="idle") - before >= 1


async def test_stop_while_connecting_is_prompt() -> None:
    session, _ = await _session(9, "ws-stop", open_timeout_s=5.0)  # port 9 (discard): refused at once
    session.start()
    await asyncio.sleep(0.05)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(session.stop(), 2)
    assert not session.connected
