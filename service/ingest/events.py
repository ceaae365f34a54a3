"""What a parser returns: market events, plus control messages that steer the connection but are never published."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from service.ingest.errors import ParseError
from service.schemas.eventtime import TimeBounds
from service.schemas.market import Bar, BookUpdate, Trade

ControlKind = Literal["ack", "pong", "shutdown", "error"]


@dataclass(frozen=True, slots=True)
class Control:
    """A protocol frame: subscribe ack (`success` false = refused), pong, server shutdown notice, error reply."""

    kind: ControlKind
    success: bool = True
    detail: str = ""
    req_id: str | None = None


Parsed = Trade | BookUpdate | Bar | Control


def check_price(value: Decimal, what: str) -> Decimal:
    """Prices must be finite and positive: a NaN or a zero price in a feature window poisons every score."""
    if not value.is_finite() or value <= 0:
        raise ParseError("bad_number", f"{what}={value}")
    return value


def check_size(value: Decimal, what: str) -> Decimal:
    """Sizes must be finite and non-negative (0 deletes a book level)."""
    if not value.is_finite() or value < 0:
        raise ParseError("bad_number", f"{what}={value}")
    return value


def check_time(value: int, what: str) -> int:
    """Millisecond timestamps between 2000-01-01 and 2200-01-01; anything else is a unit or garbage error."""
    if not 946_684_800_000 <= value <= 7_258_118_400_000:
        raise ParseError("bad_time", f"{what}={value}: not a millisecond time between 2000 and 2200")
    return value


def check_times(events: list[Parsed], now_ms: int, bounds: TimeBounds | None) -> list[Parsed]:
    """Refuse the frame (`bad_time`) when an event's time falls outside `bounds` around the receive time `now_ms`:
    one absurd timestamp must not reach the bar builders downstream. No bounds: no check (pure parsing)."""
    if bounds is None:
        return events
    for ev in events:
        if isinstance(ev, Control):
            continue
        why = bounds.refuse(ev.event_time_ms, now_ms)
        if why is not None:
            raise ParseError("bad_time", f"{type(ev).__name__} event time {ev.event_time_ms}: {why}")
    return events


def check_levels(levels: list[tuple[Decimal, Decimal]], what: str) -> list[tuple[Decimal, Decimal]]:
    for price, size in levels:
        check_price(price, what)
        check_size(size, what)
    return levels
