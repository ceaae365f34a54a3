"""The `bus` fixture: every contract test runs once on Kafka (the session broker) and once in-process."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from service.bus.base import Bus
from service.bus.kafka import KafkaBus, KafkaOptions
from service.bus.memory import MemoryBus


@pytest.fixture(params=["memory", pytest.param("kafka", marks=pytest.mark.integration)])
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[Bus]:
    b: Bus
    if request.param == "memory":
        b = MemoryBus(default_partitions=4)
    else:
        bootstrap = request.getfixturevalue("kafka_bootstrap")
        b = KafkaBus(
            KafkaOptions(
                bootstrap_servers=bootstrap,
                session_timeout_ms=6_000,
                heartbeat_interval_ms=500,
                linger_ms=2,
                max_batch_bytes=16_384,  # small batches: the ordering tests then cross many full-batch submits
                request_timeout_ms=10_000,
            )
        )
    yield b
    await b.close()
