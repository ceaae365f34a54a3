"""Scoring a micro-batch of closed market windows: the model, the shared centres, the one decision, the outputs.

For a batch (service/scoring/batcher.py) this reads the shared cluster centres, runs the model (inline or in a
thread, see `_infer`), and for each window sends its Score, decides it (`decision.decide`, in batch-local policy
states) and the cross-venue dislocations its close completes; then publishes the alerts, folds the normal windows
into the centres, and only then keeps the batch's policy states and marks (service/scoring/emitter.py). A batch
that fails part-way is retried whole and decides the same again.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np

from service.bus.base import TopicPartition
from service.features.trade_context import TradeContext
from service.schemas.scoring import Alert
from service.scoring import metrics
from service.scoring.alerts import AlertPolicy
from service.scoring.centres import CentreStore
from service.scoring.decision import ModelFacts, decide
from service.scoring.emitter import BatchMarks, Emitter, Mark, WorkerStats
from service.scoring.kline_lane import AlertEpisodes, KlineLane
from service.scoring.live_state import LiveContext, LivePublisher
from service.scoring.registry import LoadedModel, ModelRegistry
from service.scoring.rules import RuleAlerts
from service.scoring.scorer import Scorer, WindowResult
from service.scoring.window_feed import WindowFeed
from service.scoring.windows import ClosedWindow
from service.settings import Settings
from service.state.base import StateStore


class WindowScoring:
    def __init__(
        self,
        settings: Settings,
        state: StateStore,
        registry: ModelRegistry,
        scorer: Scorer,
        *,
        model_name: str,
        online_centres: bool,
        policy: AlertPolicy,
        feed: WindowFeed,
        emitter: Emitter,
        rules: RuleAlerts,
        stats: WorkerStats,
        kline: KlineLane | None = None,
        episodes: AlertEpisodes | None = None,
    ) -> None:
        self.s = settings
        self.kline = kline
        # one model alert per key and episode across the main model and the kline lane (None: every alert)
        self.episodes = episodes
        self.state = state
        self.registry = registry
        self.scorer = scorer
        self.model_name = model_name
        self.online_centres = online_centres
        self.policy = policy
        self.feed = feed
        self.emitter = emitter
        self.rules = rules
        self.stats = stats
        self._centres: dict[tuple[str, str], CentreStore] = {}
        self.live = LivePublisher(state, settings.scoring_idle_eviction_s)
        self._infer_cost: dict[tuple[str, str], float] = {}  # (model, version) -> EWMA seconds per window

    def _live(self, batch: list[ClosedWindow], model: LoadedModel) -> list[LiveContext]:
        """What the API reads for each key of the batch (service/scoring/live_state.py)."""
        store = self.feed.store
        out = []
        for w in batch:
            st = store.keys.get(w.key) if store is not None else None
            prints = st.prints if st is not None else TradeContext()  # encoded at once, not kept
            out.append(
                LiveContext(
                    w.key, w.features, w.window_end_ms, model.name, model.version, w.scorable, w.incomplete, prints
                )
            )
        return out

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

    async def score_batch(self, batch: list[ClosedWindow]) -> None:
        em = self.emitter
        lane = [w for w in batch if w.lane]
        if lane:  # kline windows: their own model, states and marks (`ClosedWindow.mark_key`)
            await self._score_kline(lane)
            batch = [w for w in batch if not w.lane]
            if not batch:
                return
        model = self.registry.get(self.model_name)  # one version for the whole batch
        g = self.feed.geometry
        if g is not None and model.window != g.window:
            for w in batch:  # windows of the previous geometry: the store is rebuilt from committed offsets
                em.done(w.tp)
            return
        cs = self._centre_store(model) if self.online_centres else None
        centres = await cs.current() if cs is not None else model.artifact.centres
        if g is not None:
            await self.rules.share_closes(batch, g.bar_interval_ms)
        results = await self._infer(model, [w.features for w in batch], centres)
        now_ms = int(time.time() * 1000)
        facts = ModelFacts.of(model)
        alerts: list[tuple[Alert, TopicPartition | None]] = []
        normal_emb: list[np.ndarray] = []
        # marks carry alert decisions: they may reach the state store (a checkpoint) only once those alerts are
        # published; policy states are decided batch-locally and kept only once the batch's outputs are out
        marks = BatchMarks()
        episodes = self.episodes.copy() if self.episodes is not None else None
        e2e = metrics.END_TO_END_SECONDS.labels(model=model.name)
        for w, r in zip(batch, results, strict=True):
            await em.send_score(r.to_score(w.key, w.window_end_ms, w.last_event_ms, w.incomplete, now_ms))
            if w.trigger_ingest_ms:
                e2e.observe(max(0.0, (now_ms - w.trigger_ingest_ms) / 1000))
            alerts.extend((a, w.tp) for a in self.rules.on_window(w, marks))
            if not r.is_anomalous:
                normal_emb.append(r.embedding)
            d = decide(
                r,
                w.features,
                facts,
                key=w.key,
                window_end_ms=w.window_end_ms,
                now_ms=now_ms,
                incomplete=w.incomplete,
                state=em.policy_state(w.key, marks),
                policy=self.policy,
                dislocated=self.rules.is_dislocated(w.key, w.window_end_ms),
                n_features=self.s.alert_top_features,
            )
            if d.alert is not None and (
                episodes is None or episodes.admit(w.key, w.window_end_ms, d.alert.anomaly_type)
            ):
                alerts.append((d.alert, w.tp))
            assert d.state is not None
            marks.set(w.key, Mark(w.window_end_ms, d.state), w.tp)
        self.stats.scored += len(batch)
        await self.live.publish(self._live(batch, model))
        for alert, tp in alerts:
            await em.publish(alert, tp)
        if cs is not None and normal_emb:
            await cs.update(np.stack(normal_emb))
        em.keep(marks)
        if episodes is not None:
            self.episodes = episodes
        for w in batch:
            em.done(w.tp)

    async def _score_kline(self, windows: list[ClosedWindow]) -> None:
        """Kline-lane windows through the kline model and the same decision; the seed centres (no online ones)."""
        em = self.emitter
        model = self.kline.model() if self.kline is not None else None
        if model is None:  # the kline model went away: nothing to score them with
            for w in windows:
                em.done(w.tp)
            return
        results = self.scorer.score_windows(model.name, [w.features for w in windows], model=model)
        now_ms = int(time.time() * 1000)
        facts = ModelFacts.of(model)
        marks = BatchMarks()
        episodes = self.episodes.copy() if self.episodes is not None else None
        alerts: list[tuple[Alert, TopicPartition | None]] = []
        for w, r in zip(windows, results, strict=True):
            await em.send_score(r.to_score(w.key, w.window_end_ms, w.last_event_ms, w.incomplete, now_ms))
            d = decide(
                r,
                w.features,
                facts,
                key=w.key,
                window_end_ms=w.window_end_ms,
                now_ms=now_ms,
                incomplete=w.incomplete,
                state=em.policy_state(w.mark_key, marks),
                policy=self.policy,
                dislocated=self.rules.is_dislocated(w.key, w.window_end_ms),
                n_features=self.s.alert_top_features,
            )
            if d.alert is not None and (
                episodes is None or episodes.admit(w.key, w.window_end_ms, d.alert.anomaly_type)
            ):
                alerts.append((d.alert, w.tp))
            assert d.state is not None
            marks.set(w.mark_key, Mark(w.window_end_ms, d.state), w.tp)
        self.stats.scored += len(windows)
        for alert, tp in alerts:
            await em.publish(alert, tp)
        em.keep(marks)
        if episodes is not None:
            self.episodes = episodes
        for w in windows:
            em.done(w.tp)

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
