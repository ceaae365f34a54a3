"""The wash-trading-like rule on the tape: matched buy/sell prints raise a signal; honest flow and prints out of
order never do, and a key's state stays bounded."""

from __future__ import annotations

import random
from decimal import Decimal

from service.scoring.wash import WashMonitor


def _feed(m: WashMonitor, prints: list[tuple[int, str, str, bool]], key: str = "v:S") -> list[object]:
    out = []
    for ts, px, qty, buy in prints:
        sig = m.observe(key, ts, Decimal(px), Decimal(qty), buy)
        if sig is not None:
            out.append(sig)
    return out


def test_matched_pairs_raise_a_signal_once_enough_of_the_volume() -> None:
    m = WashMonitor(min_pairs=5, min_share=0.3, window_ms=60_000)
    prints = []
    for i in range(8):  # a taker buy and a taker sell of one size at one price, 3 ms apart, once a second
        t = 1_000_000 + i * 1000
        prints += [(t, "100.5", "2.5", True), (t + 3, "100.5", "2.50", False)]  # 2.5 == 2.50 exactly
    sigs = _feed(m, prints)
    assert sigs, "eight matched pairs made of all the volume must signal"
    first = sigs[0]
    assert first.pairs == 5 and first.share == 1.0  # type: ignore[attr-defined]
    assert "wash-trading-like" in first.explanation()  # type: ignore[attr-defined]


def test_honest_flow_and_unmatched_sizes_never_signal() -> None:
    rng = random.Random(3)
    m = WashMonitor(min_pairs=3, min_share=0.1)
    t = 0
    prints = []
    for _ in range(5000):
        t += rng.randint(1, 40)
        prints.append((t, f"{100 + rng.random():.2f}", f"{rng.uniform(0.01, 3):.5f}", rng.random() < 0.5))
    assert _feed(m, prints) == []


def test_pairs_too_far_apart_or_same_side_do_not_match() -> None:
    m = WashMonitor(min_pairs=1, min_share=0.0, pair_ms=50)
    assert _feed(m, [(0, "1", "1", True), (51, "1", "1", False)]) == []  # 51 ms apart
    assert _feed(m, [(1000, "1", "1", True), (1001, "1", "1", True)]) == []  # same side
    assert len(_feed(m, [(2000, "1", "1", True), (2001, "1", "1", False)])) == 1


def test_window_forgets_old_pairs() -> None:
    m = WashMonitor(min_pairs=3, min_share=0.0, window_ms=10_000, bucket_ms=250)
    early = [(t, "1", "1", b) for t in (0, 1000) for b in (True, False)]  # two pairs
    assert _feed(m, early) == []
    # a third pair 30 s later: the first two have left the window
    assert _feed(m, [(30_000, "1", "1", True), (30_001, "1", "1", False)]) == []
    assert m._keys["v:S"].pairs == 1


def test_an_out_of_order_print_does_not_stall_trimming_and_state_stays_bounded() -> None:
    m = WashMonitor(min_pairs=10**9, pair_ms=50, window_ms=1000, max_recent=64)
    _feed(m, [(10_000_000, "1", "1", True)])
    # a flood of unmatched prints, each older than the newest seen (a replay restarted, a late batch)
    _feed(m, [(5_000_000 - i, "1", f"{i}", True) for i in range(5000)])
    st = m._keys["v:S"]
    assert len(st.recent) <= 64
    assert len(st.volume) <= 1000 // 250 + 2


def _reference_matches(prints: list[tuple[int, float, float, bool]], pair_ms: int) -> list[bool]:
    """Which prints match, by the rule's definition: the oldest unmatched opposite print of the same price and size
    among those kept (arrival order, dropped from the front once `pair_ms` older than the newest time seen), found
    by a linear scan; the monitor does it with an index."""
    recent: list[tuple[int, float, float, bool]] = []
    newest, out = 0, []
    for ts, px, qty, buy in prints:
        newest = max(newest, ts)
        while recent and newest - recent[0][0] > pair_ms:
            recent.pop(0)
        hit = next((i for i, r in enumerate(recent) if r[3] != buy and r[1] == px and r[2] == qty), None)
        if hit is None:
            recent.append((ts, px, qty, buy))
        else:
            del recent[hit]
        out.append(hit is not None)
    return out


def test_indexed_matching_pairs_exactly_as_the_scan_does() -> None:
    rng = random.Random(3)
    t, prints = 1_000_000, []
    for _ in range(5000):  # few prices and sizes, both sides, some out of order: many candidate pairs
        t += rng.choice((0, 1, 2, 5, 10, 20))
        prints.append(
            (t - rng.choice((0, 0, 0, 7)), rng.choice((1.0, 1.5)), rng.choice((0.1, 0.2, 0.3)), rng.random() < 0.5)
        )
    m = WashMonitor(pair_ms=50, min_pairs=10**9)
    pairs = []
    for ts, px, qty, buy in prints:
        m.observe("k", ts, px, qty, buy)
        pairs.append(m._keys["k"].pairs)
    want = _reference_matches(prints, 50)
    got = [b > a for a, b in zip([0, *pairs], pairs, strict=False)]
    # pairs also fall as the 60 s window slides; over 5,000 prints of < 60 s in all, every step up is a match
    assert prints[-1][0] - prints[0][0] < 60_000
    assert got == want and sum(want) > 200
