"""The streaming scoring worker: a consumer-group member turning market ticks into scores and explained alerts.

Two tasks share one event loop:
- consume: poll market.trades / market.bars, feed each record into its key's window state (service/features code
  only), queue every closed window into the micro-batcher; pause the partitions while the queue is full.
- score: take a batch (full, or its oldest window `max_wait` old), read the shared centres, run the model in a
  thread, produce one Score per window and the alerts the policy raises, fold normal windows into the centres.
A checkpoint (every `scoring_checkpoint_interval_ms`) flushes the producer, stores each key's last produced window
end and alert state in Redis, then commits offsets, never past (a) a record whose windows are not produced yet
or (b) the first record of the oldest bar a key still needs. A restarted worker therefore re-reads that history,
rebuilds the same windows, skips the ones already produced (the stored marks) and carries on; alert ids are
claimed in Redis before publishing (service/scoring/delivery.py), so no id reaches the alerts topic twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from collections import deque
from dataclasses import dataclass, field

import msgspec
import numpy as np

from service.bus.base import Bus, CommitFailedError, Consumer, Producer, Record, TopicPartition
from service.runtime import Health, cancel_and_wait
from service.schemas.market import BookTop, decode_market, decode_trade_tick
from service.schemas.scoring import Alert, AnomalyType, BranchScores, FeatureContribution, alert_id
from service.scoring import metrics
from service.scoring.alerts import AlertPolicy, KeyAlertState, build_alert, classify, tiers
from service.scoring.batcher import MicroBatcher
from service.scoring.centres import CentreStore
from service.scoring.closes import CloseExchange
from service.scoring.crossvenue import CrossVenueMonitor, Dislocation
from service.scoring.delivery import AlertDelivery
from service.scoring.registry import LoadedModel, ModelNotFoundError, ModelRegistry
from service.scoring.scorer import Scorer, WindowResult
from service.scoring.session import SessionOptions
from service.scoring.spoofing import SpoofingMonitor, SpoofSignal
from service.scoring.wash import WashMonitor, WashSignal
from service.scoring.windows import ClosedWindow, WindowStore, apply_event
from service.settings import Settings
from service.state.base import StateStore

log = logging.getLogger(__name__)

CROSSVENUE_MODEL = "crossvenue"
CROSSVENUE_VERSION = "1"
BOOK_RULES_MODEL = "book-rules"
BOOK_RULES_VERSION = "1"
TAPE_RULES_MODEL = "tape-rules"
TAPE_RULES_VERSION = "1"


@dataclass(slots=True)
class _Mark:
    """What a checkpoint stores per key: the last produced window end and the alert policy state."""

    window_end_ms: int
    alert: KeyAlertState

    def encode(self) -> str:
        return f"{self.window_end_ms};{self.alert.encode()}"

    @classmethod
    def decode(cls, raw: bytes) -> _Mark:
        end, _, st = raw.decode().partition(";")
        return cls(int(end), KeyAlertState.decode(st))


@dataclass
class _Geometry:
    window: int
    n_features: int
    bar_interval_ms: int


@dataclass
class WorkerStats:
    records: int = 0
    windows: int = 0
    scored: int = 0
    skipped_marked: int = 0
    alerts: int = 0
    duplicates_suppressed: int = 0
    commits: int = 0
    pauses: int = 0
    started_ms: int = field(default_factory=lambda: int(time.time() * 1000))


def build_registry(settings: Settings) -> ModelRegistry:
    return ModelRegistry(
        model_dir=settings.model_dir,
        options=SessionOptions(settings.model_provider, settings.model_intra_threads, settings.model_inter_threads),
        reload_interval_s=settings.model_reload_interval_s,
    )


class ScoringWorker:
    """A runtime Component (service.runtime): `start`, `stop`, `health`."""

    name = "worker"

    def __init__(
        self,
        settings: Settings,
        bus: Bus,
        state: StateStore,
        registry: ModelRegistry | None = None,
        *,
        online_centres: bool | None = None,
        client_id: str | None = None,
    ) -> None:
        self.s = settings
        self.bus = bus
        self.state = state
        self.registry = registry or build_registry(settings)
        self.scorer = Scorer(self.registry)
        self.model_name = settings.model_market
        self.online_centres = settings.centres_online if online_centres is None else online_centres
        self.client_id = client_id or f"rmad-worker-{uuid.uuid4().hex[:8]}"
        self.topics = [settings.topic_trades, settings.topic_bars]
        self.spoofing = (
            SpoofingMonitor(
                settings.spoofing_wall_mult,
                window_ms=int(settings.spoofing_window_s * 1000),
                min_flips=settings.spoofing_min_flips,
                max_keys=settings.scoring_max_keys,
            )
            if settings.spoofing_enabled
            else None
        )
        if self.spoofing is not None:
            self.topics.append(settings.topic_books)
        self.wash = (
            WashMonitor(
                window_ms=int(settings.wash_window_s * 1000),
                min_pairs=settings.wash_min_pairs,
                min_share=settings.wash_min_share,
                max_keys=settings.scoring_max_keys,
            )
            if settings.wash_enabled
            else None
        )
        self._wash_signals: list[tuple[WashSignal, TopicPartition]] = []
        self._xv_pending: list[tuple[Dislocation, ClosedWindow]] = []
        self._held: dict[TopicPartition, list[int]] = {}  # offsets of records whose rule alerts are not out yet
        self.policy = AlertPolicy(settings.alert_hysteresis, int(settings.alert_cooldown_s * 1000))
        self.batcher: MicroBatcher[ClosedWindow] = MicroBatcher(
            settings.scoring_batch_size, settings.scoring_max_wait_ms / 1000.0, settings.scoring_queue_bound
        )
        self.crossvenue = (
            CrossVenueMonitor(
                settings.crossvenue_z,
                settings.crossvenue_min_bps,
                settings.crossvenue_half_life_bars,
                settings.crossvenue_warmup_bars,
            )
            if settings.crossvenue_enabled
            else None
        )
        self.stats = WorkerStats()
        self.store: WindowStore | None = None
        self._geometry: _Geometry | None = None
        self._producer: Producer | None = None
        self._consumer: Consumer | None = None
        self._delivery: AlertDelivery | None = None
        self._centres: dict[tuple[str, str], CentreStore] = {}
        self._owned: set[TopicPartition] = set()
        self._marks: dict[str, _Mark] = {}
        self._key_tp: dict[str, TopicPartition] = {}
        self._dirty: dict[TopicPartition, dict[str, str]] = {}
        self._persisted: dict[str, int] = {}  # key -> end of its last window whose mark is in Redis
        self._processed: dict[TopicPartition, int] = {}
        self._pending: dict[TopicPartition, deque[int]] = {}
        self._committed: dict[TopicPartition, int] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self._ckpt_lock = asyncio.Lock()
        self._last_ckpt = time.monotonic()
        self._last_sweep = time.monotonic()
        self._error: str | None = None
        self._running = False
        self.chain_model: LoadedModel | None = None
        self._chain_rings: dict[str, deque[np.ndarray]] = {}
        self._chain_policy: dict[str, KeyAlertState] = {}
        self._infer_cost: dict[tuple[str, str], float] = {}  # (model, version) -> EWMA seconds per window
        self._closes: CloseExchange | None = None

    # ------------------------------------------------------------------ lifecycle
    def _geometry_of(self, model: LoadedModel) -> _Geometry:
        m = model.artifact.manifest
        interval = self.s.scoring_bar_interval_ms or round(m.bar_interval_s * 1000)
        return _Geometry(m.window, m.n_features, interval)

    def _new_store(self, g: _Geometry) -> WindowStore:
        return WindowStore(
            g.window,
            g.n_features,
            g.bar_interval_ms,
            allowed_lateness_ms=self.s.scoring_allowed_lateness_ms,
            idle_eviction_s=self.s.scoring_idle_eviction_s,
            max_keys=self.s.scoring_max_keys,
            warmup_bars=self.s.scoring_warmup_bars,
            history_bars=self.s.scoring_history_bars,
        )

    async def _wait_model(self) -> LoadedModel:
        while True:
            try:
                model = await asyncio.to_thread(self.registry.get, self.model_name)
                self._error = None
                return model
            except ModelNotFoundError as exc:
                if self._error != str(exc):
                    log.error("worker waiting for a model: %s", exc)
                self._error = str(exc)
            await asyncio.sleep(max(1.0, self.s.model_reload_interval_s))

    async def start(self) -> None:
        self._stopping.clear()
        self._producer = self.bus.producer()
        await self._producer.start()
        self._delivery = AlertDelivery(self.state, self._producer, self.s.topic_alerts, self.s.alert_dedupe_ttl_s)
        self._tasks = [asyncio.get_running_loop().create_task(self._main(), name="worker-main")]
        self._running = True

    async def _main(self) -> None:
        model = await self._wait_model()
        self._geometry = self._geometry_of(model)
        self.store = self._new_store(self._geometry)
        self.chain_model = await asyncio.to_thread(self.registry.maybe, self.s.model_chain)
        if self.chain_model is not None and self.chain_model.artifact.manifest.kind == "chain":
            self.topics.append(self.s.topic_chain)
        else:
            self.chain_model = None
            log.info("no chain model %r: %s is not consumed", self.s.model_chain, self.s.topic_chain)
        self.registry.start()
        self._consumer = self.bus.consumer(
            self.topics,
            self.s.scoring_group_id,
            client_id=self.client_id,
            fetch_max_wait_ms=self.s.scoring_fetch_max_wait_ms,
        )
        await self._consumer.start()
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._score_loop(), name="worker-score"))
        self._tasks.append(loop.create_task(self._checkpoint_loop(), name="worker-checkpoint"))
        try:
            await self._consume_loop()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._error = f"consume loop failed: {exc!r}"
            log.exception("worker consume loop failed")
            raise

    async def stop(self) -> None:
        """Stop polling, drain the queue (score and produce it), checkpoint, leave the group."""
        self._stopping.set()
        main = self._tasks[0] if self._tasks else None
        if main is not None:
            await cancel_and_wait(main)
        self.batcher.close()
        for t in self._tasks[1:]:
            if t.get_name() == "worker-score":
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(t, self.s.shutdown_grace_s / 2)
        for t in self._tasks[1:]:
            await cancel_and_wait(t)
        with contextlib.suppress(Exception):
            await self.checkpoint()
        await self.registry.stop()
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
        if self._producer is not None:
            with contextlib.suppress(Exception):
                await self._producer.stop()
            self._producer = None
        self._running = False

    def health(self) -> Health:
        if self._error:
            return Health(False, self._error)
        model = self.registry.maybe(self.model_name) if self._running else None
        if model is None:
            if not self._running:
                return Health(False, "stopped" if self._stopping.is_set() else "not started")
            return Health(False, f"no model {self.model_name!r} loaded")
        return Health(
            True,
            f"{model.name}/{model.version} on {model.session.provider}; {len(self._owned)} partitions, "
            f"{len(self.store or [])} keys, queue {len(self.batcher)}",
        )

    # ------------------------------------------------------------------ consume
    async def _consume_loop(self) -> None:
        assert self._consumer is not None
        c = self._consumer
        while not self._stopping.is_set():
            if self.batcher.full():
                await self._backpressure(c)
            await self._check_geometry(c)
            recs = await c.getmany(timeout_ms=50, max_records=self.s.scoring_poll_records)
            await self._sync_assignment(c)
            if recs:
                chain = [r for r in recs if r.topic == self.s.topic_chain]
                books = [r for r in recs if r.topic == self.s.topic_books]
                if chain or books:
                    recs = [r for r in recs if r.topic not in (self.s.topic_chain, self.s.topic_books)]
                if chain:
                    await self._handle_chain(chain)
                if books:
                    await self._handle_books(books)
                for i in range(0, len(recs), 256):
                    # in slices, yielding between them: windows closed early in a big poll get scored while the
                    # rest is parsed, and an in-process bus (which returns at once) cannot starve the other tasks
                    self._handle(recs[i : i + 256])
                    if self._wash_signals or self._xv_pending:
                        await self._publish_rules()
                    await asyncio.sleep(0)
            now = time.monotonic()
            if now - self._last_sweep >= 1.0:
                self._sweep(now)

    async def _backpressure(self, c: Consumer) -> None:
        tps = c.assignment()
        c.pause(tps)
        self.stats.pauses += 1
        metrics.PAUSED.inc()
        while not self._stopping.is_set() and not await self.batcher.wait_at_most(self.batcher.bound // 2, 0.5):
            pass  # re-check the stop flag twice a second
        c.resume(tps)

    async def _check_geometry(self, c: Consumer) -> None:
        """A new model version with another window length / feature count / bar interval needs new windows:
        rebuild them from the committed offsets (the history the checkpoints kept)."""
        model = self.registry.maybe(self.model_name)
        if model is None or self._geometry is None:
            return
        g = self._geometry_of(model)
        if g == self._geometry:
            return
        log.warning(
            "model %s/%s changes the window geometry %s -> %s: rebuilding windows from committed offsets",
            model.name,
            model.version,
            self._geometry,
            g,
        )
        await self.batcher.wait_at_most(0)
        await self.checkpoint()
        self._geometry = g
        self.store = self._new_store(g)
        self._processed.clear()
        self._pending.clear()
        await c.seek_to_committed()

    async def _sync_assignment(self, c: Consumer) -> None:
        current = c.assignment()
        if current == self._owned:
            return
        lost = self._owned - current
        new = current - self._owned
        for tp in lost:
            if self.store is not None:
                self.store.drop_partition(tp)
            self._processed.pop(tp, None)
            self._committed.pop(tp, None)
            self._dirty.pop(tp, None)
            for k in [k for k, t in self._key_tp.items() if t == tp]:
                self._marks.pop(k, None)
                self._persisted.pop(k, None)
                del self._key_tp[k]
        for tp in new:
            raw = await self.state.hgetall(self._marks_key(tp))
            for k, v in raw.items():
                self._marks[k] = _Mark.decode(v)
                self._key_tp[k] = tp
                if not k.startswith("xv|"):
                    self._persisted[k] = self._marks[k].window_end_ms
            if self._delivery is not None:
                await self._delivery.recover(self.bus, self._inflight_key(tp))
        if new or lost:
            log.info("worker %s: partitions +%s -%s", self.client_id, sorted(new), sorted(lost))
        self._owned = set(current)

    def _handle(self, recs: list[Record]) -> None:
        """Feed consumed market records into the windows (and the tape rules); the per-tick hot path.

        Trades are read as `TradeTick`s (floats straight from the JSON) and go to `WindowStore.on_trade` with the
        same arguments `apply_event` derives from a `Trade`; gap markers and bars take the general path."""
        assert self.store is not None
        store = self.store
        on_trade = store.on_trade
        owned = self._owned
        processed = self._processed
        wash = self.wash
        enqueue = self._enqueue
        trades_topic = self.s.topic_trades
        now_ms = time.time() * 1000
        last_ingest: dict[str, int] = {}
        n_ok = 0
        for r in recs:
            tp = r.tp
            if tp not in owned:
                continue
            processed[tp] = r.offset + 1
            tick = None
            if r.topic == trades_topic:
                try:
                    tick = decode_trade_tick(r.value)
                except (msgspec.ValidationError, msgspec.DecodeError):
                    tick = None  # a gap marker, or garbage: the general path below says which
            try:
                if tick is not None:
                    key = f"{tick.venue}:{tick.symbol}"
                    buy = tick.side == "buy"
                    ts = tick.event_time_ms
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
                    ingest = tick.ingest_time_ms
                    if wash is not None:
                        sig = wash.observe(key, ts, tick.price, tick.size, buy)
                        if sig is not None:
                            self._wash_signals.append((sig, tp))
                            self._held.setdefault(tp, []).append(r.offset)
                    if tick.incomplete:
                        metrics.RECORDS.labels(topic=r.topic, outcome="after_gap").inc()
                else:
                    ev = decode_market(r.value)
                    windows = apply_event(store, ev, offset=r.offset, tp=tp)
                    ingest = ev.ingest_time_ms
            except (msgspec.ValidationError, msgspec.DecodeError, ValueError):
                # undecodable, or a trade no bar can hold (NaN / non-positive price): counted, never fatal
                metrics.RECORDS.labels(topic=r.topic, outcome="bad").inc()
                continue
            n_ok += 1
            last_ingest[r.topic] = ingest
            for w in windows:
                enqueue(w)
        self.stats.records += n_ok
        for topic, ing in last_ingest.items():
            metrics.CONSUMER_LAG.labels(topic=topic).set(max(0.0, (now_ms - ing) / 1000))
        metrics.RECORDS.labels(topic="all", outcome="ok").inc(len(recs))

    async def _handle_books(self, recs: list[Record]) -> None:
        """market.books: the spoofing-like rule (service/scoring/spoofing.py); its alerts are published before the
        partition's offsets advance, like every other output."""
        assert self._delivery is not None
        mon = self.spoofing
        for r in recs:
            if r.tp not in self._owned:
                continue
            try:
                ev = decode_market(r.value)
            except (msgspec.ValidationError, msgspec.DecodeError):
                metrics.RECORDS.labels(topic=r.topic, outcome="bad").inc()
                continue
            if mon is None or not isinstance(ev, BookTop):
                continue
            for sig in mon.observe(ev):
                pkey = f"sp|{sig.key}"
                mark = self._marks.get(pkey)
                st = mark.alert if mark is not None else KeyAlertState()
                thr = float(mon.min_flips)
                fired = self.policy.decide(st, float(sig.flips), thr, sig.event_ms, AnomalyType.SPOOFING_LIKE)
                self._marks[pkey] = _Mark(sig.event_ms, st)
                if not fired:
                    continue
                alert = self._spoof_alert(sig, thr)
                if await self._delivery.publish(
                    alert.id, alert.key, alert.model_dump_json().encode(), self._inflight_key(r.tp)
                ):
                    self.stats.alerts += 1
                    metrics.ALERTS.labels(type=alert.anomaly_type.value, severity=alert.severity.value).inc()
                    log.info("alert %s %s spoofing_like at %d", alert.id, alert.key, alert.window_end_ms)
        for r in recs:
            if r.tp in self._owned:
                self._processed[r.tp] = r.offset + 1

    async def _publish_rules(self) -> None:
        """Rule alerts found while consuming: wash-trading-like signals (service/scoring/wash.py, policy key
        `wt|...`) and dislocations completed by already-produced windows; their records' offsets are held until
        they are out."""
        assert self._delivery is not None
        pending_xv, self._xv_pending = self._xv_pending, []
        batch_marks: dict[TopicPartition, dict[str, str]] = {}
        local: dict[str, _Mark] = {}
        for d, w in pending_xv:
            a = self._dislocation_alert(d, w, batch_marks, local)
            if a is not None and w.tp is not None:
                if await self._delivery.publish(a.id, a.key, a.model_dump_json().encode(), self._inflight_key(w.tp)):
                    self.stats.alerts += 1
                    metrics.ALERTS.labels(type=a.anomaly_type.value, severity=a.severity.value).inc()
                    log.info("alert %s %s depeg (cross-venue) at %d", a.id, a.key, a.window_end_ms)
        self._marks.update(local)
        for tp, marks in batch_marks.items():
            self._dirty.setdefault(tp, {}).update(marks)
        signals, self._wash_signals = self._wash_signals, []
        thr = float(self.wash.min_pairs) if self.wash is not None else 1.0
        for sig, tp in signals:
            pkey = f"wt|{sig.key}"
            mark = self._marks.get(pkey)
            st = mark.alert if mark is not None else KeyAlertState()
            fired = self.policy.decide(st, float(sig.pairs), thr, sig.event_ms, AnomalyType.VOLUME_SURGE)
            self._marks[pkey] = _Mark(sig.event_ms, st)
            if fired:
                venue, _, symbol = sig.key.partition(":")
                sev, action = tiers(float(sig.pairs), thr, thr * 3, False)
                zero = BranchScores(md=0.0, trans=0.0, clust=0.0)
                alert = Alert(
                    id=alert_id(f"{TAPE_RULES_MODEL}-{TAPE_RULES_VERSION}", sig.key, sig.event_ms),
                    key=sig.key,
                    venue=venue,
                    symbol=symbol,
                    window_end_ms=sig.event_ms,
                    created_ms=int(time.time() * 1000),
                    anomaly_type=AnomalyType.VOLUME_SURGE,
                    severity=sev,
                    action=action,
                    score=float(sig.pairs),
                    threshold=thr,
                    branches=zero,
                    weights=zero,
                    top_features=[
                        FeatureContribution(name="matched_pairs", value=float(sig.pairs), normal=0.0, error=0.0),
                        FeatureContribution(name="matched_volume_share", value=sig.share, normal=0.0, error=0.0),
                    ],
                    explanation=sig.explanation(),
                    model_name=TAPE_RULES_MODEL,
                    model_version=TAPE_RULES_VERSION,
                )
                if await self._delivery.publish(
                    alert.id, alert.key, alert.model_dump_json().encode(), self._inflight_key(tp)
                ):
                    self.stats.alerts += 1
                    metrics.ALERTS.labels(type=alert.anomaly_type.value, severity=alert.severity.value).inc()
                    log.info("alert %s %s volume_surge (wash-like) at %d", alert.id, alert.key, alert.window_end_ms)
        self._held.clear()

    def _spoof_alert(self, sig: SpoofSignal, thr: float) -> Alert:
        venue, _, symbol = sig.key.partition(":")
        sev, action = tiers(float(sig.flips), thr, thr * 3, False)
        zero = BranchScores(md=0.0, trans=0.0, clust=0.0)
        return Alert(
            id=alert_id(f"{BOOK_RULES_MODEL}-{BOOK_RULES_VERSION}", sig.key, sig.event_ms),
            key=sig.key,
            venue=venue,
            symbol=symbol,
            window_end_ms=sig.event_ms,
            created_ms=int(time.time() * 1000),
            anomaly_type=AnomalyType.SPOOFING_LIKE,
            severity=sev,
            action=action,
            score=float(sig.flips),
            threshold=thr,
            branches=zero,
            weights=zero,
            top_features=[
                FeatureContribution(name=f"{sig.side}_wall_x_median", value=sig.wall_mult, normal=1.0, error=0.0),
                FeatureContribution(name="pulled_walls", value=float(sig.flips), normal=0.0, error=0.0),
            ],
            explanation=sig.explanation(),
            model_name=BOOK_RULES_MODEL,
            model_version=BOOK_RULES_VERSION,
        )

    async def _handle_chain(self, recs: list[Record]) -> None:
        """chain.txs: each record names one address of a transaction; its live activity features (kept in Redis by
        ingest, service/features/chain) become the newest row of the address's window, scored by the chain model.
        Chain rates are low (tens of tx/s), so these are scored per poll, not micro-batched; the partition's
        offsets advance only after the scores and alerts are produced."""
        from service.features.chain import feature_vector
        from service.features.chain_store import address_features
        from service.schemas.chain import ChainTx

        model = self.registry.maybe(self.s.model_chain) or self.chain_model
        assert model is not None and self._producer is not None and self._delivery is not None
        names = model.artifact.manifest.features.names
        ready: list[tuple[ChainTx, np.ndarray]] = []
        for r in recs:
            if r.tp not in self._owned:
                continue
            try:
                tx = ChainTx.decode(r.value)
            except ValueError:
                metrics.RECORDS.labels(topic=r.topic, outcome="bad").inc()
                continue
            if tx.retraction:
                continue
            feats = await address_features(self.state, tx.chain.value, tx.address)
            ring = self._chain_rings.setdefault(tx.key, deque(maxlen=model.window))
            ring.append(np.asarray(feature_vector(feats, names), dtype=np.float32))
            if len(ring) == model.window:
                ready.append((tx, np.stack(ring)))
        if ready:
            results = await asyncio.to_thread(self.scorer.score_windows, model.name, [w for _, w in ready], model=model)
            now_ms = int(time.time() * 1000)
            for (tx, win), res in zip(ready, results, strict=True):
                score = res.to_score(tx.key, tx.time_ms, tx.time_ms, False, now_ms)
                await self._producer.send(self.s.topic_scores, score.model_dump_json().encode(), key=tx.key.encode())
                st = self._chain_policy.setdefault(tx.key, KeyAlertState())
                kind = AnomalyType.SUSPICIOUS_TRANSFER
                if self.policy.decide(st, res.fused, res.threshold, tx.time_ms, kind):
                    alert = build_alert(
                        tx.key,
                        tx.time_ms,
                        res,
                        win,
                        names,
                        model.artifact.normal,
                        kind="chain",
                        critical=model.artifact.manifest.thresholds.critical,
                        anomaly=kind,
                    )
                    ok = await self._delivery.publish(
                        alert.id, alert.key, alert.model_dump_json().encode(), self._inflight_key(r.tp)
                    )
                    if ok:
                        self.stats.alerts += 1
                        metrics.ALERTS.labels(type=kind.value, severity=alert.severity.value).inc()
            self.stats.scored += len(ready)
        for r in recs:
            if r.tp in self._owned:
                self._processed[r.tp] = r.offset + 1
        while len(self._chain_rings) > self.s.scoring_max_keys:  # bounded: forget the oldest addresses
            old = next(iter(self._chain_rings))
            del self._chain_rings[old]
            self._chain_policy.pop(old, None)

    def _enqueue(self, w: ClosedWindow) -> None:
        self.stats.windows += 1
        if w.tp is not None and w.key not in self._key_tp:
            self._key_tp[w.key] = w.tp
        mark = self._marks.get(w.key)
        if not w.scorable or (mark is not None and w.window_end_ms <= mark.window_end_ms):
            if mark is not None and w.window_end_ms <= mark.window_end_ms:
                self.stats.skipped_marked += 1
                if self.crossvenue is not None:
                    # produced before a restart: this rebuilds the usual basis, and a dislocation it completes
                    # (its pair member was scored already) still goes out; ids and policy marks dedupe repeats
                    for d in self.crossvenue.observe(w.key, w.window_end_ms, w.close):
                        self._xv_pending.append((d, w))
                        if w.tp is not None:
                            self._held.setdefault(w.tp, []).append(max(w.offset, 0))
            return
        if w.tp is not None:
            if w.offset < 0:
                w.offset = self._processed.get(w.tp, 0) - 1
            self._pending.setdefault(w.tp, deque()).append(w.offset)
        self.batcher.put(w)
        metrics.QUEUE.set(len(self.batcher))

    def _sweep(self, now: float) -> None:
        """Close bars of quiet keys up to one bar behind the newest event seen on any key (so ticks of other keys
        arriving slightly out of order are never made late by it), and evict idle keys."""
        self._last_sweep = now
        store = self.store
        if store is None:
            return
        for w in store.advance(None, int(time.time() * 1000), lag_ms=store.bar_interval_ms):
            self._enqueue(w)
        store.evict_idle(now)
        metrics.KEYS.set(len(store))

    # ------------------------------------------------------------------ score
    def _centre_store(self, model: LoadedModel) -> CentreStore:
        key = (model.name, model.version)
        cs = self._centres.get(key)
        if cs is None:
            cs = CentreStore(
                self.state,
                model.name,
                model.version,
                model.artifact.centres,
                half_life_s=self.s.centres_half_life_s,
                refresh_ms=self.s.centres_refresh_ms,
            )
            self._centres[key] = cs
        return cs

    async def _score_loop(self) -> None:
        while True:
            batch = await self.batcher.get()
            metrics.QUEUE.set(len(self.batcher))
            if not batch:
                if self._stopping.is_set():
                    return
                continue
            while True:
                try:
                    await self._score_batch(batch)
                    if self._error and self._error.startswith("scoring failed"):
                        self._error = None
                    break
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    # keep the batch: its offsets stay uncommitted and the queue fills until the partitions
                    # pause, so nothing is skipped while the bus, Redis or the model is failing
                    self._error = f"scoring failed: {exc!r}"
                    log.exception("worker: scoring a batch of %d failed; retrying", len(batch))
                    if self._stopping.is_set():
                        return
                    await asyncio.sleep(1.0)

    async def _score_batch(self, batch: list[ClosedWindow]) -> None:
        assert self._producer is not None and self._delivery is not None
        model = self.registry.get(self.model_name)  # one version for the whole batch
        if self._geometry is not None and model.window != self._geometry.window:
            for w in batch:  # windows of the previous geometry: the store is rebuilt from committed offsets
                if w.tp is not None and self._pending.get(w.tp):
                    self._pending[w.tp].popleft()
            return
        cs = self._centre_store(model) if self.online_centres else None
        centres = await cs.current() if cs is not None else model.artifact.centres
        if self.crossvenue is not None and self._geometry is not None:
            # the other members' closes at these bar ends, whichever worker scored them (closes.py)
            if self._closes is None:
                ttl = self.crossvenue.history_bars * self._geometry.bar_interval_ms
                self._closes = CloseExchange(self.state, self.s.scoring_group_id, ttl)
            for p in await self._closes.share([(w.key, w.window_end_ms, w.close) for w in batch]):
                self.crossvenue.remember(p.group, p.key, p.rank, p.bar_end_ms, p.close)
        results = await self._infer(model, [w.features for w in batch], centres)
        now_ms = int(time.time() * 1000)
        names = model.artifact.manifest.features.names
        normal = model.artifact.normal
        critical = model.artifact.manifest.thresholds.critical
        alerts: list[tuple[Alert, TopicPartition | None]] = []
        normal_emb: list[np.ndarray] = []
        # marks carry alert decisions: they may reach Redis (a checkpoint) only once those alerts are published
        batch_marks: dict[TopicPartition, dict[str, str]] = {}
        # policy state is decided on copies and kept only once the batch's outputs are out, so a batch retried
        # after a failure makes the same decisions again
        local: dict[str, _Mark] = {}
        e2e = metrics.END_TO_END_SECONDS.labels(model=model.name)
        for w, r in zip(batch, results, strict=True):
            score = r.to_score(w.key, w.window_end_ms, w.last_event_ms, w.incomplete, now_ms)
            await self._producer.send(self.s.topic_scores, score.model_dump_json().encode(), key=w.key.encode())
            if w.trigger_ingest_ms:
                e2e.observe(max(0.0, (now_ms - w.trigger_ingest_ms) / 1000))
            dislocations = self.crossvenue.observe(w.key, w.window_end_ms, w.close) if self.crossvenue else []
            for d in dislocations:
                a = self._dislocation_alert(d, w, batch_marks, local)
                if a is not None:
                    alerts.append((a, w.tp))
            st = self._policy_state(w.key, local)
            kind = AnomalyType.OTHER
            if r.is_anomalous:
                kind = classify(w.key, names, w.features, model.artifact.manifest.kind)
                if self.crossvenue is not None and self.crossvenue.is_dislocated(w.key, w.window_end_ms):
                    kind = AnomalyType.DEPEG
            else:
                normal_emb.append(r.embedding)
            if self.policy.decide(st, r.fused, r.threshold, w.window_end_ms, kind):
                alerts.append(
                    (
                        build_alert(
                            w.key,
                            w.window_end_ms,
                            r,
                            w.features,
                            names,
                            normal,
                            critical=critical,
                            incomplete=w.incomplete,
                            n_features=self.s.alert_top_features,
                            anomaly=kind,
                        ),
                        w.tp,
                    )
                )
            new_mark = _Mark(w.window_end_ms, st)
            local[w.key] = new_mark
            if w.tp is not None:
                batch_marks.setdefault(w.tp, {})[w.key] = new_mark.encode()
        self.stats.scored += len(batch)
        for alert, tp in alerts:
            payload = alert.model_dump_json().encode()
            inflight = self._inflight_key(tp) if tp is not None else "alerts:inflight:none"
            if await self._delivery.publish(alert.id, alert.key, payload, inflight):
                self.stats.alerts += 1
                metrics.ALERTS.labels(type=alert.anomaly_type.value, severity=alert.severity.value).inc()
                log.info(
                    "alert %s %s %s at %d score %.3g",
                    alert.id,
                    alert.key,
                    alert.anomaly_type.value,
                    alert.window_end_ms,
                    alert.score,
                )
            else:
                self.stats.duplicates_suppressed += 1
                log.info("alert %s already published (a re-scored window)", alert.id)
        if cs is not None and normal_emb:
            await cs.update(np.stack(normal_emb))
        self._marks.update(local)
        for tp, marks in batch_marks.items():
            self._dirty.setdefault(tp, {}).update(marks)
        for w in batch:
            if w.tp is not None:
                q = self._pending.get(w.tp)
                if q:
                    q.popleft()

    async def _infer(self, model: LoadedModel, windows: list[np.ndarray], centres: np.ndarray) -> list[WindowResult]:
        """Run the model on a batch: on the event loop when it is predicted to take at most
        `scoring_inline_inference_ms`, else in a thread.

        Why both: a thread lets a long batch (the trained model costs about 1 ms per window) run while the loop keeps
        consuming, but a hop costs a GIL hand-over each way, which under CPU contention was seen to add tens of
        milliseconds to batches that compute in one; small batches are cheaper inline. The prediction is the
        per-window time of recent batches of this model version (an EWMA), so it follows the model and machine."""
        key = (model.name, model.version)
        per_window = self._infer_cost.get(key)
        spent = [0.0]

        def run() -> list[WindowResult]:
            t0 = time.perf_counter()  # the compute alone, not the hop: that is what the prediction is about
            try:
                return self.scorer.score_windows(self.model_name, windows, centres=centres, model=model)
            finally:
                spent[0] = time.perf_counter() - t0

        if per_window is not None and per_window * len(windows) <= self.s.scoring_inline_inference_ms / 1000:
            results = run()
        else:
            results = await asyncio.to_thread(run)
        took = spent[0] / max(len(windows), 1)
        self._infer_cost[key] = took if per_window is None else 0.8 * per_window + 0.2 * took
        return results

    def _policy_state(self, key: str, local: dict[str, _Mark]) -> KeyAlertState:
        """The key's alert state for this batch: its batch-local copy, else a copy of the committed one."""
        if key in local:
            return local[key].alert
        mark = self._marks.get(key)
        return dataclasses.replace(mark.alert) if mark is not None else KeyAlertState()

    def _dislocation_alert(
        self,
        d: Dislocation,
        w: ClosedWindow,
        batch_marks: dict[TopicPartition, dict[str, str]],
        local: dict[str, _Mark],
    ) -> Alert | None:
        """Cross-venue / cross-quote alerts go through their own policy state (keyed `xv|key`)."""
        pkey = f"xv|{d.key}"
        st = self._policy_state(pkey, local)
        thr = self.s.crossvenue_z
        fired = self.policy.decide(st, d.z, thr, d.bar_end_ms, AnomalyType.DEPEG)
        local[pkey] = _Mark(d.bar_end_ms, st)
        if w.tp is not None:
            batch_marks.setdefault(w.tp, {})[pkey] = local[pkey].encode()
        if not fired:
            return None
        venue, _, symbol = d.key.partition(":")
        sev, action = tiers(d.z, thr, thr * 3, w.incomplete)
        zero = BranchScores(md=0.0, trans=0.0, clust=0.0)
        return Alert(
            id=alert_id(f"{CROSSVENUE_MODEL}-{CROSSVENUE_VERSION}", d.key, d.bar_end_ms),
            key=d.key,
            venue=venue,
            symbol=symbol,
            window_end_ms=d.bar_end_ms,
            created_ms=int(time.time() * 1000),
            anomaly_type=AnomalyType.DEPEG,
            severity=sev,
            action=action,
            score=d.z,
            threshold=thr,
            branches=zero,
            weights=zero,
            top_features=[
                FeatureContribution(name="basis_bps", value=d.basis_bps, normal=d.usual_bps, error=d.z),
            ],
            explanation=d.explanation(),
            model_name=CROSSVENUE_MODEL,
            model_version=CROSSVENUE_VERSION,
            incomplete=w.incomplete,
        )

    # ------------------------------------------------------------------ checkpoint
    def _marks_key(self, tp: TopicPartition) -> str:
        return f"worker:{self.s.scoring_group_id}:marks:{tp.topic}:{tp.partition}"

    def _inflight_key(self, tp: TopicPartition) -> str:
        return f"alerts:inflight:{self.s.scoring_group_id}:{tp.topic}:{tp.partition}"

    async def _checkpoint_loop(self) -> None:
        interval = max(self.s.scoring_checkpoint_interval_ms, 50) / 1000
        while True:
            await asyncio.sleep(interval)
            try:
                await self.checkpoint()
            except Exception:
                log.exception("worker checkpoint failed (will retry)")

    def committable(self) -> dict[TopicPartition, int]:
        """Per owned partition: the offset a restart may resume from without losing a window or its history."""
        persisted = self._persisted

        def produced(key: str) -> int | None:
            return persisted.get(key)

        needed = self.store.needed_offsets(produced) if self.store is not None else {}
        out: dict[TopicPartition, int] = {}
        for tp in self._owned:
            nxt = self._processed.get(tp)
            if nxt is None:
                continue
            off = nxt
            q = self._pending.get(tp)
            if q:
                off = min(off, q[0])
            held = self._held.get(tp)
            if held:
                off = min(off, min(held))
            if tp in needed:
                off = min(off, needed[tp])
            out[tp] = off
        return out

    async def checkpoint(self) -> None:
        """Flush outputs, store marks, commit offsets: in this order, so a commit never runs ahead of outputs."""
        async with self._ckpt_lock:
            dirty, self._dirty = self._dirty, {}
            try:
                if self._producer is not None:
                    await self._producer.flush()
                for tp, marks in dirty.items():
                    if marks and tp in self._owned:  # a revoked partition's marks belong to its new owner now
                        await self.state.hset(self._marks_key(tp), marks)
                if dirty:  # who scored how much: operators (and tests) see the group's split
                    await self.state.hset(
                        f"worker:{self.s.scoring_group_id}:members", {self.client_id: self.stats.scored}
                    )
            except Exception:
                for tp, marks in dirty.items():  # keep them for the next try
                    self._dirty.setdefault(tp, {}).update({k: v for k, v in marks.items() if k not in self._dirty[tp]})
                raise
            for marks in dirty.values():
                for key, raw in marks.items():
                    if not key.startswith("xv|"):
                        self._persisted[key] = int(raw.partition(";")[0])
            offsets = self.committable()
            todo = {tp: o for tp, o in offsets.items() if o > self._committed.get(tp, -1) and tp in self._owned}
            if todo and self._consumer is not None:
                try:
                    await self._consumer.commit(todo)
                    self._committed.update(todo)
                    self.stats.commits += 1
                except CommitFailedError as exc:
                    log.warning("worker %s: commit refused (rebalance?): %s", self.client_id, exc)
            self._last_ckpt = time.monotonic()


def window_result_fields(r: WindowResult) -> dict[str, float]:
    """Flat numbers of a result (bench and debugging)."""
    return {"fused": r.fused, "s_md": r.s_md, "s_trans": r.s_trans, "s_clust": r.s_clust}
