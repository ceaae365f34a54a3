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
from service.ingest.connector import now_ms
from service.ingest.errors import ParseError
from service.ingest.events import Parsed, check_levels
from service.ingest.orderbook import BinanceBookSync
from service.ingest.publisher import MarketPublisher
from service.ingest.sequence import TradeIdTracker
from service.ingest.sharded import BookSync, ShardedConnector, TradeVerdict
from service.ingest.ws import backoff_delay
from service.schemas.eventtime import TimeBounds
from service.schemas.market import Trade

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


class BinanceConnector(ShardedConnector):
    """Binance's part of a sharded connector: combined-stream names, SUBSCRIBE requests, contiguous trade ids,
    and book resync from a REST depth snapshot."""

    def __init__(
        self,
        config: BinanceConfig,
        publisher: MarketPublisher,
        *,
        http: httpx.AsyncClient | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self._syncs = {s: BinanceBookSync(s, futures=config.market == "usdm") for s in config.symbols}
        books: dict[str, BookSync] = dict(self._syncs)
        super().__init__(
            config,
            publisher,
            venue=VENUES[config.market],
            books=books,
            max_names_per_request=config.max_streams_per_subscribe,
            rng=rng,
        )
        self._http = http
        self._own_http = http is None
        self.trade_ids = TradeIdTracker()

    # --- the venue's part

    def ws_url(self) -> str:
        return f"{self.config.ws_url.rstrip('/')}/stream"

    def stream_names(self, symbol: str) -> list[str]:
        return self.config.stream_names(symbol)

    def subscribe_message(self, req: str, op: str, names: list[str]) -> str:
        return orjson.dumps({"method": op.upper(), "params": names, "id": int(req)}).decode()

    def parse(self, frame: bytes | str, recv_ms: int) -> list[Parsed]:
        return parse_binance(frame, self.config.market, recv_ms, self.config.time_bounds)

    def check_trade(self, trade: Trade) -> TradeVerdict:
        check = self.trade_ids.check(trade.symbol, int(trade.trade_id), trade.event_time_ms)
        if check.verdict == "dup":
            return TradeVerdict(duplicate=True)
        if check.verdict != "gap":
            return TradeVerdict(gap=False)
        return TradeVerdict(gap=True, from_ms=check.prev_ms, from_id=str(check.prev_id), missing=check.missing)

    async def resync_book(self, symbol: str) -> None:
        task = self.resync_tasks.get(symbol)
        if task is not None and not task.done():
            return
        self.resync_tasks[symbol] = asyncio.get_running_loop().create_task(self._snapshot(symbol))

    async def open_venue(self) -> None:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self.config.rest_timeout_s)

    async def close_venue(self) -> None:
        if self._own_http and self._http is not None:
            await self._http.aclose()
            self._http = None

    # --- REST snapshot

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
                sync = self._syncs[symbol]
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
