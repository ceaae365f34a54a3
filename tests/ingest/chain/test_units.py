"""Unit tests of the chain part: schema, parsers, reorg planning, feature script twins, component wiring."""

from __future__ import annotations

import argparse
import csv
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from service.features.chain import ACTIVITY_FEATURES, CHAIN_FEATURES, features_from_transactions, legs
from service.features.chain_store import address_features, address_keys, apply_transactions, update_call
from service.ingest.chain import bitcoin, ethereum
from service.ingest.chain.components import build_chain_components
from service.ingest.chain.follower import ChainFollower
from service.ingest.chain.node import Block, MalformedResponse
from service.ingest.chain.reorg import RecentBlocks, plan_reorg
from service.runtime import Runtime
from service.schemas.chain import Chain, ChainTx, TxInput, TxOutput, involved_addresses
from service.settings import load_settings
from service.state.memory import MemoryState
from service.state.redis import RedisState
from service.state.scripts import UPDATE_SCRIPT
from tests.ingest.chain.fake_btc import FakeBitcoinCore
from tests.ingest.chain.fake_eth import FakeEthNode
from tests.ingest.chain.fakechain import FakeChain

# ------------------------------------------------------------------------------------------------------ schema


def test_chaintx_amounts_are_exact_and_travel_as_strings() -> None:
    big = 2**90 + 12345
    tx = ChainTx(
        chain=Chain.ETHEREUM,
        address="0xa",
        tx_hash="0x1",
        tx_index=0,
        block_number=1,
        block_hash="0xb",
        time_ms=1,
        ingest_time_ms=2,
        value=big,
        fee=7,
    )
    wire = json.loads(tx.encode())
    assert wire["value"] == str(big) and wire["fee"] == "7"
    assert ChainTx.decode(tx.encode()) == tx
    assert tx.key == "ethereum:0xa"
    with pytest.raises(ValidationError):
        ChainTx.model_validate({**wire, "value": 1.5})
    with pytest.raises(ValidationError):
        ChainTx.model_validate({**wire, "value": "12abc"})


@pytest.mark.parametrize("kind", ["eth", "btc"])
def test_json_dict_matches_pydantic(kind: str) -> None:
    fc = FakeChain(kind, seed=2)
    fc.mine(6)
    for t in fc.expected_txs():
        assert t.json_dict() == t.model_dump(mode="json")
        assert t.as_retraction().retraction


def test_involved_addresses_roles() -> None:
    base: dict[str, Any] = dict(
        chain=Chain.ETHEREUM,
        address="",
        tx_hash="h",
        tx_index=0,
        block_number=1,
        block_hash="b",
        time_ms=0,
        ingest_time_ms=0,
    )
    assert involved_addresses(ChainTx(**base, from_address="0xa", to_address="0xb")) == [
        ("0xa", "sender"),
        ("0xb", "receiver"),
    ]
    assert involved_addresses(ChainTx(**base, from_address="0xa", to_address="0xa")) == [("0xa", "both")]
    assert involved_addresses(ChainTx(**base, from_address="0xa", contract_address="0xc")) == [
        ("0xa", "creator"),
        ("0xc", "created"),
    ]
    btc = ChainTx(
        **{**base, "chain": Chain.BITCOIN},
        inputs=(TxInput(txid="p", vout=0, address="x", value=10), TxInput(txid="q", vout=1, address="y", value=5)),
        outputs=(TxOutput(n=0, address="z", value=9), TxOutput(n=1, address="x", value=5), TxOutput(n=2, value=0)),
    )
    assert involved_addresses(btc) == [("x", "both"), ("y", "sender"), ("z", "receiver")]


# ----------------------------------------------------------------------------------------------------- parsers


def _eth_fake() -> tuple[FakeEthNode, FakeChain]:
    fc = FakeChain("eth", seed=9)
    fc.mine(3)
    return FakeEthNode(fc), fc


