"""Event-time sanity at ingest: a frame stamped outside the configured window around its receive time goes to the
dead-letter topic as `bad_time` with the reason; the parsers under bounds never let such an event through."""

from __future__ import annotations

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.ingest.binance import BinanceConfig, BinanceConnector, parse_binance
from service.ingest.bybit import BybitConfig, parse_bybit
from service.ingest.errors import ParseError
from service.ingest.events import Control
from service.schemas.eventtime import TimeBounds
from tests.ingest.conftest import Ingest

RECV = 1_800_000_000_000
BOUNDS = TimeBounds(max_future_ms=300_000, max_past_ms=86_400_000)


def _agg(t_ms: int) -> bytes:
    data = {"e": "aggTrade", "E": t_ms, "s": "BTCUSDT", "a": 7, "p": "100.5", "q": "0.1", "f": 1, "l": 1, "T": t_ms,
            "m": False, "M": True}  # fmt: skip
    return orjson.dumps({"stream": "btcusdt@aggTrade", "data": data})


def _bybit(t_ms: int) -> bytes:
    data = [{"i": "1", "T": t_ms, "p": "100", "v": "1", "S": "Buy", "s": "BTCUSDT", "BT": False}]
    return orjson.dumps({"topic": "publicTrade.BTCUSDT", "ts": t_ms, "type": "snapshot", "data": data})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(t=st.one_of(st.integers(946_684_800_000, 7_258_118_400_000), st.integers(RECV - 10**9, RECV + 10**9)))
def test_bounded_parsers_pass_only_events_inside_the_window(t: int) -> None:
    for frame, parse in ((_agg(t), parse_binance), (_bybit(t), parse_bybit)):
        inside = BOUNDS.refuse(t, RECV) is None
        try:
            events = parse(frame, "spot", RECV, BOUNDS)  # type: ignore[operator]
        except ParseError as err:
            assert not inside and err.reason == "bad_time" and str(t) in err.detail
            continue
        assert inside and all(isinstance(e, Control) or e.event_time_ms == t for e in events)
        assert parse(frame, "spot", RECV) == events  # without bounds: the same events


def test_configs_take_the_settings_bounds(ingest: Ingest) -> None:
    s = ingest.settings.model_copy(update={"event_time_max_future_s": 2.0, "event_time_max_past_s": 60.0})
    want = TimeBounds(max_future_ms=2000, max_past_ms=60_000, max_gap_ms=3_600_000)
    assert BinanceConfig.from_settings(s, "spot").time_bounds == want
    assert BybitConfig.from_settings(s, "linear").time_bounds == want


async def test_frames_outside_the_window_are_dead_lettered_is_dead_lettered_with_its_reason(ingest: Ingest) -> None:
    s = ingest.settings.model_copy(update={"event_time_max_past_s": 86_400.0})
    cfg = BinanceConfig.from_settings(s, "spot", ["BTCUSDT"])
    conn = BinanceConnector(cfg, ingest.publisher)
    year = 365 * 86_400_000
    await conn.handle_frame(_agg(95_617_584_000_000), RECV)
    await conn.handle_frame(_agg(RECV + year), RECV)
    await conn.handle_frame(_agg(RECV - 1000), RECV)
    await conn.handle_frame(_agg(RECV - year), RECV)
    assert conn.dead_letters == 3 and conn.trades_published == 1
    dls = await ingest.dead_letters(at_least=3)
    assert [d.reason for d in dls] == ["bad_time"] * 3
    assert "not a millisecond time between 2000 and 2200" in dls[0].detail
    assert "after now" in dls[1].detail and "before now" in dls[2].detail
    assert [d.raw_bytes() for d in dls] == [_agg(95_617_584_000_000), _agg(RECV + year), _agg(RECV - year)]
