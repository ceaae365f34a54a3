"""Binance spot and USD-M futures frame parsers: pure functions, frame bytes -> events, or ParseError.

Frames come from combined streams (`{"stream": "<name>", "data": {...}}`) or raw streams (the payload alone).
Payloads are decoded straight into typed msgspec structs, so a wrong type anywhere is a ParseError with the field
path, and prices/sizes become Decimal from the exchange's strings without a float in between.
Replay of recorded frames calls the same functions (`parse_binance`).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

import msgspec

from service.ingest.errors import ParseError
from service.ingest.events import Control, Parsed, check_levels, check_price, check_size, check_time, check_times
from service.schemas.eventtime import TimeBounds
from service.schemas.market import Bar, BookUpdate, Trade

Market = Literal["spot", "usdm"]
VENUES: dict[Market, str] = {"spot": "binance-spot", "usdm": "binance-usdm"}

_Level = tuple[Decimal, Decimal]


_NO = msgspec.Raw(b"")


class _Envelope(msgspec.Struct):
    """Only the routing fields; `data` stays raw until its stream tells which struct to decode it into."""

    stream: str | None = None
    data: msgspec.Raw = _NO
    e: str | None = None
    id: int | str | None = None
    result: msgspec.Raw = _NO
    error: msgspec.Raw = _NO


class _Head(msgspec.Struct):
    e: str | None = None


class _AggTrade(msgspec.Struct):
    s: str
    a: int
    p: Decimal
    q: Decimal
    T: int
    m: bool


class _RawTrade(msgspec.Struct):
    s: str
    t: int
    p: Decimal
    q: Decimal
    T: int
    m: bool


class _K(msgspec.Struct):
    t: int
    T: int
    i: str
    o: Decimal
    c: Decimal
    h: Decimal
    l: Decimal  # noqa: E741 - Binance's field name
    v: Decimal
    x: bool
    n: int | None = None
    q: Decimal | None = None
    V: Decimal | None = None


class _Kline(msgspec.Struct):
    s: str
    k: _K


class _Depth(msgspec.Struct):
    E: int
    s: str
    U: int
    u: int
    b: list[_Level]
    a: list[_Level]
    pu: int | None = None
    T: int | None = None


_ENV = msgspec.json.Decoder(_Envelope)
_HEAD = msgspec.json.Decoder(_Head)
_AGG = msgspec.json.Decoder(_AggTrade)
_TRADE = msgspec.json.Decoder(_RawTrade)
_KLINE = msgspec.json.Decoder(_Kline)
_DEPTH = msgspec.json.Decoder(_Depth)

# streams this service reads but does not publish (the local book already gives the top of book)
_IGNORED = frozenset({"bookTicker", "24hrTicker", "24hrMiniTicker", "markPriceUpdate", "forceOrder"})


def _symbol(s: str) -> str:
    if not s or not s.isalnum() or not s.isascii() or len(s) > 32:
        raise ParseError("bad_symbol", repr(s[:40]))
    return s.upper()


def _trade(venue: str, ingest_ms: int, s: str, tid: int, p: Decimal, q: Decimal, t_ms: int, m: bool) -> Trade:
    if tid < 0:
        raise ParseError("bad_id", str(tid))
    return Trade(
        venue=venue,
        symbol=_symbol(s),
        event_time_ms=check_time(t_ms, "T"),
        ingest_time_ms=ingest_ms,
        trade_id=str(tid),
        price=check_price(p, "p"),
        size=check_size(q, "q"),
        side="sell" if m else "buy",  # m: buyer is the maker, so the taker sold
    )


def _payload(kind: str, data: bytes, venue: str, ingest_ms: int) -> list[Parsed]:
    if kind == "aggTrade":
        a = _AGG.decode(data)
        return [_trade(venue, ingest_ms, a.s, a.a, a.p, a.q, a.T, a.m)]
    if kind == "trade":
        t = _TRADE.decode(data)
        return [_trade(venue, ingest_ms, t.s, t.t, t.p, t.q, t.T, t.m)]
    if kind == "depthUpdate" or kind == "depth":
        d = _DEPTH.decode(data)
        if d.u < d.U or d.U < 0:
            raise ParseError("bad_sequence", f"U={d.U} u={d.u}")
        return [
            BookUpdate(
                venue=venue,
                symbol=_symbol(d.s),
                event_time_ms=check_time(d.E, "E"),
                ingest_time_ms=ingest_ms,
                first_update_id=d.U,
                final_update_id=d.u,
                prev_final_update_id=d.pu,
                bids=check_levels(d.b, "b"),
                asks=check_levels(d.a, "a"),
            )
        ]
    if kind == "kline":
        kl = _KLINE.decode(data)
        k = kl.k
        if not k.x:
            return []  # only closed candles enter the bar topic
        for name, value in (("o", k.o), ("h", k.h), ("l", k.l), ("c", k.c)):
            check_price(value, name)
        if not (k.l <= min(k.o, k.c) and k.h >= max(k.o, k.c)):
            raise ParseError("bad_candle", f"o={k.o} h={k.h} l={k.l} c={k.c}")
        return [
            Bar(
                venue=venue,
                symbol=_symbol(kl.s),
                event_time_ms=check_time(k.T, "k.T"),
                ingest_time_ms=ingest_ms,
                interval=k.i,
                open_time_ms=check_time(k.t, "k.t"),
                close_time_ms=k.T,
                open=k.o,
                high=k.h,
                low=k.l,
                close=k.c,
                volume=check_size(k.v, "v"),
                quote_volume=k.q,
                trades=k.n,
                taker_buy_volume=k.V,
            )
        ]
    if kind == "serverShutdown":
        return [Control("shutdown", detail="serverShutdown")]
    if kind in _IGNORED:
        return []
    raise ParseError("unexpected_frame", f"event {kind[:40]!r}")


def _stream_kind(stream: str) -> str:
    """`btcusdt@depth@100ms` -> `depth`, `btcusdt@kline_1m` -> `kline`, `!serverShutdown` -> `serverShutdown`."""
    if stream.startswith("!"):
        return stream[1:].split("@", 1)[0]
    parts = stream.split("@")
    if len(parts) < 2:
        raise ParseError("unexpected_frame", f"stream {stream[:40]!r}")
    return parts[1].split("_", 1)[0]


def parse_binance(frame: bytes | str, market: Market, ingest_ms: int, bounds: TimeBounds | None = None) -> list[Parsed]:
    """Parse one frame; with `bounds`, a frame whose event time is outside them around `ingest_ms` is refused
    (`bad_time`)."""
    return check_times(_parse_binance(frame, market, ingest_ms), ingest_ms, bounds)


def _parse_binance(frame: bytes | str, market: Market, ingest_ms: int) -> list[Parsed]:
    """Parse one Binance websocket frame. Raises ParseError(reason) for anything malformed or unexpected."""
    venue = VENUES[market]
    raw = frame.encode() if isinstance(frame, str) else frame
    try:
        env = _ENV.decode(raw)
        if env.stream is not None:
            if not env.data:
                raise ParseError("missing_field", "data")
            return _payload(_stream_kind(env.stream), bytes(env.data), venue, ingest_ms)
        if env.id is not None and (env.result or env.error):
            if env.error:
                return [Control("error", success=False, detail=bytes(env.error).decode()[:500], req_id=str(env.id))]
            return [Control("ack", success=True, req_id=str(env.id))]
        if env.e is not None:
            return _payload(env.e, raw, venue, ingest_ms)
        raise ParseError("unexpected_frame", "neither a stream frame, an event nor a reply")
    except ParseError:
        raise
    except msgspec.ValidationError as exc:
        raise ParseError("invalid_field", str(exc)[:300]) from None
    except msgspec.DecodeError as exc:
        raise ParseError("invalid_json", str(exc)[:300]) from None
    except (ValueError, TypeError, ArithmeticError) as exc:  # decimal/int edge cases the decoders let through
        raise ParseError("invalid_field", repr(exc)[:300]) from None
