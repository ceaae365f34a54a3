"""Key -> partition, the same way Kafka's default partitioner does it (murmur2), for both bus implementations."""

from __future__ import annotations

import random

from aiokafka.partitioner import murmur2


def partition_for(key: bytes | None, partitions: int) -> int:
    """Keyed records land on a stable partition so per-key order holds; unkeyed ones spread at random."""
    if key is None:
        return random.randrange(partitions)
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


class CachedMurmur2Partitioner:
    """aiokafka partitioner placing keys exactly like Kafka's default, with the hash cached per key.

    Why: market keys are a few thousand `venue:symbol` strings repeated millions of times, and aiokafka's pure-Python
    murmur2 is a large share of the per-record publish cost. The cache is bounded; it is cleared when full.
    """

    def __init__(self, max_keys: int = 100_000) -> None:
        self._hash: dict[bytes, int] = {}
        self._max = max_keys

    def __call__(self, key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
        if key is None:
            return random.choice(available or all_partitions)
        h = self._hash.get(key)
        if h is None:
            if len(self._hash) >= self._max:
                self._hash.clear()
            h = int(murmur2(key) & 0x7FFFFFFF)
            self._hash[key] = h
        return all_partitions[h % len(all_partitions)]
