"""Normalised, versioned market events: what ingest writes to market.trades / market.books / market.bars.

Why msgspec Structs rather than pydantic models: every trade on every venue passes through here, and the ingest
budget is a few microseconds per message; msgspec validates and (de)serialises an order of magnitude faster while
still checking every field's type on decode. The structs are frozen and tagged (`"type"`), so one decoder reads any
record of a market topic (`decode_market`) and a consumer can tell a trade from a gap marker.

Prices and sizes stay `Decimal` (parsed from the exchanges' strings, so "0.35280000" loses nothing); JSON carries
them as strings. Features use the `*_f` float accessors, converting only where floats are needed.

Contract (see docs/architecture.md): every event has `schema_version`, `venue`, `symbol`, the source's event time
(`event_time_ms`, ms UTC) and `ingest_time_ms`; the Kafka key is `key` = `venue:symbol`. A `Gap` marker on a topic
says "the interval [from_ms, to_ms] of this stream for this key is incomplete", and the first event after it carries
`incomplete=True`, so the worker can tell a gap from a quiet market.

Records of market.trades come in two forms, read alike by `decode_market_records` (and by the worker's
`decode_trade_ticks`): one event, or a `TradePack` (tag `"trades"`) holding the trades of one partition that ingest
published within a few milliseconds, in publish order (service/ingest/packing.py says why and how it is bounded).
"""

from __future__ import annotations

import base64
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Literal

import msgspec

SCHEMA_VERSION = 1


class Venue(StrEnum):
    """Venue names used in keys. Spot and derivatives of one exchange are separate venues (separate books)."""

    BINANCE_SPOT = "binance-spot"
    BINANCE_USDM = "binance-usdm"
    BYBIT_SPOT = "bybit-spot"
    BYBIT_LINEAR = "bybit-linear"
    SIMULATOR = "sim"


Side = Literal["buy", "sell"]
StreamKind = Literal["trades", "books", "bars"]


