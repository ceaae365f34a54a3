"""Bybit v5 public spot and linear connector, and its pure frame parser (`parse_bybit`).

Topics per symbol: `publicTrade.<S>`, `orderbook.<depth>.<S>`, `kline.<interval>.<S>`. Subscribe requests carry at
most 10 args (the spot limit); every ack's `success` is checked and a refused topic is surfaced (error log,
`rmad_ingest_subscribe_errors_total`, health detail), never ignored. The client pings every 20 s. Trades are
de-duplicated by id (linear ids are UUIDs, so no contiguity is assumed); a reconnect marks the trade interval
incomplete. Books: a snapshot replaces, a delta needs `u == prev_u + 1`, otherwise the topic is resubscribed to get
a fresh snapshot. Only `confirm: true` klines become bars.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Literal

import msgspec
import orjson

from service.ingest.connector import ConnectorBase, now_ms
from service.ingest.errors import ParseError
from service.ingest.events import Control, Parsed, check_levels, check_price, check_size, check_time, check_times
from service.ingest.metrics import SUBSCRIBE_ERRORS
from service.ingest.orderbook import BybitBookSync, LocalBook
from service.ingest.publisher import MarketPublisher
from service.ingest.sequence import RecentIds
from service.ingest.ws import SessionConfig, WsSession
from service.runtime import Health
from service.schemas.eventtime import TimeBounds
from service.schemas.market import Bar, BookUpdate, Trade

if TYPE_CHECKING:
    from service.settings import Settings

log = logging.getLogger(__name__)

Market = Literal["spot", "linear"]
VENUES: dict[Market, str] = {"spot": "bybit-spot", "linear": "bybit-linear"}

# Bybit kline interval -> the service's interval names (Binance style)
INTERVALS = {
    "1": "1m",
    "3": "3m",
    "5": "5m",
    "15": "15m",
    "30": "30m",
    "60": "1h",
    "120": "2h",
    "240": "4h",
    "360": "6h",
    "720": "12h",
    "D": "1d",
    "W": "1w",
    "M": "1M",
}
TO_BYBIT_INTERVAL = {v: k for k, v in INTERVALS.items()}

_Level = tuple[Decimal, Decimal]
_NO = msgspec.Raw(b"")


class _Envelope(msgspec.Struct):
    topic: str | None = None
    type: str | None = None
    ts: int | None = None
    cts: int | None = None
    data: msgspec.Raw = _NO
    success: bool | None = None
    ret_msg: str | None = None
    op: str | None = None
    req_id: str | None = None


class _Trade(msgspec.Struct):
    i: str
    T: int
    p: Decimal
    v: Decimal
    S: str
    s: str


class _Book(msgspec.Struct):
    s: str
    b: list[_Level]
    a: list[_Level]
    u: int
    seq: int | None = None


class _Kline(msgspec.Struct):
    start: int
    end: int
    interval: str
    open: Decimal
    close: Decimal
    high: Decimal
    low: Decimal
    volume: Decimal
    confirm: bool
    turnover: Decimal | None = None


_ENV = msgspec.json.Decoder(_Envelope)
_TRADES = msgspec.json.Decoder(list[_Trade])
_BOOK = msgspec.json.Decoder(_Book)
_KLINES = msgspec.json.Decoder(list[_Kline])

_SIDES = {"Buy": "buy", "Sell": "sell"}


def _symbol(s: str) -> str:
    # dated futures look like BTC-27DEC24; ':' (the key separator) and anything else is refused
    if not s or not s.replace("-", "").replace("_", "").isalnum() or not s.isascii() or len(s) > 32:
        raise ParseError("bad_symbol", repr(s[:40]))
    return s.upper()


def _topic(env: _Envelope, venue: str, ingest_ms: int) -> list[Parsed]:
    topic = env.topic or ""
    parts = topic.split(".")
    if not env.data:
        raise ParseError("missing_field", "data")
    if parts[0] == "publicTrade" and len(parts) == 2:
        out: list[Parsed] = []
        for t in _TRADES.decode(env.data):
            side = _SIDES.get(t.S)
            if side is None:
                raise ParseError("invalid_field", f"S={t.S[:20]!r}")
            if not t.i or len(t.i) > 64:
                raise ParseError("bad_id", repr(t.i[:70]))
            out.append(
                Trade(
                    venue=venue,
                    symbol=_symbol(t.s),
                    event_time_ms=check_time(t.T, "T"),
                    ingest_time_ms=ingest_ms,
                    trade_id=t.i,
                    price=check_price(t.p, "p"),
                    size=check_size(t.v, "v"),
                    side="buy" if side == "buy" else "sell",
                )
            )
        return out
    if parts[0] == "orderbook" and len(parts) == 3:
        if env.type not in ("snapshot", "delta"):
            raise ParseError("invalid_field", f"type={str(env.type)[:20]!r}")
        b = _BOOK.decode(env.data)
        event_ms = env.cts if env.cts is not None else env.ts
        if event_ms is None:
            raise ParseError("missing_field", "ts")
        if b.u < 0:
            raise ParseError("bad_sequence", f"u={b.u}")
        return [
            BookUpdate(
                venue=venue,
                symbol=_symbol(b.s),
                event_time_ms=check_time(event_ms, "ts"),
                ingest_time_ms=ingest_ms,
                first_update_id=b.u,
                final_update_id=b.u,
                is_snapshot=env.type == "snapshot",
                seq=b.seq,
                bids=check_levels(b.b, "b"),
                asks=check_levels(b.a, "a"),
            )
        ]
    if parts[0] == "kline" and len(parts) == 3:
        symbol = _symbol(parts[2])
        bars: list[Parsed] = []
        for k in _KLINES.decode(env.data):
            if not k.confirm:
                continue  # only closed candles enter the bar topic
            for name, value in (("open", k.open), ("high", k.high), ("low", k.low), ("close", k.close)):
                check_price(value, name)
            if not (k.low <= min(k.open, k.close) and k.high >= max(k.open, k.close)):
                raise ParseError("bad_candle", f"o={k.open} h={k.high} l={k.low} c={k.close}")
            bars.append(
                Bar(
                    venue=venue,
                    symbol=symbol,
                    event_time_ms=check_time(k.end, "end"),
                    ingest_time_ms=ingest_ms,
                    interval=INTERVALS.get(k.interval, k.interval[:8]),
                    open_time_ms=check_time(k.start, "start"),
                    close_time_ms=k.end,
                    open=k.open,
                    high=k.high,
                    low=k.low,
                    close=k.close,
                    volume=check_size(k.volume, "volume"),
                    quote_volume=k.turnover,
                )
            )
        return bars
    raise ParseError("unexpected_frame", f"topic {topic[:60]!r}")


def parse_bybit(frame: bytes | str, market: Market, ingest_ms: int, bounds: TimeBounds | None = None) -> list[Parsed]:
    """Parse one frame; with `bounds`, a frame whose event time is outside them around `ingest_ms` is refused
    (`bad_time`)."""
    return check_times(_parse_bybit(frame, market, ingest_ms), ingest_ms, bounds)


def _parse_bybit(frame: bytes | str, market: Market, ingest_ms: int) -> list[Parsed]:
    """Parse one Bybit v5 public frame. Raises ParseError(reason) for anything malformed or unexpected."""
    venue = VENUES[market]
    try:
        env = _ENV.decode(frame)
        if env.topic is not None:
            return _topic(env, venue, ingest_ms)
        if env.op in ("ping", "pong") or env.ret_msg == "pong":
            return [Control("pong", req_id=env.req_id)]
        if env.op in ("subscribe", "unsubscribe") or env.success is not None:
            ok = bool(env.success)
            return [Control("ack" if ok else "error", success=ok, detail=(env.ret_msg or "")[:500], req_id=env.req_id)]
        raise ParseError("unexpected_frame", "neither a topic frame nor a reply")
    except ParseError:
        raise
    except msgspec.ValidationError as exc:
        raise ParseError("invalid_field", str(exc)[:300]) from None
    except msgspec.DecodeError as exc:
        raise ParseError("invalid_json", str(exc)[:300]) from None
    except (ValueError, TypeError, ArithmeticError) as exc:
        raise ParseError("invalid_field", repr(exc)[:300]) from None


@dataclass(frozen=True)
class BybitConfig:
    market: Market
    ws_url: str
    symbols: tuple[str, ...]
    streams: tuple[str, ...] = ("trades", "books", "bars")
    kline_interval: str = "1m"
    book_depth: int = 50
    max_args_per_subscribe: int = 10
    max_topics_per_connection: int = 200
    ping_interval_s: float = 20.0
    send_rate_per_s: float = 10.0
    book_levels: int = 20
    book_min_interval_ms: int = 100
    dedupe_window: int = 20_000
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0
    open_timeout_s: float = 10.0
    idle_timeout_s: float = 90.0
    max_age_s: float = 23 * 3600.0
    time_bounds: TimeBounds | None = None  # event-time sanity (None: none; from_settings sets the configured)

    @classmethod
    def from_settings(cls, settings: Settings, market: Market, symbols: list[str] | None = None) -> BybitConfig:
        return cls(
            market=market,
            ws_url=settings.bybit_spot_ws_url if market == "spot" else settings.bybit_linear_ws_url,
            symbols=tuple(symbols if symbols is not None else settings.ingest_symbols),
            streams=tuple(settings.ingest_streams),
            kline_interval=settings.ingest_kline_interval,
            book_depth=settings.bybit_book_depth,
            max_args_per_subscribe=settings.bybit_max_args_per_subscribe,
            max_topics_per_connection=settings.bybit_max_topics_per_connection,
            ping_interval_s=settings.bybit_ping_interval_s,
            book_levels=settings.ingest_book_levels,
            book_min_interval_ms=settings.ingest_book_min_interval_ms,
            dedupe_window=settings.ingest_trade_dedupe_window,
            backoff_initial_s=settings.ingest_backoff_initial_s,
            backoff_max_s=settings.ingest_backoff_max_s,
            open_timeout_s=settings.ingest_open_timeout_s,
            idle_timeout_s=settings.ingest_idle_timeout_s,
            max_age_s=settings.ingest_max_connection_age_s,
            time_bounds=TimeBounds.from_settings(settings),
        )

    def topics(self, symbol: str) -> list[str]:
        out: list[str] = []
        if "trades" in self.streams:
            out.append(f"publicTrade.{symbol}")
        if "books" in self.streams:
            out.append(f"orderbook.{self.book_depth}.{symbol}")
        if "bars" in self.streams:
            out.append(f"kline.{TO_BYBIT_INTERVAL.get(self.kline_interval, '1')}.{symbol}")
        return out

    def shards(self) -> list[list[str]]:
        per_symbol = max(1, len(self.topics("X")))
        per_conn = max(1, self.max_topics_per_connection // per_symbol)
        syms = list(self.symbols)
        return [syms[i : i + per_conn] for i in range(0, len(syms), per_conn)]


class _Shard:
    def __init__(self, index: int, symbols: list[str]) -> None:
        self.index = index
        self.symbols = symbols
        self.session: WsSession | None = None


class BybitConnector(ConnectorBase):
    """A Component (service.runtime) following one Bybit v5 public market for a list of symbols."""

    def __init__(self, config: BybitConfig, publisher: MarketPublisher, *, rng: random.Random | None = None) -> None:
        self.config = config
        self.venue = VENUES[config.market]
        self.name = f"ingest-{self.venue}"
        super().__init__(publisher, book_levels=config.book_levels, book_min_interval_ms=config.book_min_interval_ms)
        self._rng = rng or random.Random()
        self._shards = [_Shard(i, syms) for i, syms in enumerate(config.shards())]
        self._shard_of = {s: sh for sh in self._shards for s in sh.symbols}
        self.books = {s: BybitBookSync(s) for s in config.symbols}
        self.recent = RecentIds(config.dedupe_window)
        self._last_trade_ms: dict[str, int] = {}
        self._req = 0
        self._pending: dict[str, tuple[str, list[str], WsSession]] = {}
        self._background: set[asyncio.Task[None]] = set()
        self.refused_topics: set[str] = set()
        self.resubscribes = 0
        self.pongs = 0

    # --- Component protocol

    async def start(self) -> None:
        for shard in self._shards:
            shard.session = self._make_session(shard)
            shard.session.start()
        if self.config.book_min_interval_ms > 0 and "books" in self.config.streams:
            self._background.add(asyncio.get_running_loop().create_task(self.run_book_flusher()))

    async def stop(self) -> None:
        for shard in self._shards:
            if shard.session is not None:
                await shard.session.stop()
        tasks = list(self._background)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.publisher.flush()

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

    def _next_req(self) -> str:
        self._req += 1
        return f"rmad-{self._req}"

    async def _subscribe(self, session: WsSession, topics: list[str], op: str = "subscribe") -> None:
        step = self.config.max_args_per_subscribe
        for i in range(0, len(topics), step):
            chunk = topics[i : i + step]
            req = self._next_req()
            self._pending[req] = (op, chunk, session)
            await session.send(orjson.dumps({"req_id": req, "op": op, "args": chunk}).decode())

    def _make_session(self, shard: _Shard) -> WsSession:
        cfg = self.config
        sc = SessionConfig(
            name=f"{self.venue}#{shard.index}",
            venue=self.venue,
            url=cfg.ws_url,
            backoff_initial_s=cfg.backoff_initial_s,
            backoff_max_s=cfg.backoff_max_s,
            open_timeout_s=cfg.open_timeout_s,
            idle_timeout_s=cfg.idle_timeout_s,
            max_age_s=cfg.max_age_s,
            send_rate_per_s=cfg.send_rate_per_s,
            client_ping_interval_s=cfg.ping_interval_s,
        )

        async def on_open(session: WsSession) -> None:
            topics = [t for s in shard.symbols for t in cfg.topics(s) if t not in self.refused_topics]
            await self._subscribe(session, topics)

        async def on_frame(frame: bytes | str, recv_ms: int) -> None:
            await self.handle_frame(frame, recv_ms)

        async def on_close(reason: str) -> None:
            self.mark_reconnect(shard.symbols, now_ms())
            for s in shard.symbols:
                self.books[s].reset()

        def ping() -> str:
            return orjson.dumps({"req_id": self._next_req(), "op": "ping"}).decode()

        return WsSession(sc, on_open=on_open, on_frame=on_frame, on_close=on_close, client_ping=ping, rng=self._rng)

    # --- frames

    async def handle_frame(self, frame: bytes | str, recv_ms: int) -> None:
        self._frames.count += 1
        try:
            events = parse_bybit(frame, self.config.market, recv_ms, self.config.time_bounds)
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
                self._on_control(ev)

    def _on_control(self, ev: Control) -> None:
        if ev.kind == "pong":
            self.pongs += 1
            return
        op, topics, session = self._pending.pop(ev.req_id or "", ("", [], None))
        if ev.kind == "error" and op == "unsubscribe":
            return  # unsubscribing a topic the server already dropped: harmless
        if ev.kind == "error" and len(topics) > 1 and session is not None:
            # one bad arg fails the whole request: retry one topic per request to find the refused ones
            log.warning(
                "%s: subscribe of %d topics refused (%s); retrying one by one", self.venue, len(topics), ev.detail
            )
            task = asyncio.get_running_loop().create_task(self._isolate(session, topics))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            return
        if ev.kind == "error":
            self.refused_topics.update(topics)
            detail = f"subscription refused: {ev.detail or 'no reason given'}"
            if topics:
                detail += f" (args: {', '.join(topics[:10])})"
            self.subscribe_errors.append(detail[:300])
            SUBSCRIBE_ERRORS.labels(self.venue).inc()
            log.error("%s: %s", self.venue, detail)

    async def _on_trade(self, trade: Trade) -> None:
        if self.recent.seen(trade.symbol, trade.trade_id):
            self.duplicate("trades")
            return
        if trade.symbol in self._trade_reconnect:
            self._trade_reconnect.discard(trade.symbol)
            last = self._last_trade_ms.get(trade.symbol)
            await self.publish_gap(
                trade.symbol,
                "trades",
                last if last is not None else trade.event_time_ms,
                trade.event_time_ms,
                "reconnect",
            )
            trade = msgspec.structs.replace(trade, incomplete=True)
        prev = self._last_trade_ms.get(trade.symbol)
        if prev is None or trade.event_time_ms > prev:
            self._last_trade_ms[trade.symbol] = trade.event_time_ms
        await self.emit_trade(trade)

    async def _on_book(self, upd: BookUpdate) -> None:
        sync = self.books.get(upd.symbol)
        if sync is None:
            return
        outcome = sync.on_update(upd)
        if outcome.need_snapshot:
            await self._resubscribe_book(upd.symbol)
        await self.book_outcome(upd.symbol, upd.event_time_ms, outcome, sync.book, sync.last_u)

    async def _isolate(self, session: WsSession, topics: list[str]) -> None:
        for topic in topics:
            try:
                await self._subscribe(session, [topic])
            except ConnectionError:
                return

    async def _resubscribe_book(self, symbol: str) -> None:
        """Unsubscribe and subscribe the book topic again: Bybit answers a subscribe with a fresh snapshot."""
        shard = self._shard_of.get(symbol)
        if shard is None or shard.session is None or not shard.session.connected:
            return
        topic = f"orderbook.{self.config.book_depth}.{symbol}"
        self.resubscribes += 1
        try:
            await self._subscribe(shard.session, [topic], "unsubscribe")
            await self._subscribe(shard.session, [topic], "subscribe")
        except ConnectionError:
            pass  # the connection is going away; on_open subscribes everything again
