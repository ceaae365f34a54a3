"""Time sanity of the bar builder: adversarial timestamps cost bounded work and memory, long holes are one gap mark."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from service.features import TimeBar as Bar
from service.features import TradeBarBuilder, bars_from_klines
from service.schemas.eventtime import TimeBounds

YEAR_MS = 365 * 86_400_000


def test_a_year_5000_trade_is_one_gap_mark_not_a_bar_per_interval() -> None:
    b = TradeBarBuilder(interval_ms=5000, max_gap_ms=60_000)  # 12 empty bars at most
    t0 = 1_700_000_000_000
    assert b.add_trade(t0, 100.0, 1.0, True) == []
    out = b.add_trade(95_617_584_000_000, 101.0, 2.0, False)  # the year 5000
    assert out[0].start_ms == t0 - t0 % 5000 and out[0].volume == 1.0
    assert len(out) == 1 + 12 and all(x.empty and not x.incomplete for x in out[1:])
    assert b.gaps_skipped == 1 and b.skipped_bars > 10**9
    last = b.flush()
    assert len(last) == 1 and last[0].volume == 2.0 and last[0].incomplete  # the gap mark
    assert last[0].start_ms == 95_617_584_000_000 - 95_617_584_000_000 % 5000


def test_quiet_stretches_within_the_cap_stay_empty_bars() -> None:
    b = TradeBarBuilder(interval_ms=5000, max_gap_ms=60_000)
    b.add_trade(0, 1.0, 1.0, True)
    out = b.add_trade(50_000, 1.0, 1.0, True)  # 9 empty bars between: within the cap
    assert [x.start_ms for x in out] == list(range(0, 50_000, 5000))
    assert not any(x.incomplete for x in out) and b.gaps_skipped == 0


def test_the_timer_path_stops_emitting_at_the_cap_and_marks_the_next_bar() -> None:
    b = TradeBarBuilder(interval_ms=5000, max_gap_ms=20_000)
    b.add_trade(0, 1.0, 1.0, True)
    emitted = []
    for now in range(5000, 3_600_000, 5000):  # an hour of timer ticks on a silent market
        emitted += b.advance(now)
    assert len(emitted) == 1 + 4  # the traded bar, then the cap's 4 empty bars
    out = b.add_trade(3_600_000, 2.0, 1.0, False)
    out += b.advance(3_605_000)
    assert [x.start_ms for x in out] == [3_600_000] and out[0].incomplete and out[0].volume == 1.0


def test_kline_holes_are_capped_and_marked() -> None:
    rows = [(0, 1, 1, 1, 1, 1), (60_000, 1, 1, 1, 1, 1), (60_000 + YEAR_MS, 2, 2, 2, 2, 1)]
    bars = bars_from_klines(rows, interval_ms=60_000, max_gap_ms=600_000)
    assert len(bars) == 2 + 10 + 1
    assert bars[-1].incomplete and bars[-1].start_ms == 60_000 + YEAR_MS and bars[-1].volume == 1
    assert not bars[1].incomplete and all(b.incomplete and b.empty for b in bars[2:12])


def test_time_bounds_reasons() -> None:
    tb = TimeBounds(max_future_ms=300_000, max_past_ms=86_400_000)
    now = 1_800_000_000_000
    assert tb.refuse(now, now) is None and tb.refuse(now + 299_000, now) is None
    assert "after now" in (tb.refuse(95_617_584_000_000, now) or "")
    assert "in seconds" in (tb.refuse(now // 1000, now) or "")
    assert tb.refuse(now - YEAR_MS, now, live=False) is None  # files are history
    assert "before now" in (tb.refuse(now - YEAR_MS, now) or "")


INTERVAL = 1000
CAP_BARS = 30
LATENESS = 3000

timestamps = st.one_of(
    st.integers(0, 10**14),  # anywhere up to the year 5138
    st.integers(-50_000, 50_000).map(lambda d: 1_700_000_000_000 + d),  # close together, out of order
    st.sampled_from([0, 1, 10**13, 10**14, 2**53, 1_700_000_000_000]),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(timestamps, st.booleans(), st.booleans()), min_size=1, max_size=60))
def test_adversarial_timestamps_bounded_work_memory_and_no_lost_volume(
    trades: list[tuple[int, bool, bool]],
) -> None:
    """Whatever the timestamps: each call emits at most the gap cap plus the open bars, the builder holds at most
    the open bars of its lateness, bars come out in time order and never overlap, and every accepted trade's size
    is in exactly one emitted bar (late ones are counted, not lost silently)."""
    b = TradeBarBuilder(interval_ms=INTERVAL, allowed_lateness_ms=LATENESS, max_gap_ms=CAP_BARS * INTERVAL)
    per_call = CAP_BARS + LATENESS // INTERVAL + 2
    out: list[Bar] = []
    accepted = 0.0
    for i, (ts, buy, tick) in enumerate(trades):
        size = float(i + 1)
        late = b.late_trades
        if tick:
            got = b.advance(ts)
        else:
            got = b.add_trade(ts, 10.0, size, buy)
            if b.late_trades == late:
                accepted += size
        assert len(got) <= per_call
        assert len(b._open) <= LATENESS // INTERVAL + 2
        assert len(b._gaps) <= len(trades)
        out += got
    tail = b.flush()
    assert len(tail) <= per_call
    out += tail
    starts = [x.start_ms for x in out]
    assert starts == sorted(set(starts))
    assert sum(x.volume for x in out) == accepted
    assert sum(x.trades or 0 for x in out) == len([1 for _, _, tick in trades if not tick]) - b.late_trades
