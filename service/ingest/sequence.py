"""Trade continuity: id-gap detection (Binance) and de-duplication by id (Bybit, and every late/duplicate frame).

Binance trade ids (`t`) and aggTrade ids (`a`) are per-symbol sequential in practice: a jump means trades were
lost (the connection dropped, the exchange skipped a push) and the interval is marked incomplete; an id at or
below the last one is a duplicate unless it fills a recorded hole (a late, out-of-order frame), which is let through.
Bybit trade ids are strings (UUIDs on linear), so only de-duplication by id applies there.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Literal

Verdict = Literal["ok", "dup", "gap", "late"]

MAX_TRACKED_HOLE = 10_000


@dataclass(slots=True)
class IdCheck:
    verdict: Verdict
    prev_id: int | None = None
    prev_ms: int | None = None
    missing: int = 0


@dataclass
class _SymbolSeq:
    last_id: int
    last_ms: int
    holes: set[int] = field(default_factory=set)


_OK = IdCheck("ok")


class TradeIdTracker:
    """Per-symbol last id; tells ok / duplicate / gap (with how many are missing) / late (fills a hole)."""

    def __init__(self) -> None:
        self._seq: dict[str, _SymbolSeq] = {}

    def check(self, symbol: str, trade_id: int, time_ms: int) -> IdCheck:
        s = self._seq.get(symbol)
        if s is None:
            self._seq[symbol] = _SymbolSeq(trade_id, time_ms)
            return _OK
        if trade_id == s.last_id + 1:
            s.last_id, s.last_ms = trade_id, time_ms
            return _OK
        if trade_id <= s.last_id:
            if trade_id in s.holes:
                s.holes.discard(trade_id)
                return IdCheck("late")
            return IdCheck("dup")
        prev_id, prev_ms = s.last_id, s.last_ms
        missing = trade_id - s.last_id - 1
        if missing <= MAX_TRACKED_HOLE:
            s.holes.update(range(s.last_id + 1, trade_id))
            if len(s.holes) > 4 * MAX_TRACKED_HOLE:  # keep memory bounded on a very lossy feed
                s.holes = set(sorted(s.holes)[-MAX_TRACKED_HOLE:])
        s.last_id, s.last_ms = trade_id, time_ms
        return IdCheck("gap", prev_id, prev_ms, missing)

    def last(self, symbol: str) -> tuple[int, int] | None:
        s = self._seq.get(symbol)
        return None if s is None else (s.last_id, s.last_ms)


class RecentIds:
    """The last `capacity` ids seen per key; `seen(id)` is True for a repeat (then the trade is dropped)."""

    def __init__(self, capacity: int = 20_000) -> None:
        self.capacity = capacity
        self._ids: dict[str, OrderedDict[str, None]] = {}

    def seen(self, key: str, trade_id: str) -> bool:
        ids = self._ids.get(key)
        if ids is None:
            ids = self._ids[key] = OrderedDict()
        if trade_id in ids:
            return True
        ids[trade_id] = None
        if len(ids) > self.capacity:
            ids.popitem(last=False)
        return False
