"""Alert policy (hysteresis, cool-down, escalation), typing, tiers, explanations, cross-venue dislocations."""

from __future__ import annotations

import numpy as np

from service.features.spec import MARKET_FEATURES
from service.schemas.scoring import Action, AnomalyType, Severity, alert_id
from service.scoring.alerts import AlertPolicy, KeyAlertState, classify, tiers
from service.scoring.crossvenue import CrossVenueMonitor, groups_of
from service.scoring.decision import ModelFacts, decide
from service.scoring.scorer import WindowResult

F = len(MARKET_FEATURES)
IDX = {n: i for i, n in enumerate(MARKET_FEATURES)}


def test_hysteresis_cooldown_and_escalation() -> None:
    p = AlertPolicy(hysteresis=0.5, cooldown_ms=60_000)
    st = KeyAlertState()
    thr = 10.0
    seq = [(0, 1), (5, 12), (10, 15), (15, 8), (20, 11), (25, 4), (30, 12), (100, 4), (105, 13)]
    fired = [t for t, s in seq if p.decide(st, s, thr, t * 1000, AnomalyType.VOLUME_SURGE)]
    # 5: first crossing; 20: still above 5 (no re-arm); 30: re-armed at 25 but inside the cool-down; 105: fresh
    assert fired == [5, 105]
    # escalation: an episode alerted as a volume surge that turns into a pump alerts once more, then stays quiet
    st = KeyAlertState()
    assert p.decide(st, 12, thr, 0, AnomalyType.VOLUME_SURGE)
    assert p.decide(st, 20, thr, 5000, AnomalyType.PUMP_AND_DUMP)
    assert not p.decide(st, 30, thr, 10000, AnomalyType.CRASH)
    assert KeyAlertState.decode(st.encode()) == st


def _window(rets: list[float], **cols: float) -> np.ndarray:
    w = np.zeros((len(rets), F), np.float32)
    w[:, IDX["ret_1"]] = rets
    for name, v in cols.items():
        w[-1, IDX[name]] = v
    return w


def test_classify_from_window_features() -> None:
    assert classify("b:XBTC", MARKET_FEATURES, _window([0, 0.05, 0.08, -0.03])) == AnomalyType.PUMP_AND_DUMP
    assert classify("b:XBTC", MARKET_FEATURES, _window([0, -0.06, -0.02, 0.04])) == AnomalyType.CRASH
    assert classify("b:XBTC", MARKET_FEATURES, _window([0, 0.001, -0.001, 0], vol_z=6.0)) == AnomalyType.VOLUME_SURGE
    assert classify("b:USDCUSDT", MARKET_FEATURES, _window([0, 0.001, 0, 0])) == AnomalyType.DEPEG
    assert classify("eth:0xabc", MARKET_FEATURES, _window([0, 0]), kind="chain") == AnomalyType.SUSPICIOUS_TRANSFER


def test_a_rising_pump_is_never_typed_crash() -> None:
    # a dip, then a pump that ends above where the window started and is still rising: a pump, not a crash
    assert classify("b:XBTC", MARKET_FEATURES, _window([0, -0.03, 0.01, 0.06, 0.03])) == AnomalyType.PUMP_AND_DUMP
    # a crash whose rebound ends below the start stays a crash
    assert classify("b:XBTC", MARKET_FEATURES, _window([0, -0.08, 0.02, 0.03])) == AnomalyType.CRASH


def test_tiers_and_explained_alert() -> None:
    assert tiers(10, 10, 40, False) == (Severity.MEDIUM, Action.WATCH)
    assert tiers(25, 10, 40, False) == (Severity.HIGH, Action.REVIEW_NOW)
    assert tiers(45, 10, 40, False) == (Severity.CRITICAL, Action.REVIEW_NOW)
    assert tiers(11, 10, 40, True) == (Severity.LOW, Action.NOTE)  # a window with a gap is weaker evidence
    errs = np.zeros(F, np.float32)
    errs[IDX["vol_rel"]], errs[IDX["ret_short"]] = 9.0, 4.0
    last = np.zeros(F, np.float32)
    last[IDX["vol_rel"]], last[IDX["ret_short"]] = 3.2, 0.12
    r = WindowResult(30.0, 5.0, 40.0, 1.0, (0.2, 0.7, 0.1), errs, np.zeros(4, np.float32), last, 10.0, "market", "v7")
    w = _window([0, 0.05, 0.07, 0.01])
    facts = ModelFacts(MARKET_FEATURES, np.zeros(F), "market", None, 40.0)
    d = decide(r, w, facts, key="binance-spot:OAXBTC", window_end_ms=1_600_000_000_000, now_ms=1,
               state=KeyAlertState(), policy=AlertPolicy())  # fmt: skip
    a = d.alert
    assert a is not None and d.state is not None and not d.state.armed and d.explanation == a.explanation
    assert a.id == alert_id("v7", "binance-spot:OAXBTC", 1_600_000_000_000)
    assert (a.venue, a.symbol, a.anomaly_type) == ("binance-spot", "OAXBTC", AnomalyType.PUMP_AND_DUMP)
    assert [c.name for c in a.top_features[:2]] == ["vol_rel", "ret_short"]
    assert "pump-and-dump" in a.explanation and "vol_rel = 3.2 (normal 0)" in a.explanation
    assert "Transformer branch most (70%" in a.explanation and "2020-09-13 12:26:40 UTC" in a.explanation


