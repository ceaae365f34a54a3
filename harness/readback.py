"""Read back what a test published: every record of some topics, through a fresh consumer group."""

from __future__ import annotations

import time
from collections.abc import Sequence

from service.bus.base import Bus, Record


async def read_all(
    bus: Bus, topics: Sequence[str], *, at_least: int = 0, idle_s: float = 1.5, timeout_s: float = 60.0
) -> dict[str, list[Record]]:
    """Every record of `topics` from the start, once at least `at_least` came and then nothing new for `idle_s`.

    One consumer for all topics (one group join: Tansu joins take seconds); records sorted per topic by partition
    and offset, so each key's order is the order it was produced in.
    """
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