class MarketEvent(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Fields every market event carries."""

    schema_version: int = SCHEMA_VERSION
    venue: str
    symbol: str
    event_time_ms: int
    ingest_time_ms: int

    @property
    def key(self) -> str:
        """Kafka key: one key's events stay in one partition, in order."""
        return f"{self.venue}:{self.symbol}"

    @property
    def lag_s(self) -> float:
        """Event time to ingest time, seconds (what the ingest lag histogram observes)."""
        return (self.ingest_time_ms - self.event_time_ms) / 1000.0


class Trade(MarketEvent, frozen=True, kw_only=True, tag="trade"):
    """One executed trade. `side` is the taker's side (Binance `m`=true means the buyer was maker -> taker sold)."""

    trade_id: str
    price: Decimal
    size: Decimal
    side: Side
    incomplete: bool = False
    """True on the first trade after a gap (id jump, reconnect): the interval since the previous trade is partial."""

    @property
    def price_f(self) -> float:
        return float(self.price)

    @property
    def size_f(self) -> float:
        return float(self.size)

    @property
    def notional_f(self) -> float:
        return float(self.price * self.size)


Level = tuple[Decimal, Decimal]


class BookUpdate(MarketEvent, frozen=True, kw_only=True, tag="book_update"):
    """A parsed depth message before it is applied to a local book (snapshot or diff).

    Binance: `first_update_id`=U, `final_update_id`=u, `prev_final_update_id`=pu (futures only).
    Bybit: `final_update_id`=u, `first_update_id`=u, `seq`=cross sequence; `is_snapshot` replaces the book.
    A size of 0 deletes the level.
    """

    first_update_id: int
    final_update_id: int
    prev_final_update_id: int | None = None
    is_snapshot: bool = False
    seq: int | None = None
    bids: list[Level] = msgspec.field(default_factory=list)
    asks: list[Level] = msgspec.field(default_factory=list)


class BookTop(MarketEvent, frozen=True, kw_only=True, tag="book"):
    """The top of a locally maintained, sequence-checked order book (what market.books carries).

    `resync` is true on the first book after the local book was rebuilt from a snapshot following a gap
    (or at start); `incomplete` is true when updates were lost between the previous BookTop and this one.
    """

    update_id: int
    best_bid: Decimal | None
    best_ask: Decimal | None
    bid_size: Decimal | None
    ask_size: Decimal | None
    bids: list[Level]
    asks: list[Level]
    imbalance: float
    """(bid depth - ask depth) / (bid depth + ask depth) over the published levels, in [-1, 1]; 0 when empty."""
    resync: bool = False
    incomplete: bool = False

    @property
    def mid_f(self) -> float | None:
        if self.best_bid is None or self.best_ask is None:
            return None
        return float(self.best_bid + self.best_ask) / 2.0

    @property
    def spread_f(self) -> float | None:
        if self.best_bid is None or self.best_ask is None:
            return None
        return float(self.best_ask - self.best_bid)


class Bar(MarketEvent, frozen=True, kw_only=True, tag="bar"):
    """A closed candle (only `k.x` true / `confirm` true candles are ever emitted). event_time_ms = close time."""

    interval: str
    open_time_ms: int
    close_time_ms: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    quote_volume: Decimal | None = None
    trades: int | None = None
    taker_buy_volume: Decimal | None = None
    incomplete: bool = False

    @property
    def close_f(self) -> float:
        return float(self.close)

    @property
    def volume_f(self) -> float:
        return float(self.volume)


GapReason = Literal["sequence_gap", "reconnect", "resync", "stale", "source_gap"]


class Gap(MarketEvent, frozen=True, kw_only=True, tag="gap"):
    """The interval [from_ms, to_ms] of `stream` for this key is incomplete (data were or may have been lost).

    Published on the topic of the affected stream, keyed like the events, so it is ordered with them.
    `from_id`/`to_id` name the last id seen before and the first id after the hole where the source has ids.
    """

    stream: StreamKind
    from_ms: int
    to_ms: int
    reason: GapReason
    from_id: str | None = None
    to_id: str | None = None
    missing: int | None = None
    """How many messages are known to be missing (trade id jump), when the source tells."""


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True, tag="deadletter", tag_field="type"):
    """A frame that could not be parsed or was not expected, kept with the reason (topic `deadletters`)."""

    schema_version: int = SCHEMA_VERSION
    source: str
    venue: str
    reason: str
    """A short code from a fixed vocabulary (also the metric label), e.g. `invalid_json`, `missing_field`."""
    detail: str = ""
    raw: str
    raw_encoding: Literal["utf-8", "base64"] = "utf-8"
    time_ms: int

    @property
    def key(self) -> str:
        return f"{self.venue}:{self.source}"

    @classmethod
    def wrap(
        cls, *, source: str, venue: str, reason: str, raw: bytes | str, time_ms: int, detail: str = ""
    ) -> DeadLetter:
        """Keep the raw frame exactly: text as is, bytes that are not UTF-8 as base64."""
        if isinstance(raw, str):
            return cls(source=source, venue=venue, reason=reason, detail=detail, raw=raw, time_ms=time_ms)
        encoding: Literal["utf-8", "base64"] = "utf-8"
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text, encoding = base64.b64encode(raw).decode("ascii"), "base64"
        return cls(
            source=source,
            venue=venue,
            reason=reason,
            detail=detail,
            raw=text,
            raw_encoding=encoding,
            time_ms=time_ms,
        )

    def raw_bytes(self) -> bytes:
        return base64.b64decode(self.raw) if self.raw_encoding == "base64" else self.raw.encode("utf-8")


PACK_SCHEMA_VERSION = 1
MAX_PACK_TRADES = 10_000
"""Most trades one pack may hold (ingest seals packs far earlier, by RMAD_INGEST_PACK_MAX_TRADES); a decoder
refuses a longer one, so what one record can allocate is bounded whatever its size."""


class TradePack(msgspec.Struct, frozen=True, kw_only=True, tag="trades", tag_field="type"):
    """Several trades in one market.trades record: all of one partition, in the order ingest published them.

    Why: a Kafka record costs the publisher, the broker and every consumer far more than the few hundred bytes of a
    trade (the producer's per-record path, one batch entry per record, the consumer's per-record wrapper), and a
    busy partition sees hundreds of trades a second. Every trade keeps all its fields, so a pack read back is exactly
    the single records it replaces; a key's trades are in one partition and its packs leave in order, so per-key
    order holds. The record's Kafka key is the first trade's key (every trade in it maps to the same partition).
    """

    schema_version: int = PACK_SCHEMA_VERSION
    trades: Annotated[list[Trade], msgspec.Meta(max_length=MAX_PACK_TRADES)]


PublishedMarketEvent = Trade | BookTop | Bar | Gap
AnyMarketEvent = Trade | BookUpdate | BookTop | Bar | Gap

