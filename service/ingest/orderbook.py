"""Local order books kept by the exchanges' documented sequencing rules.

Binance (spot and USD-M): open the diff stream, buffer it, fetch a REST snapshot, drop buffered events the
snapshot already contains, then apply in order. Spot continuity is `U == prev_u + 1` (an overlapping first event
with `U <= lastUpdateId + 1 <= u` is allowed); futures continuity is `pu == prev_u`. Any break discards the book
and resyncs from a new snapshot.

Bybit v5: every `snapshot` replaces the book (including `u == 1` after a Bybit service restart); a `delta` must
have `u == prev_u + 1`, otherwise the book is discarded and the caller resubscribes to get a fresh snapshot.
A size of 0 deletes a level everywhere.

The sync classes are plain state machines (no I/O): they tell the connector what to do (`need_snapshot`), which
keeps them testable with recorded frames and reusable by replay.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from decimal import Decimal

from service.schemas.market import BookTop, BookUpdate, Level

_ZERO = Decimal(0)


class LocalBook:
    """Price -> size per side. Sizes are absolute (exchanges send the new size, not a delta)."""

    __slots__ = ("asks", "bids")

    def __init__(self, bids: list[Level] | None = None, asks: list[Level] | None = None) -> None:
        self.bids: dict[Decimal, Decimal] = {}
        self.asks: dict[Decimal, Decimal] = {}
        if bids:
            self.apply_side(self.bids, bids)
        if asks:
            self.apply_side(self.asks, asks)

    @staticmethod
    def apply_side(side: dict[Decimal, Decimal], levels: list[Level]) -> None:
        for price, size in levels:
            if size == _ZERO:
                side.pop(price, None)
            else:
                side[price] = size

    def apply(self, bids: list[Level], asks: list[Level]) -> None:
        self.apply_side(self.bids, bids)
        self.apply_side(self.asks, asks)

    def top_bids(self, n: int) -> list[Level]:
        return [(p, self.bids[p]) for p in heapq.nlargest(n, self.bids)]

    def top_asks(self, n: int) -> list[Level]:
        return [(p, self.asks[p]) for p in heapq.nsmallest(n, self.asks)]

    def snapshot(self) -> tuple[dict[Decimal, Decimal], dict[Decimal, Decimal]]:
        return dict(self.bids), dict(self.asks)

    def crossed(self) -> bool:
        """A best bid at or above the best ask means the book is wrong (missed updates)."""
        return bool(self.bids and self.asks and max(self.bids) >= min(self.asks))

    def to_top(
        self,
        *,
        venue: str,
        symbol: str,
        levels: int,
        event_time_ms: int,
        ingest_time_ms: int,
        update_id: int,
        resync: bool = False,
        incomplete: bool = False,
    ) -> BookTop:
        bids = self.top_bids(levels)
        asks = self.top_asks(levels)
        bid_depth = sum((s for _, s in bids), _ZERO)
        ask_depth = sum((s for _, s in asks), _ZERO)
        total = bid_depth + ask_depth
        imbalance = float((bid_depth - ask_depth) / total) if total > 0 else 0.0
        return BookTop(
            venue=venue,
            symbol=symbol,
            event_time_ms=event_time_ms,
            ingest_time_ms=ingest_time_ms,
            update_id=update_id,
            best_bid=bids[0][0] if bids else None,
            best_ask=asks[0][0] if asks else None,
            bid_size=bids[0][1] if bids else None,
            ask_size=asks[0][1] if asks else None,
            bids=bids,
            asks=asks,
            imbalance=imbalance,
            resync=resync,
            incomplete=incomplete,
        )


@dataclass(slots=True)
class SyncOutcome:
    """What one step did and what the connector must do next."""

    applied: int = 0
    stale: int = 0
    gap: bool = False
    """Continuity broke: the book was discarded (a resync follows)."""
    need_snapshot: bool = False
    """Binance: fetch a REST snapshot now. Bybit: resubscribe the topic to get a fresh snapshot."""
    resynced: bool = False
    """The book was (re)built from a snapshot in this step."""
    gap_from_id: int | None = None
    gap_to_id: int | None = None


@dataclass
class BinanceBookSync:
    """One symbol's Binance local book (spot rule when `futures` is false, USD-M rule otherwise)."""

    symbol: str
    futures: bool
    max_buffer: int = 10_000
    book: LocalBook | None = None
    last_u: int | None = None
    buffer: list[BookUpdate] = field(default_factory=list)
    snapshot_pending: bool = False
    first_after_snapshot: bool = False
    ever_synced: bool = False

    @property
    def synced(self) -> bool:
        return self.book is not None

    def _request_snapshot(self, out: SyncOutcome) -> None:
        if not self.snapshot_pending:
            self.snapshot_pending = True
            out.need_snapshot = True

    def reset(self) -> None:
        """Forget the book (after a reconnect: the stream restarts and must be re-synchronised)."""
        self.book = None
        self.last_u = None
        self.buffer.clear()
        self.snapshot_pending = False
        self.first_after_snapshot = False

    def on_update(self, upd: BookUpdate) -> SyncOutcome:
        out = SyncOutcome()
        if self.book is None:
            self.buffer.append(upd)
            if len(self.buffer) > self.max_buffer:
                del self.buffer[: len(self.buffer) - self.max_buffer]
            self._request_snapshot(out)
            return out
        self._apply_checked(upd, out)
        return out

    def _gap(self, upd: BookUpdate, out: SyncOutcome) -> None:
        out.gap = True
        out.gap_from_id = self.last_u
        out.gap_to_id = upd.first_update_id
        self.book = None
        self.last_u = None
        self.first_after_snapshot = False
        self.buffer = [upd]
        self.snapshot_pending = False
        self._request_snapshot(out)

    def _apply_checked(self, upd: BookUpdate, out: SyncOutcome) -> None:
        assert self.book is not None and self.last_u is not None
        last = self.last_u
        if self.futures:
            if self.first_after_snapshot:
                if upd.final_update_id < last:
                    out.stale += 1
                    return
                if not upd.first_update_id <= last <= upd.final_update_id:
                    self._gap(upd, out)
                    return
            elif upd.prev_final_update_id != last:
                if upd.final_update_id <= last:
                    out.stale += 1
                    return
                self._gap(upd, out)
                return
        else:
            if upd.final_update_id <= last:
                out.stale += 1
                return
            if upd.first_update_id > last + 1:
                self._gap(upd, out)
                return
        self.book.apply(upd.bids, upd.asks)
        self.last_u = upd.final_update_id
        self.first_after_snapshot = False
        out.applied += 1

    def on_snapshot(self, last_update_id: int, bids: list[Level], asks: list[Level]) -> SyncOutcome:
        """Install a REST snapshot and replay the buffer. A snapshot older than the buffer asks for another."""
        out = SyncOutcome()
        self.snapshot_pending = False
        if self.buffer:
            first = self.buffer[0].first_update_id
            too_old = last_update_id < first if self.futures else last_update_id + 1 < first
            if too_old:
                self._request_snapshot(out)
                return out
        self.book = LocalBook(bids, asks)
        self.last_u = last_update_id
        self.first_after_snapshot = True
        self.ever_synced = True
        out.resynced = True
        pending, self.buffer = self.buffer, []
        for i, upd in enumerate(pending):
            self._apply_checked(upd, out)
            if out.gap:
                self.buffer.extend(pending[i + 1 :])
                out.resynced = False
                break
        return out


