"""TradeBarBuilder and bars_from_klines: what a bar means, for training and serving alike."""

from __future__ import annotations

import random

import pytest

from service.features import TimeBar, TradeBarBuilder, bars_from_klines, bars_from_trades


def test_ohlcv_vwap_taker_split_and_empty_bars() -> None:
    b = TradeBarBuilder(interval_ms=5000)
    out: list[TimeBar] = []
    out += b.add_trade(1000, 10.0, 1.0, True)
    out += b.add_trade(2000, 12.0, 3.0, False)
    out += b.add_trade(4999, 11.0, 2.0, True)
    assert out == []  # bar [0, 5000) still open
    out += b.add_trade(17_000, 9.0, 1.0, True)  # closes [0,5000), [5000,10000), [10000,15000)
    assert [x.start_ms for x in out] == [0, 5000, 10000]
    first = out[0]
    assert (first.open, first.high, first.low, first.close) == (10.0, 12.0, 10.0, 11.0)
    assert first.volume == 6.0 and first.trades == 3
    assert first.quote_volume == pytest.approx(10 + 36 + 22)
    assert first.vwap == pytest.approx(68 / 6)
    assert first.taker_buy_volume == 3.0 and first.taker_sell_volume == 3.0
    assert first.imbalance == 0.0
    for empty in out[1:]:
        assert empty.empty and empty.trades == 0 and empty.close == 11.0 == empty.open
    rest = b.flush()
    assert [x.start_ms for x in rest] == [15000] and rest[0].close == 9.0


def test_rush_orders_same_millisecond_same_side() -> None:
    b = TradeBarBuilder(interval_ms=5000)
    for _ in range(3):  # one rush order (three fills of one buy order)
        b.add_trade(100, 1.0, 1.0, True)
    b.add_trade(100, 1.0, 1.0, False)  # a single sell at the same ms: no rush
    b.add_trade(200, 1.0, 1.0, True)  # single buy: no rush
    b.add_trade(300, 1.0, 1.0, False)
    b.add_trade(300, 1.0, 1.0, False)  # sell rush
    b.add_trade(400, 1.0, 1.0, True)
    b.add_trade(400, 1.0, 1.0, True)  # second buy rush
    (bar,) = b.flush()
    assert bar.rush_orders == 2 and bar.rush_sell_orders == 1 and bar.trades == 9


def test_allowed_lateness_late_trades_and_gaps() -> None:
    b = TradeBarBuilder(interval_ms=1000, allowed_lateness_ms=500)
    b.add_trade(100, 1.0, 1.0, True)
    assert b.add_trade(1200, 2.0, 1.0, True) == []  # bar [0,1000) waits for lateness
    assert b.add_trade(900, 3.0, 1.0, True) == []  # late but within lateness: joins bar 0
    closed = b.add_trade(1600, 2.0, 1.0, True)
    assert [x.start_ms for x in closed] == [0] and closed[0].close == 3.0 and closed[0].trades == 2
    assert b.add_trade(50, 9.0, 1.0, True) == []  # too late: dropped and counted
    assert b.late_trades == 1
    b.notify_gap(2100, 2200)
    closed = b.advance(5000)
    assert [(x.start_ms, x.incomplete) for x in closed] == [(1000, False), (2000, True), (3000, False)]


def test_chunked_stream_matches_batch() -> None:
    rng = random.Random(3)
    ts = sorted(rng.randrange(0, 600_000) for _ in range(2000))
    px = [1.0 + rng.random() for _ in ts]
    sz = [rng.random() for _ in ts]
    side = [rng.random() < 0.5 for _ in ts]
    batch = bars_from_trades(ts, px, sz, side, interval_ms=5000)
    b = TradeBarBuilder(interval_ms=5000)
    stream: list[TimeBar] = []
    for i, t in enumerate(ts):
        stream += b.add_trade(t, px[i], sz[i], side[i])
        if i % 97 == 0:
            stream += b.advance(t + 3)  # timer ticks in between change nothing
    stream += b.flush()
    assert stream == batch
    assert [x.start_ms for x in batch] == list(range(batch[0].start_ms, batch[-1].start_ms + 1, 5000))
    assert sum(x.trades or 0 for x in batch) == len(ts)


def test_klines_same_names_and_gap_fill() -> None:
    rows = [
        (0, 1.0, 2.0, 0.5, 1.5, 10.0, 15.0, 7, 6.0, 9.0),
        (60_000, 1.5, 1.6, 1.4, 1.4, 4.0, 6.0, 3, 1.0, 1.5),
        (180_000, 1.4, 1.4, 1.4, 1.4, 1.0, 1.4, 1, 0.0, 0.0),
    ]
    bars = bars_from_klines(rows, interval_ms=60_000)
    assert [b.start_ms for b in bars] == [0, 60_000, 120_000, 180_000]
    assert bars[0].trades == 7 and bars[0].taker_sell_volume == 4.0 and bars[0].vwap == 1.5
    assert bars[2].incomplete and bars[2].empty and bars[2].trades == 0
    ohlcv = bars_from_klines([(0, 1.0, 1.0, 1.0, 1.0, 2.0)])
    assert ohlcv[0].trades is None and ohlcv[0].rush_orders is None and ohlcv[0].imbalance == 0.0
    assert ohlcv[0].quote_volume == 2.0


def test_rejects_bad_trades() -> None:
    b = TradeBarBuilder()
    with pytest.raises(ValueError):
        b.add_trade(0, float("nan"), 1.0, True)
    with pytest.raises(ValueError):
        b.add_trade(0, 1.0, -1.0, True)
