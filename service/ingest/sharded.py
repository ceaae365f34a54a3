"""One sharded websocket connector: shards, sessions, subscriptions, frame dispatch, continuity and health.

Every exchange connector is the same machine: symbols split over connections (shards), one reconnecting
`WsSession` per shard, subscribe requests chunked and paced, refused subscriptions found and surfaced, frames
parsed and their events published with gaps marked. A venue subclass supplies only what differs:

- `stream_names(symbol)`: the streams (topics) one symbol needs;
- `subscribe_message(req, op, names)`: the text of one subscribe/unsubscribe request;
- `parse(frame, recv_ms)`: one frame -> parsed events (ParseError for a bad one);
- `check_trade(trade)`: what the venue can say about trade continuity (ids contiguous, or only duplicates);
- `resync_book(symbol)`: how a book that lost continuity gets a fresh snapshot;

plus its endpoint (`ws_url`) and, where the venue wants client pings, `client_ping`.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import msgspec

from service.ingest.connector import ConnectorBase, now_ms
from service.ingest.errors import ParseError
from service.ingest.events import Control, Parsed
from service.ingest.metrics import SUBSCRIBE_ERRORS
from service.ingest.orderbook import LocalBook, SyncOutcome
from service.ingest.publisher import MarketPublisher
from service.ingest.ws import SessionConfig, WsSession
from service.runtime import Health
from service.schemas.market import Bar, BookUpdate, Trade

log = logging.getLogger(__name__)


class ShardedConfig(Protocol):
    """The settings every sharded connector reads (the venue configs carry more)."""

    @property
    def symbols(self) -> tuple[str, ...]: ...
    @property
    def streams(self) -> tuple[str, ...]: ...
    @property
    def book_levels(self) -> int: ...
    @property
    def book_min_interval_ms(self) -> int: ...
    @property
    def backoff_initial_s(self) -> float: ...
    @property
    def backoff_max_s(self) -> float: ...
    @property
    def open_timeout_s(self) -> float: ...
    @property
    def idle_timeout_s(self) -> float: ...
    @property
    def max_age_s(self) -> float: ...
    @property
    def send_rate_per_s(self) -> float: ...

    def shards(self) -> list[list[str]]: ...


class BookSync(Protocol):
    """A venue's order-book continuity rule (service.ingest.orderbook)."""

    book: LocalBook | None
    last_u: int | None

    @property
    def synced(self) -> bool: ...

    def reset(self) -> None: ...

    def on_update(self, upd: BookUpdate) -> SyncOutcome: ...


@dataclass
class Shard:
    """Some symbols sharing one connection."""

    index: int
    symbols: list[str]
    session: WsSession | None = None


@dataclass(frozen=True, slots=True)
class TradeVerdict:
    """What a venue can tell about one trade's continuity.

    `gap`: True when trades were skipped (ids jumped), False when contiguous, None when the venue cannot tell
    (non-contiguous ids): then only a reconnect marks a gap.
    """

    duplicate: bool = False
    gap: bool | None = None
    from_ms: int | None = None
    from_id: str | None = None
    missing: int | None = None


@dataclass(frozen=True, slots=True)
class _Pending:
    op: str
    names: list[str]
    session: WsSession


