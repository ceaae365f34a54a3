"""Kline model evaluation: alerts counted exactly as the runtime's AlertPolicy raises them, episodes merged."""

from __future__ import annotations

import numpy as np

from models.kline.metrics import Scored, alert_times, alert_times_reference, episodes, evaluate


def test_alert_times_make_the_policys_decisions_window_by_window() -> None:
    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(1, 300))
        t = np.cumsum(rng.integers(1, 4, n)) * 60_000
        s = rng.normal(0, 1, n).cumsum() * 0.3
        thr = float(rng.normal(1, 0.5))
        assert np.array_equal(alert_times(t, s, thr), alert_times_reference(t, s, thr))


def test_detection_window_and_false_alarm_episodes() -> None:
    t = np.arange(0, 3 * 86_400_000, 60_000, dtype=np.int64)
    s = np.zeros(len(t))
    worst = 86_400_000
    s[(t >= worst + 20 * 60_000) & (t < worst + 25 * 60_000)] = 5.0  # 20 min after the worst bar: detected
    s[(t >= 2 * 86_400_000) & (t < 2 * 86_400_000 + 60_000)] = 5.0  # a lone spike a day later
    s[(t >= 2 * 86_400_000 + 8 * 60_000) & (t < 2 * 86_400_000 + 9 * 60_000)] = 5.0  # 8 min later: same episode
    sc = Scored("x", "p", "BTCUSDT", t, s, [("crash", True, worst)], [(2 * 86_400_000 - 1, 3 * 86_400_000)], 3.0)
    r = evaluate([sc], 1.0)
    assert (r.detected, r.events, r.fa_calm, r.near_event) == (1, 1, 1, 1)
    assert r.delays_min == [20.0] and abs(r.fa_per_day - 1.0) < 1e-6
    assert list(episodes(np.array([0, 5 * 60_000, 30 * 60_000]))) == [0, 30 * 60_000]
    late = Scored("x", "p", "BTCUSDT", t, np.where(t == worst + 40 * 60_000, 5.0, 0.0), sc.events, [], 3.0)
    assert evaluate([late], 1.0).detected == 0  # 40 min after the worst bar is outside +/- 30 min
