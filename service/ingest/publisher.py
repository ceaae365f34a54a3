"""Publishes normalised market events to the bus: market.trades / market.books / market.bars keyed `venue:symbol`.

Every source (live connectors, replay, simulator) goes through one MarketPublisher, so topic names, keys, the
record format and the ingest metrics are the same whatever produced the event. Trades are packed per partition
(service/ingest/packing.py, `RMAD_INGEST_PACK_*`); batching and compression are the bus producer's settings
(`RMAD_KAFKA_LINGER_MS`, `RMAD_KAFKA_COMPRESSION`, ...): `send` only queues, `flush` waits.

The record timestamp is left to the producer (ingest time): replayed 2021 data stamped with its event time would
fall outside the topics' time-based retention and be deleted at once by Apache Kafka.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from service.bus.base import Producer
from service.ingest.deadletter import DeadLetterWriter
from service.ingest.metrics import GAPS, HOT, HotCount
from service.ingest.packing import PackLimits, TradePacker
from service.schemas.market import Bar, BookTop, DeadLetter, Gap, PublishedMarketEvent, Trade, encode

if TYPE_CHECKING:
    from service.settings import Settings


class _Children:
    """Metric children cached per (venue, type): a dict lookup per message, nothing more."""

    __slots__ = ("lag", "messages")

    def __init__(self, venue: str, kind: str) -> None:
        self.messages: HotCount = HOT.message_child(venue, kind)
        self.lag: HotCount = HOT.lag_child(venue, kind)


class MarketPublisher:
    """Serialise, key and send market events; count them; route bad frames to the dead-letter topic."""

    def __init__(self, producer: Producer, settings: Settings) -> None:
        self.producer = producer
        self.topic_trades = settings.topic_trades
        self.topic_books = settings.topic_books
        self.topic_bars = settings.topic_bars
        self.dead_letters = DeadLetterWriter(producer, settings.topic_dead_letters)
        self._keys: dict[tuple[str, str], bytes] = {}
        self._children: dict[tuple[str, str], _Children] = {}
        self.published = 0
        limits = PackLimits(settings.ingest_pack_ms, settings.ingest_pack_max_trades, settings.ingest_pack_max_bytes)
        self.packer = TradePacker(producer, self.topic_trades, limits) if limits.enabled else None

    def _key(self, venue: str, symbol: str) -> bytes:
        k = self._keys.get((venue, symbol))
        if k is None:
            k = self._keys[(venue, symbol)] = f"{venue}:{symbol}".encode()
        return k

    def _metrics(self, venue: str, kind: str) -> _Children:
        c = self._children.get((venue, kind))
        if c is None:
            c = self._children[(venue, kind)] = _Children(venue, kind)
        return c

    async def _send(self, topic: str, kind: str, event: PublishedMarketEvent) -> None:
        key = self._key(event.venue, event.symbol)
        if self.packer is not None and kind == "trade":
            await self.packer.add(key, encode(event))
        else:
            await self.producer.send(topic, encode(event), key=key)
        m = self._metrics(event.venue, kind)
        m.messages.count += 1
        m.lag.observe((event.ingest_time_ms - event.event_time_ms) / 1000.0)
        self.published += 1

    async def publish_trade(self, trade: Trade) -> None:
        await self._send(self.topic_trades, "trade", trade)

    async def publish_book(self, book: BookTop) -> None:
        await self._send(self.topic_books, "book", book)

    async def publish_bar(self, bar: Bar) -> None:
        await self._send(self.topic_bars, "bar", bar)

    async def publish_gap(self, gap: Gap) -> None:
        """Mark [from_ms, to_ms] of one stream incomplete, on that stream's topic (ordered with its events)."""
        topic = {"trades": self.topic_trades, "books": self.topic_books, "bars": self.topic_bars}[gap.stream]
        key = self._key(gap.venue, gap.symbol)
        if self.packer is not None and topic == self.topic_trades:
            await self.packer.add_other(key, encode(gap))  # after the key's packed trades, never before
        else:
            await self.producer.send(topic, encode(gap), key=key)
        self._metrics(gap.venue, "gap").messages.count += 1
        GAPS.labels(gap.venue, gap.stream, gap.reason).inc()
        self.published += 1

    async def publish(self, event: PublishedMarketEvent) -> None:
        """Route any published event type to its topic."""
        if isinstance(event, Trade):
            await self.publish_trade(event)
        elif isinstance(event, BookTop):
            await self.publish_book(event)
        elif isinstance(event, Bar):
            await self.publish_bar(event)
        else:
            await self.publish_gap(event)

    async def dead_letter(self, venue: str, source: str, raw: bytes | str, reason: str, detail: str = "") -> DeadLetter:
        """Keep a frame that could not be used, with the reason code (bounded) and a free-text detail."""
        return await self.dead_letters.write(venue, source, raw, reason, detail)

    async def flush(self) -> None:
        """Send the open packs, then wait until everything queued is acknowledged."""
        if self.packer is not None:
            await self.packer.flush()
        await self.producer.flush()
