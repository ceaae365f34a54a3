"""The recorder's rings: bounded per key and in keys, books sampled once a second with their walls, and a capture
from its own series (as a worker, which has no tape in the state store, uses it)."""

from __future__ import annotations

from decimal import Decimal

from service.evidence.recorder import EvidenceRecorder, RecentBooks, RecentTrades
from service.schemas.market import BookTop

T0 = 1_700_000_000_000


def _book(t: int, wall: int, key: str = "X") -> BookTop:
    return BookTop(
        venue="v", symbol=key, event_time_ms=t, ingest_time_ms=t, update_id=t, best_bid=Decimal(1),
        best_ask=Decimal("1.1"), bid_size=Decimal(1), ask_size=Decimal(1),
        bids=[(Decimal(1), Decimal(1)), (Decimal("0.9"), Decimal(wall))], asks=[(Decimal("1.1"), Decimal(1))],
        imbalance=0.0,
    )  # fmt: skip


def test_rings_are_bounded_per_key_and_in_keys() -> None:
    tr = RecentTrades(per_key=10, max_keys=3)
    for k in range(5):
        for i in range(50):
            tr.add(f"k{k}", T0 + i, 1.0, 1.0, True)
    assert tr.between("k0", 0, 2 * T0) == [] and tr.between("k1", 0, 2 * T0) == []  # the oldest keys went
    got = tr.between("k4", 0, 2 * T0)
    assert len(got) == 10 and got[0]["t"] == T0 + 40


def test_books_once_a_second_with_the_largest_level() -> None:
    bk = RecentBooks(per_key=100)
    for i in range(40):  # four books a second
        bk.add(_book(T0 + i * 250, wall=900 if i % 8 < 4 else 2))
    snaps = bk.between("v:X", 0, 2 * T0)
    assert [b["t"] for b in snaps] == [T0 + i * 1000 for i in range(10)]
    assert {b["wall_bid_size"] for b in snaps} == {900.0, 2.0} and snaps[0]["wall_bid"] == 0.9


def test_capture_from_the_recorders_own_series() -> None:
    rec = EvidenceRecorder(bar_ms=5000)
    for i in range(60):
        t = T0 + i * 5000
        rec.series.add_bar("v:X", t, 1.0, 1.2, 0.9, 1.0 + (i >= 50), 3.0)
        rec.series.add_score("v:X", t, 40.0 if i >= 50 else 2.0, 30.0)
        rec.trades.add("v:X", t, 1.0 + (i >= 50), 10.0 if i >= 50 else 1.0, True)
    alert = {"id": "a", "key": "v:X", "window_end_ms": T0 + 55 * 5000, "threshold": 30.0, "score": 40.0,
             "anomaly_type": "pump_and_dump", "severity": "high"}  # fmt: skip
    ev = rec.capture(alert)
    assert ev.onset_ms == T0 + 50 * 5000 and ev.alert_ms == T0 + 55 * 5000
    assert {b.phase for b in ev.bars} == {"before", "during", "after"}
    # the rush: from one bar before the onset to one bar after the alert
    assert [t.t for t in ev.trades] == [T0 + i * 5000 for i in range(49, 57)]
    assert all(t.size == 10.0 for t in ev.trades[1:])