def test_ethereum_parse_block_real_formats() -> None:
    node, fc = _eth_fake()
    b = fc.canonical[2]
    block = ethereum.parse_block(node._block(b, True), node._receipts(b), ingest_ms=5)
    assert (block.number, block.hash, block.parent_hash, block.time_ms) == (b.number, b.hash, b.parent, b.time_s * 1000)
    for got, want in zip(block.txs, (fc.expected_tx(b, i, t) for i, t in enumerate(b.txs)), strict=True):
        assert got.model_dump(exclude={"ingest_time_ms"}) == want.model_dump(exclude={"ingest_time_ms"})


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda blk, rc: blk.pop("hash"), "bad_block_field"),
        (lambda blk, rc: blk.__setitem__("number", "12"), "bad_block_field"),
        (lambda blk, rc: blk["transactions"][0].__setitem__("value", "0xZZ"), "bad_transaction"),
        (lambda blk, rc: blk["transactions"][0].__setitem__("from", "0x1234"), "bad_transaction"),
        (lambda blk, rc: blk["transactions"].__setitem__(0, "0x" + "ab" * 32), "not_full_transactions"),
        (lambda blk, rc: rc.pop(0), "missing_receipt"),
        (lambda blk, rc: rc.__setitem__(0, {"status": "0x1"}), "bad_receipt"),
    ],
)
def test_ethereum_malformed_blocks_name_the_reason(mutate: Any, reason: str) -> None:
    node, fc = _eth_fake()
    b = fc.canonical[2]
    blk, rc = node._block(b, True), node._receipts(b)
    mutate(blk, rc)
    with pytest.raises(MalformedResponse) as exc:
        ethereum.parse_block(blk, rc)
    assert exc.value.reason == reason
    assert exc.value.raw


def test_ethereum_blob_transaction_fee_includes_blob_gas() -> None:
    node, fc = _eth_fake()
    b = fc.canonical[1]
    blk, rc = node._block(b, True), node._receipts(b)
    rc[0].update(blobGasUsed=hex(131072), blobGasPrice=hex(3))
    block = ethereum.parse_block(blk, rc)
    t = b.txs[0]
    assert block.txs[0].fee == t.gas_used * t.price + 131072 * 3


def test_ethereum_pre_byzantium_receipt_and_creation() -> None:
    node, fc = _eth_fake()
    b = fc.canonical[1]
    blk, rc = node._block(b, True), node._receipts(b)
    del rc[0]["status"]
    rc[0]["root"] = "0x" + "12" * 32
    block = ethereum.parse_block(blk, rc)
    assert block.txs[0].status is None
    assert legs(block.txs[0]), "a receipt without status (pre-Byzantium) still counts"


def test_bitcoin_parse_block_exact_satoshis_and_prevouts() -> None:
    fc = FakeChain("btc", seed=4, block_time_s=600)
    fc.mine(3)
    core = FakeBitcoinCore(fc)
    b = fc.canonical[3]
    status, payload = core._answer(
        {"authorization": "Basic cm1hZDpzZWNyZXQ="},
        json.dumps({"method": "getblock", "params": [b.hash, 3], "id": 1}).encode(),
    )
    assert status == 200
    raw = json.loads(payload, parse_float=Decimal)["result"]
    block = bitcoin.parse_block(raw)
    want = [fc.expected_tx(b, i, t) for i, t in enumerate(b.txs)]
    for got, exp in zip(block.txs, want, strict=True):
        assert (got.value, got.fee, got.inputs, got.outputs) == (exp.value, exp.fee, exp.inputs, exp.outputs)
    assert block.txs[0].coinbase


def test_bitcoin_sats_refuses_fractions_and_floats() -> None:
    assert bitcoin.sats(Decimal("20999999.99999999"), "v") == 2_099_999_999_999_999
    with pytest.raises(ValueError):
        bitcoin.sats(Decimal("0.000000015"), "v")
    with pytest.raises(ValueError):
        bitcoin.sats(0.1, "v")


# ------------------------------------------------------------------------------------------------------- reorgs


def _blocks(n: int, prefix: str, parent: str = "g", start: int = 1) -> list[Block]:
    out = []
    for i in range(start, start + n):
        h = f"{prefix}{i}"
        out.append(Block(Chain.ETHEREUM, i, h, parent, i * 1000, ()))
        parent = h
    return out


async def test_plan_reorg_walks_back_to_the_fork() -> None:
    w = RecentBlocks(depth=6)
    for b in _blocks(8, "a"):
        w.push(b)
    assert w.first_number == 3 and len(w) == 6
    side = _blocks(4, "b", parent="a5", start=6)  # b6..b9 replace a6..a8
    by_hash = {b.hash: b for b in side}

    async def fetch(h: str) -> Block:
        return by_hash[h]

    plan = await plan_reorg(w, side[-1], fetch)
    assert plan.fork_number == 5 and not plan.deep
    assert [b.hash for b in plan.orphaned] == ["a8", "a7", "a6"]
    assert [b.hash for b in plan.new_chain] == ["b6", "b7", "b8", "b9"]
    assert [b.hash for b in w.pop_above(5)] == ["a8", "a7", "a6"]


