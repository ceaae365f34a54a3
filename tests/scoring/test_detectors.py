"""One property suite for every rule detector (service/scoring/detectors.py's `Detector` protocol).

Each detector is driven with adversarial event sequences (a handful of keys and far too many, timestamps that jump,
repeat, run backwards or sit at the ends of the integer range, prices and sizes of zero, negative, huge, NaN and
infinite) and must keep the protocol's promises: no exception escapes `update`; `footprint()` stays within
`max_footprint`, a number fixed by its configuration; a finding names a key it was fed (the fed one for the
single-key rules; for the cross-venue rule the fed key or the pair member it names); and the same events give the
same findings. A new rule joins the suite by adding a `Case`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.schemas.market import BookTop
from service.scoring.crossvenue import CrossVenueMonitor
from service.scoring.detectors import BarClose, Detector, TapePrint
from service.scoring.evidence import Finding
from service.scoring.spoofing import SpoofingMonitor
from service.scoring.wash import WashMonitor

KEYS = ["binance-spot:BTCUSDT", "bybit-spot:BTCUSDT", "binance-spot:BTCUSDC", "sim:ETHUSDT", "x:Y"]
keys = st.one_of(st.sampled_from(KEYS), st.from_regex(r"[a-z\-]{1,6}:[A-Z]{2,4}(USDT|USDC|USD)?", fullmatch=True))
times = st.one_of(
    st.integers(0, 20).map(lambda i: 1_700_000_000_000 + i * 5000),  # a few bar ends: pairs meet
    st.integers(-(2**62), 2**62),
    st.just(0),
)
floats = st.one_of(
    st.sampled_from([0.0, -1.0, 1.0, 1.5, 100.0, 1e-300, 1e300, float("nan"), float("inf"), float("-inf")]),
    st.floats(allow_nan=True, allow_infinity=True),
)
decimals = st.one_of(
    st.sampled_from(["0", "1", "1.5", "100", "-3", "1e30", "NaN", "Infinity", "-Infinity", "sNaN"]).map(Decimal),
    st.decimals(allow_nan=False, allow_infinity=False, places=4, min_value=-10, max_value=10**6),
)


def _book(key: str, t: int, bids: list[tuple[Decimal, Decimal]], asks: list[tuple[Decimal, Decimal]]) -> BookTop:
    venue, _, symbol = key.partition(":")
    return BookTop(
        venue=venue, symbol=symbol, event_time_ms=t, ingest_time_ms=t, update_id=0,
        best_bid=bids[0][0] if bids else None, best_ask=asks[0][0] if asks else None,
        bid_size=bids[0][1] if bids else None, ask_size=asks[0][1] if asks else None,
        bids=bids, asks=asks, imbalance=0.0,
    )  # fmt: skip


levels = st.lists(st.tuples(decimals, decimals), max_size=7)
ends = st.integers(0, 40).map(lambda i: 1_700_000_000_000 + i * 5000)


def _walls(key: str, t0: int, flips: list[bool], step: int) -> list[BookTop]:
    """A wall that comes and goes on the bid side, one book every `step` ms (0: a burst at one event time)."""
    asks = [(Decimal(101 + i), Decimal(1)) for i in range(5)]
    return [
        _book(key, t0 + i * step, [(Decimal(100 - j), Decimal(1000 if on and j == 1 else 1)) for j in range(5)], asks)
        for i, on in enumerate(flips)
    ]


def _pairs(key: str, t0: int, n: int, price: float, size: float) -> list[TapePrint]:
    """Self-matched prints: a buy and a sell of one size at one price, milliseconds apart."""
    return [TapePrint(key, t0 + i * 3, price, size, i % 2 == 0) for i in range(2 * n)]


def _basis(t0: int, closes: list[tuple[float, float]]) -> list[BarClose]:
    """Two venues' closes of one asset at the same bar ends."""
    out = []
    for i, (a, b) in enumerate(closes):
        out += [BarClose(KEYS[0], t0 + i * 5000, a), BarClose(KEYS[1], t0 + i * 5000, b)]
    return out


