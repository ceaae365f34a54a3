"""Read back what a test published: every record of some topics, through a fresh consumer group."""

from __future__ import annotations

import time
from collections.abc import Sequence

from service.bus.base import Bus, Record


async def read_all(
    bus: Bus,
    topics: Sequence[str],
    *,
    at_least: int = 0,
    idle_s: float = 1.5,
    timeout_s: float = 60.0,
    events: bool = False,
) -> dict[str, list[Record]]:
    """Every record of `topics` from the start, once at least `at_least` came and then nothing new for `idle_s`.

    One consumer for all topics (one group join: Tansu joins take seconds); records sorted per topic by partition
    and offset, so each key's order is the order it was produced in. With `events`, packed market records are
    unpacked (`unpacked`) and `at_least` counts events.
    """
    c = bus.consumer(list(topics), f"readback-{time.monotonic_ns()}", auto_offset_reset="earliest")
    await c.start()
    out: list[Record] = []
    deadline = time.monotonic() + timeout_s
    last_new = time.monotonic()
    try:
        while time.monotonic() < deadline:
            batch = await c.getmany(timeout_ms=200)
            if events:
                batch = unpacked(batch)
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


def unpacked(records: Sequence[Record]) -> list[Record]:
    """Records as one per event: a packed market.trades record (`TradePack`) becomes one record per trade, in pack
    order, each with the pack's topic, partition, offset and timestamp, its own key (`venue:symbol`) and the trade's
    single-record encoding; every other record is kept as it is."""
    from service.schemas.market import decode_market_records, encode

    out: list[Record] = []
    for r in records:
        if not r.value.startswith(b'{"type":"trades"'):
            out.append(r)
            continue
        for ev in decode_market_records(r.value):
            out.append(Record(r.topic, r.partition, r.offset, ev.key.encode(), encode(ev), r.timestamp_ms, r.headers))
    return out
