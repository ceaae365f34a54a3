"""Helpers shared by the fault and shutdown cases: settings for child processes, topic read-back, paced publishing.

The worker cases use the labelled simulated market and the calibrated contract model of harness/scenario.py,
so "no window lost" is checked against the offline scoring of the same events (the expected windows).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Sequence
from typing import Any

import orjson

from harness.scenario import Collected, stamped
from service.bus.base import Bus, Record
from service.bus.factory import standard_topics
from service.bus.kafka import KafkaBus, KafkaOptions
from service.ingest.publisher import MarketPublisher
from service.schemas.market import PublishedMarketEvent
from service.settings import Settings, load_settings

GRACE_S = 6.0  # RMAD_SHUTDOWN_GRACE_S of every process these cases start


def settings_of(env: dict[str, str], **over: object) -> Settings:
    fields: dict[str, object] = {k.removeprefix("RMAD_").lower(): v for k, v in env.items() if k.startswith("RMAD_")}
    fields.update(over)
    return load_settings(**fields)


def kafka_bus(bootstrap: str) -> KafkaBus:
    return KafkaBus(
        KafkaOptions(
            bootstrap,
            session_timeout_ms=6000,
            heartbeat_interval_ms=500,
            linger_ms=2,
            request_timeout_ms=10_000,
        )
    )


async def create_topics(bus: Bus, s: Settings) -> None:
    await bus.create_topics(standard_topics(s))


async def publish_events(
    bus: Bus,
    s: Settings,
    events: Sequence[PublishedMarketEvent],
    *,
    pace_every: int = 2000,
    pause_s: float = 0.05,
) -> None:
    """Publish market events as ingest would (ingest time = now), in paced chunks."""
    p = bus.producer()
    await p.start()
    pub = MarketPublisher(p, s)
    try:
        for i, e in enumerate(stamped(list(events))):
            await pub.publish(e)
            if pace_every and i % pace_every == pace_every - 1:
                await pub.flush()
                await asyncio.sleep(pause_s)
        await pub.flush()
    finally:
        await p.stop()


def duplicate_ids(alerts: list[dict[str, Any]]) -> list[str]:
    return [i for i, n in collections.Counter(str(a["id"]) for a in alerts).items() if n > 1]


def duplicate_windows(out: Collected) -> list[tuple[str, int]]:
    c = collections.Counter((str(s["key"]), int(str(s["window_end_ms"]))) for s in out.scores)
    return [w for w, n in c.items() if n > 1]


def decode(records: list[Record]) -> list[dict[str, Any]]:
    return [orjson.loads(r.value) for r in records]
