"""Exactly-once alerts on an at-least-once bus: claim in Redis, publish, confirm; recover on takeover.

Why: a restarted worker re-reads history and may score a window again; its alert must not appear twice in the
alerts topic. Each alert id is (1) claimed atomically (refused when already confirmed; otherwise parked in the
partition's in-flight hash), (2) published with an acknowledged send, (3) confirmed (id remembered, in-flight
entry removed). A crash between (1) and (3) leaves the id in flight: the next owner of the partition reads the
alerts topic for those ids, confirms the ones that made it and publishes the others. A zombie owner still
publishing after losing its partition is the one case this cannot cover without broker transactions.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterable

import orjson

from service.bus.base import Bus, Producer
from service.state.base import StateStore
from service.state.scripts.alert_bookkeeping import CLAIM_SCRIPT, DONE_SCRIPT

log = logging.getLogger(__name__)


def done_key(alert_id: str) -> str:
    return f"alerts:done:{alert_id}"


class AlertDelivery:
    def __init__(self, state: StateStore, producer: Producer, topic: str, ttl_s: float) -> None:
        self.state = state
        self.producer = producer
        self.topic = topic
        self.ttl_ms = int(ttl_s * 1000)
        # published (acknowledged) but not yet confirmed in the state store: when the confirmation fails (Redis
        # down) the worker retries the batch, and the retry must only confirm, not publish again
        self._unconfirmed: set[str] = set()

    async def publish(self, alert_id: str, key: str, payload: bytes, inflight: str) -> bool:
        """Publish one alert at most once per id; False when it was already published."""
        if alert_id in self._unconfirmed:
            await self.state.run_script(DONE_SCRIPT, [done_key(alert_id), inflight], [alert_id, self.ttl_ms])
            self._unconfirmed.discard(alert_id)
            return False
        claimed = await self.state.run_script(CLAIM_SCRIPT, [done_key(alert_id), inflight], [alert_id, payload])
        if not int(claimed):
            return False
        await self.producer.send_and_wait(self.topic, payload, key=key.encode())
        self._unconfirmed.add(alert_id)
        await self.state.run_script(DONE_SCRIPT, [done_key(alert_id), inflight], [alert_id, self.ttl_ms])
        self._unconfirmed.discard(alert_id)
        return True

    async def recover(self, bus: Bus, inflight: str, idle_s: float = 1.5, max_s: float = 60.0) -> int:
        """Settle alerts left in flight by a crashed owner; returns how many had to be published."""
        pending = await self.state.hgetall(inflight)
        if not pending:
            return 0
        seen = await _ids_in_topic(bus, self.topic, set(pending), idle_s, max_s)
        published = 0
        for aid, payload in pending.items():
            if aid not in seen:
                key = orjson.loads(payload).get("key", "")
                await self.producer.send_and_wait(self.topic, payload, key=str(key).encode())
                published += 1
            await self.state.run_script(DONE_SCRIPT, [done_key(aid), inflight], [aid, self.ttl_ms])
        log.info(
            "alert recovery on %s: %d in flight, %d found in %s, %d published",
            inflight,
            len(pending),
            len(pending) - published,
            self.topic,
            published,
        )
        return published


async def _ids_in_topic(bus: Bus, topic: str, wanted: Iterable[str], idle_s: float, max_s: float) -> set[str]:
    """Read the alerts topic from the start with a throw-away group until it goes quiet; return the wanted ids
    present. Alerts are rare (a few per key per hour), so the topic is small enough to read on a takeover."""
    want = set(wanted)
    found: set[str] = set()
    consumer = bus.consumer([topic], f"rmad-alert-recovery-{uuid.uuid4().hex[:12]}", auto_offset_reset="earliest")
    await consumer.start()
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max_s
        quiet_since = loop.time()
        while loop.time() < deadline and found != want:
            recs = await consumer.getmany(timeout_ms=250)
            if recs or not consumer.assignment():  # quiet only counts once the group has assigned partitions
                quiet_since = loop.time()
                for r in recs:
                    try:
                        aid = orjson.loads(r.value).get("id")
                    except orjson.JSONDecodeError:
                        continue
                    if aid in want:
                        found.add(aid)
            if loop.time() - quiet_since > idle_s:
                break
    finally:
        await consumer.stop()
    return found
