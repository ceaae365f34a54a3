"""Kafka bus over aiokafka. Reliability knobs (acks, idempotence, batching, timeouts) come from Settings.

Idempotence and transactions are off by default because the Tansu broker used in tests rejects them; turn
`RMAD_KAFKA_ENABLE_IDEMPOTENCE` on against Apache Kafka. Delivery is at-least-once: auto-commit is off and the
caller commits after its outputs are produced.
"""

from __future__ import annotations

import asyncio
import logging
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
    fetch_max_wait_ms: int = 500
    fetch_max_bytes: int = 50 * 1024 * 1024  # aiokafka's defaults; they bound what a lagging consumer holds
    max_partition_fetch_bytes: int = 1024 * 1024
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
        fetch_max_wait_ms: int | None = None,
    ) -> Consumer:
        return KafkaConsumer(self.options, list(topics), group_id, auto_offset_reset, client_id, fetch_max_wait_ms)


async def _quiet_close(client: Any) -> None:
    try:
        await client.close()
    except Exception:  # closing a half-started client may fail; nothing left to release
        log.debug("ignored error while closing %r", client, exc_info=True)


class KafkaProducer(Producer):
    def __init__(self, options: KafkaOptions) -> None:
        self._o = options
        self._p: AIOKafkaProducer | None = None
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
            partitioner=CachedMurmur2Partitioner(),
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

    async def send(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes]] | None = None,
        timestamp_ms: int | None = None,
    ) -> None:
        self._raise_pending_error()
        fut = await self._producer().send(
            topic, value=value, key=key, headers=list(headers) if headers else None, timestamp_ms=timestamp_ms
        )
        self._pending.add(fut)
        fut.add_done_callback(self._done)

    async def send_and_wait(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes]] | None = None,
        timestamp_ms: int | None = None,
    ) -> tuple[int, int]:
        try:
            md = await self._producer().send_and_wait(
                topic, value=value, key=key, headers=list(headers) if headers else None, timestamp_ms=timestamp_ms
            )
        except KafkaError as exc:
            raise BusError(f"publish to {topic} failed: {exc!r}") from exc
        return int(md.partition), int(md.offset)

    async def flush(self) -> None:
        if self._p is not None:
            await self._p.flush()
            if self._pending:
                await asyncio.gather(*list(self._pending), return_exceptions=True)
        self._raise_pending_error()

    async def partitions_for(self, topic: str) -> int:
        try:
            parts = await self._producer().partitions_for(topic)
        except KafkaError as exc:
            raise BusError(f"no metadata for {topic}: {exc!r}") from exc
        return len(parts)

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
        fetch_max_wait_ms: int | None = None,
    ) -> None:
        self._o = options
        self._fetch_wait = options.fetch_max_wait_ms if fetch_max_wait_ms is None else fetch_max_wait_ms
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
            fetch_max_wait_ms=self._fetch_wait,
            fetch_max_bytes=o.fetch_max_bytes,
            max_partition_fetch_bytes=o.max_partition_fetch_bytes,
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
        append = out.append
        for tp, msgs in batches.items():
            topic, part = tp.topic, tp.partition
            our_tp = TopicPartition(topic, part)  # one per partition batch, shared by its records
            for m in msgs:
                append(
                    Record(
                        topic,
                        part,
                        m.offset,
                        m.key,
                        m.value if m.value is not None else b"",
                        m.timestamp,
                        tuple(m.headers) if m.headers else (),
                        our_tp,
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