async def test_plan_reorg_past_the_window_is_deep() -> None:
    w = RecentBlocks(depth=3)
    for b in _blocks(6, "a"):
        w.push(b)
    side = _blocks(5, "b", parent="a1", start=2)
    by_hash = {b.hash: b for b in side}

    async def fetch(h: str) -> Block:
        return by_hash[h]

    plan = await plan_reorg(w, side[-1], fetch)
    assert plan.deep
    assert {b.hash for b in plan.orphaned} == {"a4", "a5", "a6"}


def test_recent_blocks_load_keeps_the_linked_run() -> None:
    w = RecentBlocks(depth=10)
    chain = _blocks(5, "a")
    stray = Block(Chain.ETHEREUM, 2, "x2", "a1", 0, ())
    w.load([chain[0], stray, *chain[2:]])  # a1, x2 (not a3's parent), a3..a5
    assert [b.hash for b in w.blocks()] == ["a3", "a4", "a5"]


# ---------------------------------------------------------------------------------------------------- features


@pytest.mark.data
def test_chain_features_are_columns_of_the_fraud_dataset(shared_data: Path) -> None:
    with open(shared_data / "ethereum-fraud-accounts" / "transaction_dataset.csv", newline="") as f:
        header = next(csv.reader(f))
    assert set(CHAIN_FEATURES) <= set(header)
    assert [c for c in header if c in CHAIN_FEATURES] == list(CHAIN_FEATURES), "dataset order"
    assert ACTIVITY_FEATURES[: len(CHAIN_FEATURES)] == CHAIN_FEATURES


def test_legs_net_bitcoin_change_and_skip_reverted_ethereum() -> None:
    base: dict[str, Any] = dict(
        address="", tx_hash="h", tx_index=0, block_number=1, block_hash="b", time_ms=0, ingest_time_ms=0
    )
    btc = ChainTx(
        chain=Chain.BITCOIN,
        **base,
        inputs=(TxInput(txid="p", vout=0, address="x", value=100),),
        outputs=(TxOutput(n=0, address="z", value=30), TxOutput(n=1, address="x", value=65)),
    )
    (sx, rz) = legs(btc)
    assert (sx.address, sx.sent, sx.to) == ("x", 35, ("z",))
    assert (rz.address, rz.received, rz.frm) == ("z", 30, ("x",))
    eth = ChainTx(chain=Chain.ETHEREUM, **base, from_address="0xa", to_address="0xb", value=5, status=0)
    assert legs(eth) == []


@pytest.mark.integration
@pytest.mark.parametrize("kind", ["eth", "btc"])
async def test_lua_and_python_twin_agree_and_apply_once(kind: str, redis_url: str, unique: str) -> None:
    """The same transactions through the Lua script (real Redis) and its Python twin give the same state."""
    fc = FakeChain(kind, seed=21, n_addresses=8, block_time_s=900 if kind == "btc" else 240)
    fc.mine(30)
    txs = fc.expected_txs()
    mem = MemoryState()
    red = RedisState(redis_url, key_prefix=f"twin-{unique}:")
    try:
        for store in (mem, red):
            assert await apply_transactions(store, txs) == sum(1 for t in txs if legs(t))
            assert await apply_transactions(store, txs[:10]) == 0, "a transaction is applied once"
        chain = txs[0].chain.value
        want = features_from_transactions(txs)
        for addr, feats in want.items():
            a = await address_features(mem, chain, addr)
            b = await address_features(red, chain, addr)
            assert a == feats, "the in-process store counts unique counterparties exactly"
            for name in feats:
                if name.startswith("Unique"):
                    assert abs(b[name] - feats[name]) <= 1
                else:
                    assert b[name] == feats[name], (name, b[name], feats[name])
            h_mem = mem.call("HGETALL", address_keys(chain, addr)[0])
            h_red = await red.hgetall(address_keys(chain, addr)[0])
            assert h_mem == h_red, "the twins write identical aggregates"
        assert await address_features(red, chain, "never-seen") == dict.fromkeys(ACTIVITY_FEATURES, 0.0)
    finally:
        await red.close()


async def test_one_script_call_per_transaction() -> None:
    fc = FakeChain("btc", seed=1)
    fc.mine(2)
    tx = fc.expected_txs()[3]
    call = update_call(tx)
    assert call is not None and len(call.args) == 1
    assert len(call.keys) == 2 + 5 * len(legs(tx))
    state = MemoryState()
    assert await state.run_script(UPDATE_SCRIPT, call.keys, call.args) == 1
    assert await state.run_script(UPDATE_SCRIPT, call.keys, call.args) == 0


# ---------------------------------------------------------------------------------------------------- wiring


