"""Packs the trades of one partition published within a short bound into one market.trades record (`TradePack`).

Why: at market rates the per-record costs dominate the trade path. The producer spends ~8 µs per record in
aiokafka, the broker stores and indexes one batch entry per record, and every consumer builds a wrapper per record;
the trade itself is a few hundred bytes. Packing per partition (not per key) adds no fill time for quiet keys: a
partition of a busy market sees a trade every few milliseconds, so a pack waits at most `max_ms` (and is sealed
earlier when it reaches `max_trades` or `max_bytes`).

Order: a key always maps to one partition (murmur2 over the topic's partition count, as the producer places keys),
its trades join that partition's open pack in publish order, and sealed packs and any other record for the topic
(a `Gap` marker seals its partition's pack first) leave through one FIFO queue drained by one sender at a time, so
every key's events reach the broker in the order they were published. A crash loses at most the open packs, like the
producer's own linger buffer; `flush` (and so a clean stop) seals and sends them.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from dataclasses import dataclass

from service.bus.base import BusError, Producer
from service.bus.partitioning import partition_for
from service.schemas.market import MAX_PACK_TRADES, encode_pack


@dataclass(frozen=True, slots=True)
class PackLimits:
    """When a pack is sealed: `max_ms` after its first trade, or at `max_trades` trades, or before it would pass
    `max_bytes`. `max_ms` 0 turns packing off (one record per trade)."""

    max_ms: float = 2.0
    max_trades: int = 500
    max_bytes: int = 256 * 1024

    def __post_init__(self) -> None:
        if not 0 <= self.max_ms <= 1000:
            raise ValueError(f"pack max_ms must be within 0..1000, got {self.max_ms}")
        if not 1 <= self.max_trades <= MAX_PACK_TRADES:
            raise ValueError(f"pack max_trades must be within 1..{MAX_PACK_TRADES}, got {self.max_trades}")
        if self.max_bytes < 1024:
            raise ValueError(f"pack max_bytes must be at least 1024, got {self.max_bytes}")

    @property
    def enabled(self) -> bool:
        return self.max_ms > 0 and self.max_trades > 1


class _Pack:
    __slots__ = ("key", "parts", "size", "timer")

    def __init__(self, key: bytes) -> None:
        self.key = key
        self.parts: list[bytes] = []
        self.size = 64  # the pack's own JSON around the trades
        self.timer: asyncio.TimerHandle | None = None


class TradePacker:
    """Per-partition open packs of one topic, sealed by time, count or bytes, and sent in order."""

    def __init__(self, producer: Producer, topic: str, limits: PackLimits) -> None:
        self.producer = producer
        self.topic = topic
        self.limits = limits
        self._partitions = 0
        self._part_of: dict[bytes, int] = {}
        self._open: dict[int, _Pack] = {}
        self._ready: collections.deque[tuple[bytes, bytes]] = collections.deque()  # (key, record value)
        self._send_lock = asyncio.Lock()
        self._drainer: asyncio.Task[None] | None = None
        self._error: BaseException | None = None
        self.records = 0
        self.packs = 0

    async def _partition(self, key: bytes) -> int:
        p = self._part_of.get(key)
        if p is None:
            if not self._partitions:
                self._partitions = await self.producer.partitions_for(self.topic)
            if len(self._part_of) >= 1_000_000:  # bounded: keys are venue:symbol pairs, a few thousand
                self._part_of.clear()
            p = self._part_of[key] = partition_for(key, self._partitions)
        return p

    async def add(self, key: bytes, encoded: bytes) -> None:
        """Queue one encoded trade; returns once it is in an open pack (or sent, when that sealed the pack)."""
        self._raise_error()
        p = await self._partition(key)
        lim = self.limits
        pack = self._open.get(p)
        sealed = False
        if pack is not None and pack.size + len(encoded) + 1 > lim.max_bytes:
            self._seal(p)
            pack, sealed = None, True
        if pack is None:
            pack = self._open[p] = _Pack(key)
            pack.timer = asyncio.get_running_loop().call_later(lim.max_ms / 1000.0, self._expire, p, pack)
        pack.parts.append(encoded)
        pack.size += len(encoded) + 1
        if len(pack.parts) >= lim.max_trades:
            self._seal(p)
            sealed = True
        if sealed:
            await self._drain()

    async def add_other(self, key: bytes, value: bytes) -> None:
        """Send a record that is not a trade (a gap marker) in order with the key's trades: its partition's pack is
        sealed first and both leave through the same queue."""
        self._raise_error()
        p = await self._partition(key)
        if p in self._open:
            self._seal(p)
        self._ready.append((key, value))
        await self._drain()

    def _seal(self, p: int) -> None:
        pack = self._open.pop(p)
        if pack.timer is not None:
            pack.timer.cancel()
        value = pack.parts[0] if len(pack.parts) == 1 else encode_pack(pack.parts)
        self._ready.append((pack.key, value))
        self.packs += len(pack.parts) > 1

    def _expire(self, p: int, pack: _Pack) -> None:
        if self._open.get(p) is not pack:
            return
        self._seal(p)
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.get_running_loop().create_task(self._drain_logged())

    async def _drain_logged(self) -> None:
        try:
            await self._drain()
        except Exception as exc:  # surfaced on the next add / flush
            self._error = self._error or exc

    async def _drain(self) -> None:
        async with self._send_lock:
            while self._ready:
                key, value = self._ready.popleft()
                await self.producer.send(self.topic, value, key=key)
                self.records += 1

    async def flush(self) -> None:
        """Seal every open pack and hand everything queued to the producer (the caller flushes the producer)."""
        for p in list(self._open):
            self._seal(p)
        await self._drain()
        if self._drainer is not None:
            with contextlib.suppress(Exception):
                await self._drainer
        self._raise_error()

    def _raise_error(self) -> None:
        if self._error is not None:
            err, self._error = self._error, None
            raise BusError(f"an earlier packed publish failed: {err!r}") from err
