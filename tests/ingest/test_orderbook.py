"""The local order book rules, step by step (Binance spot and USD-M, Bybit v5), without any server."""

from __future__ import annotations

from decimal import Decimal as D

from service.ingest.orderbook import BinanceBookSync, BybitBookSync, LocalBook
from service.schemas.market import BookUpdate


def upd(first: int, final: int, *, pu: int | None = None, bids=(), asks=(), snapshot: bool = False) -> BookUpdate:  # type: ignore[no-untyped-def]
    return BookUpdate(
        venue="v",
        symbol="BTCUSDT",
        event_time_ms=1_700_000_000_000 + final,
        ingest_time_ms=1_700_000_000_000 + final,
        first_update_id=first,
        final_update_id=final,
        prev_final_update_id=pu,
        is_snapshot=snapshot,
        bids=[(D(p), D(q)) for p, q in bids],
        asks=[(D(p), D(q)) for p, q in asks],
    )


def test_local_book_levels_delete_top_and_imbalance() -> None:
    book = LocalBook([(D("10"), D("1")), (D("9"), D("3"))], [(D("11"), D("2")), (D("12"), D("2"))])
    book.apply([(D("10"), D("0")), (D("9.5"), D("1"))], [(D("11"), D("0"))])
    assert book.top_bids(5) == [(D("9.5"), D("1")), (D("9"), D("3"))]
    assert book.top_asks(1) == [(D("12"), D("2"))]
    top = book.to_top(venue="v", symbol="S", levels=2, event_time_ms=1, ingest_time_ms=2, update_id=7)
    assert top.best_bid == D("9.5") and top.best_ask == D("12")
    assert top.imbalance == (4 - 2) / 6
    assert not book.crossed()


def test_binance_spot_buffer_snapshot_drop_and_continuity() -> None:
    sync = BinanceBookSync("BTCUSDT", futures=False)
    out = sync.on_update(upd(100, 102, bids=[("10", "1")]))
    assert out.need_snapshot and not sync.synced
    assert not sync.on_update(upd(103, 105, bids=[("10", "2")])).need_snapshot  # asked once, still buffering
    sync.on_update(upd(106, 106, asks=[("11", "5")]))
    # snapshot at 104: event 100-102 is dropped (u <= 104), 103-105 overlaps (U <= 105 <= u) and applies
    out = sync.on_snapshot(104, [(D("10"), D("9")), (D("8"), D("1"))], [(D("12"), D("1"))])
    assert out.resynced and out.applied == 2 and sync.last_u == 106
    assert sync.book is not None
    assert sync.book.bids == {D("10"): D("2"), D("8"): D("1")}
    assert sync.book.asks == {D("11"): D("5"), D("12"): D("1")}
    assert sync.on_update(upd(107, 108)).applied == 1
    assert sync.on_update(upd(105, 108)).stale == 1  # already applied
    out = sync.on_update(upd(110, 111))  # 109 missing
    assert out.gap and out.need_snapshot and not sync.synced
    assert out.gap_from_id == 108 and out.gap_to_id == 110


def test_binance_spot_snapshot_older_than_buffer_is_refetched() -> None:
    sync = BinanceBookSync("BTCUSDT", futures=False)
    sync.on_update(upd(200, 201))
    out = sync.on_snapshot(150, [], [])  # 151..199 would be missing
    assert out.need_snapshot and not sync.synced
    out = sync.on_snapshot(199, [(D("1"), D("1"))], [])  # exactly contiguous: U == lastUpdateId + 1
    assert out.resynced and sync.last_u == 201


def test_binance_futures_pu_chain() -> None:
    sync = BinanceBookSync("BTCUSDT", futures=True)
    sync.on_update(upd(90, 95, pu=80))
    sync.on_update(upd(96, 120, pu=95, bids=[("5", "1")]))
    sync.on_update(upd(130, 140, pu=120, bids=[("5", "2")]))
    # snapshot 100: 90-95 dropped (u < 100), first kept has U <= 100 <= u
    out = sync.on_snapshot(100, [(D("5"), D("9"))], [])
    assert out.resynced and out.applied == 2 and sync.last_u == 140
    assert sync.book is not None and sync.book.bids == {D("5"): D("2")}
    assert sync.on_update(upd(141, 150, pu=140)).applied == 1
    out = sync.on_update(upd(160, 170, pu=155))  # pu != previous u
    assert out.gap and out.need_snapshot
    # a first event after the snapshot that does not straddle it is a gap too
    sync2 = BinanceBookSync("X", futures=True)
    sync2.on_update(upd(300, 310, pu=290))
    out = sync2.on_snapshot(305, [], [])
    assert out.resynced and sync2.last_u == 310
    sync3 = BinanceBookSync("Y", futures=True)
    sync3.on_update(upd(300, 310, pu=290))
    assert sync3.on_snapshot(299, [], []).need_snapshot  # older than the buffer


def test_bybit_snapshot_replaces_delta_needs_next_u_and_zero_deletes() -> None:
    sync = BybitBookSync("BTCUSDT")
    out = sync.on_update(upd(5, 5))  # delta before any snapshot: ask for one (resubscribe), once
    assert out.need_snapshot and not sync.on_update(upd(6, 6)).need_snapshot
    out = sync.on_update(upd(10, 10, bids=[("100", "1"), ("99", "2")], asks=[("101", "1")], snapshot=True))
    assert out.resynced and sync.synced
    assert sync.on_update(upd(11, 11, bids=[("99", "0")])).applied == 1
    assert sync.book is not None and sync.book.bids == {D("100"): D("1")}
    assert sync.on_update(upd(11, 11)).stale == 1
    out = sync.on_update(upd(13, 13))  # 12 missing
    assert out.gap and out.need_snapshot and not sync.synced
    # Bybit service restart: u=1 snapshot replaces whatever we had
    out = sync.on_update(upd(1, 1, bids=[("50", "1")], snapshot=True))
    assert out.resynced and sync.last_u == 1 and sync.book is not None and sync.book.bids == {D("50"): D("1")}
    assert sync.on_update(upd(2, 2, asks=[("51", "1")])).applied == 1
