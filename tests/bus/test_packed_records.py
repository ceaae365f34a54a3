"""Packed market.trades records (service/ingest/packing.py) on both buses: every trade once, per-key order (gap
markers included), across pack sealing by time, count and bytes, a publisher restart, consumer-group rebalances
and a consumer restart from committed offsets."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from decimal import Decimal

import pytest

from service.bus.base import Bus, CommitFailedError, Record
from service.bus.factory import standard_topics
from service.bus.memory import MemoryBus
from service.bus.partitioning import partition_for
from service.ingest.packing import PackLimits, TradePacker
from service.ingest.publisher import MarketPublisher
from service.schemas.market import (
    AnyMarketEvent,
    Gap,
    Trade,
    TradePack,
    decode_market,
    decode_market_records,
    decode_trade_ticks,
    encode,
    encode_pack,
)
from service.settings import Settings, load_settings

PARTITIONS = 4
KEYS = [f"SYM{i}" for i in range(12)]


def _settings(unique: str, **kw: object) -> Settings:
    return load_settings(
        topic_trades=f"trades-{unique}",
        topic_books=f"books-{unique}",
        topic_bars=f"bars-{unique}",
        topic_dead_letters=f"dead-{unique}",
        topic_partitions=PARTITIONS,
        **kw,
    )


def _trade(symbol: str, n: int, t_ms: int) -> Trade:
    return Trade(
        venue="sim",
        symbol=symbol,
        event_time_ms=t_ms,
        ingest_time_ms=t_ms,
        trade_id=str(n),
        price=Decimal("100.25") + n,
        size=Decimal("0.5"),
        side="buy" if n % 2 else "sell",
    )


def _stream(start: int, n: int) -> list[Trade | Gap]:
    """`n` trades round-robin over KEYS (per key ids increasing) and a gap marker on SYM3 every 97 events."""
    out: list[Trade | Gap] = []
    for i in range(start, start + n):
        sym = KEYS[(i * 7) % len(KEYS)]
        out.append(_trade(sym, i, 1_700_000_000_000 + i))
        if i % 97 == 0:
            out.append(
                Gap(
                    venue="sim",
                    symbol="SYM3",
                    event_time_ms=1_700_000_000_000 + i,
                    ingest_time_ms=1_700_000_000_000 + i,
                    stream="trades",
                    from_ms=0,
                    to_ms=i,
                    reason="reconnect",
                )
            )
    return out


def _ident(e: AnyMarketEvent) -> str:
    return e.trade_id if isinstance(e, Trade) else f"gap{e.to_ms}" if isinstance(e, Gap) else "?"


# --------------------------------------------------------------------------------------------- the format


def test_a_pack_reads_as_the_single_records_it_replaces() -> None:
    trades = [_trade("A", i, 1000 + i) for i in range(3)]
    packed = encode_pack([encode(t) for t in trades])
    assert packed == encode(TradePack(trades=trades))  # the packer's bytes are the schema's encoding
    assert decode_market_records(packed) == trades
    assert decode_market_records(encode(trades[0])) == [trades[0]]  # single records alike
    ticks = decode_trade_ticks(packed)
    assert [(t.symbol, t.price, t.size, t.side) for t in ticks] == [("A", 100.25 + i, 0.5, t.side) for i, t in
                                                                    enumerate(trades)]  # fmt: skip
    with pytest.raises(Exception, match="type"):
        decode_market(packed)  # the one-event decoder refuses a pack instead of misreading it
    too_many = b'{"type":"trades","schema_version":1,"trades":[' + b",".join([encode(trades[0])] * 10_001) + b"]}"
    with pytest.raises(Exception, match="length"):
        decode_market_records(too_many)  # what one record can allocate is bounded


def test_pack_limits_are_checked() -> None:
    with pytest.raises(ValueError, match="max_trades"):
        PackLimits(2.0, 0, 4096)
    with pytest.raises(ValueError, match="max_bytes"):
        PackLimits(2.0, 10, 10)
    assert not PackLimits(0.0).enabled and PackLimits(2.0).enabled


async def test_packs_seal_by_count_bytes_and_time() -> None:
    bus = MemoryBus(default_partitions=1)
    p = bus.producer()
    one = encode(_trade("A", 1, 1))
    assert len(one) == 176
    by_count = TradePacker(p, "count", PackLimits(max_ms=20.0, max_trades=3, max_bytes=64 * 1024))
    by_bytes = TradePacker(p, "bytes", PackLimits(max_ms=20.0, max_trades=100, max_bytes=1024))
    for _ in range(7):
        await by_count.add(b"sim:A", one)
        await by_bytes.add(b"sim:A", one)
    assert by_count.records == 2  # sealed and sent at every third trade
    assert by_bytes.records == 1  # 64 + 5 x 177 bytes; a sixth would pass 1024
    await asyncio.sleep(0.06)  # the open packs go on their own within max_ms
    assert by_count.records == 3 and by_bytes.records == 2
    c = bus.consumer(["count", "bytes"], "g")
    await c.start()
    sizes = {(r.topic, r.offset): len(decode_market_records(r.value)) for r in await c.getmany(timeout_ms=100)}
    assert sizes == {("count", 0): 3, ("count", 1): 3, ("count", 2): 1, ("bytes", 0): 5, ("bytes", 1): 2}
    await bus.close()


# --------------------------------------------------------------------------------------------- the contract


async def test_every_trade_once_in_key_order_across_restarts_and_rebalances(bus: Bus, unique: str) -> None:
    s = _settings(unique, ingest_pack_ms=3.0, ingest_pack_max_trades=40, ingest_pack_max_bytes=6 * 1024)
    await bus.create_topics([t for t in standard_topics(s) if t.name == s.topic_trades])
    group = f"packed-{unique}"
    got: list[tuple[str, Record, int, AnyMarketEvent]] = []
    committed: dict[str, dict[int, int]] = defaultdict(dict)  # member -> partition -> committed position

    async def member(name: str, stop: asyncio.Event, assigned: asyncio.Event) -> None:
        c = bus.consumer([s.topic_trades], group, auto_offset_reset="earliest")
        await c.start()
        try:
            while not stop.is_set():
                recs = await c.getmany(timeout_ms=100)
                if c.assignment():
                    assigned.set()
                for r in recs:
                    for i, ev in enumerate(decode_market_records(r.value)):
                        got.append((name, r, i, ev))
                if recs:
                    try:
                        await c.commit()  # after processing, as the worker does
                    except CommitFailedError:
                        continue  # a rebalance took the partitions: their records come again elsewhere
                    for r in recs:
                        committed[name][r.partition] = max(committed[name].get(r.partition, 0), r.offset + 1)
        finally:
            await c.stop()

    def start(name: str) -> tuple[asyncio.Event, asyncio.Event, asyncio.Task[None]]:
        stop, assigned = asyncio.Event(), asyncio.Event()
        return stop, assigned, asyncio.create_task(member(name, stop, assigned))

    async def publish(events: list[Trade | Gap]) -> MarketPublisher:
        p = bus.producer()
        await p.start()
        pub = MarketPublisher(p, s)
        for i, e in enumerate(events):
            await pub.publish(e)
            if i % 60 == 59:
                await asyncio.sleep(0.005)  # quiet spells: packs sealed by time too
        return pub

    stream = _stream(0, 2400)
    stop_a, ready_a, task_a = start("a")
    await asyncio.wait_for(ready_a.wait(), 60)
    pub1 = await publish(stream[:800])
    stop_b, ready_b, task_b = start("b")  # a rebalance while the stream runs
    await asyncio.wait_for(ready_b.wait(), 60)
    await pub1.flush()
    await pub1.producer.stop()  # publisher restart: a new one carries on
    pub2 = await publish(stream[800:1600])
    stop_a.set()  # a member leaves: another rebalance
    await task_a
    await pub2.flush()
    stop_b.set()  # the last member stops; a new one resumes from the committed offsets
    await task_b
    stop_c, ready_c, task_c = start("c")
    await asyncio.wait_for(ready_c.wait(), 60)
    for e in stream[1600:]:
        await pub2.publish(e)
    await pub2.flush()
    await pub2.producer.stop()
    deadline = time.monotonic() + 60
    while len({(r.partition, r.offset, i) for _, r, i, _ in got}) < len(stream) and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.1)  # the member task fills `got`
    stop_c.set()
    await task_c

    first: dict[tuple[int, int, int], AnyMarketEvent] = {}
    for _, r, i, ev in got:
        seen = first.setdefault((r.partition, r.offset, i), ev)
        assert seen == ev  # a record read twice (at-least-once) holds the same events
    # no loss, no duplicate: every published event in exactly one (record, position)
    assert sorted(_ident(e) + e.symbol for e in first.values()) == sorted(_ident(e) + e.symbol for e in stream)
    # per-key order, gap markers in place, each record in its keys' partition
    per_key: dict[str, list[str]] = defaultdict(list)
    for (part, _, _), ev in sorted(first.items()):
        assert partition_for(ev.key.encode(), PARTITIONS) == part
        per_key[ev.key].append(_ident(ev))
    want: dict[str, list[str]] = defaultdict(list)
    for e in stream:
        want[e.key].append(_ident(e))
    assert per_key == want
    # packing happened, and a restarted member never re-reads what an earlier one committed
    records = {(r.partition, r.offset) for _, r, _, _ in got}
    assert len(records) < len(stream) / 4
    before = {p: max(committed["a"].get(p, 0), committed["b"].get(p, 0)) for p in range(PARTITIONS)}
    assert all(r.offset >= before[r.partition] for name, r, _, _ in got if name == "c")
