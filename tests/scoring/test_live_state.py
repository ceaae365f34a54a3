"""The live context the worker publishes for the API: a faithful round trip, and nothing malformed trusted."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from service.features.trade_context import TradeContext
from service.scoring.live_state import LiveContext, LivePublisher, decode_live, encode_live, read_live
from service.state.memory import MemoryState


def _ctx(end: int = 5000) -> LiveContext:
    prints = TradeContext(capacity=4)
    for i in range(6):
        prints.add(i, 100.0 + i, 1.0 + i, i % 2 == 0)
    window = np.arange(24, dtype=np.float32).reshape(8, 3)
    return LiveContext("sim:X", window, end, "market", "v1", True, False, prints)


def test_round_trip_keeps_the_window_and_the_last_prints() -> None:
    got = decode_live(encode_live(_ctx()))
    assert got is not None and got.key == "sim:X" and got.window_end_ms == 5000 and got.scorable
    assert np.array_equal(got.window, _ctx().window) and got.window.dtype == np.float32
    assert list(got.prints.prints) == list(_ctx().prints.prints) and len(got.prints) == 4


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=300) | st.builds(lambda b, n: encode_live(_ctx())[:n] + b, st.binary(max_size=8),
                                                st.integers(0, 400)))  # fmt: skip
def test_malformed_values_are_none_never_an_exception(raw: bytes) -> None:
    got = decode_live(raw)
    assert got is None or got.window.shape == (8, 3)


async def test_publisher_keeps_each_keys_newest_window() -> None:
    state = MemoryState()
    await LivePublisher(state, 60.0).publish([_ctx(10_000), _ctx(5000)])
    got = await read_live(state, "sim:X")
    assert got is not None and got.window_end_ms == 10_000
    assert await read_live(state, "sim:Y") is None
