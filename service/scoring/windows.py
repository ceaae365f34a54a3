"""Per-key sliding windows: incremental bars, O(1) features, and a ring of the last T bars' feature vectors.

Why a ring buffer: every tick costs a dict lookup and an accumulator update; every closed bar costs one feature
update (O(1), service/features) and one row write into a preallocated [T, F] array. Only when a window is handed
to the model is it copied out in time order. Memory per key is fixed (T x F floats plus the feature state plus
a ring of H bar offsets), keys idle longer than the eviction time are dropped, and the number of keys is capped.

Why the bar offsets: a restarted worker rebuilds a key's windows by re-reading its recent history from the bus.
For that the committed offset of a partition may not pass the first record of the oldest bar any of its keys
still needs: enough bars before the key's last *produced* window (its checkpointed mark) that the rebuilt
state scores the very next window (window length and feature warm-up). `needed_offset` says which record that is;
a ring of the first offsets of the last `history` bars (plus slack for a lagging queue) answers in O(1).
"""

from __future__ import annotations

import dataclasses
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from service.bus.base import TopicPartition
from service.features.bars import TimeBar, TradeBarBuilder, bars_from_klines
from service.features.market import MarketFeatureState
from service.features.sets import FeatureState, feature_set
from service.features.spec import DEFAULT_PARAMS, FeatureParams
from service.features.trade_context import TradeContext
from service.schemas.market import Bar as MarketBar
from service.schemas.market import Gap, Trade


@dataclass(slots=True)
class ClosedWindow:
    """A full window ready for scoring (unscaled features, oldest bar first)."""

    key: str
    window_end_ms: int
    features: np.ndarray  # float32 [T, F]
    incomplete: bool
    last_event_ms: int  # event time of the newest tick inside the window
    trigger_ingest_ms: int  # ingest time of the record that closed it (tick-to-score starts here)
    close: float  # close price of the last bar (cross-venue checks)
    tp: TopicPartition | None = None
    offset: int = -1  # offset of the record that closed it
    scorable: bool = True  # False while the feature state is still warming up
    lane: str = ""  # "" for the worker's main model; "kline" for the kline lane (service/scoring/kline_lane.py)

    @property
    def mark_key(self) -> str:
        """The key its mark and alert-policy state live under (one per model lane of a market key)."""
        return f"{self.key}@{self.lane}" if self.lane else self.key


def market_bar_to_feature_bar(bar: MarketBar) -> TimeBar:
    """A closed exchange candle as service/features' TimeBar, through the same conversion as kline files."""
    interval = bar.close_time_ms - bar.open_time_ms + 1
    if interval % 1000 == 999:
        interval += 1  # close time given as the next open time
    row = (
        bar.open_time_ms,
        float(bar.open),
        float(bar.high),
        float(bar.low),
        float(bar.close),
        float(bar.volume),
        None if bar.quote_volume is None else float(bar.quote_volume),
        bar.trades,
        None if bar.taker_buy_volume is None else float(bar.taker_buy_volume),
        None,
    )
    out = bars_from_klines([row], interval_ms=interval, fill_gaps=False)[0]
    out.incomplete = bar.incomplete
    return out


