"""The worker's window store: consumed market records in, closed windows out to the micro-batcher.

Per key the bars, features and window ring live in `service.scoring.windows.WindowStore` (service/features code
only). This part feeds it: the per-tick hot path for trades (and the tape rule), the general path for gap markers
and exchange bars, the queueing of closed windows (skipping the ones a previous owner produced already, by their
marks), the sweep that closes quiet keys' bars, and the window geometry of the serving model.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import msgspec

from service.bus.base import Record, TopicPartition
from service.schemas.market import decode_market_records, decode_trade_ticks
from service.scoring import metrics
from service.scoring.batcher import MicroBatcher
from service.scoring.emitter import Emitter, WorkerStats
from service.scoring.kline_lane import KlineLane
from service.scoring.registry import LoadedModel
from service.scoring.rules import RuleAlerts
from service.scoring.windows import ClosedWindow, WindowStore, apply_event
from service.settings import Settings


@dataclass(frozen=True)
class Geometry:
    """The window shape a model version needs: another one means the windows are rebuilt."""

    window: int
    n_features: int
    bar_interval_ms: int


class WindowFeed:
    def __init__(
        self,
        settings: Settings,
        emitter: Emitter,
        rules: RuleAlerts,
        batcher: MicroBatcher[ClosedWindow],
        stats: WorkerStats,
        kline: KlineLane | None = None,
    ) -> None:
        self.s = settings
        self.kline = kline  # exchange candles also scored by the kline model (None: not)
        self.emitter = emitter
        self.rules = rules
        self.batcher = batcher
        self.stats = stats
        self.geometry: Geometry | None = None
        self.store: WindowStore | None = None
        self._last_sweep = time.monotonic()

    # ------------------------------------------------------------------ geometry
    def geometry_of(self, model: LoadedModel) -> Geometry:
        m = model.artifact.manifest
        interval = self.s.scoring_bar_interval_ms or round(m.bar_interval_s * 1000)
        return Geometry(m.window, m.n_features, interval)

    def reset(self, g: Geometry) -> None:
        """Fresh (empty) windows of geometry `g`."""
        self.geometry = g
        self.store = WindowStore(
            g.window,
            g.n_features,
            g.bar_interval_ms,
            allowed_lateness_ms=self.s.scoring_allowed_lateness_ms,
            idle_eviction_s=self.s.scoring_idle_eviction_s,
            max_keys=self.s.scoring_max_keys,
            warmup_bars=self.s.scoring_warmup_bars,
            history_bars=self.s.scoring_history_bars,
            max_gap_ms=round(self.s.event_time_max_gap_s * 1000),
        )

    def needed_offsets(self, produced: Callable[[str], int | None]) -> dict[TopicPartition, int]:
        """Per partition, the first record a restart must re-read (see the emitter's checkpoint)."""
        out = self.store.needed_offsets(produced) if self.store is not None else {}
        if self.kline is not None:
            for tp, off in self.kline.needed_offsets(produced).items():
                out[tp] = min(off, out.get(tp, off))
        return out

    # ------------------------------------------------------------------ records
    def handle(self, recs: list[Record]) -> None:
        """Feed consumed market records into the windows (and the tape rule); the per-tick hot path.

        Trades (single or packed records) are read as `TradeTick`s (floats straight from the JSON) and go to
        `WindowStore.on_trade` with the same arguments `apply_event` derives from a `Trade`; every trade of a pack
        carries the pack's offset. Gap markers and bars take the general path."""
        assert self.store is not None
        store = self.store
        on_trade = store.on_trade
        em = self.emitter
        owned = em.owned
        processed = em.processed
        wash = self.rules.wash
        on_wash = self.rules.on_wash
        evidence_trade = em.evidence.on_trade
        enqueue = self.enqueue
        trades_topic = self.s.topic_trades
        now_ms = time.time() * 1000
        last_ingest: dict[str, int] = {}
        n_ok = 0
        for r in recs:
            tp = r.tp
            if tp not in owned:
                continue
            processed[tp] = r.offset + 1
            ticks = None
            if r.topic == trades_topic:
                try:
                    ticks = decode_trade_ticks(r.value)  # single or packed
                except (msgspec.ValidationError, msgspec.DecodeError):
                    ticks = None  # a gap marker, or garbage: the general path below says which
            if ticks is None:
                try:
                    events = decode_market_records(r.value)
                except (msgspec.ValidationError, msgspec.DecodeError):
                    metrics.RECORDS.labels(topic=r.topic, outcome="bad").inc()
                    continue
                for ev in events:
                    try:
                        windows = apply_event(store, ev, offset=r.offset, tp=tp)
                        if self.kline is not None:
                            windows = windows + self.kline.feed(ev, offset=r.offset, tp=tp)
                    except ValueError:
                        metrics.RECORDS.labels(topic=r.topic, outcome="bad").inc()
                        continue
                    n_ok += 1
                    last_ingest[r.topic] = ev.ingest_time_ms
                    for w in windows:
                        enqueue(w)
                continue
            for tick in ticks:
                key = f"{tick.venue}:{tick.symbol}"
                buy = tick.side == "buy"
                ts = tick.event_time_ms
                try:
                    windows = on_trade(
                        key,
                        ts,
                        tick.price,
                        tick.size,
                        buy,
                        ingest_ms=tick.ingest_time_ms,
                        offset=r.offset,
                        tp=tp,
                        incomplete=tick.incomplete,
                    )
                except ValueError:  # a trade no bar can hold (NaN / non-positive price): counted, never fatal
                    metrics.RECORDS.labels(topic=r.topic, outcome="bad").inc()
                    continue
                evidence_trade(key, ts, tick.price, tick.size, buy)
                if wash is not None:
                    sig = wash.observe(key, ts, tick.price, tick.size, buy)
                    if sig is not None:
                        on_wash(sig, tp, r.offset)
                if tick.incomplete:
                    metrics.RECORDS.labels(topic=r.topic, outcome="after_gap").inc()
                n_ok += 1
                last_ingest[r.topic] = tick.ingest_time_ms
                for w in windows:
                    enqueue(w)
        self.stats.records += n_ok
        for topic, ing in last_ingest.items():
            metrics.CONSUMER_LAG.labels(topic=topic).set(max(0.0, (now_ms - ing) / 1000))
        metrics.RECORDS.labels(topic="all", outcome="ok").inc(len(recs))

    def enqueue(self, w: ClosedWindow) -> None:
        """Queue a closed window for scoring, unless it is still warming up or was produced before a restart."""
        em = self.emitter
        self.stats.windows += 1
        if w.tp is not None and w.key not in em.key_tp:
            em.key_tp[w.key] = w.tp
        produced = em.produced_before(w.mark_key, w.window_end_ms)
        if not w.scorable or produced:
            if produced:
                self.stats.skipped_marked += 1
                if not w.lane:
                    self.rules.on_replayed_window(w)
            return
        if w.tp is not None:
            if w.offset < 0:
                w.offset = em.processed.get(w.tp, 0) - 1
            em.queued(w.tp, w.offset)
        self.batcher.put(w)
        metrics.QUEUE.set(len(self.batcher))

    def sweep_due(self, now: float) -> bool:
        return now - self._last_sweep >= 1.0

    def sweep(self, now: float) -> None:
        """Close bars of quiet keys up to one bar behind the newest event seen on any key (so ticks of other keys
        arriving slightly out of order are never made late by it), and evict idle keys."""
        self._last_sweep = now
        store = self.store
        if store is None:
            return
        for w in store.advance(None, int(time.time() * 1000), lag_ms=store.bar_interval_ms):
            self.enqueue(w)
        store.evict_idle(now)
        metrics.KEYS.set(len(store))
