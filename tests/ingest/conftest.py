"""Fixtures for ingest tests: a publisher on the real broker (Tansu) with per-test topics, and topic read-back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest

from harness.readback import read_all
from service.bus.base import Bus, Producer, Record
from service.bus.factory import standard_topics
from service.bus.kafka import KafkaBus, KafkaOptions
from service.ingest.publisher import MarketPublisher
from service.schemas.market import AnyMarketEvent, DeadLetter, decode_dead_letter, decode_market_records
from service.settings import Settings, load_settings


@dataclass
class Ingest:
    settings: Settings
    bus: Bus
    producer: Producer
    publisher: MarketPublisher

    async def read(self, topic: str, *, at_least: int = 0) -> list[Record]:
        """Everything in `topic` (from the start), read back through a fresh consumer group."""
        return (await self.read_many([topic], at_least=at_least))[topic]

    async def read_many(
        self, topics: list[str], *, at_least: int = 0, idle_s: float = 1.0, timeout_s: float = 30.0
    ) -> dict[str, list[Record]]:
        """Everything in several topics through one consumer (one group join: Tansu joins take seconds)."""
        await self.publisher.flush()
        return await read_all(self.bus, topics, at_least=at_least, idle_s=idle_s, timeout_s=timeout_s)

    async def everything(self, at_least: int = 0) -> dict[str, list[AnyMarketEvent | DeadLetter]]:
        """trades / books / bars / deadletters decoded, read in one pass; keys are the short names."""
        s = self.settings
        names = {s.topic_trades: "trades", s.topic_books: "books", s.topic_bars: "bars", s.topic_dead_letters: "dead"}
        recs = await self.read_many(list(names), at_least=at_least)
        out: dict[str, list[AnyMarketEvent | DeadLetter]] = {}
        for topic, short in names.items():
            if short == "dead":
                out[short] = [decode_dead_letter(r.value) for r in recs[topic]]
            else:
                out[short] = [e for r in recs[topic] for e in decode_market_records(r.value)]
        return out

    async def events(self, topic: str, at_least: int = 0) -> list[AnyMarketEvent]:
        """The events of `topic` in order (packed trade records unpacked); `at_least` counts records."""
        return [e for r in await self.read(topic, at_least=at_least) for e in decode_market_records(r.value)]

    async def dead_letters(self, at_least: int = 0) -> list[DeadLetter]:
        recs = await self.read(self.settings.topic_dead_letters, at_least=at_least)
        return [decode_dead_letter(r.value) for r in recs]


def ingest_settings(kafka: str | None, unique: str, **overrides: object) -> Settings:
    return load_settings(
        kafka_bootstrap_servers=kafka,
        topic_trades=f"market.trades.{unique}",
        topic_books=f"market.books.{unique}",
        topic_bars=f"market.bars.{unique}",
        topic_dead_letters=f"deadletters.{unique}",
        topic_partitions=3,
        kafka_linger_ms=2,
        kafka_session_timeout_ms=6_000,
        kafka_heartbeat_interval_ms=500,
        ingest_backoff_initial_s=0.05,
        ingest_backoff_max_s=0.5,
        ingest_book_min_interval_ms=0,
        event_time_max_past_s=10 * 365 * 86_400,  # the fakes send fixed 2023 event times
        **overrides,
    )


@pytest.fixture
async def ingest(kafka_bootstrap: str, unique: str) -> AsyncIterator[Ingest]:
    settings = ingest_settings(kafka_bootstrap, unique)
    bus = KafkaBus(
        KafkaOptions(
            bootstrap_servers=kafka_bootstrap,
            linger_ms=2,
            session_timeout_ms=6_000,
            heartbeat_interval_ms=500,
            request_timeout_ms=10_000,
            default_partitions=3,
        )
    )
    await bus.create_topics(standard_topics(settings))
    producer = bus.producer()
    await producer.start()
    try:
        yield Ingest(settings, bus, producer, MarketPublisher(producer, settings))
    finally:
        await producer.stop()
        await bus.close()


async def eventually(cond: Callable[[], bool], within_s: float = 10.0, what: str = "condition") -> None:
    """Poll `cond` until it holds (the connector works concurrently with the test)."""
    for _ in range(int(within_s * 100)):
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out after {within_s}s waiting for {what}")
