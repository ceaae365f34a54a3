"""The streaming scoring worker: a consumer-group member turning market ticks into scores and explained alerts.

This module is the consumer loop and the wiring; each concern has a module of its own:
- service/scoring/window_feed.py: records in, closed windows queued (the window store's side of the worker);
- service/scoring/batcher.py: the micro-batcher between consuming and scoring (bounded: a full queue pauses the
  partitions);
- service/scoring/window_scoring.py: a batch through the model and the one decision (service/scoring/decision.py);
- service/scoring/chain_scoring.py: chain.txs, scored per poll;
- service/scoring/rules.py: the rule detectors (spoofing, wash trading, cross-venue) and their alerts;
- service/scoring/emitter.py: scores and alerts out, marks and offsets checkpointed.

Three tasks share one event loop: consume (poll, feed the windows, pause while the queue is full), score (take a
batch, score, produce) and checkpoint (every `scoring_checkpoint_interval_ms`: flush, store marks, commit offsets,
never past an output that is not out). A restarted worker re-reads the history its keys need, rebuilds the same
windows, skips the ones already produced (the marks) and carries on; alert ids are claimed in Redis before
publishing (service/scoring/delivery.py), so no id reaches the alerts topic twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid

from service.bus.base import Bus, Consumer
from service.runtime import Health, cancel_and_wait
from service.scoring import metrics
from service.scoring.alerts import AlertPolicy
from service.scoring.batcher import MicroBatcher
from service.scoring.chain_scoring import ChainScoring
from service.scoring.emitter import Emitter, WorkerStats
from service.scoring.registry import LoadedModel, ModelNotFoundError, ModelRegistry
from service.scoring.rules import RuleAlerts
from service.scoring.scorer import Scorer
from service.scoring.session import SessionOptions
from service.scoring.window_feed import WindowFeed
from service.scoring.window_scoring import WindowScoring
from service.scoring.windows import ClosedWindow
from service.settings import Settings
from service.state.base import StateStore

log = logging.getLogger(__name__)

__all__ = ["ScoringWorker", "WorkerStats", "build_registry"]


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
        self.client_id = client_id or f"rmad-worker-{uuid.uuid4().hex[:8]}"
        self.stats = WorkerStats()
        self.policy = AlertPolicy(settings.alert_hysteresis, int(settings.alert_cooldown_s * 1000))
        self.batcher: MicroBatcher[ClosedWindow] = MicroBatcher(
            settings.scoring_batch_size, settings.scoring_max_wait_ms / 1000.0, settings.scoring_queue_bound
        )
        self.emitter = Emitter(settings, state, self.client_id, self.stats)
        self.rules = RuleAlerts(settings, state, self.policy, self.emitter)
        self.feed = WindowFeed(settings, self.emitter, self.rules, self.batcher, self.stats)
        self.windows = WindowScoring(
            settings,
            state,
            self.registry,
            self.scorer,
            model_name=self.model_name,
            online_centres=settings.centres_online if online_centres is None else online_centres,
            policy=self.policy,
            feed=self.feed,
            emitter=self.emitter,
            rules=self.rules,
            stats=self.stats,
        )
        self.chain = ChainScoring(settings, state, self.scorer, self.policy, self.emitter, self.stats)
        self.topics = [settings.topic_trades, settings.topic_bars]
        if self.rules.spoofing is not None:
            self.topics.append(settings.topic_books)
        self.chain_model: LoadedModel | None = None
        self.consumer: Consumer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self._error: str | None = None
        self._running = False

    # ------------------------------------------------------------------ lifecycle
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
        producer = self.bus.producer()
        await producer.start()
        await self.emitter.start(producer)
        self._tasks = [asyncio.get_running_loop().create_task(self._main(), name="worker-main")]
        self._running = True

    async def _main(self) -> None:
        model = await self._wait_model()
        self.feed.reset(self.feed.geometry_of(model))
        self.chain_model = await asyncio.to_thread(self.registry.maybe, self.s.model_chain)
        if self.chain_model is not None and self.chain_model.artifact.manifest.kind == "chain":
            self.topics.append(self.s.topic_chain)
        else:
            self.chain_model = None
            log.info("no chain model %r: %s is not consumed", self.s.model_chain, self.s.topic_chain)
        self.registry.start()
        self.consumer = self.bus.consumer(
            self.topics,
            self.s.scoring_group_id,
            client_id=self.client_id,
            fetch_max_wait_ms=self.s.scoring_fetch_max_wait_ms,
        )
        await self.consumer.start()
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
        if self.consumer is not None:
            await self.consumer.stop()
            self.consumer = None
        producer, self.emitter.producer = self.emitter.producer, None
        if producer is not None:
            with contextlib.suppress(Exception):
                await producer.stop()
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
            f"{model.name}/{model.version} on {model.session.provider}; {len(self.emitter.owned)} partitions, "
            f"{len(self.feed.store or [])} keys, queue {len(self.batcher)}",
        )

    # ------------------------------------------------------------------ consume
    async def _consume_loop(self) -> None:
        assert self.consumer is not None
        c = self.consumer
        side_topics = (self.s.topic_chain, self.s.topic_books)
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
                    recs = [r for r in recs if r.topic not in side_topics]
                if chain:
                    model = self.registry.maybe(self.s.model_chain) or self.chain_model
                    assert model is not None
                    await self.chain.handle(chain, model)
                if books:
                    await self.rules.on_books(books)
                for i in range(0, len(recs), 256):
                    # in slices, yielding between them: windows closed early in a big poll get scored while the
                    # rest is parsed, and an in-process bus (which returns at once) cannot starve the other tasks
                    self.feed.handle(recs[i : i + 256])
                    if self.rules.has_pending:
                        await self.rules.publish_pending()
                    await asyncio.sleep(0)
            now = time.monotonic()
            if self.feed.sweep_due(now):
                self.feed.sweep(now)

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
        if model is None or self.feed.geometry is None:
            return
        g = self.feed.geometry_of(model)
        if g == self.feed.geometry:
            return
        log.warning(
            "model %s/%s changes the window geometry %s -> %s: rebuilding windows from committed offsets",
            model.name,
            model.version,
            self.feed.geometry,
            g,
        )
        await self.batcher.wait_at_most(0)
        await self.checkpoint()
        self.feed.reset(g)
        self.emitter.forget_positions()
        await c.seek_to_committed()

    async def _sync_assignment(self, c: Consumer) -> None:
        current = c.assignment()
        if current == self.emitter.owned:
            return
        lost = self.emitter.owned - current
        if self.feed.store is not None:
            for tp in lost:
                self.feed.store.drop_partition(tp)
        new, lost = await self.emitter.assign(self.bus, current)
        if new or lost:
            log.info("worker %s: partitions +%s -%s", self.client_id, sorted(new), sorted(lost))

    # ------------------------------------------------------------------ score
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
                    await self.windows.score_batch(batch)
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

    # ------------------------------------------------------------------ checkpoint
    async def _checkpoint_loop(self) -> None:
        interval = max(self.s.scoring_checkpoint_interval_ms, 50) / 1000
        while True:
            await asyncio.sleep(interval)
            try:
                await self.checkpoint()
            except Exception:
                log.exception("worker checkpoint failed (will retry)")

    async def checkpoint(self) -> None:
        """Flush outputs, store marks, commit offsets (service/scoring/emitter.py)."""
        await self.emitter.checkpoint(self.consumer, self.feed.needed_offsets)
