"""Pick the bus from Settings: Kafka when bootstrap servers are configured, else the in-process bus."""

from __future__ import annotations

from typing import TYPE_CHECKING

from service.bus.base import Bus, TopicSpec
from service.bus.kafka import KafkaBus, KafkaOptions
from service.bus.memory import MemoryBus

if TYPE_CHECKING:
    from service.settings import Settings


def kafka_options(settings: Settings) -> KafkaOptions:
    assert settings.kafka_bootstrap_servers is not None
    return KafkaOptions(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        client_id=settings.kafka_client_id,
        acks=settings.kafka_acks,
        enable_idempotence=settings.kafka_enable_idempotence,
        linger_ms=settings.kafka_linger_ms,
        max_batch_bytes=settings.kafka_max_batch_bytes,
        compression=settings.kafka_compression,
        request_timeout_ms=settings.kafka_request_timeout_ms,
        session_timeout_ms=settings.kafka_session_timeout_ms,
        heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
        max_poll_records=settings.kafka_max_poll_records,
        fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
        fetch_max_bytes=settings.kafka_fetch_max_bytes,
        max_partition_fetch_bytes=settings.kafka_max_partition_fetch_bytes,
        auto_offset_reset=settings.kafka_auto_offset_reset,
        default_partitions=settings.topic_partitions,
        replication_factor=settings.topic_replication_factor,
    )


def make_bus(settings: Settings) -> Bus:
    if settings.kafka_bootstrap_servers is None:
        return MemoryBus(
            default_partitions=settings.topic_partitions,
            max_records_per_partition=settings.memory_bus_max_records_per_partition,
        )
    return KafkaBus(kafka_options(settings))


def standard_topics(settings: Settings) -> list[TopicSpec]:
    """Every topic the service uses, with partitions and retention from settings."""
    names = [
        settings.topic_trades,
        settings.topic_books,
        settings.topic_bars,
        settings.topic_chain,
        settings.topic_scores,
        settings.topic_alerts,
        settings.topic_dead_letters,
    ]
    cfg = {"retention.ms": str(settings.topic_retention_ms)}
    return [TopicSpec(n, settings.topic_partitions, settings.topic_replication_factor, cfg) for n in names]
