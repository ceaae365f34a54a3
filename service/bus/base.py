"""The bus contract shared by the Kafka and in-process implementations."""

from __future__ import annotations

import abc
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple


class TopicPartition(NamedTuple):
    topic: str
    partition: int


class Record:
    """One consumed message. `offset` is the record's own offset; commit `offset + 1` to move past it.

    A plain slotted class rather than a frozen dataclass: one is built per consumed message, and a frozen
    dataclass's `__init__` (one `object.__setattr__` per field) plus a `tp` built on every access cost a
    microsecond per tick in the worker. Treat it as read-only.
    """

    __slots__ = ("headers", "key", "offset", "partition", "timestamp_ms", "topic", "tp", "value")

    def __init__(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes,
        timestamp_ms: int,
        headers: tuple[tuple[str, bytes], ...] = (),
        tp: TopicPartition | None = None,
    ) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.key = key
        self.value = value
        self.timestamp_ms = timestamp_ms
        self.headers = headers
        self.tp: TopicPartition = TopicPartition(topic, partition) if tp is None else tp

    def _fields(self) -> tuple[object, ...]:
        return (self.topic, self.partition, self.offset, self.key, self.value, self.timestamp_ms, self.headers)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Record) and self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        return (
            f"Record(topic={self.topic!r}, partition={self.partition}, offset={self.offset}, key={self.key!r}, "
            f"value={self.value[:60]!r}, timestamp_ms={self.timestamp_ms})"
        )


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int = 1
    replication_factor: int = 1
    config: Mapping[str, str] = field(default_factory=dict)


class BusError(RuntimeError):
    """The bus could not do what was asked (broker unreachable, closed bus, ...)."""


class CommitFailedError(BusError):
    """Offsets could not be committed, typically because the partition was reassigned (rebalance)."""


class Producer(abc.ABC):
    """Publishes records; records with the same key go to the same partition, in order."""

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def stop(self) -> None:
        """Flush what is buffered, then close."""

    @abc.abstractmethod
    async def send(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes]] | None = None,
        timestamp_ms: int | None = None,
    ) -> None:
        """Queue a record for delivery (batched); `flush` waits until queued records are acknowledged."""

    @abc.abstractmethod
    async def send_and_wait(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes]] | None = None,
        timestamp_ms: int | None = None,
    ) -> tuple[int, int]:
        """Deliver one record and return (partition, offset)."""

    @abc.abstractmethod
    async def flush(self) -> None: ...

    @abc.abstractmethod
    async def partitions_for(self, topic: str) -> int:
        """How many partitions `topic` has, as this producer places keys (waits for metadata once)."""


class Consumer(abc.ABC):
    """A consumer-group member. Offsets are committed only when asked (at-least-once)."""

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def stop(self) -> None:
        """Leave the group (partitions move to the other members) and close."""

    @abc.abstractmethod
    async def getmany(self, timeout_ms: int = 1000, max_records: int | None = None) -> list[Record]:
        """Records from assigned, un-paused partitions, per partition in offset order; [] after timeout."""

    @abc.abstractmethod
    async def commit(self, offsets: Mapping[TopicPartition, int] | None = None) -> None:
        """Commit `offsets` (next offset to read) or, when None, the positions of everything returned so far."""

    @abc.abstractmethod
    async def committed(self, tp: TopicPartition) -> int | None: ...

    @abc.abstractmethod
    def assignment(self) -> set[TopicPartition]: ...

    @abc.abstractmethod
    def pause(self, partitions: Iterable[TopicPartition]) -> None:
        """Stop fetching these partitions (backpressure) without leaving the group."""

    @abc.abstractmethod
    def resume(self, partitions: Iterable[TopicPartition]) -> None: ...

    @abc.abstractmethod
    def paused(self) -> set[TopicPartition]: ...

    @abc.abstractmethod
    async def seek_to_committed(self) -> None:
        """Rewind every assigned partition to its committed offset (or the reset policy when none)."""


class Bus(abc.ABC):
    """Factory for producers and consumers plus admin operations, over one cluster."""

    kind: str = "abstract"

    @abc.abstractmethod
    def producer(self) -> Producer: ...

    @abc.abstractmethod
    def consumer(
        self,
        topics: Sequence[str],
        group_id: str,
        *,
        auto_offset_reset: str | None = None,
        client_id: str | None = None,
        fetch_max_wait_ms: int | None = None,
    ) -> Consumer:
        """A group member; `fetch_max_wait_ms` (Kafka) bounds how long the broker may park an empty fetch, which
        latency-critical consumers (the scoring worker, the alert-log follower) set short."""

    @abc.abstractmethod
    async def create_topics(self, specs: Sequence[TopicSpec]) -> None:
        """Create missing topics (existing ones are left as they are)."""

    @abc.abstractmethod
    async def partitions_for(self, topic: str) -> int: ...

    @abc.abstractmethod
    async def ping(self, timeout_s: float = 2.0) -> None:
        """Raise BusError when the bus does not answer (readiness probe)."""

    async def close(self) -> None:
        """Release shared resources (admin clients, in-memory logs)."""
