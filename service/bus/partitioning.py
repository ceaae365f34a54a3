"""Key -> partition, the same way Kafka's default partitioner does it (murmur2), for both bus implementations."""

from __future__ import annotations

import random

from aiokafka.partitioner import murmur2


def partition_for(key: bytes | None, partitions: int) -> int:
    """Keyed records land on a stable partition so per-key order holds; unkeyed ones spread at random."""
    if key is None:
        return random.randrange(partitions)
    return int(murmur2(key) & 0x7FFFFFFF) % partitions
