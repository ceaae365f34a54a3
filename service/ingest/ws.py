"""The websocket session loop shared by every exchange connector.

What it owns, so the connectors do not repeat it:
- connect, hand frames to the connector, reconnect with jittered exponential backoff and let the connector
  resubscribe (`on_open` runs on every connection);
- answer server pings (the websockets library replies with the same payload) and send client pings where the
  protocol wants application-level ones (Bybit `{"op":"ping"}` every 20 s);
- a token bucket on what we send: Binance counts pings, pongs and JSON requests against 5 (spot) or 10 (futures)
  messages per second per connection and drops connections that exceed it;
- rotate the connection before the exchanges' 24 h limit, reconnect at once on `serverShutdown` or when the feed
  goes silent for longer than the idle timeout;
- say "exchange unreachable" once, at WARNING, then retry quietly (DEBUG) until a connection succeeds, so a
  machine without internet keeps a readable log and the rest of the service stays up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from service.ingest.metrics import CONNECTED, RECONNECTS

log = logging.getLogger(__name__)


class FrameHandlerError(RuntimeError):
    """The connector failed on a frame (e.g. the bus refused a publish): not a network problem."""


class TokenBucket:
    """At most `rate` sends per second on average, bursts up to `burst`; `acquire` waits for a token."""

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate = rate
        self.capacity = burst if burst is not None else max(1.0, rate)
        self.tokens = self.capacity
        self.updated = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now

    async def acquire(self) -> None:
        while True:
            self._refill()
            if self.tokens >= 1.0:
                self.tokens -= 1.0
                return
            await asyncio.sleep((1.0 - self.tokens) / self.rate)


def backoff_delay(attempt: int, initial: float, maximum: float, rng: random.Random) -> float:
    """Exponential backoff with jitter in [50%, 100%] of the step, so many clients do not retry in lockstep."""
    step: float = min(maximum, initial * (2.0 ** min(attempt, 30)))
    return step * (0.5 + 0.5 * rng.random())


@dataclass(frozen=True, slots=True)
class SessionConfig:
    name: str
    venue: str
    url: str
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0
    open_timeout_s: float = 10.0
    idle_timeout_s: float = 90.0
    max_age_s: float = 23 * 3600.0
    send_rate_per_s: float = 5.0
    client_ping_interval_s: float | None = None
    max_frame_bytes: int = 16 * 1024 * 1024


class WsSession:
    """One logical connection that keeps itself connected until `stop`.

    `on_open(session)` subscribes (called on every new connection); `on_frame(frame, recv_ms)` handles one
    frame; `on_close(reason)` runs after a connection ends so the connector can mark its streams incomplete.
    `client_ping()` returns the application-level ping frame to send, where the protocol has one.
    """

    def __init__(
        self,
        config: SessionConfig,
        *,
        on_open: Callable[[WsSession], Awaitable[None]],
        on_frame: Callable[[bytes | str, int], Awaitable[None]],
        on_close: Callable[[str], Awaitable[None]] | None = None,
        client_ping: Callable[[], str] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self._on_open = on_open
        self._on_frame = on_frame
        self._on_close = on_close
        self._client_ping = client_ping
        self._rng = rng or random.Random()
        self._bucket = TokenBucket(config.send_rate_per_s)
        self._ws: ClientConnection | None = None
        self._stopping = False
        self._reconnect_reason: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._said_unreachable = False
        self._closing: set[asyncio.Task[None]] = set()
        self.connected = False
        self.connections = 0
        self.last_error: str = ""
        self.last_frame_monotonic = 0.0

    # --- lifecycle

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name=f"ws:{self.config.name}")

    async def stop(self) -> None:
        self._stopping = True
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 2)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    def request_reconnect(self, reason: str) -> None:
        """Close the current connection and reconnect at once (server shutdown notice, forced resync)."""
        self._reconnect_reason = reason
        ws = self._ws
        if ws is not None:
            task = asyncio.get_running_loop().create_task(ws.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def send(self, text: str) -> None:
        """Send one frame within the exchange's inbound message limit."""
        ws = self._ws
        if ws is None:
            raise ConnectionError("not connected")
        await self._bucket.acquire()
        try:
            await ws.send(text)
        except ConnectionClosed as exc:
            raise ConnectionError(f"connection closed: {exc}") from exc

    # --- the loop

    async def run(self) -> None:
        attempt = 0
        cfg = self.config
        while not self._stopping:
            reason = "error"
            try:
                async with connect(
                    cfg.url,
                    open_timeout=cfg.open_timeout_s,
                    ping_interval=20.0,
                    ping_timeout=20.0,
                    close_timeout=2.0,
                    max_size=cfg.max_frame_bytes,
                    compression=None,
                ) as ws:
                    self._ws = ws
                    self._connected()
                    got_frame = await self._serve(ws)
                    reason = self._reconnect_reason or "closed"
                    if got_frame:
                        attempt = 0
            except asyncio.CancelledError:
                raise
            except FrameHandlerError as exc:
                reason = "handler_error"
                self.last_error = f"handler: {exc.__cause__!r}"[:300]
                log.error("%s: handling a frame failed, reconnecting: %r", cfg.name, exc.__cause__)
            except Exception as exc:  # network errors of every kind: the exchange is down or unreachable
                self.last_error = f"{type(exc).__name__}: {exc}"[:300]
                self._unreachable(exc)
            finally:
                was_connected = self.connected
                self._ws = None
                self.connected = False
                if was_connected:
                    CONNECTED.labels(cfg.venue).dec()
            if self._stopping:
                break
            if was_connected and self._on_close is not None:
                try:
                    await self._on_close(reason)
                except Exception:
                    log.exception("%s: on_close handler failed", cfg.name)
            RECONNECTS.labels(cfg.venue, reason).inc()
            forced = self._reconnect_reason in ("shutdown", "rotate", "resync")
            self._reconnect_reason = None
            if forced:
                continue
            delay = backoff_delay(attempt, cfg.backoff_initial_s, cfg.backoff_max_s, self._rng)
            attempt += 1
            log.debug("%s: reconnecting in %.2fs (%s)", cfg.name, delay, reason)
            await asyncio.sleep(delay)

    def _connected(self) -> None:
        cfg = self.config
        self.connected = True
        self.connections += 1
        CONNECTED.labels(cfg.venue).inc()
        if self._said_unreachable:
            log.warning("%s: %s reachable again", cfg.name, cfg.url)
            self._said_unreachable = False
        else:
            log.info("%s: connected to %s", cfg.name, cfg.url)

    def _unreachable(self, exc: BaseException) -> None:
        cfg = self.config
        if not self._said_unreachable:
            self._said_unreachable = True
            log.warning(
                "%s: exchange unreachable at %s (%s); retrying with backoff up to %.0fs, quietly",
                cfg.name,
                cfg.url,
                self.last_error or repr(exc),
                cfg.backoff_max_s,
            )
        else:
            log.debug("%s: still unreachable: %s", cfg.name, self.last_error)

    async def _serve(self, ws: ClientConnection) -> bool:
        """Subscribe, then read frames until the connection ends, goes idle, or is due for rotation."""
        cfg = self.config
        opened = time.monotonic()
        got_frame = False
        pinger: asyncio.Task[None] | None = None
        try:
            await self._on_open(self)
            if self._client_ping is not None and cfg.client_ping_interval_s:
                pinger = asyncio.create_task(self._ping_loop(cfg.client_ping_interval_s))
            while not self._stopping:
                age = time.monotonic() - opened
                if age >= cfg.max_age_s:
                    self._reconnect_reason = "rotate"
                    log.info("%s: rotating the connection after %.0fs", cfg.name, age)
                    await ws.close()
                    break
                timeout = min(cfg.idle_timeout_s, cfg.max_age_s - age)
                try:
                    frame = await asyncio.wait_for(ws.recv(), timeout)
                except TimeoutError:
                    if time.monotonic() - opened >= cfg.max_age_s:
                        continue
                    self._reconnect_reason = "idle"
                    log.warning("%s: no frame for %.0fs, reconnecting", cfg.name, cfg.idle_timeout_s)
                    await ws.close()
                    break
                got_frame = True
                self.last_frame_monotonic = time.monotonic()
                try:
                    await self._on_frame(frame, int(time.time() * 1000))
                except Exception as exc:
                    raise FrameHandlerError(str(exc)) from exc
        except (ConnectionClosed, ConnectionError) as exc:
            self.last_error = f"closed: {exc}"[:300]
        finally:
            if pinger is not None:
                pinger.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await pinger
        return got_frame

    async def _ping_loop(self, interval: float) -> None:
        assert self._client_ping is not None
        while True:
            await asyncio.sleep(interval)
            try:
                await self.send(self._client_ping())
            except ConnectionError:
                return
