"""The api's topic followers: alerts -> the persistent alert log, scores -> latest scores per key, trades and bars ->
a small price/volume tape per key for the dashboard, plus the freshness figures the dashboard's health panel shows.

Why the api consumes topics itself (in its own consumer groups): the alert log must survive an API restart and be
the same for every API process, so it lives in the state store, written once by whichever process owns a partition.
Offsets are committed only after the batch is written (at-least-once); the alert log de-duplicates by alert id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from service.api.alertlog import AlertLog
from service.api.hub import AlertHub
from service.api.metrics import FOLLOWER_LAG, FOLLOWER_RECORDS
from service.bus import Bus
from service.bus.base import Consumer, Record
from service.runtime import Health, cancel_and_wait
from service.settings import Settings
from service.state import StateStore

log = logging.getLogger(__name__)

FRESHNESS_KEY = "api:freshness"
TAPE_KEYS = "tape:keys"


def scores_stream(key: str) -> str:
    return f"scores:{key}"


def tape_stream(key: str) -> str:
    return f"tape:{key}"


class TopicFollower:
    """A consumer-group member that hands each batch to `handle` and commits after it succeeds."""

    kind = "abstract"
    fetch_max_wait_ms: int | None = None  # None: aiokafka's default (500 ms); the alert log sets a short one

    def __init__(self, bus: Bus, topics: Sequence[str], group: str) -> None:
        self.bus = bus
        self.topics = list(topics)
        self.group = group
        self.name = f"api-follow-{self.kind}"
        self._consumer: Consumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._error: str | None = None
        self.handled = 0

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        await self.flush()
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                await self._consumer.stop()
            self._consumer = None

    def health(self) -> Health:
        if self._task is None or self._task.done():
            return Health(False, "not running")
        if self._error:
            return Health(False, self._error)
        return Health(True, f"{self.handled} records from {','.join(self.topics)}")

    async def handle(self, records: list[Record]) -> None:
        raise NotImplementedError

    async def flush(self) -> None:
        """Write out anything held in memory (called on idle and at stop)."""

    async def _run(self) -> None:
        while True:
            try:
                if self._consumer is None:
                    consumer = self.bus.consumer(self.topics, self.group, fetch_max_wait_ms=self.fetch_max_wait_ms)
                    await consumer.start()
                    self._consumer = consumer
                records = await self._consumer.getmany(timeout_ms=200)
                if records:
                    await self.handle(records)
                    self.handled += len(records)
                    await self._consumer.commit()
                    newest = max(r.timestamp_ms for r in records)
                    FOLLOWER_LAG.labels(kind=self.kind).set(max(0.0, time.time() - newest / 1000))
                else:
                    await self.flush()
                self._error = None
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._error = f"{self.name}: {exc}"
                log.warning("%s", self._error)
                if self._consumer is not None:
                    with contextlib.suppress(Exception):
                        await self._consumer.stop()
                    self._consumer = None
                await asyncio.sleep(1.0)


class AlertLogFollower(TopicFollower):
    """alerts topic -> the persistent alert log (idempotent by alert id)."""

    kind = "alerts"

    def __init__(
        self,
        bus: Bus,
        settings: Settings,
        log_: AlertLog,
        hub: AlertHub | None,
        state: StateStore,
        on_new: Callable[[dict[str, Any]], Awaitable[object]] | None = None,
    ) -> None:
        super().__init__(bus, [settings.topic_alerts], "rmad-api-alert-log")
        self.on_new = on_new  # called once per newly logged alert (the desk captures its evidence)
        # alerts are few and latency-critical: without this a broker may park each fetch up to 500 ms
        self.fetch_max_wait_ms = settings.scoring_fetch_max_wait_ms
        self.log = log_
        self.hub = hub
        self.state = state

    async def handle(self, records: list[Record]) -> None:
        appended = 0
        for r in records:
            try:
                alert = orjson.loads(r.value)
                alert_id = str(alert["id"])
            except (orjson.JSONDecodeError, KeyError, TypeError):
                FOLLOWER_RECORDS.labels(kind=self.kind, outcome="invalid").inc()
                log.warning("alerts topic: skipping an unreadable record at %s/%s", r.partition, r.offset)
                continue
            new, _ = await self.log.append_raw(alert_id, r.value)
            appended += int(new)
            if new and self.on_new is not None:
                try:
                    await self.on_new(alert)
                except Exception as exc:  # evidence is a companion of the alert, never a reason to lose it
                    log.warning("alert %s: evidence not captured: %s", alert_id, exc)
            FOLLOWER_RECORDS.labels(kind=self.kind, outcome="new" if new else "duplicate").inc()
        await self.state.hset(FRESHNESS_KEY, {"alert_record_ms": max(r.timestamp_ms for r in records)})
        if appended and self.hub is not None:
            self.hub.wake()


class ScoresFollower(TopicFollower):
    """scores topic -> a capped stream of the latest scores per key (GET /v1/scores, the dashboard's score chart)."""

    kind = "scores"

    def __init__(self, bus: Bus, settings: Settings, state: StateStore) -> None:
        super().__init__(bus, [settings.topic_scores], "rmad-api-scores")
        self.state = state
        self.maxlen = settings.api_scores_per_key

    async def handle(self, records: list[Record]) -> None:
        fresh: dict[str, str | int] = {}
        for r in records:
            try:
                score = orjson.loads(r.value)
                key = str(score["key"])
            except (orjson.JSONDecodeError, KeyError, TypeError):
                FOLLOWER_RECORDS.labels(kind=self.kind, outcome="invalid").inc()
                continue
            await self.state.xadd(scores_stream(key), {"json": r.value}, maxlen=self.maxlen)
            FOLLOWER_RECORDS.labels(kind=self.kind, outcome="new").inc()
            fresh = {
                "score_record_ms": r.timestamp_ms,
                "score_scored_ms": int(score.get("scored_ms", 0)),
                "score_event_ms": int(score.get("last_event_ms", 0)),
                "model_name": str(score.get("model_name", "")),
                "model_version": str(score.get("model_version", "")),
            }
        if fresh:
            await self.state.hset(FRESHNESS_KEY, fresh)


@dataclass(slots=True)
class _Bucket:
    start_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float


class TapeFollower(TopicFollower):
    """market.trades and market.bars -> per-key price/volume bars (the dashboard's price chart)."""

    kind = "market"

    def __init__(
        self,
        bus: Bus,
        settings: Settings,
        state: StateStore,
        on_trade: Callable[[str, int, float, float, bool], None] | None = None,
    ) -> None:
        super().__init__(bus, [settings.topic_trades, settings.topic_bars], "rmad-api-tape")
        self.state = state
        self.on_trade = on_trade
        self.interval = settings.api_tape_interval_ms
        self.maxlen = settings.api_tape_per_key
        self._open: dict[str, _Bucket] = {}
        self._trade_keys: set[str] = set()  # keys with trades: their exchange bars would duplicate the tape
        self._last_ingest: dict[str, int | float] = {}

    async def _write(self, key: str, b: _Bucket) -> None:
        await self.state.xadd(
            tape_stream(key),
            {"t": b.start_ms, "o": b.open, "h": b.high, "l": b.low, "c": b.close, "v": b.volume},
            maxlen=self.maxlen,
        )
        await self.state.hset(TAPE_KEYS, {key: b.start_ms})

    async def handle(self, records: list[Record]) -> None:
        for r in records:
            try:
                got = orjson.loads(r.value)
                events: list[Any] = got["trades"] if got.get("type") == "trades" else [got]  # packed or single
            except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
                FOLLOWER_RECORDS.labels(kind=self.kind, outcome="invalid").inc()
                continue
            for ev in events:
                await self._event(r, ev)
        if self._last_ingest:
            await self.state.hset(FRESHNESS_KEY, self._last_ingest)
        await self._flush_stale(records[-1].timestamp_ms if records else None)

    async def _event(self, r: Record, ev: Any) -> None:
        try:
            kind = ev.get("type")
            key = f"{ev['venue']}:{ev['symbol']}"
            if kind == "trade":
                t_ms, price, size = int(ev["event_time_ms"]), float(ev["price"]), float(ev["size"])
                if key not in self._trade_keys and len(self._trade_keys) < 100_000:
                    self._trade_keys.add(key)
                await self._trade(key, t_ms, price, size)
                if self.on_trade is not None:
                    try:
                        self.on_trade(key, t_ms, price, size, ev.get("side") == "buy")
                    except Exception as exc:  # the live scoring context must never stop the tape
                        log.debug("live market context for %s: %s", key, exc)
            elif kind == "bar" and key not in self._trade_keys:
                vol = float(ev["volume"])
                b = _Bucket(int(ev["open_time_ms"]), float(ev["open"]), float(ev["high"]), float(ev["low"]),
                            float(ev["close"]), vol)  # fmt: skip
                await self._write(key, b)
            else:
                return
            if "ingest_time_ms" in ev and "event_time_ms" in ev:
                self._last_ingest = {
                    "ingest_lag_ms": int(ev["ingest_time_ms"]) - int(ev["event_time_ms"]),
                    "ingest_record_ms": r.timestamp_ms,
                }
            FOLLOWER_RECORDS.labels(kind=self.kind, outcome="new").inc()
        except (KeyError, TypeError, ValueError, AttributeError):
            FOLLOWER_RECORDS.labels(kind=self.kind, outcome="invalid").inc()

    async def _trade(self, key: str, t_ms: int, price: float, size: float) -> None:
        start = t_ms - t_ms % self.interval
        b = self._open.get(key)
        if b is not None and start > b.start_ms:
            await self._write(key, b)
            b = None
        if b is None:
            self._open[key] = _Bucket(start, price, price, price, price, size)
            return
        if start < b.start_ms:  # late trade for a bar already written: ignore for the tape
            return
        b.high = max(b.high, price)
        b.low = min(b.low, price)
        b.close = price
        b.volume += size

    async def _flush_stale(self, now_ms: int | None) -> None:
        now = int(time.time() * 1000) if now_ms is None else now_ms
        for key, b in list(self._open.items()):
            if b.start_ms + 2 * self.interval <= now:
                await self._write(key, b)
                del self._open[key]

    async def flush(self) -> None:
        await self._flush_stale(None)
