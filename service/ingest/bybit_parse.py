"""Bybit v5 public frame parser (`parse_bybit`): trades, order-book snapshots/deltas, closed klines, replies.

Trades of linear markets carry UUID ids (no contiguity); book frames carry `u` (and `seq`); only `confirm: true`
klines become bars. Anything malformed or unexpected raises ParseError with a reason for the dead-letter topic.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import TYPE_CHECKING, Literal

import msgspec

from service.ingest.errors import ParseError
from service.ingest.events import Control, Parsed, check_levels, check_price, check_size, check_time, check_times
from service.schemas.eventtime import TimeBounds
from service.schemas.market import Bar, BookUpdate, Trade

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)

Market = Literal["spot", "linear"]
VENUES: dict[Market, str] = {"spot": "bybit-spot", "linear": "bybit-linear"}

# Bybit kline interval -> the service's interval names (Binance style)
INTERVALS = {
    "1": "1m",
    "3": "3m",
    "5": "5m",
    "15": "15m",
    "30": "30m",
    "60": "1h",
    "120": "2h",
    "240": "4h",
    "360": "6h",
    "720": "12h",
    "D": "1d",
    "W": "1w",
    "M": "1M",
}
TO_BYBIT_INTERVAL = {v: k for k, v in INTERVALS.items()}

_Level = tuple[Decimal, Decimal]
_NO = msgspec.Raw(b"")


class _Envelope(msgspec.Struct):
    topic: str | None = None
    type: str | None = None
    ts: int | None = None
    cts: int | None = None
    data: msgspec.Raw = _NO
    success: bool | None = None
    ret_msg: str | None = None
    op: str | None = None
    req_id: str | None = None


class _Trade(msgspec.Struct):
    i: str
    T: int
    p: Decimal
    v: Decimal
    S: str
    s: str


class _Book(msgspec.Struct):
    s: str
    b: list[_Level]
    a: list[_Level]
    u: int
    seq: int | None = None


class _Kline(msgspec.Struct):
    start: int
    end: int
    interval: str
    open: Decimal
    close: Decimal
    high: Decimal
    low: Decimal
    volume: Decimal
    confirm: bool
    turnover: Decimal | None = None


_ENV = msgspec.json.Decoder(_Envelope)
_TRADES = msgspec.json.Decoder(list[_Trade])
_BOOK = msgspec.json.Decoder(_Book)
_KLINES = msgspec.json.Decoder(list[_Kline])

_SIDES = {"Buy": "buy", "Sell": "sell"}


def _symbol(s: str) -> str:
    # dated futures look like BTC-27DEC24; ':' (the key separator) and anything else is refused
    if not s or not s.replace("-", "").replace("_", "").isalnum() or not s.isascii() or len(s) > 32:
        raise ParseError("bad_symbol", repr(s[:40]))
    return s.upper()


def _topic(env: _Envelope, venue: str, ingest_ms: int) -> list[Parsed]:
    topic = env.topic or ""
    parts = topic.split(".")
    if not env.data:
        raise ParseError("missing_field", "data")
    if parts[0] == "publicTrade" and len(parts) == 2:
        out: list[Parsed] = []
        for t in _TRADES.decode(env.data):
            side = _SIDES.get(t.S)
            if side is None:
                raise ParseError("invalid_field", f"S={t.S[:20]!r}")
            if not t.i or len(t.i) > 64:
                raise ParseError("bad_id", repr(t.i[:70]))
            out.append(
                Trade(
                    venue=venue,
                    symbol=_symbol(t.s),
                    event_time_ms=check_time(t.T, "T"),
                    ingest_time_ms=ingest_ms,
                    trade_id=t.i,
                    price=check_price(t.p, "p"),
                    size=check_size(t.v, "v"),
                    side="buy" if side == "buy" else "sell",
                )
            )
        return out
    if parts[0] == "orderbook" and len(parts) == 3:
        if env.type not in ("snapshot", "delta"):
            raise ParseError("invalid_field", f"type={str(env.type)[:20]!r}")
        b = _BOOK.decode(env.data)
        event_ms = env.cts if env.cts is not None else env.ts
        if event_ms is None:
            raise ParseError("missing_field", "ts")
        if b.u < 0:
            raise ParseError("bad_sequence", f"u={b.u}")
        return [
            BookUpdate(
                venue=venue,
                symbol=_symbol(b.s),
                event_time_ms=check_time(event_ms, "ts"),
                ingest_time_ms=ingest_ms,
                first_update_id=b.u,
                final_update_id=b.u,
                is_snapshot=env.type == "snapshot",
                seq=b.seq,
                bids=check_levels(b.b, "b"),
                asks=check_levels(b.a, "a"),
            )
        ]
    if parts[0] == "kline" and len(parts) == 3:
        symbol = _symbol(parts[2])
        bars: list[Parsed] = []
        for k in _KLINES.decode(env.data):
            if not k.confirm:
                continue  # only closed candles enter the bar topic
            for name, value in (("open", k.open), ("high", k.high), ("low", k.low), ("close", k.close)):
                check_price(value, name)
            if not (k.low <= min(k.open, k.close) and k.high >= max(k.open, k.close)):
                raise ParseError("bad_candle", f"o={k.open} h={k.high} l={k.low} c={k.close}")
            bars.append(
                Bar(
                    venue=venue,
                    symbol=symbol,
                    event_time_ms=check_time(k.end, "end"),
                    ingest_time_ms=ingest_ms,
                    interval=INTERVALS.get(k.interval, k.interval[:8]),
                    open_time_ms=check_time(k.start, "start"),
                    close_time_ms=k.end,
                    open=k.open,
                    high=k.high,
                    low=k.low,
                    close=k.close,
                    volume=check_size(k.volume, "volume"),
                    quote_volume=k.turnover,
                )
            )
        return bars
    raise ParseError("unexpected_frame", f"topic {topic[:60]!r}")


def parse_bybit(frame: bytes | str, market: Market, ingest_ms: int, bounds: TimeBounds | None = None) -> list[Parsed]:
    """Parse one frame; with `bounds`, a frame whose event time is outside them around `ingest_ms` is refused
    (`bad_time`)."""
    return check_times(_parse_bybit(frame, market, ingest_ms), ingest_ms, bounds)


def _parse_bybit(frame: bytes | str, market: Market, ingest_ms: int) -> list[Parsed]:
    """Parse one Bybit v5 public frame. Raises ParseError(reason) for anything malformed or unexpected."""
    venue = VENUES[market]
    try:
        env = _ENV.decode(frame)
        if env.topic is not None:
            return _topic(env, venue, ingest_ms)
        if env.op in ("ping", "pong") or env.ret_msg == "pong":
            return [Control("pong", req_id=env.req_id)]
        if env.op in ("subscribe", "unsubscribe") or env.success is not None:
            ok = bool(env.success)
            return [Control("ack" if ok else "error", success=ok, detail=(env.ret_msg or "")[:500], req_id=env.req_id)]
        raise ParseError("unexpected_frame", "neither a topic frame nor a reply")
    except ParseError:
        raise
    except msgspec.ValidationError as exc:
        raise ParseError("invalid_field", str(exc)[:300]) from None
    except msgspec.DecodeError as exc:
        raise ParseError("invalid_json", str(exc)[:300]) from None
    except (ValueError, TypeError, ArithmeticError) as exc:
        raise ParseError("invalid_field", repr(exc)[:300]) from None
