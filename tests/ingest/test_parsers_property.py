"""Property tests: arbitrary bytes and arbitrary JSON fed to every parser and through every connector.

- No exception other than ParseError ever escapes a parser, and whatever a parser accepts encodes and decodes
  back to the same event (the topic format round-trips).
- Through the connectors, every frame a parser refuses lands in the dead-letter topic with its exact raw bytes
  and the reason; nothing is dropped silently. Checked on the in-process bus for many examples and on the real
  broker (Tansu) for a smaller batch read back from the topic.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.bus.base import Bus
from service.bus.factory import standard_topics
from service.bus.kafka import KafkaBus, KafkaOptions
from service.bus.memory import MemoryBus
from service.ingest.binance import BinanceConfig, BinanceConnector, parse_binance, parse_depth_snapshot
from service.ingest.bybit import BybitConfig, BybitConnector
from service.ingest.bybit_parse import parse_bybit
from service.ingest.errors import ParseError
from service.ingest.events import Control
from service.ingest.publisher import MarketPublisher
from service.schemas.market import decode_dead_letter, decode_market, encode
from tests.ingest.conftest import ingest_settings

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=6),
    max_leaves=25,
)

TEMPLATES: list[dict[str, Any]] = [
    {"stream": "btcusdt@aggTrade", "data": {"e": "aggTrade", "E": 1633998523963, "s": "BTCUSDT", "a": 15683430,
     "p": "0.35280000", "q": "58.00000000", "f": 1, "l": 1, "T": 1633998523963, "m": False, "M": True}},
    {"stream": "btcusdt@trade", "data": {"e": "trade", "E": 1672515782136, "s": "BNBBTC", "t": 12345, "p": "0.001",
     "q": "100", "T": 1672515782136, "m": True, "M": True}},
    {"stream": "btcusdt@depth@100ms", "data": {"e": "depthUpdate", "E": 1626992741037, "T": 1626992741024,
     "s": "SUSHIUSDT", "U": 600859599090, "u": 600859600917, "pu": 600859598061, "b": [["7.5040", "813"]],
     "a": [["7.6150", "1563"]]}},
    {"stream": "btcusdt@kline_1m", "data": {"e": "kline", "E": 1633998523963, "s": "NKNUSDT", "k": {
     "t": 1633998480000, "T": 1633998539999, "s": "NKNUSDT", "i": "1m", "o": "0.35270000", "c": "0.35280000",
     "h": "0.35280000", "l": "0.35220000", "v": "25877.0", "n": 30, "x": True, "q": "9116.0", "V": "58.0"}}},
    {"topic": "publicTrade.BTCUSDT", "ts": 1703430744103, "type": "snapshot", "data": [{"i": "2290000000090712222",
     "T": 1703430744102, "p": "43774", "v": "0.0026", "S": "Sell", "s": "BTCUSDT", "BT": False}]},
    {"topic": "orderbook.50.BTCUSDT", "ts": 1703430557896, "type": "delta", "data": {"s": "BTCUSDT",
     "b": [["43728.19", "0.5"]], "a": [["43736.01", "0.525"]], "u": 5179080, "seq": 19967461033},
     "cts": 1703430557847},
    {"topic": "kline.5.BTCUSDT", "data": [{"start": 1672324800000, "end": 1672325099999, "interval": "5",
     "open": "16649.5", "close": "16677", "high": "16677", "low": "16608", "volume": "2.081",
     "turnover": "34666.4005", "confirm": True, "timestamp": 1672324988882}], "ts": 1672324988882, "type": "snapshot"},
    {"success": True, "ret_msg": "subscribe", "conn_id": "c", "req_id": "10001", "op": "subscribe"},
    {"result": None, "id": 1},
    {"lastUpdateId": 1027024, "bids": [["4.00000000", "431.00000000"]], "asks": [["4.00000200", "12.00000000"]]},
]  # fmt: skip


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A real-format frame with one field replaced by arbitrary JSON or removed: reaches deep parser paths."""
    frame = copy.deepcopy(draw(st.sampled_from(TEMPLATES)))
    paths = _paths(frame)
    path = draw(st.sampled_from(paths))
    parent = frame
    for key in path[:-1]:
        parent = parent[key]
    if draw(st.booleans()) and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = draw(JSON)
    return orjson.dumps(frame)


