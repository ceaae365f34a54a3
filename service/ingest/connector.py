"""What Binance and Bybit connectors share: turning parsed events into published ones with gaps marked.

The venue classes decide *what* continuity means (trade-id jumps, book sequence rules); this base turns their
verdicts into the published record: a `Gap` marker on the stream's topic, `incomplete`/`resync` flags on the next
event, counters, and per-key throttling of book tops.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import msgspec

from service.ingest.errors import ParseError
from service.ingest.metrics import DUPLICATES, HOT, RESYNCS
from service.ingest.orderbook import LocalBook, SyncOutcome
from service.ingest.publisher import MarketPublisher
from service.runtime import Health
from service.schemas.market import Bar, BookTop, Gap, GapReason, Trade

log = logging.getLogger(__name__)


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class _BookState:
    last_event_ms: int | None = None
    last_published_ms: int | None = None
    hole_from_ms: int | None = None
    hole_reason: GapReason | None = None
    pending_resync_flag: bool = False
    last_update_id: int = 0
    dirty: bool = False
    """Updates applied since the last published BookTop (throttled); the trailing flush publishes them."""


@dataclass
class _BarState:
    last_close_ms: int | None = None
    hole_from_ms: int | None = None


class ConnectorBase:
    """Publishing side of a connector; subclasses feed it parsed events."""

    name: str
    venue: str

    def __init__(self, publisher: MarketPublisher, *, book_levels: int, book_min_interval_ms: int) -> None:
        self.publisher = publisher
        self.book_levels = book_levels
        self.book_min_interval_ms = book_min_interval_ms
        self._books_state: dict[str, _BookState] = {}
        self._bars_state: dict[str, _BarState] = {}
        self._trade_reconnect: set[str] = set()
        self.trades_published = 0
        self.gaps_published = 0
        self.dead_letters = 0
        self.subscribe_errors: list[str] = []
        self._frames = HOT.frame_child(self.venue)
        self._dups = {s: DUPLICATES.labels(self.venue, s) for s in ("trades", "books", "bars")}

    # --- dead letters

    async def dead_letter(self, raw: bytes | str, err: ParseError, source: str = "ws") -> None:
        self.dead_letters += 1
        await self.publisher.dead_letter(self.venue, source, raw, err.reason, err.detail)

    # --- gaps

    async def publish_gap(
        self,
        symbol: str,
        stream: str,
        from_ms: int,
        to_ms: int,
        reason: GapReason,
        *,
        from_id: str | None = None,
        to_id: str | None = None,
        missing: int | None = None,
    ) -> None:
        gap = Gap(
            venue=self.venue,
            symbol=symbol,
            event_time_ms=to_ms,
            ingest_time_ms=now_ms(),
            stream=stream,  # type: ignore[arg-type]
            from_ms=min(from_ms, to_ms),
            to_ms=to_ms,
            reason=reason,
            from_id=from_id,
            to_id=to_id,
            missing=missing,
        )
        self.gaps_published += 1
        await self.publisher.publish_gap(gap)

    # --- trades

    def mark_reconnect(self, symbols: list[str], disconnected_ms: int) -> None:
        """After a disconnect: trades may be missing; book must resync; the next bar may be late."""
        for s in symbols:
            self._trade_reconnect.add(s)
            st = self._books_state.setdefault(s, _BookState())
            if st.hole_from_ms is None:
                st.hole_from_ms = st.last_event_ms if st.last_event_ms is not None else disconnected_ms
                st.hole_reason = "reconnect"

    def duplicate(self, stream: str) -> None:
        self._dups[stream].inc()

    async def emit_trade(self, trade: Trade) -> None:
        await self.publisher.publish_trade(trade)
        self.trades_published += 1

    # --- books

    def book_state(self, symbol: str) -> _BookState:
        st = self._books_state.get(symbol)
        if st is None:
            st = self._books_state[symbol] = _BookState()
        return st

    async def book_outcome(
        self, symbol: str, event_ms: int, outcome: SyncOutcome, book: LocalBook | None, update_id: int | None
    ) -> None:
        """Publish what a sync step produced: a gap marker when continuity broke, the book top when applied."""
        st = self.book_state(symbol)
        if outcome.stale:
            self._dups["books"].inc(outcome.stale)
        if outcome.gap:
            RESYNCS.labels(self.venue).inc()
            if st.hole_from_ms is None:
                st.hole_from_ms = st.last_event_ms if st.last_event_ms is not None else event_ms
                st.hole_reason = "sequence_gap"
            log.info(
                "%s %s: book sequence gap (%s -> %s), resyncing",
                self.venue,
                symbol,
                outcome.gap_from_id,
                outcome.gap_to_id,
            )
        if outcome.resynced:
            st.pending_resync_flag = True
            if st.hole_from_ms is not None:
                await self.publish_gap(
                    symbol,
                    "books",
                    st.hole_from_ms,
                    event_ms,
                    st.hole_reason or "resync",
                )
        if book is None or update_id is None or not (outcome.applied or outcome.resynced):
            return
        st.last_event_ms = event_ms
        st.last_update_id = update_id
        due = (
            st.pending_resync_flag
            or st.hole_from_ms is not None
            or st.last_published_ms is None
            or self.book_min_interval_ms == 0
            or event_ms - st.last_published_ms >= self.book_min_interval_ms
        )
        if not due:
            st.dirty = True
            return
        await self._publish_top(symbol, st, book, event_ms, update_id)

    async def _publish_top(self, symbol: str, st: _BookState, book: LocalBook, event_ms: int, update_id: int) -> None:
        top: BookTop = book.to_top(
            venue=self.venue,
            symbol=symbol,
            levels=self.book_levels,
            event_time_ms=event_ms,
            ingest_time_ms=now_ms(),
            update_id=update_id,
            resync=st.pending_resync_flag,
            incomplete=st.hole_from_ms is not None,
        )
        st.pending_resync_flag = False
        st.hole_from_ms = None
        st.hole_reason = None
        st.last_published_ms = event_ms
        st.dirty = False
        await self.publisher.publish_book(top)

    def current_book(self, symbol: str) -> LocalBook | None:
        """The synced local book of `symbol`, or None (subclasses know where their books live)."""
        return None

    async def flush_books(self) -> int:
        """Publish the latest state of every book whose last updates were held back by the throttle.

        Why: with one BookTop per interval, the final updates before a quiet spell would otherwise stay
        unpublished until the next update, and the worker would see a stale book.
        """
        n = 0
        for symbol, st in list(self._books_state.items()):
            book = self.current_book(symbol)
            if st.dirty and book is not None and st.last_event_ms is not None:
                await self._publish_top(symbol, st, book, st.last_event_ms, st.last_update_id)
                n += 1
        return n

    async def run_book_flusher(self) -> None:
        """Background loop: trailing flush of throttled books every `book_min_interval_ms`."""
        interval = max(self.book_min_interval_ms, 10) / 1000.0
        while True:
            await asyncio.sleep(interval)
            try:
                await self.flush_books()
            except Exception:
                log.exception("%s: publishing held-back book tops failed", self.venue)

    # --- bars

    async def emit_bar(self, bar: Bar) -> None:
        """Closed candles in order; a missing candle (open != previous close + 1) is a bars gap."""
        st = self._bars_state.get(bar.symbol)
        if st is None:
            st = self._bars_state[bar.symbol] = _BarState()
        if st.last_close_ms is not None:
            if bar.close_time_ms <= st.last_close_ms:
                self._dups["bars"].inc()
                return
            if bar.open_time_ms > st.last_close_ms + 1:
                await self.publish_gap(bar.symbol, "bars", st.last_close_ms + 1, bar.open_time_ms - 1, "sequence_gap")
                bar = msgspec.structs.replace(bar, incomplete=True)
        st.last_close_ms = bar.close_time_ms
        await self.publisher.publish_bar(bar)

    # --- health

    def base_health(self, sessions_connected: int, sessions: int, books_synced: int, books: int) -> Health:
        ok = sessions > 0 and sessions_connected == sessions
        detail = f"{sessions_connected}/{sessions} connections"
        if books:
            detail += f", {books_synced}/{books} books synced"
        if self.subscribe_errors:
            detail += f", refused: {', '.join(self.subscribe_errors[-3:])}"
        return Health(ok, detail)
