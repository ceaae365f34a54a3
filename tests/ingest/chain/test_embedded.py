"""The follower on the embedded bus and state (what `rmad run` uses on a laptop), and reorgs deeper than it keeps."""

from __future__ import annotations

from collections import Counter

import orjson

from service.bus.base import TopicSpec
from service.bus.memory import MemoryBus
from service.features.chain import features_from_transactions
from service.features.chain_store import address_features
from service.ingest.chain import metrics
from service.ingest.chain.ethereum import EthereumNode
from service.ingest.chain.follower import ChainFollower, FollowerConfig
from service.ingest.chain.node import BlockRef
from service.ingest.chain.publisher import ChainPublisher
from service.schemas.chain import Chain, involved_addresses
from service.state.memory import MemoryState
from tests.ingest.chain.conftest import eventually
from tests.ingest.chain.fake_eth import FakeEthNode
from tests.ingest.chain.fakechain import FakeChain


async def _read_all(bus: MemoryBus, topic: str) -> list[dict[str, object]]:
    consumer = bus.consumer([topic], group_id="readback")
    await consumer.start()
    out = []
    while batch := await consumer.getmany(timeout_ms=200):
        out.extend(orjson.loads(r.value) for r in batch)
    await consumer.stop()
    return out


def _follower(
    node: FakeEthNode,
    bus: MemoryBus,
    state: MemoryState,
    *,
    confirmations: int = 3,
    reorg_depth: int = 8,
    backoff_initial_s: float = 0.02,
) -> ChainFollower:
    cfg = FollowerConfig(
        Chain.ETHEREUM,
        confirmations=confirmations,
        reorg_depth=reorg_depth,
        backfill_batch=3,
        start_block=1,
        poll_s=0.3,
        backoff_initial_s=backoff_initial_s,
        backoff_max_s=max(0.1, backoff_initial_s),
    )
    producer = bus.producer()
    return ChainFollower(EthereumNode(node.url, timeout_s=2), ChainPublisher(producer, "chain.txs", "dlq"), state, cfg)


async def test_embedded_bus_and_state_exact() -> None:
    fc = FakeChain("eth", seed=31)
    fc.mine(12)
    node = FakeEthNode(fc)
    await node.start()
    bus, state = MemoryBus(default_partitions=4), MemoryState()
    await bus.create_topics([TopicSpec("chain.txs", 4), TopicSpec("dlq", 1)])
    f = _follower(node, bus, state)
    await f.publisher.producer.start()
    await f.start()
    try:
        await eventually(lambda: f.tip == BlockRef(fc.tip.number, fc.tip.hash), what="backfill")
        await node.reorg(2, 3)
        await node.mine(4)
        await eventually(lambda: f.tip == BlockRef(fc.tip.number, fc.tip.hash), what="after reorg")
    finally:
        await f.stop()
        await node.stop()
    events = await _read_all(bus, "chain.txs")
    net: Counter[tuple[object, ...]] = Counter()
    for e in events:
        net[(e["tx_hash"], e["block_hash"], e["address"])] += 1 if e["kind"] == "tx" else -1
    want = {(t.tx_hash, t.block_hash, a) for t in fc.expected_txs() for a, _ in involved_addresses(t)}
    assert {k for k, v in net.items() if v} == want
    final = fc.tip.number - 3
    for addr, feats in features_from_transactions(fc.expected_txs(up_to=final)).items():
        assert await address_features(state, "ethereum", addr) == feats  # exact, HyperLogLog included


async def test_reorg_deeper_than_the_window_is_counted_and_followed() -> None:
    fc = FakeChain("eth", seed=32)
    fc.mine(10)
    node = FakeEthNode(fc)
    await node.start()
    bus, state = MemoryBus(default_partitions=2), MemoryState()
    await bus.create_topics([TopicSpec("chain.txs", 2), TopicSpec("dlq", 1)])
    f = _follower(node, bus, state, confirmations=1, reorg_depth=3)
    await f.publisher.producer.start()
    deep = metrics.DEEP_REORGS.labels("ethereum")
    before = deep._value.get()
    await f.start()
    try:
        await eventually(lambda: f.tip == BlockRef(fc.tip.number, fc.tip.hash), what="backfill")
        await node.reorg(5, 6)  # deeper than the 3 blocks kept
        await eventually(lambda: f.tip == BlockRef(fc.tip.number, fc.tip.hash), what="after the deep reorg")
    finally:
        await f.stop()
        await node.stop()
    assert deep._value.get() > before
    assert f.window.tip is not None and f.window.tip.hash == fc.tip.hash


async def test_crash_before_the_checkpoint_republishes_that_block_only() -> None:
    """A crash between the acknowledged publish and the checkpoint write: at-least-once, never a skipped block."""
    import asyncio

    fc = FakeChain("eth", seed=33)
    fc.mine(8)
    node = FakeEthNode(fc)
    await node.start()
    bus, state = MemoryBus(default_partitions=2), MemoryState()
    await bus.create_topics([TopicSpec("chain.txs", 2), TopicSpec("dlq", 1)])
    f = _follower(node, bus, state, backoff_initial_s=5.0)
    await f.publisher.producer.start()
    real = f.store.set_checkpoint
    crashed = asyncio.Event()

    async def crash_at_5(ref: BlockRef | None) -> None:
        if ref is not None and ref.number == 5:
            crashed.set()
            raise ConnectionError("redis went away")
        await real(ref)

    f.store.set_checkpoint = crash_at_5  # type: ignore[method-assign]
    await f.start()
    await asyncio.wait_for(crashed.wait(), 10)
    assert f._task is not None
    f._task.cancel()  # the process dies during its backoff
    f2 = _follower(node, bus, state)  # a new process, same Redis and topic
    await f2.publisher.producer.start()
    await f2.start()
    try:
        await eventually(lambda: f2.tip == BlockRef(fc.tip.number, fc.tip.hash), what="sync after the crash")
    finally:
        await f2.stop()
        await node.stop()
    events = await _read_all(bus, "chain.txs")
    per_block = Counter(e["block_number"] for e in events)
    expected = Counter(t.block_number for t in fc.expected_txs() for _ in involved_addresses(t))
    assert set(per_block) == set(expected), "no block skipped"
    for n, count in per_block.items():
        assert count == expected[n] * (2 if n == 5 else 1), n
