"""The analyst's desk of one runtime: cases, stored alert evidence, and the recent trades evidence draws on.

Why evidence is captured here too: the API logs every alert from the alerts topic, and at that moment the state
store holds the key's recent bars (the tape) and scores, and this process has seen its recent trades. The record is
built by service.evidence.builder (the same builder a worker-side capture uses) and stored with the alert, so it
outlives the raw topics. An alert logged before its score or its last bars arrived (the topics are followed
independently) is topped up when read, and its after-part is filled once the evidence window has passed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import msgspec
import orjson

from service.api.cases import CaseStore
from service.api.context import ApiContext
from service.api.followers import TopicFollower, scores_stream, tape_stream
from service.bus import Bus
from service.bus.base import Record
from service.evidence.builder import Evidence, build_evidence
from service.evidence.recorder import EvidenceRecorder, RecentBooks, RecentTrades
from service.evidence.store import EvidenceStore
from service.runtime import Health, cancel_and_wait
from service.schemas.market import BookTop, decode_market
from service.settings import Settings
from service.state import StateStore

log = logging.getLogger(__name__)

_ATTR = "desk"
MAX_INCOMPLETE = 1000


class BooksFollower(TopicFollower):
    """market.books -> the in-memory book snapshots evidence draws on (only where book rules run)."""

    kind = "books"

    def __init__(self, bus: Bus, settings: Settings, books: RecentBooks) -> None:
        super().__init__(bus, [settings.topic_books], "rmad-api-books")
        self.books = books

    async def handle(self, records: list[Record]) -> None:
        for r in records:
            try:
                ev = decode_market(r.value)
            except (msgspec.ValidationError, msgspec.DecodeError):
                continue
            if isinstance(ev, BookTop):
                self.books.add(ev)


@dataclass
class Desk:
    state: StateStore
    cases: CaseStore
    evidence: EvidenceStore
    recorder: EvidenceRecorder
    incomplete: dict[str, dict[str, Any]] = field(default_factory=dict)  # alert id -> alert, oldest first

    @property
    def trades(self) -> RecentTrades:
        return self.recorder.trades

    @property
    def books(self) -> RecentBooks:
        return self.recorder.books

    async def _series(self, key: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        bars_raw = await self.state.xrevrange(tape_stream(key), count=2000)
        bars = [{k: float(v) for k, v in f.items()} for _, f in bars_raw]
        scores_raw = await self.state.xrevrange(scores_stream(key), count=2000)
        scores = [orjson.loads(f["json"]) for _, f in scores_raw if "json" in f]
        return bars, scores

    async def capture(self, alert: dict[str, Any]) -> Evidence:
        """Build and store the evidence of one alert from the tape and scores in the store and this process's
        trades and books; evidence already stored (by the worker that raised the alert) is kept as it is. Either
        way, an evidence record still waiting for what followed the alert is remembered for `complete_due`."""
        ev = await self.evidence.get(str(alert["id"]))
        if ev is None:
            bars, scores = await self._series(str(alert["key"]))
            ev = self.recorder.capture(alert, bars, scores, source="api")
            await self.evidence.put(ev)
        if not ev.complete:
            if len(self.incomplete) >= MAX_INCOMPLETE:
                self.incomplete.pop(next(iter(self.incomplete)))
            self.incomplete[ev.alert_id] = alert
        return ev

    async def complete_due(self) -> int:
        """Top up the remembered incomplete evidence (the after-part, from the tape while it still holds it);
        returns how many records became complete."""
        done = 0
        for aid, alert in list(self.incomplete.items()):
            ev = await self.evidence_of(alert)
            if ev.complete:
                self.incomplete.pop(aid, None)
                done += 1
        return done

    async def evidence_of(self, alert: dict[str, Any]) -> Evidence:
        """The stored evidence, topped up while the evidence window is still open (scores and bars that arrived
        after the alert was logged, the after-part); once complete it is served as stored."""
        ev = await self.evidence.get(str(alert["id"]))
        if ev is not None and ev.complete:
            return ev
        key, end = str(alert["key"]), int(alert["window_end_ms"])
        bars, scores = await self._series(key)
        trades: list[dict[str, Any]] = []
        books: list[dict[str, Any]] = []
        if ev is not None:  # keep what was stored: the tape may have been trimmed since
            seen = {b["t"] for b in bars}
            bars += [{"t": b.t, "o": b.o, "h": b.h, "l": b.l, "c": b.c, "v": b.v} for b in ev.bars if b.t not in seen]
            seen_s = {int(s["window_end_ms"]) for s in scores}
            scores += [
                {"window_end_ms": s.t, "fused": s.fused, "threshold": s.threshold}
                for s in ev.scores
                if s.t not in seen_s
            ]
            trades = [asdict(t) for t in ev.trades]
            books = [asdict(b) for b in ev.books]
        if not trades:
            trades = self.trades.between(key, end - 3_600_000, end + self.recorder.bar_ms)
        seen_b = {b["t"] for b in books}
        books += [b for b in self.books.between(key, end - 3_600_000, end + self.recorder.limits.after_ms)
                  if b["t"] not in seen_b]  # fmt: skip
        new = build_evidence(
            alert, bars, scores, trades, books, bar_ms=self.recorder.bar_ms, now_ms=int(time.time() * 1000),
            limits=self.recorder.limits,
        )  # fmt: skip
        new.source = ev.source if ev is not None else "api"
        if ev is not None:
            new.captured_ms = ev.captured_ms
            new.notes = ev.notes
        await self.evidence.put(new)
        return new


class EvidenceCompleter:
    """Runtime component: every `interval_s`, complete the evidence records waiting for what followed their
    alert, so the after-part is stored while the price tape still holds it, whether or not anyone looks."""

    name = "api.evidence"

    def __init__(self, desk: Desk, interval_s: float = 10.0) -> None:
        self.desk = desk
        self.interval_s = interval_s
        self.completed = 0
        self._task: asyncio.Task[None] | None = None
        self._error = ""

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    def health(self) -> Health:
        if self._task is None or self._task.done():
            return Health(False, "not running")
        return Health(not self._error, self._error or f"{self.completed} evidence records completed")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                self.completed += await self.desk.complete_due()
                self._error = ""
            except Exception as exc:  # the store is down: try again next round
                self._error = f"completing evidence: {exc}"
                log.warning("%s", self._error)


def desk_for(ctx: ApiContext) -> Desk:
    d: Desk | None = ctx.extras.get(_ATTR)
    if d is None:
        s = ctx.settings
        d = Desk(
            state=ctx.state,
            cases=CaseStore(ctx.state),
            evidence=EvidenceStore(ctx.state, s.api_alert_ttl_s),
            recorder=EvidenceRecorder(s.api_tape_interval_ms),
        )
        ctx.extras[_ATTR] = d
    return d