@dataclass
class BybitBookSync:
    """One topic's Bybit v5 local book."""

    symbol: str
    book: LocalBook | None = None
    last_u: int | None = None
    awaiting_snapshot: bool = False

    @property
    def synced(self) -> bool:
        return self.book is not None

    def reset(self) -> None:
        self.book = None
        self.last_u = None
        self.awaiting_snapshot = False

    def on_update(self, upd: BookUpdate) -> SyncOutcome:
        out = SyncOutcome()
        if upd.is_snapshot:
            self.book = LocalBook(upd.bids, upd.asks)
            self.last_u = upd.final_update_id
            self.awaiting_snapshot = False
            out.applied = 1
            out.resynced = True
            return out
        if self.book is None or self.last_u is None:
            if not self.awaiting_snapshot:
                self.awaiting_snapshot = True
                out.need_snapshot = True
            out.stale += 1
            return out
        if upd.final_update_id <= self.last_u:
            out.stale += 1
            return out
        if upd.final_update_id != self.last_u + 1:
            out.gap = True
            out.gap_from_id = self.last_u
            out.gap_to_id = upd.final_update_id
            self.book = None
            self.last_u = None
            self.awaiting_snapshot = True
            out.need_snapshot = True
            return out
        self.book.apply(upd.bids, upd.asks)
        self.last_u = upd.final_update_id
        out.applied = 1
        return out
