"""Time bars from trades (incremental) and from exchange klines, with the same field names.

`TradeBarBuilder` is used tick by tick by the streaming worker and, unchanged, by the training loaders, so a bar
means the same thing in both places. It emits every interval, including empty ones (a quiet market is information,
and the window length in bars must equal a fixed span of time), and marks bars `incomplete` when told the input
had a gap there (a sequence jump or a reconnect), so a window built on lost trades can be scored with care.

Why empty bars are capped: a quiet stretch is filled with empty bars only up to `max_gap_ms`; after that the builder
stops emitting and, when the next trade comes, jumps to it and flags its bar `incomplete` (one gap mark). Without
the cap one absurd timestamp (a trade stamped in the year 5000, a one-year hole in a file) meant a bar per empty
interval up to it: gigabytes and minutes of work for one input.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

# What a trade may be: a price outside [MIN_PRICE, MAX_PRICE] or a size over MAX_SIZE is no market's (a subnormal
# price next to a huge one made close / vwap underflow to 0 and the features' log fail); within them quote volumes
# and every ratio the features take stay finite and non-zero.
MIN_PRICE = 1e-15
MAX_PRICE = 1e15
MAX_SIZE = 1e15


@dataclass(slots=True)
class TimeBar:
    """One closed time bar. Volumes: `volume` in base units, `quote_volume` in quote units (BTC for SYM/BTC).

    Fields a source cannot know are None (klines without trade counts or taker volume, klines never have rush
    orders); `MarketFeatureState` treats them as neutral.
    """

    start_ms: int
    interval_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    quote_volume: float
    vwap: float
    trades: int | None = 0
    taker_buy_volume: float | None = 0.0  # base units
    taker_sell_volume: float | None = 0.0
    taker_buy_quote: float | None = 0.0
    rush_orders: int | None = 0  # buy-side rush orders (La Morgia et al.)
    rush_sell_orders: int | None = 0
    incomplete: bool = False

    @property
    def end_ms(self) -> int:
        return self.start_ms + self.interval_ms

    @property
    def empty(self) -> bool:
        return self.volume <= 0.0

    @property
    def imbalance(self) -> float:
        """(taker buy - taker sell) / (buy + sell) base volume in [-1, 1]; 0 when unknown or empty."""
        if self.taker_buy_volume is None or self.taker_sell_volume is None:
            return 0.0
        total = self.taker_buy_volume + self.taker_sell_volume
        return 0.0 if total <= 0.0 else (self.taker_buy_volume - self.taker_sell_volume) / total


@dataclass(slots=True)
class _Acc:
    """Accumulator of one open bar (trades may arrive out of order within the allowed lateness)."""

    first_ts: int
    open: float
    last_ts: int
    close: float
    high: float
    low: float
    volume: float = 0.0
    quote: float = 0.0
    trades: int = 0
    buy: float = 0.0
    sell: float = 0.0
    buy_quote: float = 0.0
    rush_buy: int = 0
    rush_sell: int = 0
    same_ms: dict[int, int] = field(default_factory=dict)  # (millisecond * 2 + taker buy) -> trades


class TradeBarBuilder:
    """Incremental trade -> bar aggregation on event time.

    A bar [s, s + interval) closes once the watermark (the latest trade time seen, or the time given to
    `advance`) reaches s + interval + allowed_lateness_ms. A trade older than the oldest open bar is late: it is
    counted in `late_trades` and dropped (its bar is already out). A rush order is a taker order that the exchange
    reports as several trades in the same millisecond on the same side (La Morgia et al.): the second trade of a
    (millisecond, side) group counts one rush order, later ones add nothing.

    At most `max_gap_ms` of consecutive empty bars are emitted; past that the builder skips to the next trade's bar
    (or to the watermark) and flags the next bar incomplete: `gaps_skipped` and `skipped_bars` count these jumps.
    Work per call is bounded by the gap cap plus the open bars (`allowed_lateness_ms` / interval), whatever the
    timestamps.
    """

    def __init__(self, interval_ms: int = 5000, allowed_lateness_ms: int = 0, max_gap_ms: int = 3_600_000) -> None:
        if interval_ms <= 0:
            raise ValueError("interval_ms must be positive")
        if allowed_lateness_ms < 0:
            raise ValueError("allowed_lateness_ms must be >= 0")
        if max_gap_ms <= 0:
            raise ValueError("max_gap_ms must be positive")
        self.interval_ms = interval_ms
        self.allowed_lateness_ms = allowed_lateness_ms
        self.max_empty_bars = max(1, max_gap_ms // interval_ms)
        self._empty_run = 0  # consecutive empty bars emitted
        self._after_skip = False  # the next bar follows a skipped gap: flag it incomplete
        self.gaps_skipped = 0
        self.skipped_bars = 0
        self._open: dict[int, _Acc] = {}
        self._next_start: int | None = None  # start of the next bar to emit
        self._watermark: int | None = None
        self._last_close: float | None = None
        self._gaps: list[tuple[int, int]] = []
        self.late_trades = 0

    def add_trade(
        self,
        ts_ms: int,
        price: float,
        size: float,
        taker_buy: bool,
        quote: float | None = None,
    ) -> list[TimeBar]:
        """Add one trade; return the bars this closed (oldest first, empty intervals included)."""
        # the hot path of the worker (once per tick): comparisons instead of isfinite calls (NaN fails them), one
        # int key per (millisecond, side), and the watermark check inlined; `advance` only when a bar may close
        if not (MIN_PRICE <= price <= MAX_PRICE) or not (0.0 <= size <= MAX_SIZE):
            raise ValueError(f"bad trade price={price!r} size={size!r}")
        start = ts_ms - ts_ms % self.interval_ms
        nxt = self._next_start
        if nxt is None:
            nxt = self._next_start = start
        if start < nxt:
            self.late_trades += 1
            return self.advance(ts_ms)
        q = price * size if quote is None else quote
        acc = self._open.get(start)
        if acc is None:
            acc = _Acc(first_ts=ts_ms, open=price, last_ts=ts_ms, close=price, high=price, low=price)
            self._open[start] = acc
        else:
            if ts_ms < acc.first_ts:
                acc.first_ts, acc.open = ts_ms, price
            if ts_ms >= acc.last_ts:
                acc.last_ts, acc.close = ts_ms, price
            if price > acc.high:
                acc.high = price
            elif price < acc.low:
                acc.low = price
        acc.volume += size
        acc.quote += q
        acc.trades += 1
        same = acc.same_ms
        if taker_buy:
            acc.buy += size
            acc.buy_quote += q
            key = ts_ms * 2 + 1
        else:
            acc.sell += size
            key = ts_ms * 2
        n = same.get(key, 0) + 1
        same[key] = n
        if n == 2:
            if taker_buy:
                acc.rush_buy += 1
            else:
                acc.rush_sell += 1
        wm = self._watermark
        if wm is None or ts_ms > wm:
            self._watermark = wm = ts_ms
        if nxt + self.interval_ms > wm - self.allowed_lateness_ms:
            return []  # no bar can close yet (most ticks)
        return self.advance(ts_ms)

    def notify_gap(self, start_ms: int, end_ms: int) -> None:
        """Input was lost in [start_ms, end_ms]: bars overlapping it (open now or later) are flagged incomplete."""
        if end_ms < start_ms:
            start_ms, end_ms = end_ms, start_ms
        self._gaps.append((start_ms, end_ms))

    def advance(self, now_ms: int) -> list[TimeBar]:
        """Move the watermark to `now_ms` (event time; call it on a timer when the market is quiet)."""
        if self._watermark is None or now_ms > self._watermark:
            self._watermark = now_ms
        if self._next_start is None:
            return []
        limit = self._watermark - self.allowed_lateness_ms
        return self._emit(limit - limit % self.interval_ms)

    def flush(self) -> list[TimeBar]:
        """Close every open bar (end of a replay file)."""
        if self._next_start is None:
            return []
        last = max(self._open) if self._open else self._next_start - self.interval_ms
        return self._emit(last + self.interval_ms)

    def _emit(self, stop: int) -> list[TimeBar]:
        """Close the bars starting before `stop` (a bar boundary), empty runs capped at `max_empty_bars`."""
        out: list[TimeBar] = []
        iv = self.interval_ms
        opened = self._open
        while self._next_start is not None and self._next_start < stop:
            s = self._next_start
            if s not in opened and self._empty_run >= self.max_empty_bars:
                # a stretch longer than the gap cap: jump to the next bar with trades (or to `stop`), one mark
                nxt = min(opened) if opened else stop
                target = min(nxt, stop)
                self.gaps_skipped += 1
                self.skipped_bars += (target - s) // iv
                self._after_skip = True
                self._gaps = [g for g in self._gaps if g[1] >= target]
                self._next_start = target
                continue
            bar = self._close(s)
            if bar is not None:
                out.append(bar)
            self._next_start = s + iv
        return out

    def _is_gap(self, start: int, end: int) -> bool:
        hit = any(g0 < end and g1 >= start for g0, g1 in self._gaps)
        self._gaps = [g for g in self._gaps if g[1] >= end]
        return hit

    def _close(self, start: int) -> TimeBar | None:
        acc = self._open.pop(start, None)
        end = start + self.interval_ms
        incomplete = self._is_gap(start, end) or self._after_skip
        if acc is None:
            if self._last_close is None:
                return None
            self._empty_run += 1
            self._after_skip = False
            c = self._last_close
            return TimeBar(start, self.interval_ms, c, c, c, c, 0.0, 0.0, c, 0, 0.0, 0.0, 0.0, 0, 0, incomplete)
        self._empty_run = 0
        self._after_skip = False
        self._last_close = acc.close
        vwap = acc.quote / acc.volume if acc.volume > 0.0 else acc.close
        return TimeBar(
            start_ms=start,
            interval_ms=self.interval_ms,
            open=acc.open,
            high=acc.high,
            low=acc.low,
            close=acc.close,
            volume=acc.volume,
            quote_volume=acc.quote,
            vwap=vwap,
            trades=acc.trades,
            taker_buy_volume=acc.buy,
            taker_sell_volume=acc.sell,
            taker_buy_quote=acc.buy_quote,
            rush_orders=acc.rush_buy,
            rush_sell_orders=acc.rush_sell,
            incomplete=incomplete,
        )


def bars_from_trades(
    ts_ms: Sequence[int],
    price: Sequence[float],
    size: Sequence[float],
    taker_buy: Sequence[bool],
    interval_ms: int = 5000,
    quote: Sequence[float] | None = None,
    max_gap_ms: int = 3_600_000,
) -> list[TimeBar]:
    """All bars of a time-sorted trade list through `TradeBarBuilder` (the path training uses)."""
    builder = TradeBarBuilder(interval_ms=interval_ms, max_gap_ms=max_gap_ms)
    out: list[TimeBar] = []
    for i in range(len(ts_ms)):
        q = None if quote is None else float(quote[i])
        out.extend(builder.add_trade(int(ts_ms[i]), float(price[i]), float(size[i]), bool(taker_buy[i]), q))
    out.extend(builder.flush())
    return out


def _num(x: float | int | None) -> float:
    if x is None:
        raise ValueError("missing kline value")
    return float(x)


def bars_from_klines(
    rows: Iterable[Sequence[float | int | None]],
    interval_ms: int = 60_000,
    fill_gaps: bool = True,
    max_gap_ms: int = 3_600_000,
) -> list[TimeBar]:
    """Bars from kline rows `(open_time_ms, open, high, low, close, volume[, quote_volume, trades,
    taker_buy_base, taker_buy_quote])`. Missing columns become None (freqtrade caches have only OHLCV).

    Missing intervals (exchange maintenance) become empty bars flagged `incomplete`: the data was lost, not quiet.
    At most `max_gap_ms` of them per hole (at least one); the bar after a longer hole is flagged `incomplete` too.
    """
    max_fill = max(1, max_gap_ms // interval_ms)
    out: list[TimeBar] = []
    for row in rows:
        t = int(_num(row[0]))
        o, h, lo, c, v = (_num(x) for x in row[1:6])
        qv = _num(row[6]) if len(row) > 6 and row[6] is not None else v * (o + h + lo + c) / 4.0
        n = int(_num(row[7])) if len(row) > 7 and row[7] is not None else None
        tb = _num(row[8]) if len(row) > 8 and row[8] is not None else None
        tbq = _num(row[9]) if len(row) > 9 and row[9] is not None else None
        hole = False
        if fill_gaps and out:
            prev = out[-1]
            s = prev.start_ms + interval_ms
            stop = min(t, s + max_fill * interval_ms)
            hole = stop < t
            while s < stop:
                pc = prev.close
                z_n = None if n is None else 0
                z_t = None if tb is None else 0.0
                out.append(TimeBar(s, interval_ms, pc, pc, pc, pc, 0.0, 0.0, pc, z_n, z_t, z_t, z_t, None, None, True))
                s += interval_ms
        sell = None if tb is None else max(v - tb, 0.0)
        vwap = qv / v if v > 0.0 else c
        out.append(TimeBar(t, interval_ms, o, h, lo, c, v, qv, vwap, n, tb, sell, tbq, None, None, hole))
    return out
