"""Helpers shared by the fault and shutdown cases: settings for child processes, topic read-back, paced publishing.

The worker cases use the labelled simulated market and the calibrated contract model of tests/scoring/scenario.py,
so "no window lost" is checked against the offline scoring of the same events (the expected windows).
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Sequence
from typing import Any

import orjson

from service.bus.base import Bus, Record
from service.bus.factory import standard_topics
from service.bus.kafka import KafkaBus, KafkaOptions
from service.ingest.publisher import MarketPublisher
from service.schemas.market import PublishedMarketEvent
from service.settings import Settings, load_settings
from tests.scoring.scenario import Collected, stamped

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


async def read_all(
    bus: Bus, topics: Sequence[str], *, at_least: int = 0, idle_s: float = 1.5, timeout_s: float = 60.0
) -> dict[str, list[Record]]:
    """Every record of `topics` from the start (a fresh consumer group), once nothing new came for `idle_s`."""
    c = bus.consumer(list(topics), f"readback-{time.monotonic_ns()}", auto_offset_reset="earliest")
    await c.start()
    out: list[Record] = []
    deadline = time.monotonic() + timeout_s
    last_new = time.monotonic()
    try:
        while time.monotonic() < deadline:
            batch = await c.getmany(timeout_ms=200)
            if batch:
                out.extend(batch)
                last_new = time.monotonic()
            elif len(out) >= at_least and time.monotonic() - last_new > idle_s:
                break
    finally:
        await c.stop()
    by_topic: dict[str, list[Record]] = {t: [] for t in topics}
    for r in sorted(out, key=lambda r: (r.topic, r.partition, r.offset)):
        by_topic[r.topic].append(r)
    return by_topic


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
