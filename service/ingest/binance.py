"""Binance spot and USD-M futures connector: combined streams over sharded websocket connections into Kafka.

Per symbol it follows `<sym>@aggTrade` (or `@trade`), `<sym>@depth@100ms` and `<sym>@kline_<interval>`; at most
`binance_max_streams_per_connection` (<= 1024) streams share one connection, subscribed with SUBSCRIBE requests
paced under the 5 (spot) / 10 (futures) messages-per-second inbound limit. Order books are kept by the documented
snapshot + diff rule (service.ingest.orderbook); trade-id jumps become gap markers; only closed klines are bars.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

import httpx
import msgspec
import orjson

from service.ingest.binance_parse import VENUES, Market, parse_binance
from service.ingest.connector import ConnectorBase, now_ms
from service.ingest.errors import ParseError
from service.ingest.events import Control, check_levels
from service.ingest.metrics import SUBSCRIBE_ERRORS
from service.ingest.orderbook import BinanceBookSync, LocalBook
from service.ingest.publisher import MarketPublisher
from service.ingest.sequence import TradeIdTracker
from service.ingest.ws import SessionConfig, WsSession, backoff_delay
from service.runtime import Health
from service.schemas.eventtime import TimeBounds
from service.schemas.market import Bar, BookUpdate, Trade

if TYPE_CHECKING:
    from service.settings import Settings

__all__ = ["BinanceConfig", "BinanceConnector", "parse_binance", "parse_depth_snapshot"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BinanceConfig:
    market: Market
    ws_url: str
    rest_url: str
    symbols: tuple[str, ...]
    streams: tuple[str, ...] = ("trades", "books", "bars")
    trade_stream: str = "aggTrade"
    kline_interval: str = "1m"
    depth_speed: str = "100ms"
    snapshot_limit: int = 1000
    max_streams_per_connection: int = 1024
    max_streams_per_subscribe: int = 200
    send_rate_per_s: float = 5.0
    book_levels: int = 20
    book_min_interval_ms: int = 100
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0
    open_timeout_s: float = 10.0
    idle_timeout_s: float = 90.0
    max_age_s: float = 23 * 3600.0
    time_bounds: TimeBounds | None = None  # event-time sanity (None: none; from_settings sets the configured)
    rest_timeout_s: float = 10.0

    @classmethod
    def from_settings(cls, settings: Settings, market: Market, symbols: list[str] | None = None) -> BinanceConfig:
        spot = market == "spot"
        return cls(
            market=market,
            ws_url=settings.binance_spot_ws_url if spot else settings.binance_usdm_ws_url,
            rest_url=settings.binance_spot_rest_url if spot else settings.binance_usdm_rest_url,
            symbols=tuple(symbols if symbols is not None else settings.ingest_symbols),
            streams=tuple(settings.ingest_streams),
            trade_stream=settings.ingest_binance_trade_stream,
            kline_interval=settings.ingest_kline_interval,
            depth_speed=settings.binance_depth_speed,
            snapshot_limit=settings.binance_depth_snapshot_limit,
            max_streams_per_connection=settings.binance_max_streams_per_connection,
            max_streams_per_subscribe=settings.binance_max_streams_per_subscribe,
            send_rate_per_s=settings.binance_spot_max_msgs_per_s if spot else settings.binance_usdm_max_msgs_per_s,
            book_levels=settings.ingest_book_levels,
            book_min_interval_ms=settings.ingest_book_min_interval_ms,
            backoff_initial_s=settings.ingest_backoff_initial_s,
            backoff_max_s=settings.ingest_backoff_max_s,
            open_timeout_s=settings.ingest_open_timeout_s,
            idle_timeout_s=settings.ingest_idle_timeout_s,
            max_age_s=settings.ingest_max_connection_age_s,
            time_bounds=TimeBounds.from_settings(settings),
            rest_timeout_s=settings.ingest_rest_timeout_s,
        )

    def stream_names(self, symbol: str) -> list[str]:
        s = symbol.lower()
        out: list[str] = []
        if "trades" in self.streams:
            out.append(f"{s}@{self.trade_stream}")
        if "books" in self.streams:
            out.append(f"{s}@depth@{self.depth_speed}" if self.depth_speed else f"{s}@depth")
        if "bars" in self.streams:
            out.append(f"{s}@kline_{self.kline_interval}")
        return out

    def shards(self) -> list[list[str]]:
        """Symbols grouped so that no connection carries more than `max_streams_per_connection` streams."""
        per_symbol = max(1, len(self.stream_names("x")))
        per_conn = max(1, self.max_streams_per_connection // per_symbol)
        syms = list(self.symbols)
        return [syms[i : i + per_conn] for i in range(0, len(syms), per_conn)]


class _Snapshot(msgspec.Struct):
    lastUpdateId: int
    bids: list[tuple[Decimal, Decimal]]
    asks: list[tuple[Decimal, Decimal]]


_SNAPSHOT = msgspec.json.Decoder(_Snapshot)


def parse_depth_snapshot(body: bytes) -> tuple[int, list[tuple[Decimal, Decimal]], list[tuple[Decimal, Decimal]]]:
    """REST /api/v3/depth or /fapi/v1/depth body -> (lastUpdateId, bids, asks); ParseError when malformed."""
    try:
        snap = _SNAPSHOT.decode(body)
    except msgspec.DecodeError as exc:
        raise ParseError("invalid_snapshot", str(exc)[:300]) from None
    return snap.lastUpdateId, check_levels(snap.bids, "bids"), check_levels(snap.asks, "asks")


class _Shard:
    def __init__(self, index: int, symbols: list[str]) -> None:
        self.index = index
        self.symbols = symbols
        self.session: WsSession | None = None


class BinanceConnector(ConnectorBase):
    """A Component (service.runtime) following one Binance market for a list of symbols."""

    def __init__(
        self,
        config: BinanceConfig,
        publisher: MarketPublisher,
        *,
        http: httpx.AsyncClient | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.venue = VENUES[config.market]
        self.name = f"ingest-{self.venue}"
        super().__init__(publisher, book_levels=config.book_levels, book_min_interval_ms=config.book_min_interval_ms)
        self._http = http
        self._own_http = http is None
        self._rng = rng or random.Random()
        self._shards = [_Shard(i, syms) for i, syms in enumerate(config.shards())]
        self.books = {s: BinanceBookSync(s, futures=config.market == "usdm") for s in config.symbols}
        self.trade_ids = TradeIdTracker()
        self._snapshot_tasks: dict[str, asyncio.Task[None]] = {}
        self._req_id = 0
        self._pending_subs: dict[int, list[str]] = {}
        self.refused_streams: set[str] = set()
        self._background: set[asyncio.Task[None]] = set()
        self.shutdowns = 0

    # --- Component protocol

    async def start(self) -> None:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self.config.rest_timeout_s)
        for shard in self._shards:
            shard.session = self._make_session(shard)
            shard.session.start()
        if self.config.book_min_interval_ms > 0 and "books" in self.config.streams:
            self._background.add(asyncio.get_running_loop().create_task(self.run_book_flusher()))

    async def stop(self) -> None:
        for shard in self._shards:
            if shard.session is not None:
                await shard.session.stop()
        tasks = [*self._snapshot_tasks.values(), *self._background]
        for task in tasks:
            task.cancel()
        for task in tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        self._snapshot_tasks.clear()
        try:
            await self.publisher.flush()
        finally:
            if self._own_http and self._http is not None:
                await self._http.aclose()
                self._http = None

    def current_book(self, symbol: str) -> LocalBook | None:
        sync = self.books.get(symbol)
        return sync.book if sync is not None else None

    def health(self) -> Health:
        sessions = [s.session for s in self._shards if s.session is not None]
        connected = sum(1 for s in sessions if s.connected)
        want_books = "books" in self.config.streams
        synced = sum(1 for b in self.books.values() if b.synced) if want_books else 0
        return self.base_health(connected, len(self._shards), synced, len(self.books) if want_books else 0)

    # --- connection

    def _make_session(self, shard: _Shard) -> WsSession:
        cfg = self.config
        sc = SessionConfig(
            name=f"{self.venue}#{shard.index}",
            venue=self.venue,
            url=f"{cfg.ws_url.rstrip('/')}/stream",
            backoff_initial_s=cfg.backoff_initial_s,
            backoff_max_s=cfg.backoff_max_s,
            open_timeout_s=cfg.open_timeout_s,
            idle_timeout_s=cfg.idle_timeout_s,
            max_age_s=cfg.max_age_s,
            send_rate_per_s=cfg.send_rate_per_s,
        )

        async def on_open(session: WsSession) -> None:
            names = [n for s in shard.symbols for n in cfg.stream_names(s) if n not in self.refused_streams]
            await self._subscribe(session, names, cfg.max_streams_per_subscribe)

        async def on_frame(frame: bytes | str, recv_ms: int) -> None:
            await self.handle_frame(frame, recv_ms, shard)

        async def on_close(reason: str) -> None:
            # the diff stream restarts on the next connection: its books must be rebuilt from a new snapshot
            self.mark_reconnect(shard.symbols, now_ms())
            for s in shard.symbols:
                self.books[s].reset()
                task = self._snapshot_tasks.pop(s, None)
                if task is not None:
                    task.cancel()

        return WsSession(sc, on_open=on_open, on_frame=on_frame, on_close=on_close, rng=self._rng)

    async def _subscribe(self, session: WsSession, names: list[str], step: int) -> None:
        """SUBSCRIBE in chunks; each request is paced by the session's inbound-message limit."""
        for i in range(0, len(names), step):
            self._req_id += 1
            chunk = names[i : i + step]
            self._pending_subs[self._req_id] = chunk
            msg = {"method": "SUBSCRIBE", "params": chunk, "id": self._req_id}
            await session.send(orjson.dumps(msg).decode())

    async def _isolate(self, session: WsSession, names: list[str]) -> None:
        """A multi-stream SUBSCRIBE was refused: retry one stream per request to find the refused ones."""
        try:
            await self._subscribe(session, names, 1)
        except ConnectionError:
            pass  # reconnecting; on_open subscribes again

    # --- frames

    async def handle_frame(self, frame: bytes | str, recv_ms: int, shard: _Shard | None = None) -> None:
        """Parse one frame and publish what it holds; bad frames go to the dead-letter topic."""
        self._frames.count += 1
        try:
            events = parse_binance(frame, self.config.market, recv_ms, self.config.time_bounds)
        except ParseError as err:
            await self.dead_letter(frame, err)
            return
        for ev in events:
            if isinstance(ev, Trade):
                await self._on_trade(ev)
            elif isinstance(ev, BookUpdate):
                await self._on_depth(ev)
            elif isinstance(ev, Bar):
                await self.emit_bar(ev)
            elif isinstance(ev, Control):
                await self._on_control(ev, frame, shard)

    async def _on_control(self, ev: Control, frame: bytes | str, shard: _Shard | None) -> None:
        if ev.kind == "shutdown":
            self.shutdowns += 1
            log.info("%s: server shutdown notice, reconnecting", self.venue)
            if shard is not None and shard.session is not None:
                shard.session.request_reconnect("shutdown")
        elif ev.kind == "error":
            req = ev.req_id or ""
            streams = self._pending_subs.pop(int(req), []) if req.isdigit() else []
            if len(streams) > 1 and shard is not None and shard.session is not None:
                log.warning(
                    "%s: SUBSCRIBE of %d streams refused (%s); retrying one by one", self.venue, len(streams), ev.detail
                )
                task = asyncio.get_running_loop().create_task(self._isolate(shard.session, streams))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
                return
            self.refused_streams.update(streams)
            detail = f"subscription refused: {ev.detail}" + (f" ({', '.join(streams)})" if streams else "")
            self.subscribe_errors.append(detail[:300])
            SUBSCRIBE_ERRORS.labels(self.venue).inc()
            log.error("%s: %s", self.venue, detail)
        elif ev.kind == "ack" and (ev.req_id or "").isdigit():
            self._pending_subs.pop(int(ev.req_id or "0"), None)

    async def _on_trade(self, trade: Trade) -> None:
        check = self.trade_ids.check(trade.symbol, int(trade.trade_id), trade.event_time_ms)
        if check.verdict == "dup":
            self.duplicate("trades")
            return
        reconnect = trade.symbol in self._trade_reconnect
        self._trade_reconnect.discard(trade.symbol)
        if check.verdict == "gap":
            await self.publish_gap(
                trade.symbol,
                "trades",
                check.prev_ms if check.prev_ms is not None else trade.event_time_ms,
                trade.event_time_ms,
                "reconnect" if reconnect else "sequence_gap",
                from_id=str(check.prev_id),
                to_id=trade.trade_id,
                missing=check.missing,
            )
            trade = msgspec.structs.replace(trade, incomplete=True)
        await self.emit_trade(trade)

    async def _on_depth(self, upd: BookUpdate) -> None:
        sync = self.books.get(upd.symbol)
        if sync is None:
            return  # a symbol we did not ask for (e.g. after a config change on a shared stream)
        outcome = sync.on_update(upd)
        if outcome.need_snapshot:
            self._fetch_snapshot(upd.symbol)
        await self.book_outcome(upd.symbol, upd.event_time_ms, outcome, sync.book, sync.last_u)

    # --- REST snapshot

    def _fetch_snapshot(self, symbol: str) -> None:
        task = self._snapshot_tasks.get(symbol)
        if task is not None and not task.done():
            return
        self._snapshot_tasks[symbol] = asyncio.get_running_loop().create_task(self._snapshot(symbol))

    async def _snapshot(self, symbol: str) -> None:
        cfg = self.config
        path = "/api/v3/depth" if cfg.market == "spot" else "/fapi/v1/depth"
        url = f"{cfg.rest_url.rstrip('/')}{path}"
        attempt = 0
        while True:
            assert self._http is not None
            try:
                resp = await self._http.get(url, params={"symbol": symbol, "limit": cfg.snapshot_limit})
                resp.raise_for_status()
                last_id, bids, asks = parse_depth_snapshot(resp.content)
            except asyncio.CancelledError:
                raise
            except ParseError as err:
                await self.dead_letter(resp.content, err, source="rest")
            except Exception as exc:
                log.log(
                    logging.WARNING if attempt == 0 else logging.DEBUG,
                    "%s %s: snapshot failed: %s",
                    self.venue,
                    symbol,
                    exc,
                )
            else:
                sync = self.books[symbol]
                buffered = sync.buffer[-1] if sync.buffer else None
                outcome = sync.on_snapshot(last_id, bids, asks)
                event_ms = buffered.event_time_ms if buffered is not None else now_ms()
                if sync.synced and sync.last_u is not None:
                    await self.book_outcome(symbol, event_ms, outcome, sync.book, sync.last_u)
                elif outcome.gap:
                    await self.book_outcome(symbol, event_ms, outcome, None, None)
                if not (sync.book is None and sync.snapshot_pending):
                    return  # synced (a gap found while publishing starts a new task once this one is done)
            await asyncio.sleep(backoff_delay(attempt, 0.2, cfg.backoff_max_s, self._rng))
            attempt += 1
