"""Per-key windows: identical to the batch feature path, event-time lateness, gaps, eviction, restart offsets."""

from __future__ import annotations

import numpy as np

from service.bus.base import TopicPartition
from service.features.bars import bars_from_trades
from service.features.market import MarketFeatureState
from service.features.spec import N_MARKET_FEATURES
from service.scoring.batcher import MicroBatcher
from service.scoring.windows import WindowStore


def _ticks(n: int, seed: int = 0, start: int = 1_700_000_000_000) -> list[tuple[int, float, float, bool]]:
    rng = np.random.default_rng(seed)
    ts = start + np.cumsum(rng.integers(50, 3000, n))
    px = 100 * np.exp(np.cumsum(rng.normal(0, 1e-3, n)))
    sizes, buys = rng.uniform(0.1, 2, n), rng.random(n) < 0.5
    return [(int(t), float(p), float(q), bool(b)) for t, p, q, b in zip(ts, px, sizes, buys, strict=True)]


def test_streaming_windows_equal_the_batch_feature_path() -> None:
    t_len, interval = 6, 5000
    ticks = _ticks(3000)
    store = WindowStore(t_len, N_MARKET_FEATURES, interval, warmup_bars=0)
    got = []
    for i, (ts, p, q, buy) in enumerate(ticks):
        got.extend(store.on_trade("x:AAA", ts, p, q, buy, offset=i))
    bars = bars_from_trades([t[0] for t in ticks], [t[1] for t in ticks], [t[2] for t in ticks], [t[3] for t in ticks])
    feats = MarketFeatureState().update_many(bars)
    assert len(got) == len(bars) - 1 - t_len + 1  # the last bar is still open in the stream
    for w in got[::50]:
        j = next(k for k, b in enumerate(bars) if b.end_ms == w.window_end_ms)
        np.testing.assert_array_equal(w.features, feats[j - t_len + 1 : j + 1])
    assert store.keys["x:AAA"].ring.shape == (t_len, N_MARKET_FEATURES)  # memory per key is fixed


def test_lateness_gaps_warmup_and_offsets() -> None:
    tp = TopicPartition("market.trades", 0)
    store = WindowStore(3, N_MARKET_FEATURES, 1000, allowed_lateness_ms=500, warmup_bars=2, history_bars=4)
    t0 = 1_700_000_000_000
    out = []
    for i in range(6):
        out += store.on_trade("k", t0 + i * 1000 + 100, 10.0, 1.0, True, offset=10 + i, tp=tp)
    # a tick 300 ms late for bar 5 still lands in it (bar 5 closes at 6000 + 500 lateness)
    out += store.on_trade("k", t0 + 5000 + 900, 10.0, 1.0, False, offset=16, tp=tp)
    out += store.on_trade("k", t0 + 6000 + 50, 10.0, 1.0, False, offset=17, tp=tp)
    late_before = store.late_ticks
    out += store.on_trade("k", t0 + 2000, 10.0, 1.0, False, offset=18, tp=tp)  # bar 2 closed long ago
    assert store.late_ticks == late_before + 1
    ends = [w.window_end_ms - t0 for w in out]
    assert ends == [3000, 4000, 5000]  # bars 0..4 closed; T=3 windows end at bars 2, 3, 4
    assert [w.scorable for w in out] == [True, True, True]
    # after a gap report, bars overlapping it are incomplete and so is every window holding them
    store.on_gap("k", t0 + 6000, t0 + 7500)
    more = []
    for i, off in zip(range(7, 12), range(19, 24), strict=True):
        more += store.on_trade("k", t0 + i * 1000 + 600, 10.0, 1.0, True, offset=off, tp=tp)
    flags = {w.window_end_ms - t0: w.incomplete for w in more}
    assert flags[7000] is True and flags[10000] is True and flags[11000] is False  # bar 7 overlaps the gap
    # restart point: nothing produced yet -> everything; produced up to the window ending at 10 s -> the first
    # record of the bar max(warmup, T) + 1 = 4 bars earlier (bar 6, first tick offset 17), so a rebuilt state
    # scores the window ending at 11 s again
    st = store.keys["k"]
    assert st.needed_offset(None, store.rebuild_bars) == 10
    assert store.needed_offsets(lambda key: t0 + 10_000)[tp] == 17
    assert store.needed_offsets(lambda key: None)[tp] == 10