books = st.one_of(
    st.builds(lambda k, t, b, a: [_book(k, t, b, a)], keys, times, levels, levels),
    st.builds(
        _walls,
        st.sampled_from(KEYS[:2]),
        times,
        st.lists(st.booleans(), min_size=10, max_size=60),
        st.sampled_from([0, 1000]),
    ),
)
prints = st.one_of(
    st.builds(lambda *a: [TapePrint(*a)], keys, times, floats, floats, st.booleans()),
    st.builds(_pairs, st.sampled_from(KEYS[:2]), times, st.integers(1, 6), st.sampled_from([10.0, 10.5]), floats),
)
closes = st.tuples(st.sampled_from([60_000.0, 60_003.0]), st.sampled_from([60_000.0, 60_010.0, 66_000.0]))
bars = st.one_of(
    st.builds(lambda *a: [BarClose(*a)], keys, times, floats, st.booleans()),
    st.builds(_basis, ends, st.lists(closes, min_size=3, max_size=10)),
)


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[], Detector[Any]]
    events: st.SearchStrategy[list[Any]]  # a chunk of events (one, or a run that can make a finding)
    key_of: Callable[[Any], str]
    same_key: bool = True  # findings are about the fed key itself (not a pair member)


CASES = [
    Case("spoofing", lambda: SpoofingMonitor(8.0, window_ms=60_000, min_flips=2, max_keys=2, max_flips=3), books,
         lambda b: b.key),
    Case("wash", lambda: WashMonitor(window_ms=10_000, min_pairs=2, min_share=0.1, max_keys=3, max_recent=8),
         prints, lambda p: p.key),
    Case("crossvenue", lambda: CrossVenueMonitor(4.0, 10.0, 20.0, 3, history_bars=6, max_keys=4, max_group=3),
         bars, lambda b: b.key, same_key=False),
]  # fmt: skip


def _run(case: Case, events: list[Any]) -> list[list[Finding]]:
    det = case.make()
    fed: set[str] = set()
    out: list[list[Finding]] = []
    for ev in events:
        key = case.key_of(ev)
        fed.add(key)
        found = det.update(ev)  # no exception escapes
        assert det.footprint() <= det.max_footprint, (case.name, det.footprint(), det.max_footprint)
        for f in found:
            assert isinstance(f, Finding)
            if case.same_key:
                assert f.key == key, (case.name, f.key, key)
            else:
                assert f.key in fed and (f.key == key or key in f.explanation), (case.name, f.key, key)
            assert f.policy_key.endswith(f.key) and f.threshold > 0
        out.append(found)
    return out


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_detector_promises(case: Case, data: st.DataObject) -> None:
    events = [e for chunk in data.draw(st.lists(case.events, max_size=25)) for e in chunk]
    first = _run(case, events)
    assert repr(_run(case, events)) == repr(first)  # deterministic (repr: a NaN in evidence equals itself)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_detector_memory_is_bounded_by_configuration_not_by_events(case: Case) -> None:
    """Thousands of events over ever new keys and times: the footprint stays within the same bound."""
    det = case.make()
    bound = det.max_footprint
    peak = 0
    for i in range(3000):
        key = f"v{i % 50}-spot:K{i}USDT" if i % 3 else KEYS[i % 3]
        t = 1_700_000_000_000 + (i // 7) * 5000
        ev: Any
        if case.name == "spoofing":
            ev = _book(key, t, [(Decimal(100 - j), Decimal(1000 if (i + j) % 2 else 1)) for j in range(5)], [])
        elif case.name == "wash":
            ev = TapePrint(key, t, 10.0, 1.0, i % 2 == 0)
        else:
            ev = BarClose(key, t, 60_000.0 * (1 + (i % 5) / 100))
        det.update(ev)
        peak = max(peak, det.footprint())
    assert peak <= bound == det.max_footprint


def test_findings_become_alerts_through_one_decision() -> None:
    """Every detector's finding goes through `decide_finding`: the alert carries the rule, key and evidence."""
    from service.scoring.alerts import AlertPolicy, KeyAlertState
    from service.scoring.decision import decide_finding

    wash = WashMonitor(window_ms=10_000, min_pairs=2, min_share=0.1)
    found: list[Finding] = []
    for i in range(6):
        found += wash.update(TapePrint("sim:XUSDT", 1_000 + i, 10.0, 1.0, i % 2 == 0))
    assert found and all(f.key == "sim:XUSDT" for f in found)
    state, alert = decide_finding(found[0], KeyAlertState(), AlertPolicy(), now_ms=5)
    assert alert is not None and not state.armed
    assert (alert.model_name, alert.key, alert.anomaly_type.value) == ("tape-rules", "sim:XUSDT", "volume_surge")
    assert [c.name for c in alert.top_features] == ["matched_pairs", "matched_volume_share"]
    _, again = decide_finding(found[1], state, AlertPolicy(), now_ms=6)
    assert again is None  # the policy holds the episode to one alert
