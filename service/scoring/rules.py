"""The worker's rule detectors (service/scoring/detectors.py) and how their findings become alerts.

Three rules run beside the model: spoofing-like book activity (market.books, service/scoring/spoofing.py),
wash-trading-like prints (market.trades, service/scoring/wash.py) and cross-venue / cross-quote dislocations
(closed windows, service/scoring/crossvenue.py). Each finding goes through its own alert-policy state (`sp|key`,
`wt|key`, `xv|key`) and the one rule decision (`decision.decide_finding`). A rule alert found while consuming holds
its record's offset (emitter `hold`) until it is published, so a crash in between re-reads and re-finds it.
"""

from __future__ import annotations

import time

import msgspec

from service.bus.base import Record, TopicPartition
from service.schemas.market import BookTop, decode_market
from service.schemas.scoring import Alert
from service.scoring import metrics
from service.scoring.alerts import AlertPolicy
from service.scoring.closes import CloseExchange
from service.scoring.crossvenue import CrossVenueMonitor
from service.scoring.decision import decide_finding
from service.scoring.emitter import BatchMarks, Emitter, Mark
from service.scoring.evidence import Finding
from service.scoring.spoofing import SpoofingMonitor
from service.scoring.wash import WashMonitor, WashSignal
from service.scoring.windows import ClosedWindow
from service.settings import Settings
from service.state.base import StateStore


class RuleAlerts:
    def __init__(self, settings: Settings, state: StateStore, policy: AlertPolicy, emitter: Emitter) -> None:
        s = self.s = settings
        self.state = state
        self.policy = policy
        self.emitter = emitter
        self.spoofing = (
            SpoofingMonitor(
                s.spoofing_wall_mult,
                window_ms=int(s.spoofing_window_s * 1000),
                min_flips=s.spoofing_min_flips,
                max_keys=s.scoring_max_keys,
            )
            if s.spoofing_enabled
            else None
        )
        self.wash = (
            WashMonitor(
                window_ms=int(s.wash_window_s * 1000),
                min_pairs=s.wash_min_pairs,
                min_share=s.wash_min_share,
                max_keys=s.scoring_max_keys,
            )
            if s.wash_enabled
            else None
        )
        self.crossvenue = (
            CrossVenueMonitor(
                s.crossvenue_z,
                s.crossvenue_min_bps,
                s.crossvenue_half_life_bars,
                s.crossvenue_warmup_bars,
                max_keys=s.scoring_max_keys,
            )
            if s.crossvenue_enabled
            else None
        )
        self.pending_wash: list[tuple[Finding, TopicPartition]] = []
        self.pending_xv: list[tuple[Finding, ClosedWindow]] = []
        self._closes: CloseExchange | None = None

    @property
    def has_pending(self) -> bool:
        return bool(self.pending_wash or self.pending_xv)

    # ------------------------------------------------------------------ tape (the tick path)
    def on_wash(self, sig: WashSignal, tp: TopicPartition, offset: int) -> None:
        """A wash-trading-like signal from the tick path (which calls the rule's `observe` with the print's numbers,
        what its `update(TapePrint)` does, without building a `TapePrint` per tick: measured, that added about 70 %
        to the rule's cost). The record's offset is held until the alert is published."""
        assert self.wash is not None
        self.pending_wash.append((sig.finding(float(self.wash.min_pairs)), tp))
        self.emitter.hold(tp, offset)

    # ------------------------------------------------------------------ books
    async def on_books(self, recs: list[Record]) -> None:
        """market.books: the spoofing-like rule; its alerts are published before the partition's offsets
        advance, like every other output."""
        em = self.emitter
        for r in recs:
            if r.tp not in em.owned:
                continue
            try:
                ev = decode_market(r.value)
            except (msgspec.ValidationError, msgspec.DecodeError):
                metrics.RECORDS.labels(topic=r.topic, outcome="bad").inc()
                continue
            if self.spoofing is None or not isinstance(ev, BookTop):
                continue
            em.evidence.on_book(ev)
            for f in self.spoofing.update(ev):
                alert = self.decide(f, r.tp, None)
                if alert is not None:
                    await em.publish(alert, r.tp)
        for r in recs:
            if r.tp in em.owned:
                em.read(r.tp, r.offset)

    # ------------------------------------------------------------------ closed windows (cross-venue)
    async def share_closes(self, batch: list[ClosedWindow], bar_interval_ms: int) -> None:
        """The other members' closes at these bar ends, whichever worker scored them (closes.py)."""
        xv = self.crossvenue
        if xv is None:
            return
        if self._closes is None:
            self._closes = CloseExchange(self.state, self.s.scoring_group_id, xv.history_bars * bar_interval_ms)
        for p in await self._closes.share([(w.key, w.window_end_ms, w.close) for w in batch]):
            xv.remember(p.group, p.key, p.rank, p.bar_end_ms, p.close)

    def on_window(self, w: ClosedWindow, batch: BatchMarks) -> list[Alert]:
        """A window being scored: the alerts of the dislocations its close completes, decided in the batch's
        states (published with the batch's own alerts)."""
        out: list[Alert] = []
        if self.crossvenue is not None:
            for f in self.crossvenue.update(w):
                alert = self.decide(f, w.tp, batch)
                if alert is not None:
                    out.append(alert)
        return out

    def on_replayed_window(self, w: ClosedWindow) -> None:
        """A window produced before a restart: it rebuilds the usual basis, and a dislocation it completes (its
        pair member was scored already) still goes out; ids and policy marks dedupe repeats."""
        if self.crossvenue is None:
            return
        found = self.crossvenue.update(w)
        for f in found:
            self.pending_xv.append((f, w))
        if found and w.tp is not None:
            self.emitter.hold(w.tp, max(w.offset, 0))

    def is_dislocated(self, key: str, window_end_ms: int) -> bool:
        return self.crossvenue is not None and self.crossvenue.is_dislocated(key, window_end_ms)

    # ------------------------------------------------------------------ publishing
    async def publish_pending(self) -> None:
        """Rule alerts found while consuming (wash-like prints, dislocations completed by already-produced
        windows); their records' offsets are held until they are out."""
        em = self.emitter
        pending_xv, self.pending_xv = self.pending_xv, []
        batch = BatchMarks()
        for f, w in pending_xv:
            alert = self.decide(f, w.tp, batch)
            if alert is not None and w.tp is not None:
                await em.publish(alert, w.tp)
        em.keep(batch)
        signals, self.pending_wash = self.pending_wash, []
        for f, tp in signals:
            alert = self.decide(f, tp, None)
            if alert is not None:
                await em.publish(alert, tp)
        em.held.clear()

    def decide(self, f: Finding, tp: TopicPartition | None, batch: BatchMarks | None) -> Alert | None:
        """Decide a finding in its policy state. With `batch` the state is batch-local and its mark goes to the
        checkpoint (cross-venue); without, it is kept at once and not checkpointed (book and tape rules)."""
        em = self.emitter
        st, alert = decide_finding(f, em.policy_state(f.policy_key, batch), self.policy, int(time.time() * 1000))
        if batch is not None:
            batch.set(f.policy_key, Mark(f.event_ms, st), tp)
        else:
            em.marks[f.policy_key] = Mark(f.event_ms, st)
        return alert
