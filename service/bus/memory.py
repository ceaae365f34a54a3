"""In-process bus: Kafka's semantics (partitions, consumer groups, committed offsets, pause) without a broker.

It backs `rmad run` on a laptop and the contract tests. Each partition is a bounded log (oldest records are
trimmed past `max_records_per_partition`, like retention); offsets keep counting across trims. Rebalancing is
eager like Kafka's default: on every join/leave all members restart from the group's committed offsets, so
uncommitted work is redelivered (at-least-once), never lost.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from service.bus.base import (
    Bus,
    BusError,
    CommitFailedError,
    Consumer,
    Producer,
    Record,
    TopicPartition,
    TopicSpec,
)
from service.bus.partitioning import partition_for


@dataclass
class _PartitionLog:
    records: deque[Record] = field(default_factory=deque)
    base_offset: int = 0  # offset of records[0]
    next_offset: int = 0


@dataclass
class _Group:
    members: dict[int, MemoryConsumer] = field(default_factory=dict)
    committed: dict[TopicPartition, int] = field(default_factory=dict)
    generation: int = 0


class MemoryBus(Bus):
    kind = "memory"

    def __init__(self, default_partitions: int = 6, max_records_per_partition: int = 1_000_000) -> None:
        self.default_partitions = default_partitions
        self.max_records_per_partition = max_records_per_partition
        self._topics: dict[str, list[_PartitionLog]] = {}
        self._groups: dict[str, _Group] = {}
        self._waiters: set[asyncio.Future[None]] = set()
        self._member_ids = itertools.count(1)
        self._closed = False
        self.trimmed_records = 0

    # -- topics
    def _topic(self, name: str) -> list[_PartitionLog]:
        logs = self._topics.get(name)
        if logs is None:  # auto-create, as Kafka does by default
            logs = [_PartitionLog() for _ in range(self.default_partitions)]
            self._topics[name] = logs
            self._rebalance_groups_for(name)
        return logs

    async def create_topics(self, specs: Sequence[TopicSpec]) -> None:
        for spec in specs:
            if spec.name not in self._topics:
                self._topics[spec.name] = [_PartitionLog() for _ in range(spec.partitions)]
                self._rebalance_groups_for(spec.name)

    async def partitions_for(self, topic: str) -> int:
        return len(self._topic(topic))

    async def ping(self, timeout_s: float = 2.0) -> None:
        if self._closed:
            raise BusError("in-process bus is closed")

    async def close(self) -> None:
        self._closed = True
        self._wake()

    # -- data path
    def _append(
        self,
        topic: str,
        value: bytes,
        key: bytes | None,
        headers: Sequence[tuple[str, bytes]] | None,
        timestamp_ms: int | None,
    ) -> tuple[int, int]:
        if self._closed:
            raise BusError("in-process bus is closed")
        logs = self._topic(topic)
        p = partition_for(key, len(logs))
        log = logs[p]
        ts = timestamp_ms if timestamp_ms is not None else int(time.time() * 1000)
        rec = Record(topic, p, log.next_offset, key, bytes(value), ts, tuple(headers or ()))
        log.records.append(rec)
        log.next_offset += 1
        if len(log.records) > self.max_records_per_partition:
            log.records.popleft()
            log.base_offset += 1
            self.trimmed_records += 1
        self._wake()
        return p, rec.offset

    def _wake(self) -> None:
        for fut in self._waiters:
            if not fut.done():
                fut.set_result(None)
        self._waiters.clear()

    async def _wait_for_data(self, timeout_s: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.add(fut)
        try:
            await asyncio.wait_for(fut, timeout_s)
        except TimeoutError:
            pass
        finally:
            self._waiters.discard(fut)

    def _read(self, tp: TopicPartition, position: int, limit: int) -> tuple[list[Record], int]:
        log = self._topic(tp.topic)[tp.partition]
        if position < log.base_offset:
            position = log.base_offset
        start = position - log.base_offset
        out = list(itertools.islice(log.records, start, start + limit))
        return out, position

    def _end_offset(self, tp: TopicPartition) -> int:
        return self._topic(tp.topic)[tp.partition].next_offset

    def _begin_offset(self, tp: TopicPartition) -> int:
        return self._topic(tp.topic)[tp.partition].base_offset

    # -- groups
    def _join(self, group_id: str, member: MemoryConsumer) -> int:
        group = self._groups.setdefault(group_id, _Group())
        member_id = next(self._member_ids)
        group.members[member_id] = member
        for t in member.topics:
            self._topic(t)
        self._rebalance(group)
        return member_id

    def _leave(self, group_id: str, member_id: int) -> None:
        group = self._groups.get(group_id)
        if group and group.members.pop(member_id, None) is not None:
            self._rebalance(group)

    def _rebalance_groups_for(self, topic: str) -> None:
        for group in self._groups.values():
            if any(topic in m.topics for m in group.members.values()):
                self._rebalance(group)

    def _rebalance(self, group: _Group) -> None:
        group.generation += 1
        members = list(group.members.values())
        assignments: dict[int, set[TopicPartition]] = {id(m): set() for m in members}
        topics = sorted({t for m in members for t in m.topics})
        for topic in topics:
            subscribers = [m for m in members if topic in m.topics]
            for p in range(len(self._topics[topic])):
                owner = subscribers[p % len(subscribers)]
                assignments[id(owner)].add(TopicPartition(topic, p))
        for m in members:
            m._assign(assignments[id(m)], group.generation)
        self._wake()

    def producer(self) -> Producer:
        return MemoryProducer(self)

    def consumer(
        self,
        topics: Sequence[str],
        group_id: str,
        *,
        auto_offset_reset: str | None = None,
        client_id: str | None = None,
        fetch_max_wait_ms: int | None = None,  # nothing parks a fetch in-process: data wakes waiters at once
    ) -> Consumer:
        return MemoryConsumer(self, list(topics), group_id, auto_offset_reset or "earliest")


class MemoryProducer(Producer):
    def __init__(self, bus: MemoryBus) -> None:
        self._bus = bus

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def send(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes]] | None = None,
        timestamp_ms: int | None = None,
    ) -> None:
        self._bus._append(topic, value, key, headers, timestamp_ms)

    async def send_and_wait(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes]] | None = None,
        timestamp_ms: int | None = None,
    ) -> tuple[int, int]:
        return self._bus._append(topic, value, key, headers, timestamp_ms)

    async def flush(self) -> None:
        return None

    async def partitions_for(self, topic: str) -> int:
        return await self._bus.partitions_for(topic)


class MemoryConsumer(Consumer):
    def __init__(self, bus: MemoryBus, topics: list[str], group_id: str, auto_offset_reset: str) -> None:
        if auto_offset_reset not in ("earliest", "latest"):
            raise ValueError("auto_offset_reset must be 'earliest' or 'latest'")
        self._bus = bus
        self.topics = topics
        self.group_id = group_id
        self._reset = auto_offset_reset
        self._member_id: int | None = None
        self._assigned: set[TopicPartition] = set()
        self._positions: dict[TopicPartition, int] = {}
        self._paused: set[TopicPartition] = set()
        self._generation = -1
        self._rr = 0

    def _assign(self, partitions: set[TopicPartition], generation: int) -> None:
        group = self._bus._groups[self.group_id]
        self._assigned = set(partitions)
        self._generation = generation
        self._paused &= self._assigned
        self._positions = {tp: self._start_position(tp, group) for tp in self._assigned}

    def _start_position(self, tp: TopicPartition, group: _Group) -> int:
        committed = group.committed.get(tp)
        if committed is not None:
            return committed
        return self._bus._begin_offset(tp) if self._reset == "earliest" else self._bus._end_offset(tp)

    async def start(self) -> None:
        if self._member_id is None:
            self._member_id = self._bus._join(self.group_id, self)

    async def stop(self) -> None:
        if self._member_id is not None:
            self._bus._leave(self.group_id, self._member_id)
            self._member_id = None
            self._assigned = set()
            self._positions = {}

    def _poll(self, max_records: int) -> list[Record]:
        out: list[Record] = []
        active = sorted(self._assigned - self._paused)
        if not active:
            return out
        # rotate the starting partition so one busy partition cannot starve the rest
        self._rr = (self._rr + 1) % len(active)
        for tp in active[self._rr :] + active[: self._rr]:
            room = max_records - len(out)
            if room <= 0:
                break
            recs, pos = self._bus._read(tp, self._positions[tp], room)
            if recs:
                out.extend(recs)
                self._positions[tp] = recs[-1].offset + 1
            else:
                self._positions[tp] = pos
        return out

    async def getmany(self, timeout_ms: int = 1000, max_records: int | None = None) -> list[Record]:
        if self._member_id is None:
            raise BusError("consumer is not started")
        limit = max_records or 10_000
        deadline = time.monotonic() + timeout_ms / 1000
        while True:
            out = self._poll(limit)
            remaining = deadline - time.monotonic()
            if out or remaining <= 0 or self._bus._closed:
                return out
            await self._bus._wait_for_data(remaining)

    async def commit(self, offsets: Mapping[TopicPartition, int] | None = None) -> None:
        if self._member_id is None:
            raise CommitFailedError("consumer is not in the group")
        group = self._bus._groups[self.group_id]
        if self._generation != group.generation and offsets is None:
            raise CommitFailedError("group rebalanced since these records were fetched")
        todo = dict(self._positions) if offsets is None else dict(offsets)
        for tp in todo:
            if tp not in self._assigned:
                raise CommitFailedError(f"{tp} is not assigned to this member (rebalanced)")
        for tp, off in todo.items():
            group.committed[TopicPartition(*tp)] = int(off)

    async def committed(self, tp: TopicPartition) -> int | None:
        group = self._bus._groups.get(self.group_id)
        return None if group is None else group.committed.get(tp)

    def assignment(self) -> set[TopicPartition]:
        return set(self._assigned)

    def pause(self, partitions: Iterable[TopicPartition]) -> None:
        self._paused |= set(partitions) & self._assigned

    def resume(self, partitions: Iterable[TopicPartition]) -> None:
        self._paused -= set(partitions)
        self._bus._wake()

    def paused(self) -> set[TopicPartition]:
        return set(self._paused)

    async def seek_to_committed(self) -> None:
        group = self._bus._groups[self.group_id]
        self._positions = {tp: self._start_position(tp, group) for tp in self._assigned}
