"""The analyst's desk of one runtime: cases, stored alert evidence, and the recent trades evidence draws on.

Why evidence is captured here too: the API logs every alert from the alerts topic, and at that moment the state
store holds the key's recent bars (the tape) and scores, and this process has seen its recent trades. The record is
built by service.evidence.builder (the same builder a worker-side capture uses) and stored with the alert, so it
outlives the raw topics. An alert logged before its score or its last bars arrived (the topics are followed
independently) is topped up when read, and its after-part is filled once the evidence window has passed.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict, deque
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any

import msgspec
import orjson

from service.api.cases import CaseStore
from service.api.context import ApiContext
from service.api.followers import TopicFollower, scores_stream, tape_stream
from service.bus import Bus
from service.bus.base import Record
from service.evidence.builder import Evidence, Limits, build_evidence
from service.evidence.store import EvidenceStore
from service.schemas.market import BookTop, decode_market
from service.settings import Settings
from service.state import StateStore

log = logging.getLogger(__name__)

_ATTR = "desk"


class RecentTrades:
    """The last trades per key, in memory (bounded per key and in keys): the rush an evidence record shows."""

    def __init__(self, per_key: int = 2000, max_keys: int = 2000) -> None:
        self.per_key = per_key
        self.max_keys = max_keys
        self._by_key: OrderedDict[str, deque[tuple[int, float, float, bool]]] = OrderedDict()

    def add(self, key: str, t_ms: int, price: float, size: float, buy: bool) -> None:
        q = self._by_key.get(key)
        if q is None:
            if len(self._by_key) >= self.max_keys:
                self._by_key.popitem(last=False)
            q = self._by_key[key] = deque(maxlen=self.per_key)
        else:
            self._by_key.move_to_end(key)
        q.append((t_ms, price, size, buy))

    def between(self, key: str, start_ms: int, end_ms: int) -> list[dict[str, Any]]:
        q = self._by_key.get(key, ())
        return [
            {"t": t, "price": p, "size": s, "side": "buy" if b else "sell"}
            for t, p, s, b in q
            if start_ms <= t <= end_ms
        ]


class RecentBooks:
    """Book snapshots per key, at most one a second, in memory (bounded per key and in keys): the evidence of
    book-based rules (spoofing-like). Each keeps the touch and the largest level on each side."""

    def __init__(self, per_key: int = 600, max_keys: int = 2000) -> None:
        self.per_key = per_key
        self.max_keys = max_keys
        self._by_key: OrderedDict[str, deque[dict[str, float]]] = OrderedDict()

    def add(self, book: BookTop) -> None:
        key = f"{book.venue}:{book.symbol}"
        q = self._by_key.get(key)
        if q is not None and q and book.event_time_ms - q[-1]["t"] < 1000:
            return
        if book.best_bid is None or book.best_ask is None:
            return
        if q is None:
            if len(self._by_key) >= self.max_keys:
                self._by_key.popitem(last=False)
            q = self._by_key[key] = deque(maxlen=self.per_key)
        wb = max(book.bids, key=lambda lv: lv[1], default=(book.best_bid, Decimal(0)))
        wa = max(book.asks, key=lambda lv: lv[1], default=(book.best_ask, Decimal(0)))
        q.append({
            "t": book.event_time_ms, "bid": float(book.best_bid), "bid_size": float(book.bid_size or 0),
            "ask": float(book.best_ask), "ask_size": float(book.ask_size or 0), "wall_bid": float(wb[0]),
            "wall_bid_size": float(wb[1]), "wall_ask": float(wa[0]), "wall_ask_size": float(wa[1]),
        })  # fmt: skip

    def between(self, key: str, start_ms: int, end_ms: int) -> list[dict[str, float]]:
        return [b for b in self._by_key.get(key, ()) if start_ms <= b["t"] <= end_ms]


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
    trades: RecentTrades
    books: RecentBooks
    bar_ms: int
    limits: Limits = field(default_factory=Limits)

    async def _series(self, key: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        bars_raw = await self.state.xrevrange(tape_stream(key), count=2000)
        bars = [{k: float(v) for k, v in f.items()} for _, f in bars_raw]
        scores_raw = await self.state.xrevrange(scores_stream(key), count=2000)
        scores = [orjson.loads(f["json"]) for _, f in scores_raw if "json" in f]
        return bars, scores

    async def capture(self, alert: dict[str, Any]) -> Evidence:
        """Build and store the evidence of one alert from what the store and this process hold now."""
        bars, scores = await self._series(str(alert["key"]))
        end = int(alert["window_end_ms"])
        window = self.limits.before_ms + 3_600_000  # the onset may lie well before the alert
        trades = self.trades.between(str(alert["key"]), end - window, end + self.bar_ms)
        books = self.books.between(str(alert["key"]), end - window, end + self.limits.after_ms)
        ev = build_evidence(
            alert, bars, scores, trades, books, bar_ms=self.bar_ms, now_ms=int(time.time() * 1000), limits=self.limits
        )
        await self.evidence.put(ev)
        return ev

    async def evidence_of(self, alert: dict[str, Any]) -> Evidence:
        """The stored evidence, topped up while the evidence window is still open (scores and bars that arrived
        after the alert was logged, the after-part); once complete it is served as stored."""
        ev = await self.evidence.get(str(alert["id"]))
        if ev is not None and ev.complete:
            return ev
        bars, scores = await self._series(str(alert["key"]))
        trades = ev.trades if ev is not None else []
        if ev is not None:  # keep what was stored: the tape may have been trimmed since
            seen = {b["t"] for b in bars}
            bars += [{"t": b.t, "o": b.o, "h": b.h, "l": b.l, "c": b.c, "v": b.v} for b in ev.bars if b.t not in seen]
            seen_s = {int(s["window_end_ms"]) for s in scores}
            scores += [
                {"window_end_ms": s.t, "fused": s.fused, "threshold": s.threshold}
                for s in ev.scores
                if s.t not in seen_s
            ]
        raw_trades = [{"t": t.t, "price": t.price, "size": t.size, "side": t.side} for t in trades]
        if not raw_trades:
            end = int(alert["window_end_ms"])
            raw_trades = self.trades.between(str(alert["key"]), end - 3_600_000, end + self.bar_ms)
        end = int(alert["window_end_ms"])
        books: list[dict[str, Any]] = [asdict(b) for b in ev.books] if ev is not None else []
        seen_b = {b["t"] for b in books}
        books += [b for b in self.books.between(str(alert["key"]), end - 3_600_000, end + self.limits.after_ms)
                  if b["t"] not in seen_b]  # fmt: skip
        new = build_evidence(
            alert, bars, scores, raw_trades, books, bar_ms=self.bar_ms, now_ms=int(time.time() * 1000),
            limits=self.limits,
        )  # fmt: skip
        if ev is not None:
            new.captured_ms = ev.captured_ms
            new.notes = ev.notes
        await self.evidence.put(new)
        return new


def desk_for(ctx: ApiContext) -> Desk:
    d: Desk | None = ctx.extras.get(_ATTR)
    if d is None:
        s = ctx.settings
        d = Desk(
            state=ctx.state,
            cases=CaseStore(ctx.state),
            evidence=EvidenceStore(ctx.state, s.api_alert_ttl_s),
            trades=RecentTrades(),
            books=RecentBooks(),
            bar_ms=s.api_tape_interval_ms,
        )
        ctx.extras[_ATTR] = d
    return d
