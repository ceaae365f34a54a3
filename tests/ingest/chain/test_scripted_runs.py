"""Scripted runs against the fake nodes, checked against the real broker (Tansu) and the real Redis.

Each run goes through: a backfill from block 1, live blocks, a 3-block reorg, a dropped connection during which 5
blocks arrive, malformed responses, and a restart from the checkpoint (with a reorg and more blocks while the
follower is down). Afterwards the published stream, read back from the broker, must equal the canonical chain's
transactions exactly once (counting retractions as -1), and every address's features in Redis must equal a
from-scratch recomputation over the canonical chain's final blocks.
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from typing import Any

import orjson
import pytest

from service.features.chain import CHAIN_FEATURES, features_from_transactions
from service.features.chain_store import address_features
from service.ingest.chain.bitcoin import BitcoinNode
from service.ingest.chain.checkpoint import CheckpointStore
from service.ingest.chain.ethereum import EthereumNode
from service.ingest.chain.follower import ChainFollower
from service.ingest.chain.node import BlockRef
from service.schemas.chain import Chain, ChainTx, involved_addresses
from service.schemas.market import decode_dead_letter
from tests.ingest.chain.conftest import ChainEnv, eventually
from tests.ingest.chain.fake_btc import FakeBitcoinCore
from tests.ingest.chain.fake_eth import FakeEthNode
from tests.ingest.chain.fakechain import FakeChain

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.slow]

# HyperLogLog counts in Redis are estimates (exact for sets this small in practice; allow one off).
_HLL = {"Unique Received From Addresses", "Unique Sent To Addresses"}
CONFIRMATIONS = 3  # reorgs up to 3 blocks stay out of the features


async def at_tip(f: ChainFollower, fc: FakeChain, what: str) -> None:
    want = BlockRef(fc.tip.number, fc.tip.hash)
    await eventually(lambda: f.tip == want, within_s=25, what=f"{what}: follower at {want.number}")


def _projection(t: ChainTx) -> tuple[Any, ...]:
    return (
        t.tx_hash,
        t.tx_index,
        t.block_number,
        t.block_hash,
        t.time_ms,
        t.from_address,
        t.to_address,
        t.contract_address,
        t.value,
        t.fee,
        t.status,
        t.method,
        tuple((i.txid, i.address, i.value) for i in t.inputs),
        tuple((o.n, o.address, o.value, o.script_type) for o in t.outputs),
    )


async def check_stream_and_features(env: ChainEnv, fc: FakeChain, chain: Chain, f: ChainFollower) -> dict[str, Any]:
    records = await env.read(env.topic)
    events = [orjson.loads(r.value) for r in records]
    for r, e in zip(records, events, strict=True):
        assert r.key == f"{chain.value}:{e['address']}".encode(), "key must be chain:address"

    net: Counter[tuple[str, str, str]] = Counter()
    sent: Counter[tuple[str, str, str, str]] = Counter()
    for e in events:
        k = (e["tx_hash"], e["block_hash"], e["address"])
        net[k] += 1 if e["kind"] == "tx" else -1
        sent[(*k, e["kind"])] += 1
    expected_txs = fc.expected_txs()
    expected = {(t.tx_hash, t.block_hash, a) for t in expected_txs for a, _ in involved_addresses(t)}
    assert all(v in (0, 1) for v in net.values()), "an event was retracted more often than published"
    assert {k for k, v in net.items() if v == 1} == expected, "net stream differs from the canonical chain"
    assert max(sent.values()) == 1, "an event was published twice"
    retractions = sum(1 for e in events if e["kind"] == "retraction")
    assert retractions > 0

    # field by field, the canonical transactions as published
    published = {(e["tx_hash"], e["block_hash"]): ChainTx.model_validate(e) for e in events if e["kind"] == "tx"}
    for t in expected_txs:
        assert _projection(published[(t.tx_hash, t.block_hash)]) == _projection(t)
    # exact wei/satoshi amounts travel as strings
    assert all(isinstance(e["value"], str) for e in events)

    # per address, canonical events arrive in block order (one key -> one partition)
    per_addr: dict[str, list[int]] = defaultdict(list)
    for e in events:
        if e["kind"] == "tx" and (e["tx_hash"], e["block_hash"], e["address"]) in expected:
            per_addr[e["address"]].append(e["block_number"])
    assert all(v == sorted(v) for v in per_addr.values())

    # features: Redis (one Lua script per tx) == recomputation over the final canonical blocks
    final = fc.tip.number - CONFIRMATIONS
    assert f.features_checkpoint == final
    want = features_from_transactions(fc.expected_txs(up_to=final))
    assert want, "no features to compare"
    for addr, feats in want.items():
        got = await address_features(env.state, chain.value, addr)
        for name, value in feats.items():
            if name in _HLL:
                assert abs(got[name] - value) <= 1, (addr, name, got[name], value)
            else:
                assert got[name] == value, (addr, name, got[name], value)
        assert list(got)[: len(CHAIN_FEATURES)] == list(CHAIN_FEATURES)
    return {"events": len(events), "retractions": retractions, "addresses": len(want)}


async def test_ethereum_scripted_run(chain_env: ChainEnv) -> None:
    fc = FakeChain("eth", seed=11)
    fc.mine(10)
    node = FakeEthNode(fc)
    await node.start()
    f = chain_env.follower(EthereumNode(node.url, timeout_s=3), Chain.ETHEREUM, confirmations=CONFIRMATIONS)
    await f.start()
    try:
        await at_tip(f, fc, "initial backfill")
        await node.mine(3)
        await at_tip(f, fc, "live blocks")

        orphaned, _ = await node.reorg(3, 4)  # a 3-block reorg
        await at_tip(f, fc, "after the reorg")
        assert all(f.window.hash_at(b.number) != b.hash for b in orphaned)

        await node.go_down()  # the connection drops; 5 blocks arrive meanwhile
        await node.mine(5)
        await asyncio.sleep(0.3)
        await node.come_up()
        await at_tip(f, fc, "after the drop")

        # malformed answers, one kind at a time: each is dead-lettered and the same block fetched again
        await node.send_garbage()
        for method, fault in (
            ("eth_getBlockByNumber", "missing_hash"),
            ("eth_getBlockByNumber", "bad_value"),
            ("eth_getBlockReceipts", "bad_receipts"),
        ):
            node.inject(method, fault)
            await node.mine(1)
            await at_tip(f, fc, f"after {fault}")
    finally:
        await f.stop()

    # restart from the checkpoint: meanwhile the last block is replaced and 3 more arrive
    saved = await CheckpointStore(chain_env.state, Chain.ETHEREUM).checkpoint()
    assert saved == BlockRef(fc.tip.number, fc.tip.hash)
    await node.reorg(1, 1)
    await node.mine(3)
    f2 = chain_env.follower(EthereumNode(node.url, timeout_s=3), Chain.ETHEREUM, confirmations=CONFIRMATIONS)
    await f2.start()
    try:
        await at_tip(f2, fc, "after the restart")
        await node.mine(2)
        await at_tip(f2, fc, "final blocks")
    finally:
        await f2.stop()
        await node.stop()

    stats = await check_stream_and_features(chain_env, fc, Chain.ETHEREUM, f2)
    assert stats["retractions"] > 0
    letters = [decode_dead_letter(r.value) for r in await chain_env.read(chain_env.dead_letters)]
    reasons = {d.reason for d in letters}
    assert {"bad_block_field", "bad_transaction", "bad_receipt", "invalid_json"} <= reasons, reasons
    assert all(d.venue == "ethereum" and d.raw for d in letters)


async def test_ethereum_per_transaction_receipts(chain_env: ChainEnv) -> None:
    """A node without eth_getBlockReceipts: the client falls back to one receipt request per transaction."""
    fc = FakeChain("eth", seed=5)
    fc.mine(4)
    node = FakeEthNode(fc, block_receipts=False)
    await node.start()
    f = chain_env.follower(EthereumNode(node.url, timeout_s=3), Chain.ETHEREUM, confirmations=CONFIRMATIONS)
    await f.start()
    try:
        await at_tip(f, fc, "backfill")
        await node.reorg(3, 3)
        await node.mine(3)
        await at_tip(f, fc, "reorg")
    finally:
        await f.stop()
        await node.stop()
    assert node.requests.get("eth_getTransactionReceipt", 0) > 0
    await check_stream_and_features(chain_env, fc, Chain.ETHEREUM, f)


async def test_bitcoin_scripted_run(chain_env: ChainEnv) -> None:
    fc = FakeChain("btc", seed=3, block_time_s=600)
    fc.mine(8)
    core = FakeBitcoinCore(fc)
    await core.start()

    def client() -> BitcoinNode:
        return BitcoinNode(core.rpc_url, core.zmq_url, timeout_s=3)

    f = chain_env.follower(client(), Chain.BITCOIN, confirmations=CONFIRMATIONS, poll_s=1.0)
    await f.start()
    try:
        await at_tip(f, fc, "initial backfill")
        await asyncio.sleep(0.3)  # let the SUB socket finish connecting before notifications matter
        await core.mine(2)
        await at_tip(f, fc, "live blocks")

        await core.reorg(3, 4)
        await at_tip(f, fc, "after the reorg")

        await core.go_down()  # ZMQ and RPC gone: 5 blocks arrive, their notifications are lost
        await core.mine(5)
        await asyncio.sleep(0.3)
        await core.come_up()
        await at_tip(f, fc, "after the drop")

        core.inject("getblock", "fractional_sat")
        core.inject("getblock", "missing_height")
        core.inject("getblock", "bad_json")
        await asyncio.sleep(0.2)
        await core.send_zmq_garbage()
        await core.mine(2)
        await at_tip(f, fc, "after malformed responses")
    finally:
        await f.stop()

    await core.reorg(1, 2)
    await core.mine(2)
    f2 = chain_env.follower(client(), Chain.BITCOIN, confirmations=CONFIRMATIONS, poll_s=1.0)
    await f2.start()
    try:
        await at_tip(f2, fc, "after the restart")
        await core.mine(1)
        await at_tip(f2, fc, "final block")
    finally:
        await f2.stop()
        await core.stop()

    await check_stream_and_features(chain_env, fc, Chain.BITCOIN, f2)
    letters = [decode_dead_letter(r.value) for r in await chain_env.read(chain_env.dead_letters)]
    reasons = {d.reason for d in letters}
    assert {"bad_transaction", "bad_block_field", "invalid_json"} <= reasons, reasons
    assert all(d.venue == "bitcoin" for d in letters)
