"""The simulator as a runtime Component: market events and labels onto the bus, paced by the wall clock."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from service.bus.base import TopicSpec
from service.ingest.publisher import MarketPublisher
from service.ingest.simulator.definitions import SimConfig, SimLabel
from service.ingest.simulator.files import to_market, write_labels
from service.ingest.simulator.generator import MarketSimulator
from service.runtime import Health

if TYPE_CHECKING:
    from service.bus.base import Bus, Producer
    from service.settings import Settings


log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------------ bus: labels, source


class LabelPublisher:
    """Publishes ground-truth labels to their topic (keyed like the market events) and optionally to files."""

    def __init__(self, producer: Producer, topic: str, out_dir: Path | None = None) -> None:
        self.producer = producer
        self.topic = topic
        self.out_dir = out_dir
        self.published: list[SimLabel] = []

    async def ensure_topic(self, bus: Bus, settings: Settings) -> None:
        """The runtime creates the standard topics; this one belongs to the simulator (and replays of its files)."""
        try:
            spec = TopicSpec(
                self.topic,
                settings.topic_partitions,
                settings.topic_replication_factor,
                {"retention.ms": str(settings.topic_retention_ms)},
            )
            await asyncio.wait_for(bus.create_topics([spec]), 10)
        except Exception as exc:  # the bus may come up later; the producer creates/retries on its own
            log.warning("could not create topic %s yet: %s", self.topic, exc)

    async def publish(self, label: SimLabel) -> None:
        await self.producer.send(self.topic, label.model_dump_json().encode(), key=label.key.encode())
        self.published.append(label)
        if self.out_dir is not None:
            write_labels(self.published, self.out_dir)


class SimulatorSource:
    """Runtime component for `rmad run --source simulator`: the simulated market, paced against the wall clock.

    Time: the simulated clock starts `sim_backfill_s` before now and runs at `sim_speed` simulated seconds per
    wall second until it catches up with now, then at 1x, so event times never lie in the future (the lag metric,
    the worker's windows and the dashboard's "last minutes" stay meaningful) while a demo still sees an anomaly
    within the first minute: with the defaults (20x, first anomaly 300 s after the start, phases compressed 2x)
    the first pump's rush starts 30-60 s after `rmad run`.
    """

    name = "ingest.simulator"

    def __init__(self, bus: Bus, settings: Settings, cfg: SimConfig | None = None) -> None:
        self._bus = bus
        self._settings = settings
        speed = settings.sim_speed
        backfill = settings.sim_backfill_s if speed > 1 else 0.0
        start = int(time.time() * 1000) - int(backfill * 1000)
        self.cfg = cfg or SimConfig(
            seed=settings.sim_seed,
            start_ms=start - start % 60_000,  # minute-aligned, so the first bar is whole
            duration_s=None,
            first_anomaly_s=settings.sim_first_anomaly_s,
            anomaly_every_s=settings.sim_anomaly_every_s,
            anomaly_time_scale=settings.sim_anomaly_time_scale,
            rate_scale=settings.sim_rate_scale,
        )
        self.speed = speed
        self.sim: MarketSimulator | None = None
        self.publisher: MarketPublisher | None = None
        self.labels: LabelPublisher | None = None
        self._producer: Producer | None = None
        self._task: asyncio.Task[None] | None = None
        self._error = ""
        self.events_published = 0
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        self._stopping.clear()
        self._producer = self._bus.producer()
        await self._producer.start()
        self.publisher = MarketPublisher(self._producer, self._settings)
        out = Path(self._settings.sim_labels_dir) if self._settings.sim_labels_dir else None
        self.labels = LabelPublisher(self._producer, self._settings.topic_sim_labels, out)
        await self.labels.ensure_topic(self._bus, self._settings)
        self.sim = MarketSimulator(self.cfg)
        log.info(
            "simulator: %d instruments, %gx until it catches up with now, first anomaly %.0f s after its start",
            len(self.cfg.instruments),
            self.speed,
            self.cfg.first_anomaly_s,
        )
        self._task = asyncio.create_task(self._run(), name="simulator")

    def target_ms(self, wall_elapsed_s: float, now_ms: int) -> int:
        """Simulated time due after `wall_elapsed_s`: start + speed x elapsed, never past now (when it started
        in the past)."""
        t = self.cfg.start_ms + int(wall_elapsed_s * 1000 * self.speed)
        return min(t, now_ms) if self.cfg.start_ms <= now_ms else t

    async def _run(self) -> None:
        assert self.sim is not None and self.publisher is not None and self.labels is not None
        sim, pub, labels = self.sim, self.publisher, self.labels
        wall0 = time.monotonic()
        seen_labels = 0
        last_flush = wall0
        max_chunk_ms = max(self.cfg.step_ms, int(1000 * max(1.0, self.speed) / 4))  # ~0.25 s of wall time
        try:
            while not self._stopping.is_set():  # stop() lets the chunk in hand finish, so it is sent whole
                now_ms = int(time.time() * 1000)
                target = self.target_ms(time.monotonic() - wall0, now_ms)
                target = min(target, sim.t_ms + max_chunk_ms)
                events = sim.run_until(target)
                for lab in sim.new_labels(seen_labels):
                    await labels.publish(lab)
                seen_labels = len(sim.labels)
                ingest_ms = int(time.time() * 1000)
                for e in events:
                    await pub.publish(to_market(e, ingest_ms))
                self.events_published += len(events)
                mono = time.monotonic()
                if mono - last_flush > 0.5:
                    await pub.flush()
                    last_flush = mono
                behind = self.target_ms(mono - wall0, ingest_ms) - sim.t_ms
                await asyncio.sleep(0 if behind > self.cfg.step_ms else self.cfg.step_ms / 1000 / self.speed)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("simulator stopped")
            self._error = f"{type(exc).__name__}: {exc}"

    async def stop(self) -> None:
        """Stop simulating after the chunk in hand (at most ~0.25 s of wall time of events), then flush and close
        the producer: every event counted in `events_published` is in the topics when this returns."""
        self._stopping.set()
        if self._task is not None and not self._task.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._task), 5.0)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        if self._producer is not None:
            try:
                if self.publisher is not None:
                    await self.publisher.flush()  # its open trade packs
            finally:
                await self._producer.stop()

    def health(self) -> Health:
        if self.sim is None:
            return Health(False, "not started")
        if self._error:
            return Health(False, f"simulator failed: {self._error}")
        lag_s = (time.time() * 1000 - self.sim.t_ms) / 1000
        return Health(
            True,
            f"simulated time {lag_s:.0f} s behind now, {self.events_published} events, {len(self.sim.labels)} labels",
        )
