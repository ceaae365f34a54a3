"""One contract, two buses: per-key order, consumer groups, committed offsets, pause/resume."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict

from service.bus.base import Bus, Consumer, Record, TopicPartition, TopicSpec

PARTITIONS = 4


async def _topic(bus: Bus, name: str) -> str:
    await bus.create_topics([TopicSpec(name, PARTITIONS)])
    return name


async def _drain(consumer: Consumer, want: int, timeout_s: float = 30.0) -> list[Record]:
    out: list[Record] = []
    deadline = time.monotonic() + timeout_s
    while len(out) < want and time.monotonic() < deadline:
        out.extend(await consumer.getmany(timeout_ms=200))
    return out


async def _produce(bus: Bus, topic: str, items: list[tuple[bytes, bytes]]) -> None:
    producer = bus.producer()
    await producer.start()
    try:
        for key, value in items:
            await producer.send(topic, value, key=key)
        await producer.flush()
    finally:
        await producer.stop()


async def test_keyed_records_stay_in_order_per_key(bus: Bus, unique: str) -> None:
    topic = await _topic(bus, f"order-{unique}")
    keys = [f"binance:SYM{i}".encode() for i in range(6)]
    items = [(k, f"{k.decode()}|{n}".encode()) for n in range(150) for k in keys]
    await _produce(bus, topic, items)

    consumer = bus.consumer([topic], f"g-{unique}")
    await consumer.start()
    try:
        got = await _drain(consumer, len(items))
    finally:
        await consumer.stop()

    assert len(got) == len(items)
    seqs: dict[bytes, list[int]] = defaultdict(list)
    partition_of: dict[bytes, set[int]] = defaultdict(set)
    for rec in got:
        assert rec.key is not None
        seqs[rec.key].append(int(rec.value.split(b"|")[1]))
        partition_of[rec.key].add(rec.partition)
    for key in keys:
        assert seqs[key] == list(range(150)), f"{key!r} out of order or incomplete"
        assert len(partition_of[key]) == 1, "one key must live in one partition"


async def test_restart_resumes_from_committed_offsets(bus: Bus, unique: str) -> None:
    topic = await _topic(bus, f"resume-{unique}")
    items = [(f"k{i % 5}".encode(), str(i).encode()) for i in range(200)]
    await _produce(bus, topic, items)
    group = f"g-{unique}"

    first = bus.consumer([topic], group)
    await first.start()
    got = await _drain(first, len(items))
    assert len(got) == len(items)
    # commit only the first half of each partition, as a worker that crashed mid-way would have
    by_tp: dict[TopicPartition, list[Record]] = defaultdict(list)
    for rec in got:
        by_tp[rec.tp].append(rec)
    commit_at = {tp: recs[len(recs) // 2].offset for tp, recs in by_tp.items()}
    await first.commit(commit_at)
    expected_rest = sorted(r.value for tp, recs in by_tp.items() for r in recs if r.offset >= commit_at[tp])
    for tp, off in commit_at.items():
        assert await first.committed(tp) == off
    await first.stop()

    second = bus.consumer([topic], group)
    await second.start()
    try:
        again = await _drain(second, len(expected_rest))
        extra = await second.getmany(timeout_ms=300)
    finally:
        await second.stop()
    assert sorted(r.value for r in again) == expected_rest, "restart must resume exactly at the committed offset"
    assert extra == []


async def _wait_for(predicate: object, consumers: list[Consumer], timeout_s: float = 60.0) -> None:
    """Poll every member (group protocols only progress while members poll) until predicate() holds."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        await asyncio.gather(*(c.getmany(timeout_ms=100) for c in consumers))
        if predicate():
            return
    raise AssertionError("group did not converge in time")


async def test_group_rebalances_partitions_between_members(bus: Bus, unique: str) -> None:
    topic = await _topic(bus, f"rebalance-{unique}")
    group = f"g-{unique}"
    everything = {TopicPartition(topic, p) for p in range(PARTITIONS)}

    a = bus.consumer([topic], group)
    await a.start()
    await _wait_for(lambda: a.assignment() == everything, [a])

    b = bus.consumer([topic], group)
    await b.start()
    try:
        await _wait_for(
            lambda: (
                a.assignment() | b.assignment() == everything
                and not (a.assignment() & b.assignment())
                and bool(a.assignment())
                and bool(b.assignment())
            ),
            [a, b],
        )
        # records produced now are consumed once across the group, each key by one member
        items = [(f"key{i % 16}".encode(), str(i).encode()) for i in range(320)]
        await _produce(bus, topic, items)
        seen: list[tuple[str, Record]] = []
        deadline = time.monotonic() + 30
        while len(seen) < len(items) and time.monotonic() < deadline:
            ra, rb = await asyncio.gather(a.getmany(timeout_ms=200), b.getmany(timeout_ms=200))
            seen += [("a", r) for r in ra] + [("b", r) for r in rb]
        assert sorted(r.value for _, r in seen) == sorted(v for _, v in items)
        owners: dict[bytes | None, set[str]] = defaultdict(set)
        for who, r in seen:
            owners[r.key].add(who)
        assert all(len(o) == 1 for o in owners.values())
    finally:
        await a.stop()
    await _wait_for(lambda: b.assignment() == everything, [b])
    await b.stop()


