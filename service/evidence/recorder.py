"""What the evidence of an alert is drawn from, kept where the alert is decided: recent trades, one book snapshot a
second, closed bars and scores per key, each in a bounded ring (per key and in keys), and `capture(alert)` which
hands them to the builder.

Why rings and not the topics: an alert is decided seconds after its data arrived; reading the raw topics back then
would cost a second consumer per alert and fail once retention has passed. The rings hold what one evidence
record needs (an hour of trades at most `per_key`, ten minutes of books) at a fixed memory bound.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Generic, TypeVar

from service.evidence.builder import Evidence, Limits, build_evidence
from service.schemas.market import BookTop

T = TypeVar("T")


class _Rings(Generic[T]):
    """Per-key deques; past `max_keys` the longest-held key is dropped (insertion order: no reordering per event,
    this sits on the worker's per-trade path)."""

    def __init__(self, per_key: int, max_keys: int) -> None:
        self.per_key = per_key
        self.max_keys = max_keys
        self._by_key: dict[str, deque[T]] = {}

    def ring(self, key: str) -> deque[T]:
        q = self._by_key.get(key)
        if q is None:
            if len(self._by_key) >= self.max_keys:
                del self._by_key[next(iter(self._by_key))]
            q = self._by_key[key] = deque(maxlen=self.per_key)
        return q

    def get(self, key: str) -> deque[T] | tuple[()]:
        return self._by_key.get(key, ())


class RecentTrades:
    """The last trades per key: the rush an evidence record shows."""

    def __init__(self, per_key: int = 2000, max_keys: int = 2000) -> None:
        self._rings: _Rings[tuple[int, float, float, bool]] = _Rings(per_key, max_keys)

    def add(self, key: str, t_ms: int, price: float, size: float, buy: bool) -> None:
        self._rings.ring(key).append((t_ms, price, size, buy))

    def between(self, key: str, start_ms: int, end_ms: int) -> list[dict[str, Any]]:
        q = self._rings.get(key)
        return [
            {"t": t, "price": p, "size": s, "side": "buy" if b else "sell"}
            for t, p, s, b in q
            if start_ms <= t <= end_ms
        ]


class RecentBooks:
    """Book snapshots per key, at most one a second, in memory (bounded per key and in keys): the evidence of
    book-based rules (spoofing-like). Each keeps the touch and the largest level on each side."""

    def __init__(self, per_key: int = 600, max_keys: int = 2000) -> None:
        self._rings: _Rings[dict[str, float]] = _Rings(per_key, max_keys)

    def add(self, book: BookTop) -> None:
        key = f"{book.venue}:{book.symbol}"
        last = self._rings.get(key)
        if last and book.event_time_ms - last[-1]["t"] < 1000:
            return
        if book.best_bid is None or book.best_ask is None:
            return
        q = self._rings.ring(key)
        wb = max(book.bids, key=lambda lv: lv[1], default=(book.best_bid, Decimal(0)))
        wa = max(book.asks, key=lambda lv: lv[1], default=(book.best_ask, Decimal(0)))
        q.append({
            "t": book.event_time_ms, "bid": float(book.best_bid), "bid_size": float(book.bid_size or 0),
            "ask": float(book.best_ask), "ask_size": float(book.ask_size or 0), "wall_bid": float(wb[0]),
            "wall_bid_size": float(wb[1]), "wall_ask": float(wa[0]), "wall_ask_size": float(wa[1]),
        })  # fmt: skip

    def between(self, key: str, start_ms: int, end_ms: int) -> list[dict[str, float]]:
        return [b for b in self._rings.get(key) if start_ms <= b["t"] <= end_ms]


class RecentSeries:
    """Bars built from the trades (OHLCV of `bar_ms`) and scores per key: what a worker feeds, having no price
    tape in the state store to read back. Tuples, not dicts, in the rings: a worker holds many keys."""

    def __init__(self, bar_ms: int = 1000, per_key: int = 600, max_keys: int = 2000) -> None:
        self.bar_ms = bar_ms
        self._bars: _Rings[tuple[int, float, float, float, float, float]] = _Rings(per_key, max_keys)
        self._open: dict[str, list[float]] = {}  # key -> [start, o, h, l, c, v] of the bar being built
        self._scores: _Rings[tuple[int, float, float]] = _Rings(per_key, max_keys)

    def add_trade(self, key: str, t_ms: int, price: float, size: float) -> None:
        start = t_ms - t_ms % self.bar_ms
        b = self._open.get(key)
        if b is not None and start == b[0]:
            if price > b[2]:
                b[2] = price
            elif price < b[3]:
                b[3] = price
            b[4] = price
            b[5] += size
            return
        if b is not None and start < b[0]:  # late trade for a closed bar: the evidence keeps the tape it had
            return
        if b is not None:
            self._bars.ring(key).append((int(b[0]), b[1], b[2], b[3], b[4], b[5]))
        elif len(self._open) >= self._bars.max_keys:
            self._open.pop(next(iter(self._open)))
        self._open[key] = [float(start), price, price, price, price, size]

    def add_bar(self, key: str, t_ms: int, o: float, h: float, low: float, c: float, v: float) -> None:
        self._bars.ring(key).append((t_ms, o, h, low, c, v))

    def add_score(self, key: str, window_end_ms: int, fused: float, threshold: float) -> None:
        self._scores.ring(key).append((window_end_ms, fused, threshold))

    def bars(self, key: str) -> list[dict[str, float]]:
        rows = list(self._bars.get(key))
        b = self._open.get(key)
        if b is not None:
            rows.append((int(b[0]), b[1], b[2], b[3], b[4], b[5]))
        return [{"t": t, "o": o, "h": h, "l": lo, "c": c, "v": v} for t, o, h, lo, c, v in rows]

    def scores(self, key: str) -> list[dict[str, float]]:
        return [{"window_end_ms": t, "fused": f, "threshold": thr} for t, f, thr in self._scores.get(key)]


class EvidenceRecorder:
    """Everything one process keeps for evidence, and the capture itself."""

    def __init__(self, bar_ms: int, limits: Limits | None = None) -> None:
        self.bar_ms = bar_ms
        self.limits = limits or Limits()
        self.trades = RecentTrades()
        self.books = RecentBooks()
        self.series = RecentSeries(bar_ms)

    def capture(
        self,
        alert: Mapping[str, Any],
        bars: list[dict[str, Any]] | None = None,
        scores: list[dict[str, Any]] | None = None,
        source: str = "",
    ) -> Evidence:
        """The alert's evidence from these bars and scores (default: the recorder's own series) and the rings'
        trades and books."""
        key, end = str(alert["key"]), int(alert["window_end_ms"])
        window = self.limits.before_ms + 3_600_000  # the onset may lie well before the alert
        ev = build_evidence(
            alert,
            self.series.bars(key) if bars is None else bars,
            self.series.scores(key) if scores is None else scores,
            self.trades.between(key, end - window, end + self.bar_ms),
            self.books.between(key, end - window, end + self.limits.after_ms),
            bar_ms=self.bar_ms,
            now_ms=int(time.time() * 1000),
            limits=self.limits,
        )
        ev.source = source
        return ev
