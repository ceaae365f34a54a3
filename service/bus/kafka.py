"""Kafka bus over aiokafka. Reliability knobs (acks, idempotence, batching, timeouts) come from Settings.

Idempotence and transactions are off by default because the Tansu broker used in tests rejects them; turn
`RMAD_KAFKA_ENABLE_IDEMPOTENCE` on against Apache Kafka. Delivery is at-least-once: auto-commit is off and the
caller commits after its outputs are produced.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    CommitFailedError as AioCommitFailedError,
)
from aiokafka.errors import (
    IllegalStateError,
    KafkaError,
    TopicAlreadyExistsError,
)
from aiokafka.structs import TopicPartition as AioTP

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
from service.bus.partitioning import CachedMurmur2Partitioner

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class KafkaOptions:
    bootstrap_servers: str
    client_id: str = "rmad"
    acks: str = "all"
    enable_idempotence: bool = False
    linger_ms: int = 5
    max_batch_bytes: int = 1 << 20
    compression: str = "none"
    request_timeout_ms: int = 30_000
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 3_000
    max_poll_records: int = 2_000
    auto_offset_reset: str = "earliest"
    default_partitions: int = 6
    replication_factor: int = 1


def _acks(value: str) -> int | str:
    return "all" if value == "all" else int(value)


class KafkaBus(Bus):
    kind = "kafka"

    def __init__(self, options: KafkaOptions) -> None:
        self.options = options
        self._admin: AIOKafkaAdminClient | None = None
        self._admin_lock = asyncio.Lock()

    async def _admin_client(self) -> AIOKafkaAdminClient:
        async with self._admin_lock:
            if self._admin is None:
                admin = AIOKafkaAdminClient(
                    bootstrap_servers=self.options.bootstrap_servers,
                    client_id=f"{self.options.client_id}-admin",
                    request_timeout_ms=self.options.request_timeout_ms,
                )
                try:
                    await admin.start()
                except Exception as exc:
                    await _quiet_close(admin)
                    raise BusError(f"Kafka at {self.options.bootstrap_servers} unreachable: {exc}") from exc
                self._admin = admin
            return self._admin

    async def create_topics(self, specs: Sequence[TopicSpec]) -> None:
        admin = await self._admin_client()
        existing = set(await admin.list_topics())
        new = [
            NewTopic(
                name=s.name,
                num_partitions=s.partitions,
                replication_factor=s.replication_factor,
                topic_configs=dict(s.config),
            )
            for s in specs
            if s.name not in existing
        ]
        if not new:
            return
        try:
            await admin.create_topics(new)
        except TopicAlreadyExistsError:
            pass
        # wait until metadata shows them, so producers do not race topic creation
        for _ in range(100):
            if {s.name for s in specs} <= set(await admin.list_topics()):
                return
            await asyncio.sleep(0.1)
        raise BusError(f"topics {[s.name for s in specs]} not visible after creation")

    async def partitions_for(self, topic: str) -> int:
        admin = await self._admin_client()
        desc = await admin.describe_topics([topic])
        for t in desc:
            if t.get("topic") == topic and t.get("partitions"):
                return len(t["partitions"])
        raise BusError(f"topic {topic!r} not found")

    async def ping(self, timeout_s: float = 2.0) -> None:
        try:
            admin = await asyncio.wait_for(self._admin_client(), timeout_s)
            await asyncio.wait_for(admin.list_topics(), timeout_s)
        except BusError:
            raise
        except (TimeoutError, KafkaError, OSError) as exc:
            raise BusError(f"Kafka at {self.options.bootstrap_servers} not answering: {exc!r}") from exc

    async def close(self) -> None:
        if self._admin is not None:
            await _quiet_close(self._admin)
            self._admin = None

    def producer(self) -> Producer:
        return KafkaProducer(self.options)

    def consumer(
        self,
        topics: Sequence[str],
        group_id: str,
        *,
        auto_offset_reset: str | None = None,
        client_id: str | None = None,
    ) -> Consumer:
        return KafkaConsumer(self.options, list(topics), group_id, auto_offset_reset, client_id)


async def _quiet_close(client: Any) -> None:
    try:
        await client.close()
    except Exception:  # closing a half-started client may fail; nothing left to release
        log.debug("ignored error while closing %r", client, exc_info=True)


class KafkaProducer(Producer):
    """Batches records per partition itself and hands aiokafka whole batches.

    Why: aiokafka's per-record `send` (a future, a partition lookup and an accumulator append per record) was most
    of the ingest publish cost. Records are appended to one BatchBuilder per partition and submitted when the batch
    is full, after `linger_ms`, or on `flush`; one future per batch reports delivery. Submission is serialised so
    batches of a partition reach the broker in the order their records were sent.
    """

    def __init__(self, options: KafkaOptions) -> None:
        self._o = options
        self._p: AIOKafkaProducer | None = None
        self._partitioner = CachedMurmur2Partitioner()
        self._partitions: dict[str, tuple[float, list[int]]] = {}
        self._batches: dict[tuple[str, int], Any] = {}
        self._submit_lock = asyncio.Lock()
        self._linger_task: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Future[Any]] = set()
        self._error: BaseException | None = None

    async def start(self) -> None:
        o = self._o
        self._p = AIOKafkaProducer(
            bootstrap_servers=o.bootstrap_servers,
            client_id=o.client_id,
            acks=_acks(o.acks),
            enable_idempotence=o.enable_idempotence,
            linger_ms=o.linger_ms,
            max_batch_size=o.max_batch_bytes,
            compression_type=None if o.compression == "none" else o.compression,
            request_timeout_ms=o.request_timeout_ms,
            partitioner=self._partitioner,
        )
        try:
            await self._p.start()
        except Exception as exc:
            await _quiet_close(self._p)
            self._p = None
            raise BusError(f"Kafka producer could not connect to {o.bootstrap_servers}: {exc}") from exc

    async def stop(self) -> None:
        if self._p is not None:
            try:
                await self.flush()
            finally:
                if self._linger_task is not None:
                    self._linger_task.cancel()
                    self._linger_task = None
                await self._p.stop()
                self._p = None

    def _producer(self) -> AIOKafkaProducer:
        if self._p is None:
            raise BusError("producer is not started")
        return self._p

    def _done(self, fut: asyncio.Future[Any]) -> None:
        self._pending.discard(fut)
        if not fut.cancelled() and fut.exception() is not None and self._error is None:
            self._error = fut.exception()

    async def _partitions_of(self, topic: str) -> list[int]:
        """Partition ids of a topic, from metadata cached for 30 s (so added partitions are picked up)."""
        cached = self._partitions.get(topic)
        now = time.monotonic()
        if cached is not None and now - cached[0] < 30.0:
            return cached[1]
        try:
            parts = sorted(await self._producer().partitions_for(topic))
        except KafkaError as exc:
            raise BusError(f"no metadata for topic {topic}: {exc!r}") from exc
        self._partitions[topic] = (now, parts)
        return parts

    async def send(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes]] | None = None,
        timestamp_ms: int | None = None,
    ) -> None:
        self._raise_pending_error()
        producer = self._producer()
        parts = await self._partitions_of(topic)
        tp = (topic, self._partitioner(key, parts, parts))
        hdrs = list(headers) if headers else []
        batch = self._batches.get(tp)
        if batch is None:
            batch = self._batches[tp] = producer.create_batch()
            self._arm_linger()
        if batch.append(key=key, value=value, timestamp=timestamp_ms, headers=hdrs) is not None:
            return
        # full: submit it, then start the partition's next batch with this record
        if self._batches.get(tp) is batch:
            del self._batches[tp]
        await self._submit(tp, batch)
        batch = self._batches.get(tp)
        if batch is None:
            batch = self._batches[tp] = producer.create_batch()
            self._arm_linger()
        if batch.append(key=key, value=value, timestamp=timestamp_ms, headers=hdrs) is None:
            raise BusError(f"record of {len(value)} bytes exceeds RMAD_KAFKA_MAX_BATCH_BYTES")

    def _arm_linger(self) -> None:
        if self._linger_task is None or self._linger_task.done():
            self._linger_task = asyncio.get_running_loop().create_task(self._linger())

    async def _linger(self) -> None:
        await asyncio.sleep(max(self._o.linger_ms, 1) / 1000)
        try:
            await self._submit_all()
        except Exception as exc:  # surfaced to the next send/flush
            if self._error is None:
                self._error = exc

    async def _submit(self, tp: tuple[str, int], batch: Any) -> None:
        async with self._submit_lock:
            try:
                fut = await self._producer().send_batch(batch, tp[0], partition=tp[1])
            except KafkaError as exc:
                raise BusError(f"publish to {tp[0]}[{tp[1]}] failed: {exc!r}") from exc
        self._pending.add(fut)
        fut.add_done_callback(self._done)

    async def _submit_all(self) -> None:
        batches, self._batches = self._batches, {}
        for tp, batch in batches.items():
            await self._submit(tp, batch)

    async def send_and_wait(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes]] | None = None,
        timestamp_ms: int | None = None,
    ) -> tuple[int, int]:
        await self._submit_all()  # keep order with records sent before
        try:
            async with self._submit_lock:
                fut = await self._producer().send(
                    topic, value=value, key=key, headers=list(headers) if headers else None, timestamp_ms=timestamp_ms
                )
            md = await fut
        except KafkaError as exc:
            raise BusError(f"publish to {topic} failed: {exc!r}") from exc
        return int(md.partition), int(md.offset)

    async def flush(self) -> None:
        if self._p is not None:
            await self._submit_all()
            await self._p.flush()
            if self._pending:
                await asyncio.gather(*list(self._pending), return_exceptions=True)
        self._raise_pending_error()

    def _raise_pending_error(self) -> None:
        if self._error is not None:
            err, self._error = self._error, None
            raise BusError(f"an earlier publish failed: {err!r}") from err


class KafkaConsumer(Consumer):
    def __init__(
        self,
        options: KafkaOptions,
        topics: list[str],
        group_id: str,
        auto_offset_reset: str | None,
        client_id: str | None,
    ) -> None:
        self._o = options
        self._topics = topics
        self._group = group_id
        self._reset = auto_offset_reset or options.auto_offset_reset
        self._client_id = client_id or options.client_id
        self._c: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        o = self._o
        self._c = AIOKafkaConsumer(
            *self._topics,
            bootstrap_servers=o.bootstrap_servers,
            client_id=self._client_id,
            group_id=self._group,
            enable_auto_commit=False,
            auto_offset_reset=self._reset,
            session_timeout_ms=o.session_timeout_ms,
            heartbeat_interval_ms=o.heartbeat_interval_ms,
            max_poll_records=o.max_poll_records,
            request_timeout_ms=o.request_timeout_ms,
        )
        try:
            await self._c.start()
        except Exception as exc:
            await _quiet_close_consumer(self._c)
            self._c = None
            raise BusError(f"Kafka consumer could not join {self._group}: {exc}") from exc

    async def stop(self) -> None:
        if self._c is not None:
            await _quiet_close_consumer(self._c)
            self._c = None

    def _consumer(self) -> AIOKafkaConsumer:
        if self._c is None:
            raise BusError("consumer is not started")
        return self._c

    async def getmany(self, timeout_ms: int = 1000, max_records: int | None = None) -> list[Record]:
        batches = await self._consumer().getmany(timeout_ms=timeout_ms, max_records=max_records)
        out: list[Record] = []
        for tp, msgs in batches.items():
            for m in msgs:
                out.append(
                    Record(
                        tp.topic,
                        tp.partition,
                        m.offset,
                        m.key,
                        m.value if m.value is not None else b"",
                        m.timestamp,
                        tuple((k, v) for k, v in (m.headers or ())),
                    )
                )
        return out

    async def commit(self, offsets: Mapping[TopicPartition, int] | None = None) -> None:
        c = self._consumer()
        try:
            if offsets is None:
                await c.commit()
            else:
                await c.commit({AioTP(tp[0], tp[1]): int(off) for tp, off in offsets.items()})
        except (AioCommitFailedError, IllegalStateError) as exc:
            raise CommitFailedError(str(exc)) from exc
        except KafkaError as exc:
            raise CommitFailedError(f"commit failed: {exc!r}") from exc

    async def committed(self, tp: TopicPartition) -> int | None:
        value = await self._consumer().committed(AioTP(tp[0], tp[1]))
        return None if value is None or value < 0 else int(value)

    def assignment(self) -> set[TopicPartition]:
        return {TopicPartition(tp.topic, tp.partition) for tp in self._consumer().assignment()}

    def pause(self, partitions: Iterable[TopicPartition]) -> None:
        c = self._consumer()
        assigned = c.assignment()
        tps = [AioTP(t[0], t[1]) for t in partitions]
        c.pause(*[tp for tp in tps if tp in assigned])

    def resume(self, partitions: Iterable[TopicPartition]) -> None:
        self._consumer().resume(*[AioTP(t[0], t[1]) for t in partitions])

    def paused(self) -> set[TopicPartition]:
        return {TopicPartition(tp.topic, tp.partition) for tp in self._consumer().paused()}

    async def seek_to_committed(self) -> None:
        c = self._consumer()
        if c.assignment():
            await c.seek_to_committed()


CONSUMER_CLOSE_TIMEOUT_S = 3.0


async def _quiet_close_consumer(c: AIOKafkaConsumer) -> None:
    """Close a consumer, waiting at most CONSUMER_CLOSE_TIMEOUT_S.

    Why bounded: leaving the group is a courtesy (the broker expires a silent member after the session timeout),
    and a LeaveGroup sent while a rebalance is in progress can wait for the whole rebalance (seconds on Tansu); a
    process shutting down within its grace period cannot wait for that. Offsets are committed before this.
    """
    try:
        await asyncio.wait_for(c.stop(), CONSUMER_CLOSE_TIMEOUT_S)
    except TimeoutError:
        log.warning("consumer did not close within %.0f s (leaving the group); going on", CONSUMER_CLOSE_TIMEOUT_S)
    except Exception:
        log.debug("ignored error while stopping consumer", exc_info=True)