async def test_pause_stops_delivery_until_resume(bus: Bus, unique: str) -> None:
    topic = await _topic(bus, f"pause-{unique}")
    consumer = bus.consumer([topic], f"g-{unique}")
    await consumer.start()
    try:
        everything = {TopicPartition(topic, p) for p in range(PARTITIONS)}
        await _wait_for(lambda: consumer.assignment() == everything, [consumer])
        consumer.pause(everything)
        assert consumer.paused() == everything
        await _produce(bus, topic, [(f"k{i}".encode(), str(i).encode()) for i in range(40)])
        held = []
        for _ in range(5):
            held += await consumer.getmany(timeout_ms=100)
        assert held == [], "a paused partition must not deliver"
        consumer.resume(everything)
        got = await _drain(consumer, 40)
        assert len(got) == 40
    finally:
        await consumer.stop()


async def test_send_and_wait_reports_partition_and_offset(bus: Bus, unique: str) -> None:
    topic = await _topic(bus, f"ack-{unique}")
    producer = bus.producer()
    await producer.start()
    try:
        p1, o1 = await producer.send_and_wait(topic, b"a", key=b"same")
        p2, o2 = await producer.send_and_wait(topic, b"b", key=b"same")
    finally:
        await producer.stop()
    assert p1 == p2 and 0 <= p1 < PARTITIONS
    assert o2 > o1
    assert await bus.partitions_for(topic) == PARTITIONS
    await bus.ping()


def test_cached_partitioner_places_keys_like_kafkas_default() -> None:
    from aiokafka.partitioner import DefaultPartitioner

    from service.bus.partitioning import CachedMurmur2Partitioner, partition_for

    cached = CachedMurmur2Partitioner(max_keys=7)
    parts = list(range(12))
    for i in range(50):
        key = f"binance-spot:SYM{i % 20}".encode()
        assert cached(key, parts, parts) == DefaultPartitioner()(key, parts, parts) == partition_for(key, 12)
    assert cached(None, parts, [3]) == 3


async def test_timestamps_and_headers_survive_the_round_trip(bus: Bus, unique: str) -> None:
    topic = await _topic(bus, f"meta-{unique}")
    producer = bus.producer()
    await producer.start()
    try:
        for i in range(30):
            await producer.send(
                topic, f"v{i}".encode(), key=b"k", headers=[("src", b"test")], timestamp_ms=1_600_000_000_000 + i
            )
        await producer.flush()
    finally:
        await producer.stop()
    consumer = bus.consumer([topic], f"g-{unique}")
    await consumer.start()
    try:
        got = await _drain(consumer, 30)
    finally:
        await consumer.stop()
    assert [r.value for r in got] == [f"v{i}".encode() for i in range(30)]
    assert [r.timestamp_ms for r in got] == [1_600_000_000_000 + i for i in range(30)]
    assert all(r.headers == (("src", b"test"),) for r in got)


async def test_per_key_order_holds_under_concurrent_producers_and_full_batches(bus: Bus, unique: str) -> None:
    """Many keys over 7 partitions from concurrent tasks: batches fill while others linger, order must hold."""
    topic = f"stress-{unique}"
    await bus.create_topics([TopicSpec(topic, 7)])
    producer = bus.producer()
    await producer.start()
    n_keys, per_key = 40, 150

    async def one_task(task: int) -> None:
        for n in range(per_key):
            for k in range(task, n_keys, 4):
                await producer.send(topic, f"{k}|{n}|{'x' * 200}".encode(), key=f"venue:K{k}".encode())
            if n % 25 == 0:
                await asyncio.sleep(0.002)  # let linger timers fire between bursts

    try:
        await asyncio.gather(*(one_task(t) for t in range(4)))
        await producer.flush()
    finally:
        await producer.stop()
    consumer = bus.consumer([topic], f"g-{unique}")
    await consumer.start()
    try:
        got = await _drain(consumer, n_keys * per_key, timeout_s=60)
    finally:
        await consumer.stop()
    seqs: dict[int, list[int]] = defaultdict(list)
    for rec in got:
        k, n, _ = rec.value.split(b"|", 2)
        seqs[int(k)].append(int(n))
    assert len(got) == n_keys * per_key
    bad = {
        k: [i for i, (a, b) in enumerate(zip(seqs[k], seqs[k][1:], strict=False)) if b != a + 1][:3]
        for k in range(n_keys)
    }
    bad = {k: [(i, seqs[k][i : i + 3]) for i in v] for k, v in bad.items() if v}
    assert not bad, f"records of a key arrived out of order: {bad}"


async def test_short_fetch_wait_consumer_delivers(bus: Bus, unique: str) -> None:
    topic = await _topic(bus, f"fetchwait-{unique}")
    consumer = bus.consumer([topic], f"g-{unique}", fetch_max_wait_ms=5)
    await consumer.start()
    try:
        await _wait_for(lambda: len(consumer.assignment()) == PARTITIONS, [consumer])
        await _produce(bus, topic, [(b"k", str(i).encode()) for i in range(20)])
        got = await _drain(consumer, 20)
    finally:
        await consumer.stop()
    assert [r.value for r in got] == [str(i).encode() for i in range(20)]
