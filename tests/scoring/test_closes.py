"""Cross-venue checks across workers: the legs of a pair scored by different workers still meet (closes.py), on
Redis and in-process alike."""

from __future__ import annotations

import random

from service.scoring.closes import CloseExchange
from service.scoring.crossvenue import CrossVenueMonitor, Dislocation
from service.state.base import StateStore

USDT, USDC, OTHER = "sim-binance:BTCUSDT", "sim-binance:BTCUSDC", "sim-binance:ETHUSDT"


class _Worker:
    """What a worker does with each scored window's close: share, remember the peers', observe."""

    def __init__(self, state: StateStore) -> None:
        self.monitor = CrossVenueMonitor(z=8.0, min_bps=50.0, half_life_bars=360.0, warmup_bars=30)
        self.exchange = CloseExchange(state, "workers", ttl_ms=600_000)
        self.found: list[Dislocation] = []

    async def scored(self, batch: list[tuple[str, int, float]]) -> None:
        for p in await self.exchange.share(batch):
            self.monitor.remember(p.group, p.key, p.rank, p.bar_end_ms, p.close)
        for key, end, close in batch:
            self.found += self.monitor.observe(key, end, close)


async def test_a_depeg_whose_legs_live_on_two_workers_is_reported_once_per_bar(state: StateStore) -> None:
    a, b = _Worker(state), _Worker(state)  # a owns BTCUSDT and ETHUSDT, b owns BTCUSDC
    rng = random.Random(7)
    comparisons_expected = 0
    for i in range(120):
        end = 1_700_000_000_000 + i * 5000
        px = 60_000 * (1 + rng.gauss(0, 1e-3))
        usdc = px * (1 + rng.gauss(0, 2e-5)) * (1.05 if i >= 100 else 1.0)  # USDC loses 5 % from bar 100
        work = [(a, [(USDT, end, px), (OTHER, end, 3000.0)]), (b, [(USDC, end, usdc)])]
        rng.shuffle(work)  # either worker may be first at a bar
        for w, batch in work:
            await w.scored(batch)
        comparisons_expected += 1
    found = a.found + b.found
    assert found, "the de-peg was not seen: the two legs never met"
    assert {d.key for d in found} == {USDC} and {d.reference for d in found} == {USDT}
    assert min(d.bar_end_ms for d in found) == 1_700_000_000_000 + 100 * 5000  # not before it, not late
    # every bar's pair was compared exactly once, by one worker or the other (the later one)
    n = sum(st.n for w in (a, b) for st in w.monitor._pairs.values())
    assert n + len(found) == comparisons_expected


async def test_share_returns_only_other_members_at_the_same_bar_end(state: StateStore) -> None:
    ex = CloseExchange(state, "g", ttl_ms=60_000)
    assert await ex.share([(USDT, 5000, 100.0)]) == []
    peers = await ex.share([(USDC, 5000, 101.0), (USDC, 10_000, 102.0)])
    assert [(p.key, p.bar_end_ms, p.close) for p in peers] == [(USDT, 5000, 100.0)]
    # another group namespace (another consumer group) shares nothing
    assert await CloseExchange(state, "other", ttl_ms=60_000).share([(USDC, 5000, 101.0)]) == []
