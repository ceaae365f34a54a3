"""A key's recent trades, as the transaction scorer needs them: sizes, prices, same-millisecond groups, prints.

Why its own state (not the bars): a trade is judged against the trades around it (is this size usual here, is this
price inside the recent range, is it one fill of a burst, does it mirror an opposite print), which the 5-second
bars average away. Bounded: the last `capacity` prints. Plain data (`to_dict`/`from_dict`), so the scoring worker
can publish it to the state store and the API can read it instead of following trades itself.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class TradeContext:
    capacity: int = 256
    prints: deque[tuple[int, float, float, bool]] = field(default_factory=deque)  # (ms, price, size, taker buy)
    last_ms: int = 0

    def __post_init__(self) -> None:
        if self.prints.maxlen != self.capacity:
            self.prints = deque(self.prints, maxlen=self.capacity)

    def add(self, ts_ms: int, price: float, size: float, buy: bool) -> None:
        """Remember one trade (the oldest falls out past `capacity`; once per tick in the worker: kept cheap)."""
        if size > 0.0:  # the bar builder has checked the price; a zero-size print says nothing about sizes
            self.prints.append((ts_ms, price, size, buy))
            if ts_ms > self.last_ms:
                self.last_ms = ts_ms

    def __len__(self) -> int:
        return len(self.prints)

    def log_sizes(self) -> list[float]:
        return [math.log(p[2]) for p in self.prints]

    def vwap(self) -> float | None:
        vol = sum(p[2] for p in self.prints)
        return None if vol <= 0.0 else sum(p[1] * p[2] for p in self.prints) / vol

    def price_range(self) -> tuple[float, float] | None:
        if not self.prints:
            return None
        prices = [p[1] for p in self.prints]
        return min(prices), max(prices)

    def last_price(self) -> float | None:
        return self.prints[-1][1] if self.prints else None

    def same_ms(self, ts_ms: int, buy: bool) -> int:
        """Trades already seen in this millisecond on this side (the exchange's fills of one taker order)."""
        n = 0
        for t, _p, _s, b in reversed(self.prints):
            if t < ts_ms:
                break
            if t == ts_ms and b == buy:
                n += 1
        return n

    def mirror(self, ts_ms: int, size: float, buy: bool, window_ms: int) -> tuple[int, float] | None:
        """The newest opposite-side print of the same size within `window_ms`: (its time, its price), or None."""
        for t, p, s, b in reversed(self.prints):
            if abs(ts_ms - t) > window_ms and t < ts_ms:
                break
            if b != buy and abs(s - size) <= 1e-9 * max(s, size) and abs(ts_ms - t) <= window_ms:
                return t, p
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"capacity": self.capacity, "last_ms": self.last_ms, "prints": [list(p) for p in self.prints]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TradeContext:
        cap = max(1, min(int(d.get("capacity", 256)), 4096))
        ctx = cls(capacity=cap)
        for p in list(d.get("prints", []))[-cap:]:
            price, size = float(p[1]), float(p[2])
            if 0.0 < price < math.inf and 0.0 < size < math.inf:
                ctx.add(int(p[0]), price, size, bool(p[3]))
        return ctx