@dataclass(slots=True)
class KeyState:
    key: str
    window: int
    n_features: int
    history: int
    builder: TradeBarBuilder | None
    feats: FeatureState
    warmup: int
    tp: TopicPartition | None = None
    ring: np.ndarray = field(init=False)
    flags: np.ndarray = field(init=False)
    head: int = 0  # next row to write
    count: int = 0
    n_incomplete: int = 0
    offsets: np.ndarray = field(init=False)  # first record offset of each of the last `history` bars
    o_head: int = 0
    o_count: int = 0
    first_offset: int = -1
    open_offsets: dict[int, int] = field(default_factory=dict)  # bar start -> first record offset
    last_bar_offset: int = -1
    last_event_ms: int = 0
    last_bar_start: int | None = None
    bar_interval_ms: int | None = None
    last_close: float = 0.0
    touched: float = 0.0
    prints: TradeContext = field(default_factory=TradeContext)  # recent trades, published for the API's scorer

    def __post_init__(self) -> None:
        self.ring = np.zeros((self.window, self.n_features), dtype=np.float32)
        self.flags = np.zeros(self.window, dtype=np.bool_)
        self.offsets = np.zeros(max(self.history, 1), dtype=np.int64)

    def oldest_offset(self) -> int:
        if self.o_count < len(self.offsets):
            return self.first_offset
        return int(self.offsets[self.o_head])  # the oldest entry (ring is full; head points at it)

    def needed_offset(self, produced_end_ms: int | None, rebuild_bars: int) -> int:
        """Re-reading from this offset rebuilds the state so that the window after `produced_end_ms` (the last
        window whose outputs are checkpointed; None: none yet) is scored again: its first record `rebuild_bars`
        bars earlier. Falls back to the oldest offset held when the ring does not reach that far back."""
        if produced_end_ms is None or self.last_bar_start is None or not self.bar_interval_ms:
            return self.first_offset if produced_end_ms is None else self.oldest_offset()
        start = produced_end_ms - rebuild_bars * self.bar_interval_ms
        back = (self.last_bar_start - start) // self.bar_interval_ms  # 0 = the newest bar
        if back < 0 or back >= self.o_count:
            return self.oldest_offset()
        return int(self.offsets[(self.o_head - 1 - back) % len(self.offsets)])

    def _push_offset(self, off: int) -> None:
        self.offsets[self.o_head] = off
        self.o_head = (self.o_head + 1) % len(self.offsets)
        self.o_count = min(self.o_count + 1, len(self.offsets))

    def push_bar(self, bar: TimeBar, ingest_ms: int, offset: int) -> ClosedWindow | None:
        """Feature-update one closed bar; return the window ending with it once T bars are held."""
        first = self.open_offsets.pop(bar.start_ms, None)
        if first is not None:
            self.last_bar_offset = first
        self._push_offset(self.last_bar_offset if first is None else first)
        row = self.feats.update(bar)
        if self.flags[self.head]:
            self.n_incomplete -= 1
        self.ring[self.head] = row
        self.flags[self.head] = bar.incomplete
        if bar.incomplete:
            self.n_incomplete += 1
        self.head = (self.head + 1) % self.window
        self.count = min(self.count + 1, self.window)
        self.last_close = bar.close
        self.last_bar_start = bar.start_ms
        self.bar_interval_ms = bar.interval_ms
        if self.count < self.window:
            return None
        ordered = np.concatenate((self.ring[self.head :], self.ring[: self.head])) if self.head else self.ring.copy()
        return ClosedWindow(
            key=self.key,
            window_end_ms=bar.end_ms,
            features=ordered,
            incomplete=self.n_incomplete > 0,
            last_event_ms=min(self.last_event_ms, bar.end_ms - 1) if self.last_event_ms else bar.end_ms - 1,
            trigger_ingest_ms=ingest_ms,
            close=bar.close,
            tp=self.tp,
            offset=offset,
            scorable=self.feats.bars_seen >= self.warmup,
        )


