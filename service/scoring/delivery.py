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
from typing import Any

import orjson

from service.bus.base import Bus, Producer
from service.state.base import CommandRunner, Script, StateStore

log = logging.getLogger(__name__)

# KEYS: done key, in-flight hash. ARGV: id, alert json. 1 = claimed (publish it), 0 = already confirmed.
_CLAIM_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return 1
"""


def _claim_py(r: CommandRunner, keys: list[str], args: list[bytes]) -> Any:
    if r.call("EXISTS", keys[0]):
        return 0
    r.call("HSET", keys[1], args[0], args[1])
    return 1


# KEYS: done key, in-flight hash. ARGV: id, ttl ms.
_DONE_LUA = """
redis.call('SET', KEYS[1], '1', 'PX', ARGV[2])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
"""


def _done_py(r: CommandRunner, keys: list[str], args: list[bytes]) -> Any:
    r.call("SET", keys[0], b"1", "PX", args[1])
    r.call("HDEL", keys[1], args[0])
    return 1


CLAIM_SCRIPT = Script("rmad_alert_claim", _CLAIM_LUA, _claim_py)
DONE_SCRIPT = Script("rmad_alert_done", _DONE_LUA, _done_py)


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