FRAMES = st.one_of(
    st.binary(max_size=300), JSON.map(orjson.dumps), mutated(), st.sampled_from(TEMPLATES).map(orjson.dumps)
)

PARSERS = {
    "binance-spot": lambda f: parse_binance(f, "spot", 1_700_000_000_000),
    "binance-usdm": lambda f: parse_binance(f, "usdm", 1_700_000_000_000),
    "bybit-spot": lambda f: parse_bybit(f, "spot", 1_700_000_000_000),
    "bybit-linear": lambda f: parse_bybit(f, "linear", 1_700_000_000_000),
}


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frame=FRAMES)
def test_no_exception_escapes_any_parser(frame: bytes) -> None:
    for parse in PARSERS.values():
        try:
            events = parse(frame)
        except ParseError as err:
            assert err.reason and err.reason.replace("_", "").isalpha()
            continue
        for ev in events:
            if not isinstance(ev, Control):
                assert decode_market(encode(ev)) == ev
    try:
        parse_depth_snapshot(frame)
    except ParseError:
        pass


def _connectors(publisher: MarketPublisher) -> dict[str, BinanceConnector | BybitConnector]:
    # no symbols configured: valid depth frames are parsed but no book (and no REST snapshot) is involved
    b = {
        m: BinanceConnector(BinanceConfig(market=m, ws_url="ws://x", rest_url="http://x", symbols=()), publisher)
        for m in ("spot", "usdm")
    }
    y = {m: BybitConnector(BybitConfig(market=m, ws_url="ws://x", symbols=()), publisher) for m in ("spot", "linear")}
    return {"binance-spot": b["spot"], "binance-usdm": b["usdm"], "bybit-spot": y["spot"], "bybit-linear": y["linear"]}


def _run_dead_letter_property(bus: Bus, unique: str, kafka: str | None, max_examples: int) -> None:
    loop = asyncio.new_event_loop()
    s = ingest_settings(kafka, unique)
    producer = bus.producer()
    loop.run_until_complete(producer.start())
    publisher = MarketPublisher(producer, s)
    conns = _connectors(publisher)
    expected: list[tuple[str, bytes, str]] = []

    @settings(max_examples=max_examples, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(frame=FRAMES, venue=st.sampled_from(sorted(PARSERS)))
    def check(frame: bytes, venue: str) -> None:
        try:
            PARSERS[venue](frame)
            refused: str | None = None
        except ParseError as err:
            refused = err.reason
        before = conns[venue].dead_letters
        loop.run_until_complete(conns[venue].handle_frame(frame, 1_700_000_000_000))
        if refused is None:
            assert conns[venue].dead_letters == before
        else:
            assert conns[venue].dead_letters == before + 1
            expected.append((venue, frame, refused))

    try:
        check()
        loop.run_until_complete(publisher.flush())

        async def read_back() -> list[tuple[str, bytes, str]]:
            consumer = bus.consumer([s.topic_dead_letters], group_id=f"dl-{unique}")
            await consumer.start()
            got: list[tuple[str, bytes, str]] = []
            try:
                for _ in range(200):
                    for rec in await consumer.getmany(timeout_ms=200):
                        dl = decode_dead_letter(rec.value)
                        got.append((dl.venue, dl.raw_bytes(), dl.reason))
                    if len(got) >= len(expected):
                        break
            finally:
                await consumer.stop()
            return got

        got = loop.run_until_complete(read_back())
        assert sorted(got) == sorted(expected)
        assert expected, "hypothesis produced no bad frame at all"
    finally:
        loop.run_until_complete(producer.stop())
        loop.run_until_complete(bus.close())
        loop.close()


def test_every_bad_frame_is_dead_lettered_in_process(unique: str) -> None:
    _run_dead_letter_property(MemoryBus(default_partitions=3), unique, None, max_examples=400)


@pytest.mark.integration
def test_every_bad_frame_is_dead_lettered_on_the_broker(kafka_bootstrap: str, unique: str) -> None:
    bus = KafkaBus(KafkaOptions(bootstrap_servers=kafka_bootstrap, linger_ms=2, default_partitions=3))
    loop = asyncio.new_event_loop()
    loop.run_until_complete(bus.create_topics(standard_topics(ingest_settings(kafka_bootstrap, unique))))
    loop.run_until_complete(bus.close())  # the admin client belongs to this loop
    loop.close()
    _run_dead_letter_property(bus, unique, kafka_bootstrap, max_examples=120)
