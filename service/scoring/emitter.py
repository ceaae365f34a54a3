"""The worker's outputs and its promise about them: scores and alerts out, then marks, then offsets.

The emitter sends scores, publishes alerts exactly once per id (service/scoring/delivery.py), keeps each key's
*mark* (the last produced window end and its alert-policy state) and the per-partition offset bookkeeping, and
checkpoints: flush the producer, store the marks in the state store, commit offsets; in this order, so a commit
never runs ahead of an output. An offset is never committed past (a) a record whose windows are not produced
yet (`pending`), (b) a record whose rule alert is not out yet (`held`), or (c) the first record of the oldest bar
a key still needs to rebuild its window (the window store's `needed_offsets`). A restarted worker therefore
re-reads that history, rebuilds the same windows, skips the ones already produced (the marks) and carries on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from service.bus.base import Bus, CommitFailedError, Consumer, Producer, TopicPartition
from service.evidence.worker_capture import WorkerEvidence
from service.schemas.scoring import Alert, Score
from service.scoring import metrics
from service.scoring.alerts import KeyAlertState
from service.scoring.delivery import AlertDelivery
from service.settings import Settings
from service.state.base import StateStore

log = logging.getLogger(__name__)

NeededOffsets = Callable[[Callable[[str], int | None]], dict[TopicPartition, int]]


def is_rule_key(key: str) -> bool:
    """Policy keys of the rules (`xv|key`, `sp|key`, `wt|key`) are no market keys: no window is produced for them."""
    return "|" in key


@dataclass(slots=True)
class Mark:
    """What a checkpoint stores per key: the last produced window end and the alert policy state."""

    window_end_ms: int
    alert: KeyAlertState

    def encode(self) -> str:
        return f"{self.window_end_ms};{self.alert.encode()}"

    @classmethod
    def decode(cls, raw: bytes) -> Mark:
        end, _, st = raw.decode().partition(";")
        return cls(int(end), KeyAlertState.decode(st))


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


class BatchMarks:
    """Policy states decided for one batch, kept apart until its outputs are out (a retried batch decides the
    same again): `local` per policy key, `by_tp` the encoded marks to checkpoint per partition."""

    def __init__(self) -> None:
        self.local: dict[str, Mark] = {}
        self.by_tp: dict[TopicPartition, dict[str, str]] = {}

    def set(self, key: str, mark: Mark, tp: TopicPartition | None) -> None:
        self.local[key] = mark
        if tp is not None:
            self.by_tp.setdefault(tp, {})[key] = mark.encode()


class Emitter:
    def __init__(self, settings: Settings, state: StateStore, client_id: str, stats: WorkerStats) -> None:
        self.s = settings
        self.state = state
        self.client_id = client_id
        self.stats = stats
        self.producer: Producer | None = None
        self.delivery: AlertDelivery | None = None
        self.owned: set[TopicPartition] = set()
        self.marks: dict[str, Mark] = {}
        self.key_tp: dict[str, TopicPartition] = {}
        self.dirty: dict[TopicPartition, dict[str, str]] = {}
        self.persisted: dict[str, int] = {}  # key -> end of its last window whose mark is in the state store
        self.processed: dict[TopicPartition, int] = {}  # next offset to read per partition
        self.pending: dict[TopicPartition, deque[int]] = {}  # offsets of records whose windows are queued
        self.held: dict[TopicPartition, list[int]] = {}  # offsets of records whose rule alerts are not out yet
        self.committed: dict[TopicPartition, int] = {}
        self._lock = asyncio.Lock()
        self.last_checkpoint = time.monotonic()
        # what alerts' evidence is drawn from, stored before each alert goes out (service/evidence)
        self.evidence = WorkerEvidence(state, settings.api_alert_ttl_s)

    async def start(self, producer: Producer) -> None:
        self.producer = producer
        self.delivery = AlertDelivery(self.state, producer, self.s.topic_alerts, self.s.alert_dedupe_ttl_s)

    # ------------------------------------------------------------------ keys
    def marks_key(self, tp: TopicPartition) -> str:
        return f"worker:{self.s.scoring_group_id}:marks:{tp.topic}:{tp.partition}"

    def inflight_key(self, tp: TopicPartition | None) -> str:
        if tp is None:
            return "alerts:inflight:none"
        return f"alerts:inflight:{self.s.scoring_group_id}:{tp.topic}:{tp.partition}"

    # ------------------------------------------------------------------ policy state
    def policy_state(self, key: str, batch: BatchMarks | None = None) -> KeyAlertState:
        """The key's alert state: its batch-local one, else the committed one (decisions never mutate it)."""
        if batch is not None and key in batch.local:
            return batch.local[key].alert
        mark = self.marks.get(key)
        return mark.alert if mark is not None else KeyAlertState()

    def keep(self, batch: BatchMarks) -> None:
        """A batch's outputs are out: its states become the committed ones, its marks go to the next checkpoint."""
        self.marks.update(batch.local)
        for tp, marks in batch.by_tp.items():
            self.dirty.setdefault(tp, {}).update(marks)

    def produced_before(self, key: str, window_end_ms: int) -> bool:
        """Whether a window of `key` ending at `window_end_ms` was produced already (before a restart)."""
        mark = self.marks.get(key)
        return mark is not None and window_end_ms <= mark.window_end_ms

    # ------------------------------------------------------------------ outputs
    async def send_score(self, score: Score) -> None:
        assert self.producer is not None
        await self.producer.send(self.s.topic_scores, score.model_dump_json().encode(), key=score.key.encode())
        self.evidence.on_score(score)

    async def publish(self, alert: Alert, tp: TopicPartition | None) -> bool:
        """Publish one alert at most once per id; False when it was out already (a re-scored window)."""
        assert self.delivery is not None
        await self.evidence.capture(alert)
        if await self.delivery.publish(alert.id, alert.key, alert.model_dump_json().encode(), self.inflight_key(tp)):
            self.stats.alerts += 1
            metrics.ALERTS.labels(type=alert.anomaly_type.value, severity=alert.severity.value).inc()
            log.info(
                "alert %s %s %s (%s) at %d score %.3g",
                alert.id,
                alert.key,
                alert.anomaly_type.value,
                alert.model_name,
                alert.window_end_ms,
                alert.score,
            )
            return True
        self.stats.duplicates_suppressed += 1
        log.info("alert %s already published (a re-scored window)", alert.id)
        return False

    # ------------------------------------------------------------------ offsets
    def read(self, tp: TopicPartition, offset: int) -> None:
        """A record was consumed (its windows, if any, are queued or dropped)."""
        self.processed[tp] = offset + 1

    def queued(self, tp: TopicPartition, offset: int) -> None:
        self.pending.setdefault(tp, deque()).append(offset)

    def done(self, tp: TopicPartition | None) -> None:
        """The oldest queued window of `tp` is produced (windows of a partition are produced in queue order)."""
        if tp is not None:
            q = self.pending.get(tp)
            if q:
                q.popleft()

    def hold(self, tp: TopicPartition, offset: int) -> None:
        self.held.setdefault(tp, []).append(offset)

    def forget_positions(self) -> None:
        """Windows are rebuilt from the committed offsets (a new window geometry)."""
        self.processed.clear()
        self.pending.clear()

    # ------------------------------------------------------------------ assignment
    async def assign(self, bus: Bus, current: set[TopicPartition]) -> tuple[set[TopicPartition], set[TopicPartition]]:
        """Follow a rebalance: forget revoked partitions, load the marks of new ones and settle their alerts left
        in flight. Returns (new, lost)."""
        lost = self.owned - current
        new = current - self.owned
        for tp in lost:
            self.processed.pop(tp, None)
            self.committed.pop(tp, None)
            self.dirty.pop(tp, None)
            for k in [k for k, t in self.key_tp.items() if t == tp]:
                self.marks.pop(k, None)
                self.persisted.pop(k, None)
                del self.key_tp[k]
        for tp in new:
            raw = await self.state.hgetall(self.marks_key(tp))
            for k, v in raw.items():
                self.marks[k] = Mark.decode(v)
                self.key_tp[k] = tp
                if not is_rule_key(k):
                    self.persisted[k] = self.marks[k].window_end_ms
            if self.delivery is not None:
                await self.delivery.recover(bus, self.inflight_key(tp))
        self.owned = set(current)
        return new, lost

    def committable(self, needed: NeededOffsets) -> dict[TopicPartition, int]:
        """Per owned partition: the offset a restart may resume from without losing a window or its history."""
        need = needed(self.persisted.get)
        out: dict[TopicPartition, int] = {}
        for tp in self.owned:
            nxt = self.processed.get(tp)
            if nxt is None:
                continue
            off = nxt
            q = self.pending.get(tp)
            if q:
                off = min(off, q[0])
            held = self.held.get(tp)
            if held:
                off = min(off, min(held))
            if tp in need:
                off = min(off, need[tp])
            out[tp] = off
        return out

    async def checkpoint(self, consumer: Consumer | None, needed: NeededOffsets) -> None:
        """Flush outputs, store marks, commit offsets: in this order, so a commit never runs ahead of outputs."""
        async with self._lock:
            dirty, self.dirty = self.dirty, {}
            try:
                if self.producer is not None:
                    await self.producer.flush()
                for tp, marks in dirty.items():
                    if marks and tp in self.owned:  # a revoked partition's marks belong to its new owner now
                        await self.state.hset(self.marks_key(tp), marks)
                if dirty:  # who scored how much: operators (and tests) see the group's split
                    await self.state.hset(
                        f"worker:{self.s.scoring_group_id}:members", {self.client_id: self.stats.scored}
                    )
            except Exception:
                for tp, marks in dirty.items():  # keep them for the next try
                    self.dirty.setdefault(tp, {}).update({k: v for k, v in marks.items() if k not in self.dirty[tp]})
                raise
            for marks in dirty.values():
                for key, raw in marks.items():
                    if not is_rule_key(key):
                        self.persisted[key] = int(raw.partition(";")[0])
            offsets = self.committable(needed)
            todo = {tp: o for tp, o in offsets.items() if o > self.committed.get(tp, -1) and tp in self.owned}
            if todo and consumer is not None:
                try:
                    await consumer.commit(todo)
                    self.committed.update(todo)
                    self.stats.commits += 1
                except CommitFailedError as exc:
                    log.warning("worker %s: commit refused (rebalance?): %s", self.client_id, exc)
            self.last_checkpoint = time.monotonic()