def test_idle_eviction_and_key_cap() -> None:
    store = WindowStore(3, N_MARKET_FEATURES, 1000, idle_eviction_s=10, max_keys=3)
    for i, k in enumerate(["a", "b", "c", "d"]):
        store.on_trade(k, 1_700_000_000_000 + i, 1.0, 1.0, True)
    assert list(store.keys) == ["b", "c", "d"]  # capped: the least recently used went
    store.keys["b"].touched -= 100
    store.keys["c"].touched -= 100
    # eviction walks from the least recently touched end and stops at the first fresh key: O(evicted)
    assert store.evict_idle() == 2 and list(store.keys) == ["d"]


async def test_micro_batcher_bounds() -> None:
    b: MicroBatcher[int] = MicroBatcher(max_size=4, max_wait_s=0.05, bound=8)
    for i in range(6):
        b.put(i)
    assert await b.get() == [0, 1, 2, 3]  # full batch at once
    t0 = b.due_in()
    assert t0 is not None and t0 <= 0.05
    assert await b.get() == [4, 5]  # released by the max wait
    for i in range(8):
        b.put(i)
    assert b.full() and not b.low()
    b.take()
    assert b.low()
    b.close()
    assert await b.get() == [4, 5, 6, 7]
    assert await b.get() == []


def test_worker_tick_path_builds_the_same_windows_as_apply_event() -> None:
    """The worker reads trades as `TradeTick`s (floats straight from the JSON); the offline path feeds `Trade`s
    through `apply_event`. Same records, same windows, bit for bit; a gap marker and garbage on the trades topic
    take the general path (gap honoured, garbage counted)."""
    import dataclasses
    import zlib

    from service.bus.base import Record
    from service.bus.memory import MemoryBus
    from service.ingest.simulator import MarketSimulator, SimConfig, plan_anomaly, to_market
    from service.schemas.market import Gap, Trade, decode_market, decode_trade_tick, encode
    from service.scoring.window_feed import Geometry
    from service.scoring.windows import apply_event
    from service.scoring.worker import ScoringWorker
    from service.settings import load_settings
    from service.state.memory import MemoryState

    base = SimConfig(seed=4, duration_s=600, emit_books=False, emit_bars=False)
    cfg = dataclasses.replace(
        base, anomalies=(plan_anomaly("wash_trading", base.start_ms + 200_000, base.instruments, 5),)
    )
    events = [e for e in (to_market(x) for x in MarketSimulator(cfg).events()) if isinstance(e, Trade)]
    k0 = events[0].key
    gap = Gap(
        venue=events[0].venue,
        symbol=events[0].symbol,
        event_time_ms=events[300].event_time_ms,
        ingest_time_ms=0,
        stream="trades",
        from_ms=events[290].event_time_ms,
        to_ms=events[300].event_time_ms,
        reason="reconnect",
    )
    stream: list[object] = [*events[:300], gap, *events[300:]]
    payloads = [encode(e) for e in stream]  # type: ignore[arg-type]
    payloads.insert(500, b'{"type":"trade","price":"oops"}')
    for raw in payloads[:2000:7]:
        if b'"trade"' in raw and b"oops" not in raw:
            tick, trade = decode_trade_tick(raw), decode_market(raw)
            assert isinstance(trade, Trade)
            assert (tick.price, tick.size) == (float(trade.price), float(trade.size))

    s = load_settings(env="test", scoring_warmup_bars=0, crossvenue_enabled=False)
    worker = ScoringWorker(s, MemoryBus(), MemoryState())
    worker.feed.reset(Geometry(8, N_MARKET_FEATURES, 5000))
    tps = {TopicPartition(s.topic_trades, p) for p in range(3)}
    worker.emitter.owned = tps
    recs = []
    for i, raw in enumerate(payloads):
        key = raw.split(b'"venue":"')[-1].split(b'"')[0] if b"venue" in raw else b"?"
        recs.append(Record(s.topic_trades, zlib.crc32(key) % 3, i, key, raw, 0))
    got = []
    for i in range(0, len(recs), 256):
        worker.feed.handle(recs[i : i + 256])
        got.extend(worker.batcher.take() for _ in range(len(worker.batcher) // worker.batcher.max_size + 1))
    streamed = {(w.key, w.window_end_ms): w for batch in got for w in batch}

    offline = WindowStore(8, N_MARKET_FEATURES, 5000, warmup_bars=0)
    expect = [w for e in stream for w in apply_event(offline, e)]
    assert len(expect) > 500 and len(streamed) == len(expect)
    for w in expect:
        s_w = streamed[(w.key, w.window_end_ms)]
        np.testing.assert_array_equal(s_w.features, w.features)
        assert s_w.incomplete == w.incomplete
    assert any(w.incomplete for w in expect if w.key == k0)  # the gap marker reached the windows
    assert worker.stats.records == len(payloads) - 1  # all but the garbage record
    assert worker.rules.pending_wash, "the injected wash trading was seen on the tick path"
