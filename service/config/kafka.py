"""Kafka consumer fetch bounds (fields are read as RMAD_<FIELD>); the rest of the Kafka settings are in
service/settings.py."""

from __future__ import annotations

from pydantic import BaseModel, Field, model_validator


class KafkaFetchSettings(BaseModel):
    """How much fetched-but-unprocessed data one consumer may hold; composed into service.settings.Settings.

    Why: a consumer that falls behind always has a full fetch buffered for each of its partitions (the worker reads
    trades, bars and books: 3 x `RMAD_TOPIC_PARTITIONS` partitions), so these bound the memory a backlog costs. The
    defaults are aiokafka's; the broker still returns at least one whole record batch per partition
    (`RMAD_KAFKA_MAX_BATCH_BYTES` on the producer side) even when it is larger than these.
    """

    kafka_fetch_max_bytes: int = Field(
        default=50 * 1024 * 1024,
        ge=1024,
        le=1 << 30,
        description="most bytes the broker returns for one fetch request (all partitions together)",
    )
    kafka_max_partition_fetch_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        le=1 << 30,
        description="most bytes the broker returns per partition in one fetch",
    )

    @model_validator(mode="after")
    def _partition_within_total(self) -> KafkaFetchSettings:
        if self.kafka_max_partition_fetch_bytes > self.kafka_fetch_max_bytes:
            raise ValueError(
                f"RMAD_KAFKA_MAX_PARTITION_FETCH_BYTES ({self.kafka_max_partition_fetch_bytes}) exceeds "
                f"RMAD_KAFKA_FETCH_MAX_BYTES ({self.kafka_fetch_max_bytes})"
            )
        return self
