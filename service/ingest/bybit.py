"""Bybit v5 public spot and linear connector (the frame parser, `parse_bybit`, is service.ingest.bybit_parse).

Topics per symbol: `publicTrade.<S>`, `orderbook.<depth>.<S>`, `kline.<interval>.<S>`. Subscribe requests carry at
most 10 args (the spot limit); every ack's `success` is checked and a refused topic is surfaced (error log,
`rmad_ingest_subscribe_errors_total`, health detail), never ignored. The client pings every 20 s. Trades are
de-duplicated by id (linear ids are UUIDs, so no contiguity is assumed); a reconnect marks the trade interval
incomplete. Books: a snapshot replaces, a delta needs `u == prev_u + 1`, otherwise the topic is resubscribed to get
a fresh snapshot. Only `confirm: true` klines become bars.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import orjson

from service.ingest.bybit_parse import TO_BYBIT_INTERVAL, VENUES, Market, parse_bybit
from service.ingest.events import Parsed
from service.ingest.orderbook import BybitBookSync
from service.ingest.publisher import MarketPublisher
from service.ingest.sequence import RecentIds
from service.ingest.sharded import BookSync, ShardedConnector, TradeVerdict
from service.schemas.eventtime import TimeBounds
from service.schemas.market import Trade

if TYPE_CHECKING:
    from service.settings import Settings

__all__ = ["BybitConfig", "BybitConnector", "parse_bybit"]


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


class BybitConnector(ShardedConnector):
    """Bybit's part of a sharded connector: v5 topics, op/args requests with client pings, trade ids that only
    de-duplicate, and book resync by subscribing the topic again (the answer is a fresh snapshot)."""

    def __init__(self, config: BybitConfig, publisher: MarketPublisher, *, rng: random.Random | None = None) -> None:
        self.config = config
        books: dict[str, BookSync] = {s: BybitBookSync(s) for s in config.symbols}
        super().__init__(
            config,
            publisher,
            venue=VENUES[config.market],
            books=books,
            max_names_per_request=config.max_args_per_subscribe,
            rng=rng,
        )
        self.recent = RecentIds(config.dedupe_window)
        self.resubscribes = 0

    def ws_url(self) -> str:
        return self.config.ws_url

    def stream_names(self, symbol: str) -> list[str]:
        return self.config.topics(symbol)

    def request_key(self, n: int) -> str:
        return f"rmad-{n}"

    def subscribe_message(self, req: str, op: str, names: list[str]) -> str:
        return orjson.dumps({"req_id": req, "op": op, "args": names}).decode()

    def client_ping(self) -> tuple[float, Callable[[], str]]:
        def ping() -> str:
            return orjson.dumps({"req_id": self.next_request_key(), "op": "ping"}).decode()

        return self.config.ping_interval_s, ping

    def parse(self, frame: bytes | str, recv_ms: int) -> list[Parsed]:
        return parse_bybit(frame, self.config.market, recv_ms, self.config.time_bounds)

    def check_trade(self, trade: Trade) -> TradeVerdict:
        # linear trade ids are UUIDs: duplicates can be told, skipped trades cannot
        return TradeVerdict(duplicate=self.recent.seen(trade.symbol, trade.trade_id), gap=None)

    async def resync_book(self, symbol: str) -> None:
        """Unsubscribe and subscribe the book topic again: Bybit answers a subscribe with a fresh snapshot."""
        session = self.shard_session(symbol)
        if session is None:
            return
        topic = f"orderbook.{self.config.book_depth}.{symbol}"
        self.resubscribes += 1
        try:
            await self.subscribe(session, [topic], "unsubscribe")
            await self.subscribe(session, [topic], "subscribe")
        except ConnectionError:
            pass  # the connection is going away; on_open subscribes everything again