class ShardedConnector(ConnectorBase, abc.ABC):
    """A Component (service.runtime) following one venue market over sharded websocket connections."""

    def __init__(
        self,
        config: ShardedConfig,
        publisher: MarketPublisher,
        *,
        venue: str,
        books: dict[str, BookSync],
        max_names_per_request: int,
        rng: random.Random | None = None,
    ) -> None:
        self.venue = venue
        self.name = f"ingest-{venue}"
        super().__init__(publisher, book_levels=config.book_levels, book_min_interval_ms=config.book_min_interval_ms)
        self._config = config
        self._rng = rng or random.Random()
        self._shards = [Shard(i, syms) for i, syms in enumerate(config.shards())]
        self._shard_of = {s: sh for sh in self._shards for s in sh.symbols}
        self.books = books
        self.max_names_per_request = max_names_per_request
        self._req = 0
        self._pending: dict[str, _Pending] = {}
        self._last_trade_ms: dict[str, int] = {}
        self._background: set[asyncio.Task[None]] = set()
        self.resync_tasks: dict[str, asyncio.Task[None]] = {}
        """Per-symbol book resyncs running in the background (cancelled when their connection closes)."""
        self.refused_streams: set[str] = set()
        self.shutdowns = 0
        self.pongs = 0

    # --- what a venue supplies

    @abc.abstractmethod
    def ws_url(self) -> str:
        """The websocket endpoint every shard connects to."""

    @abc.abstractmethod
    def stream_names(self, symbol: str) -> list[str]:
        """The streams (topics) one symbol is followed by."""

    @abc.abstractmethod
    def subscribe_message(self, req: str, op: str, names: list[str]) -> str:
        """One request (`op` is "subscribe" or "unsubscribe") whose reply carries `req`."""

    @abc.abstractmethod
    def parse(self, frame: bytes | str, recv_ms: int) -> list[Parsed]:
        """One frame -> its events; raises ParseError for a malformed or unexpected frame."""

    @abc.abstractmethod
    def check_trade(self, trade: Trade) -> TradeVerdict:
        """Continuity of one trade against the ones before it."""

    @abc.abstractmethod
    async def resync_book(self, symbol: str) -> None:
        """Get a fresh snapshot for a book whose sequence broke."""

    def client_ping(self) -> tuple[float, Callable[[], str]] | None:
        """(interval s, message) when the venue wants application-level pings from the client; None otherwise."""
        return None

    def request_key(self, n: int) -> str:
        """The id of the n-th request, as the venue echoes it back."""
        return str(n)

    async def open_venue(self) -> None:
        """Acquire what the venue needs besides websockets (called before the sessions start)."""

    async def close_venue(self) -> None:
        """Release what `open_venue` acquired (called last in `stop`)."""

    # --- Component protocol

    async def start(self) -> None:
        await self.open_venue()
        for shard in self._shards:
            shard.session = self._make_session(shard)
            shard.session.start()
        if self.book_min_interval_ms > 0 and "books" in self._config.streams:
            self._background.add(asyncio.get_running_loop().create_task(self.run_book_flusher()))

    async def stop(self) -> None:
        for shard in self._shards:
            if shard.session is not None:
                await shard.session.stop()
        tasks = [*self.resync_tasks.values(), *self._background]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.resync_tasks.clear()
        try:
            await self.publisher.flush()
        finally:
            await self.close_venue()

    def current_book(self, symbol: str) -> LocalBook | None:
        sync = self.books.get(symbol)
        return sync.book if sync is not None else None

    def health(self) -> Health:
        sessions = [s.session for s in self._shards if s.session is not None]
        connected = sum(1 for s in sessions if s.connected)
        want_books = "books" in self._config.streams
        synced = sum(1 for b in self.books.values() if b.synced) if want_books else 0
        return self.base_health(connected, len(self._shards), synced, len(self.books) if want_books else 0)

    # --- connections

    def _make_session(self, shard: Shard) -> WsSession:
        cfg = self._config
        ping = self.client_ping()
        sc = SessionConfig(
            name=f"{self.venue}#{shard.index}",
            venue=self.venue,
            url=self.ws_url(),
            backoff_initial_s=cfg.backoff_initial_s,
            backoff_max_s=cfg.backoff_max_s,
            open_timeout_s=cfg.open_timeout_s,
            idle_timeout_s=cfg.idle_timeout_s,
            max_age_s=cfg.max_age_s,
            send_rate_per_s=cfg.send_rate_per_s,
            client_ping_interval_s=ping[0] if ping is not None else None,
        )

        async def on_open(session: WsSession) -> None:
            names = [n for s in shard.symbols for n in self.stream_names(s) if n not in self.refused_streams]
            await self.subscribe(session, names)

        async def on_frame(frame: bytes | str, recv_ms: int) -> None:
            await self.handle_frame(frame, recv_ms, shard)

        async def on_close(reason: str) -> None:
            # the streams restart on the next connection: trades may be missing, books are rebuilt from a snapshot
            self.mark_reconnect(shard.symbols, now_ms())
            for s in shard.symbols:
                self.books[s].reset()
                task = self.resync_tasks.pop(s, None)
                if task is not None:
                    task.cancel()

        return WsSession(
            sc,
            on_open=on_open,
            on_frame=on_frame,
            on_close=on_close,
            client_ping=ping[1] if ping is not None else None,
            rng=self._rng,
        )

    def next_request_key(self) -> str:
        self._req += 1
        return self.request_key(self._req)

    async def subscribe(self, session: WsSession, names: list[str], op: str = "subscribe", step: int = 0) -> None:
        """Requests of at most `step` (default: the venue's limit) names; each is paced by the session's send rate."""
        step = step or self.max_names_per_request
        for i in range(0, len(names), step):
            chunk = names[i : i + step]
            req = self.next_request_key()
            self._pending[req] = _Pending(op, chunk, session)
            await session.send(self.subscribe_message(req, op, chunk))

    async def _isolate(self, session: WsSession, names: list[str]) -> None:
        """A multi-name request was refused: one bad name fails it all, so retry one name per request."""
        with contextlib.suppress(ConnectionError):  # reconnecting: on_open subscribes again
            await self.subscribe(session, names, step=1)

    def shard_session(self, symbol: str) -> WsSession | None:
        """The connected session carrying `symbol`, or None."""
        shard = self._shard_of.get(symbol)
        if shard is None or shard.session is None or not shard.session.connected:
            return None
        return shard.session

    # --- frames

    async def handle_frame(self, frame: bytes | str, recv_ms: int, shard: Shard | None = None) -> None:
        """Parse one frame and publish what it holds; bad frames go to the dead-letter topic."""
        self._frames.count += 1
        try:
            events = self.parse(frame, recv_ms)
        except ParseError as err:
            await self.dead_letter(frame, err)
            return
        for ev in events:
            if isinstance(ev, Trade):
                await self._on_trade(ev)
            elif isinstance(ev, BookUpdate):
                await self._on_book(ev)
            elif isinstance(ev, Bar):
                await self.emit_bar(ev)
            else:
                self._on_control(ev, shard)

    def _on_control(self, ev: Control, shard: Shard | None) -> None:
        if ev.kind == "pong":
            self.pongs += 1
            return
        if ev.kind == "shutdown":
            self.shutdowns += 1
            log.info("%s: server shutdown notice, reconnecting", self.venue)
            if shard is not None and shard.session is not None:
                shard.session.request_reconnect("shutdown")
            return
        pending = self._pending.pop(ev.req_id or "", None)
        if ev.kind != "error":
            return
        names = pending.names if pending is not None else []
        if pending is not None and pending.op == "unsubscribe":
            return  # unsubscribing a stream the server already dropped: harmless
        if pending is not None and len(names) > 1:
            log.warning(
                "%s: subscribe of %d streams refused (%s); retrying one by one", self.venue, len(names), ev.detail
            )
            task = asyncio.get_running_loop().create_task(self._isolate(pending.session, names))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            return
        self.refused_streams.update(names)
        detail = f"subscription refused: {ev.detail or 'no reason given'}"
        if names:
            detail += f" ({', '.join(names[:10])})"
        self.subscribe_errors.append(detail[:300])
        SUBSCRIBE_ERRORS.labels(self.venue).inc()
        log.error("%s: %s", self.venue, detail)

    async def _on_trade(self, trade: Trade) -> None:
        verdict = self.check_trade(trade)
        if verdict.duplicate:
            self.duplicate("trades")
            return
        reconnect = trade.symbol in self._trade_reconnect
        self._trade_reconnect.discard(trade.symbol)
        if verdict.gap or (verdict.gap is None and reconnect):
            last = verdict.from_ms if verdict.from_ms is not None else self._last_trade_ms.get(trade.symbol)
            await self.publish_gap(
                trade.symbol,
                "trades",
                last if last is not None else trade.event_time_ms,
                trade.event_time_ms,
                "reconnect" if reconnect else "sequence_gap",
                from_id=verdict.from_id,
                to_id=trade.trade_id if verdict.from_id is not None else None,
                missing=verdict.missing,
            )
            trade = msgspec.structs.replace(trade, incomplete=True)
        prev = self._last_trade_ms.get(trade.symbol)
        if prev is None or trade.event_time_ms > prev:
            self._last_trade_ms[trade.symbol] = trade.event_time_ms
        await self.emit_trade(trade)

    async def _on_book(self, upd: BookUpdate) -> None:
        sync = self.books.get(upd.symbol)
        if sync is None:
            return  # a symbol we did not ask for (e.g. after a config change on a shared stream)
        outcome = sync.on_update(upd)
        if outcome.need_snapshot:
            await self.resync_book(upd.symbol)
        await self.book_outcome(upd.symbol, upd.event_time_ms, outcome, sync.book, sync.last_u)
