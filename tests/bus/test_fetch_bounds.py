"""RMAD_KAFKA_FETCH_MAX_BYTES / RMAD_KAFKA_MAX_PARTITION_FETCH_BYTES reach the aiokafka consumer."""

from __future__ import annotations

import pytest

from service.bus.factory import kafka_options
from service.bus.kafka import KafkaBus, KafkaConsumer
from service.settings import SettingsError, load_settings


def test_defaults_are_aiokafkas() -> None:
    o = kafka_options(load_settings(kafka_bootstrap_servers="127.0.0.1:9092"))
    assert (o.fetch_max_bytes, o.max_partition_fetch_bytes) == (50 * 1024 * 1024, 1024 * 1024)


def test_settings_reach_the_options() -> None:
    s = load_settings(
        kafka_bootstrap_servers="127.0.0.1:9092",
        kafka_fetch_max_bytes=4_000_000,
        kafka_max_partition_fetch_bytes=65_536,
    )
    o = kafka_options(s)
    assert (o.fetch_max_bytes, o.max_partition_fetch_bytes) == (4_000_000, 65_536)


@pytest.mark.parametrize(
    "overrides",
    [
        {"kafka_fetch_max_bytes": 100},
        {"kafka_max_partition_fetch_bytes": 0},
        {"kafka_fetch_max_bytes": 65_536, "kafka_max_partition_fetch_bytes": 1_048_576},
    ],
)
def test_bad_bounds_are_refused_naming_the_variable(overrides: dict[str, int]) -> None:
    with pytest.raises(SettingsError, match="RMAD_KAFKA_"):
        load_settings(kafka_bootstrap_servers="127.0.0.1:9092", **overrides)


@pytest.mark.integration
async def test_started_consumer_uses_the_bounds(kafka_bootstrap: str, unique: str) -> None:
    s = load_settings(
        kafka_bootstrap_servers=kafka_bootstrap, kafka_fetch_max_bytes=2_000_000, kafka_max_partition_fetch_bytes=70_000
    )
    consumer = KafkaBus(kafka_options(s)).consumer([f"fetchbounds-{unique}"], f"g-{unique}")
    assert isinstance(consumer, KafkaConsumer)
    await consumer.start()
    try:
        fetcher = consumer._consumer()._fetcher
        assert (fetcher._fetch_max_bytes, fetcher._max_partition_fetch_bytes) == (2_000_000, 70_000)
    finally:
        await consumer.stop()