class WindowStore:
    """All keys' window state for one worker (or one offline run)."""

    def __init__(
        self,
        window: int,
        n_features: int,
        bar_interval_ms: int,
        *,
        allowed_lateness_ms: int = 0,
        idle_eviction_s: float = 900.0,
        max_keys: int = 100_000,
        warmup_bars: int | None = None,
        history_bars: int | None = None,
        params: FeatureParams = DEFAULT_PARAMS,
        max_gap_ms: int = 3_600_000,
        features: str = "market",
    ) -> None:
        """`features` names the service/features set the model takes (its manifest's `feature_set`): "market"
        builds `MarketFeatureState(params)` per key, "kline" the kline features (exchange candles only)."""
        self.window = window
        self.max_gap_ms = max_gap_ms  # longest quiet stretch filled with empty bars (service/features/bars.py)
        self.n_features = n_features
        self.bar_interval_ms = bar_interval_ms
        self.lateness = allowed_lateness_ms
        self.idle_s = idle_eviction_s
        self.max_keys = max_keys
        self.params = params
        self.features = features
        fs = feature_set(features)
        self._new_state = (lambda: MarketFeatureState(params)) if features == "market" else fs.new_state
        default_warmup = params.warmup if features == "market" else fs.warmup
        self.warmup = default_warmup if warmup_bars is None else warmup_bars
        self.history = window + self.warmup if history_bars is None else max(history_bars, window)
        self.rebuild_bars = max(self.warmup, window) + 1  # bars re-read before a mark to score the next window
        self.ring_bars = self.history + max(64, self.history // 2)  # slack: marks lag behind closed bars
        self.keys: OrderedDict[str, KeyState] = OrderedDict()
        self.late_ticks = 0
        self.evicted = 0
        self.max_event_ms = 0
        self.max_event_by_tp: dict[TopicPartition | None, int] = {}

    def __len__(self) -> int:
        return len(self.keys)

    def __iter__(self) -> Iterator[KeyState]:
        return iter(self.keys.values())

    def _state(self, key: str, tp: TopicPartition | None, offset: int, trades: bool) -> KeyState:
        st = self.keys.get(key)
        if st is None:
            if len(self.keys) >= self.max_keys:
                self.keys.popitem(last=False)
                self.evicted += 1
            st = KeyState(
                key=key,
                window=self.window,
                n_features=self.n_features,
                history=self.ring_bars,
                builder=TradeBarBuilder(self.bar_interval_ms, self.lateness, self.max_gap_ms) if trades else None,
                feats=self._new_state(),
                warmup=self.warmup,
                tp=tp,
                first_offset=offset,
                last_bar_offset=offset,
            )
            self.keys[key] = st
        else:
            self.keys.move_to_end(key)
        st.touched = time.monotonic()
        return st

    def on_trade(
        self,
        key: str,
        ts_ms: int,
        price: float,
        size: float,
        taker_buy: bool,
        *,
        ingest_ms: int = 0,
        offset: int = -1,
        tp: TopicPartition | None = None,
        incomplete: bool = False,
    ) -> list[ClosedWindow]:
        """One tick; returns the windows it closed (usually none, at most a few after a quiet spell)."""
        keys = self.keys
        st = keys.get(key)
        if st is None:
            st = self._state(key, tp, offset, trades=True)
        else:  # the common case, inlined: `_state` for a known key
            keys.move_to_end(key)
            st.touched = time.monotonic()
        b = st.builder
        if b is None:  # this key was fed by bars; trades win from now on
            b = st.builder = TradeBarBuilder(self.bar_interval_ms, self.lateness, self.max_gap_ms)
        if ts_ms > self.max_event_ms:
            self.max_event_ms = ts_ms
        by_tp = self.max_event_by_tp
        if ts_ms > by_tp.get(tp, 0):
            by_tp[tp] = ts_ms
        start = ts_ms - ts_ms % self.bar_interval_ms
        opens = st.open_offsets
        new = start not in opens
        if new:
            opens[start] = offset
        if incomplete and st.last_event_ms:
            b.notify_gap(st.last_event_ms, ts_ms)
        late = b.late_trades
        try:
            bars = b.add_trade(ts_ms, price, size, taker_buy)
        except ValueError:  # a trade no bar can hold: leave no trace of it
            if new:
                opens.pop(start, None)
            raise
        if b.late_trades > late:
            self.late_ticks += 1
            if new:
                opens.pop(start, None)
        else:
            st.prints.add(ts_ms, price, size, taker_buy)
            if ts_ms > st.last_event_ms:
                st.last_event_ms = ts_ms
        if not bars:
            return []
        out: list[ClosedWindow] = []
        for bar in bars:
            w = st.push_bar(bar, ingest_ms, offset)
            if w is not None:
                out.append(w)
        return out

    def on_gap(self, key: str, from_ms: int, to_ms: int) -> None:
        st = self.keys.get(key)
        if st is not None and st.builder is not None:
            st.builder.notify_gap(from_ms, to_ms)

    def on_bar(
        self, key: str, bar: TimeBar, *, ingest_ms: int = 0, offset: int = -1, tp: TopicPartition | None = None
    ) -> list[ClosedWindow]:
        """A closed exchange bar (klines); missing intervals become empty bars flagged incomplete."""
        st = self._state(key, tp, offset, trades=False)
        if st.builder is not None:
            return []  # trade-fed key: its own trade bars are the truth
        if st.last_bar_start is not None and bar.start_ms <= st.last_bar_start:
            return []  # duplicate or out of order candle
        st.open_offsets[bar.start_ms] = offset
        out: list[ClosedWindow] = []
        if st.last_bar_start is not None:
            s = st.last_bar_start + bar.interval_ms
            stop = min(bar.start_ms, s + max(1, self.max_gap_ms // bar.interval_ms) * bar.interval_ms)
            if stop < bar.start_ms:  # a hole longer than the gap cap: filled up to the cap, then one gap mark
                bar = dataclasses.replace(bar, incomplete=True)
            while s < stop:
                c = st.last_close
                fill = TimeBar(s, bar.interval_ms, c, c, c, c, 0.0, 0.0, c, 0, 0.0, 0.0, 0.0, None, None, True)
                w = st.push_bar(fill, ingest_ms, offset)
                if w is not None:
                    out.append(w)
                s += bar.interval_ms
        st.last_event_ms = max(st.last_event_ms, bar.end_ms - 1)
        self.max_event_ms = max(self.max_event_ms, bar.end_ms - 1)
        w = st.push_bar(bar, ingest_ms, offset)
        if w is not None:
            out.append(w)
        return out

    def advance(self, event_ms: int | None = None, ingest_ms: int = 0, lag_ms: int = 0) -> list[ClosedWindow]:
        """Close bars of quiet keys (O(keys), on a timer) up to `event_ms`, or by default up to the newest event
        time seen in the key's own partition minus `lag_ms`. Per partition because partitions are consumed
        independently: after a restart one may be read minutes ahead of another, and a watermark taken across
        them would close the bars of the lagging one before its ticks arrive."""
        out: list[ClosedWindow] = []
        for st in self.keys.values():
            if st.builder is None:
                continue
            wm = event_ms if event_ms is not None else self.max_event_by_tp.get(st.tp, 0) - lag_ms
            for bar in st.builder.advance(wm):
                w = st.push_bar(bar, ingest_ms, -1)
                if w is not None:
                    out.append(w)
        return out

    def flush(self) -> list[ClosedWindow]:
        """Close every open bar (end of a file)."""
        out: list[ClosedWindow] = []
        for st in self.keys.values():
            if st.builder is None:
                continue
            for bar in st.builder.flush():
                w = st.push_bar(bar, 0, -1)
                if w is not None:
                    out.append(w)
        return out

    def evict_idle(self, now: float | None = None) -> int:
        """Drop keys untouched for longer than the idle time (oldest first: O(evicted))."""
        now = time.monotonic() if now is None else now
        n = 0
        while self.keys:
            key, st = next(iter(self.keys.items()))
            if now - st.touched < self.idle_s:
                break
            del self.keys[key]
            n += 1
        self.evicted += n
        return n

    def drop_partition(self, tp: TopicPartition) -> int:
        """Forget the keys of a partition this worker no longer owns (after a rebalance)."""
        gone = [k for k, st in self.keys.items() if st.tp == tp]
        for k in gone:
            del self.keys[k]
        return len(gone)

    def needed_offsets(self, produced: Callable[[str], int | None]) -> dict[TopicPartition, int]:
        """Per partition, the smallest offset some key still needs to rebuild its state on a restart, given
        `produced(key)`: the end of the key's last window whose outputs are checkpointed."""
        out: dict[TopicPartition, int] = {}
        for st in self.keys.values():
            if st.tp is None:
                continue
            off = st.needed_offset(produced(st.key), self.rebuild_bars)
            if off < 0:
                continue
            cur = out.get(st.tp)
            if cur is None or off < cur:
                out[st.tp] = off
        return out


def apply_event(
    store: WindowStore,
    event: object,
    *,
    offset: int = -1,
    tp: TopicPartition | None = None,
    ingest_ms: int | None = None,
) -> list[ClosedWindow]:
    """Feed one normalised market event (service.schemas.market) into the store: the one path shared by the
    streaming worker and the offline `rmad score`, so both build identical windows from identical events."""
    if isinstance(event, Trade):
        if store.features == "kline":
            return []  # a kline model builds no bars from trades
        return store.on_trade(
            f"{event.venue}:{event.symbol}",
            event.event_time_ms,
            float(event.price),
            float(event.size),
            event.side == "buy",
            ingest_ms=event.ingest_time_ms if ingest_ms is None else ingest_ms,
            offset=offset,
            tp=tp,
            incomplete=event.incomplete,
        )
    if isinstance(event, MarketBar):
        fbar = market_bar_to_feature_bar(event)
        if fbar.interval_ms != store.bar_interval_ms:
            return []  # candles of another interval (e.g. 1 m klines beside 5 s trade bars) are not this model's
        return store.on_bar(
            event.key, fbar, ingest_ms=event.ingest_time_ms if ingest_ms is None else ingest_ms, offset=offset, tp=tp
        )
    if isinstance(event, Gap):
        if event.stream == "trades":
            store.on_gap(event.key, event.from_ms, event.to_ms)
        return []
    return []