_ENCODER = msgspec.json.Encoder(decimal_format="string")
_MARKET_DECODER = msgspec.json.Decoder(AnyMarketEvent)
_RECORD_DECODER = msgspec.json.Decoder(AnyMarketEvent | TradePack)
_DEAD_DECODER = msgspec.json.Decoder(DeadLetter)


def encode(event: AnyMarketEvent | DeadLetter) -> bytes:
    """JSON bytes with the `type` tag; Decimals as strings."""
    return _ENCODER.encode(event)


def decode_market(data: bytes | str) -> AnyMarketEvent:
    """Decode one event (a single record of a market topic; raises msgspec.ValidationError for anything else,
    a `TradePack` included: read records with `decode_market_records`)."""
    event: AnyMarketEvent = _MARKET_DECODER.decode(data)
    return event


def decode_market_records(data: bytes | str) -> list[AnyMarketEvent]:
    """The events of one record of market.trades / market.books / market.bars, single or packed, in order
    (raises msgspec.ValidationError / DecodeError)."""
    got: AnyMarketEvent | TradePack = _RECORD_DECODER.decode(data)
    if isinstance(got, TradePack):
        return list(got.trades)
    return [got]


def encode_pack(encoded_trades: list[bytes]) -> bytes:
    """A `TradePack` record from trades already encoded with `encode` (what the packer holds): byte for byte
    `encode(TradePack(trades=...))`, without decoding or re-encoding a trade."""
    return _PACK_HEAD + b",".join(encoded_trades) + b"]}"


_PACK_HEAD = b'{"type":"trades","schema_version":%d,"trades":[' % PACK_SCHEMA_VERSION


class TradeTick(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="trade"):
    """A market.trades record read as the scoring worker needs it: the `Trade` fields that make bars, prices and
    sizes as floats.

    Why a second view of the same record: the worker touches every tick once and converts price and size to
    floats anyway; parsing the decimal strings straight to floats (correctly rounded, so equal to
    `float(Decimal(s))` and to what `apply_event` computes from a `Trade`) skips two Decimal constructions and two
    conversions per tick. Anything that is not a trade (a `Gap` marker) fails this decoder and goes through
    `decode_market`.
    """

    venue: str
    symbol: str
    event_time_ms: int
    ingest_time_ms: int
    price: float
    size: float
    side: Side
    incomplete: bool = False


class TickPack(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="trades"):
    """A `TradePack` read as the worker needs it: its trades as `TradeTick`s."""

    trades: Annotated[list[TradeTick], msgspec.Meta(max_length=MAX_PACK_TRADES)]


_TICK_DECODER = msgspec.json.Decoder(TradeTick, strict=False)  # lax: JSON strings "0.35280000" -> float
_TICKS_DECODER = msgspec.json.Decoder(TradeTick | TickPack, strict=False)


def decode_trade_tick(data: bytes | str) -> TradeTick:
    """Decode a single market.trades record as a `TradeTick` (raises msgspec.ValidationError for anything else)."""
    tick: TradeTick = _TICK_DECODER.decode(data)
    return tick


def decode_trade_ticks(data: bytes | str) -> list[TradeTick]:
    """The trades of a market.trades record, single or packed, as `TradeTick`s in order (raises
    msgspec.ValidationError for anything else: a `Gap` marker goes through `decode_market_records`)."""
    got: TradeTick | TickPack = _TICKS_DECODER.decode(data)
    return got.trades if isinstance(got, TickPack) else [got]


def decode_dead_letter(data: bytes | str) -> DeadLetter:
    letter: DeadLetter = _DEAD_DECODER.decode(data)
    return letter


def market_key(venue: str, symbol: str) -> str:
    return f"{venue}:{symbol}"


__all__ = [
    "MAX_PACK_TRADES",
    "PACK_SCHEMA_VERSION",
    "SCHEMA_VERSION",
    "AnyMarketEvent",
    "Bar",
    "BookTop",
    "BookUpdate",
    "DeadLetter",
    "Gap",
    "GapReason",
    "Level",
    "MarketEvent",
    "PublishedMarketEvent",
    "Side",
    "StreamKind",
    "TickPack",
    "Trade",
    "TradePack",
    "TradeTick",
    "Venue",
    "decode_dead_letter",
    "decode_market",
    "decode_market_records",
    "decode_trade_tick",
    "decode_trade_ticks",
    "encode",
    "encode_pack",
    "market_key",
]