def test_crossvenue_depeg_and_venue_dislocation() -> None:
    assert [g for g, _ in groups_of("binance-spot:BTCUSDC")] == ["venue:spot:BTCUSDC", "quote:binance-spot:BTC"]
    m = CrossVenueMonitor(z=6, min_bps=30, half_life_bars=100, warmup_bars=20)
    rng = np.random.default_rng(1)
    found = []
    for i in range(200):
        end = 1_000 + i * 5000
        btc = 60_000 * float(np.exp(rng.normal(0, 1e-3)))
        peg = 1.0 if i < 150 else 1.06  # USDC loses 6 % from bar 150: BTCUSDC rises against BTCUSDT
        usdc = btc * peg * float(np.exp(rng.normal(0, 2e-4)))
        bybit = btc * float(np.exp(rng.normal(0, 2e-4)))
        found += m.observe("binance-spot:BTCUSDT", end, btc)
        found += m.observe("binance-spot:BTCUSDC", end, usdc)
        found += m.observe("bybit-spot:BTCUSDT", end, bybit)
    assert found and {d.key for d in found} == {"binance-spot:BTCUSDC"}  # reported on the USDC pair, not USDT
    assert min(d.bar_end_ms for d in found) == 1_000 + 150 * 5000
    assert found[0].basis_bps > 500 and "de-peg" in found[0].explanation()
    assert m.is_dislocated("binance-spot:BTCUSDC", 1_000 + 200 * 5000)
    assert not m.is_dislocated("binance-spot:BTCUSDT", 1_000 + 200 * 5000)


def test_spoofing_rule_counts_pulled_walls_not_filled_ones() -> None:
    from decimal import Decimal

    from service.schemas.market import BookTop
    from service.scoring.spoofing import SpoofingMonitor

    def book(t: int, wall: bool, bid: float = 100.0) -> BookTop:
        bids = [(Decimal(f"{bid - i * 0.1:.1f}"), Decimal(80 if wall and i == 3 else 2)) for i in range(10)]
        asks = [(Decimal(f"{bid + 0.1 + i * 0.1:.1f}"), Decimal(2)) for i in range(10)]
        return BookTop(
            venue="x", symbol="S", event_time_ms=t, ingest_time_ms=t, update_id=t, best_bid=bids[0][0],
            best_ask=asks[0][0], bid_size=bids[0][1], ask_size=asks[0][1], bids=bids, asks=asks, imbalance=0.0,
        )  # fmt: skip

    m = SpoofingMonitor(wall_mult=8, window_ms=60_000, min_flips=3)
    signals = []
    t = 0
    for _ in range(3):  # a bid wall 3 ticks below the touch, on for 5 s, pulled for 2 s
        for _ in range(5):
            signals += m.observe(book(t, True))
            t += 1000
        for _ in range(2):
            signals += m.observe(book(t, False))
            t += 1000
    assert signals and signals[0].flips == 3 and signals[0].side == "bid" and signals[0].wall_mult >= 8
    assert "pulled 3 times" in signals[0].explanation()
    # a wall the price trades down into (filled, not pulled) is not a flip
    m2 = SpoofingMonitor(wall_mult=8, window_ms=60_000, min_flips=1)
    assert not m2.observe(book(0, True))
    crash = book(1000, False, bid=99.5)  # the touch fell through the wall's price
    crash = BookTop(**{**{f: getattr(crash, f) for f in crash.__struct_fields__}, "best_ask": Decimal("99.6")})
    assert not m2.observe(crash) and not m2.observe(book(2000, False))
