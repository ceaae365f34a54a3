"""Test session infrastructure: one real Redis and one real Kafka-protocol broker (Tansu) per session.

Both start on free loopback ports and are stopped by PID at the end. Set RMAD_REDIS_URL and
RMAD_KAFKA_BOOTSTRAP_SERVERS to run the same suite against external servers (e.g. Apache Kafka).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.servers import Servers, test_servers

SHARED_DATA = Path(os.environ.get("RMAD_SHARED_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))


@pytest.fixture(scope="session")
def servers() -> Iterator[Servers]:
    with test_servers() as s:
        yield s


@pytest.fixture(scope="session")
def redis_url(servers: Servers) -> str:
    return servers.redis_url


@pytest.fixture(scope="session")
def kafka_bootstrap(servers: Servers) -> str:
    return servers.kafka_bootstrap


@pytest.fixture
def unique() -> str:
    """A unique suffix so tests sharing one broker/Redis never see each other's topics, groups or keys."""
    return uuid.uuid4().hex[:10]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data, or skip: the data is read by path, never committed."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA.resolve()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "data" in item.keywords and not SHARED_DATA.is_dir():
            item.add_marker(pytest.mark.skip(reason=f"needs {SHARED_DATA}"))