def test_chain_components_only_when_configured() -> None:
    args = argparse.Namespace()
    rt = Runtime.from_settings(load_settings())
    assert build_chain_components(rt, args) == []
    settings = load_settings(
        chain_eth_ws_url="ws://127.0.0.1:8546",
        chain_btc_rpc_url="http://u:p@127.0.0.1:8332",
        chain_btc_zmq_url="tcp://127.0.0.1:28332",
    )
    comps = build_chain_components(Runtime.from_settings(settings), args)
    followers = [c for c in comps if isinstance(c, ChainFollower)]
    assert [f.name for f in followers] == ["chain-ethereum", "chain-bitcoin"]
    assert followers[0].config.confirmations == settings.chain_eth_confirmations
    assert not comps[0].health().ok  # the shared producer is not started yet


def test_chain_settings_refuse_bad_values() -> None:
    from service.settings import SettingsError

    with pytest.raises(SettingsError, match="RMAD_CHAIN_ETH_WS_URL"):
        load_settings(chain_eth_ws_url="http://node:8545")
    with pytest.raises(SettingsError, match="must be set together"):
        load_settings(chain_btc_rpc_url="http://u:p@h:8332")
    with pytest.raises(SettingsError, match="REORG_DEPTH"):
        load_settings(chain_reorg_depth=4)
    with pytest.raises(SettingsError, match="RMAD_CHAIN_BTC_REORG_DEPTH"):
        load_settings(chain_btc_reorg_depth=2)


async def test_large_bitcoin_tx_is_trimmed_per_address() -> None:
    from service.bus.base import TopicSpec
    from service.bus.memory import MemoryBus
    from service.ingest.chain.publisher import ChainPublisher

    outputs = tuple(TxOutput(n=i, address=f"r{i}", value=1000 + i) for i in range(70))
    tx = ChainTx(
        chain=Chain.BITCOIN,
        address="s",
        tx_hash="t" * 64,
        tx_index=1,
        block_number=5,
        block_hash="b" * 64,
        time_ms=1,
        ingest_time_ms=1,
        value=sum(o.value for o in outputs),
        fee=100,
        inputs=(TxInput(txid="p" * 64, vout=0, address="s", value=sum(o.value for o in outputs) + 100),),
        outputs=outputs,
    )
    bus = MemoryBus(default_partitions=2)
    await bus.create_topics([TopicSpec("c", 2)])
    producer = bus.producer()
    await producer.start()
    body = await ChainPublisher(producer, "c", "d", max_io_per_event=64).publish_tx(tx)
    assert len(body["outputs"]) == 70 and not body["io_truncated"], "the stored body stays whole"
    consumer = bus.consumer(["c"], group_id="g")
    await consumer.start()
    recs = await consumer.getmany(timeout_ms=200)
    await consumer.stop()
    events = [ChainTx.decode(r.value) for r in recs]
    assert len(events) == 71
    for e in events:
        assert e.io_truncated and e.value == tx.value
        assert all(o.address == e.address for o in e.outputs) and all(i.address == e.address for i in e.inputs)
    assert {e.address: len(e.outputs) for e in events}["r7"] == 1


def _eth_tx_strategy() -> Any:
    from hypothesis import strategies as st

    addr = st.sampled_from([f"0x{i:040x}" for i in range(6)])
    return st.builds(
        lambda i, frm, to, value, t, status, create: ChainTx(
            chain=Chain.ETHEREUM,
            address=frm,
            tx_hash=f"0x{i:064x}",
            tx_index=0,
            block_number=1,
            block_hash="0xb",
            time_ms=t,
            ingest_time_ms=0,
            from_address=frm,
            to_address=None if create else to,
            contract_address=f"0x{i + 100:040x}" if create else None,
            value=value,
            status=status,
        ),
        st.integers(0, 10**9),
        addr,
        addr,
        st.one_of(st.just(0), st.integers(1, 10**6), st.integers(10**17, 2**96)),
        st.integers(1_700_000_000_000, 1_700_000_000_000 + 3 * 86_400_000),  # out of order, as Bitcoin's can be
        st.sampled_from([1, 1, 1, 0, None]),
        st.booleans(),
    )


def test_incremental_twin_equals_recomputation_for_any_sequence() -> None:
    """Any transaction sequence (huge and zero values, reverts, creations, self-sends, times out of order)."""
    import asyncio

    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=60, deadline=None)
    @given(st.lists(_eth_tx_strategy(), min_size=1, max_size=40, unique_by=lambda t: t.tx_hash))
    def check(txs: list[ChainTx]) -> None:
        async def run() -> None:
            state = MemoryState()
            await apply_transactions(state, txs)
            for addr, feats in features_from_transactions(txs).items():
                assert await address_features(state, "ethereum", addr) == feats

        asyncio.run(run())

    check()
