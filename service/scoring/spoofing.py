"""Spoofing-like order book activity: a large resting wall near the touch that appears and vanishes repeatedly
without being traded against.

Why a rule and not the model: the market model sees trade bars; a spoofer's orders are never executed, so they
leave no trace in trades. The top of the book (market.books, sequence-checked by ingest) shows them. Per key and
side, a *wall* is a level within `depth` levels of the touch holding at least `wall_mult` times the median size of
that side's levels in the same snapshot (a per-snapshot reference, so it adapts to any market). When a wall
vanishes while the touch never reached its price (it was pulled, not filled), that counts as one flip; `min_flips`
flips on one side within `window_ms` of event time raise a spoofing-like signal. A `Detector`
(service/scoring/detectors.py): `update(book)` returns the signals as findings.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from service.schemas.market import BookTop
from service.schemas.scoring import AnomalyType
from service.scoring.evidence import Contribution, Finding

RULE = "book-rules"
VERSION = "1"


def _f(d: Decimal) -> float:
    """A book number as a float; a signalling NaN (which `float` refuses) reads as NaN, so it never raises."""
    return math.nan if d.is_snan() else float(d)


@dataclass(frozen=True, slots=True)
class SpoofSignal:
    key: str
    side: str
    flips: int
    window_ms: int
    event_ms: int
    wall_mult: float  # the largest wall seen, in multiples of the side's median level size

    def explanation(self) -> str:
        return (
            f"{self.key}: spoofing-like order book activity: a {self.side} wall up to {self.wall_mult:.0f}x the "
            f"median level size appeared and was pulled {self.flips} times within {self.window_ms / 1000:.0f} s "
            f"without ever trading; a resting order that keeps vanishing before the price reaches it is a classic "
            f"sign of layering / spoofing. Check the venue's order book replay."
        )

    def finding(self, threshold: float) -> Finding:
        return Finding(
            rule=RULE,
            version=VERSION,
            policy_key=f"sp|{self.key}",
            key=self.key,
            event_ms=self.event_ms,
            anomaly=AnomalyType.SPOOFING_LIKE,
            score=float(self.flips),
            threshold=threshold,
            evidence=(
                Contribution(f"{self.side}_wall_x_median", self.wall_mult, 1.0, 0.0),
                Contribution("pulled_walls", float(self.flips), 0.0, 0.0),
            ),
            explanation=self.explanation(),
        )


@dataclass(slots=True)
class _Side:
    wall_px: float | None = None
    wall_mult: float = 0.0
    reached: bool = False
    flips: deque[int] = field(default_factory=deque)
    peak_mult: float = 0.0


@dataclass
class SpoofingMonitor:
    wall_mult: float = 8.0
    depth: int = 5
    window_ms: int = 120_000
    min_flips: int = 3
    max_keys: int = 100_000
    max_flips: int = 256  # flips kept per side (a burst at one event time cannot grow the deque without end)
    _state: dict[tuple[str, str], _Side] = field(default_factory=dict)

    @property
    def max_footprint(self) -> int:
        return self.max_keys * 2 * (1 + self.max_flips)

    def footprint(self) -> int:
        return sum(1 + len(st.flips) for st in self._state.values())

    def update(self, book: BookTop) -> Sequence[Finding]:
        """`observe` as findings, scored as pulled walls against `min_flips`."""
        return [sig.finding(float(self.min_flips)) for sig in self.observe(book)]

    def observe(self, book: BookTop) -> list[SpoofSignal]:
        out: list[SpoofSignal] = []
        best_bid = _f(book.best_bid) if book.best_bid is not None else None
        best_ask = _f(book.best_ask) if book.best_ask is not None else None
        for side, levels in (("bid", book.bids), ("ask", book.asks)):
            sig = self._side(book.key, side, levels, best_bid, best_ask, book.event_time_ms)
            if sig is not None:
                out.append(sig)
        if len(self._state) > self.max_keys * 2:
            for k in list(self._state)[: len(self._state) - self.max_keys * 2]:
                del self._state[k]
        return out

    def _side(
        self,
        key: str,
        side: str,
        levels: Sequence[tuple[Decimal, Decimal]],
        best_bid: float | None,
        best_ask: float | None,
        t: int,
    ) -> SpoofSignal | None:
        st = self._state.setdefault((key, side), _Side())
        sizes = [_f(q) for _, q in levels]
        wall_px: float | None = None
        mult = 0.0
        if len(sizes) >= 3:
            med = statistics.median(sizes)
            if med > 0:
                for (px, _), q in zip(levels[: self.depth], sizes, strict=False):
                    m = q / med
                    if m >= self.wall_mult and m > mult:
                        wall_px, mult = _f(px), m
        if st.wall_px is not None:
            # did the touch trade through the wall's price while it stood?
            if side == "bid" and best_ask is not None and best_ask <= st.wall_px:
                st.reached = True
            if side == "ask" and best_bid is not None and best_bid >= st.wall_px:
                st.reached = True
            if wall_px is None:
                if not st.reached:
                    st.flips.append(t)
                    if len(st.flips) > self.max_flips:
                        st.flips.popleft()
                st.wall_px, st.reached = None, False
        if wall_px is not None:
            if st.wall_px is None:
                st.wall_px, st.reached = wall_px, False
            st.peak_mult = max(st.peak_mult, mult)
        while st.flips and t - st.flips[0] > self.window_ms:
            st.flips.popleft()
        if not st.flips:
            st.peak_mult = mult
        if len(st.flips) >= self.min_flips:
            return SpoofSignal(key, side, len(st.flips), self.window_ms, t, st.peak_mult)
        return None
