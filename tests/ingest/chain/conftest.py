"""Fixtures for chain ingest tests: the real broker (Tansu) with per-test topics and the real Redis."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from harness.readback import read_all
from service.bus.base import Producer, Record, TopicSpec
from service.bus.kafka import KafkaBus, KafkaOptions
from service.ingest.chain.follower import ChainFollower, FollowerConfig
from service.ingest.chain.node import NodeClient
from service.ingest.chain.publisher import ChainPublisher
from service.schemas.chain import Chain
from service.state.redis import RedisState


@dataclass
class ChainEnv:
    bus: KafkaBus
    state: RedisState
    topic: str
    dead_letters: str
    producer: Producer

    def follower(self, node: NodeClient, chain: Chain, **overrides: Any) -> ChainFollower:
        cfg = FollowerConfig(
            chain=chain,
            confirmations=2,
            reorg_depth=8,
            backfill_batch=4,
            start_block=1,
            poll_s=0.5,
            backoff_initial_s=0.05,
            backoff_max_s=0.3,
        )
        publisher = ChainPublisher(self.producer, self.topic, self.dead_letters)
        return ChainFollower(node, publisher, self.state, dataclasses.replace(cfg, **overrides))

    async def read(self, topic: str, *, idle_s: float = 1.5, timeout_s: float = 30.0) -> list[Record]:
        """Everything in `topic` from the start, through a fresh consumer group."""
        return (await read_all(self.bus, [topic], idle_s=idle_s, timeout_s=timeout_s))[topic]


@pytest.fixture
async def chain_env(kafka_bootstrap: str, redis_url: str, unique: str) -> AsyncIterator[ChainEnv]:
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
    topic, dlq = f"chain.txs.{unique}", f"deadletters.{unique}"
    await bus.create_topics([TopicSpec(topic, 3), TopicSpec(dlq, 1)])
    producer = bus.producer()
    await producer.start()
    state = RedisState(redis_url, key_prefix=f"test-{unique}:")
    try:
        yield ChainEnv(bus, state, topic, dlq, producer)
    finally:
        await producer.stop()
        await bus.close()
        await state.close()


async def eventually(cond: Callable[[], bool], within_s: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + within_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)
