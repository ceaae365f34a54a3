"""Event-level metrics and threshold calibration on hand-built score series."""

from __future__ import annotations

import numpy as np
import pytest

from models.evaluation.metrics import (
    DAY_MS,
    ScoredSeries,
    alarm_starts,
    calibrate_threshold,
    event_metrics,
    false_alarm_rate,
)

MIN = 60_000
A = 10 * DAY_MS  # announced minute


def _series(spikes_min: list[float], days: float = 2.0, announce: int | None = A, visible: bool = True) -> ScoredSeries:
    """One point per minute over `days` centred on the announcement; score 1.0 at the given minutes, else 0."""
    n = int(days * 1440)
    t = A - (n // 2) * MIN + np.arange(n, dtype=np.int64) * MIN
    s = np.zeros(n)
    for m in spikes_min:
        s[np.argmin(np.abs(t - (A + m * MIN)))] = 1.0
    return ScoredSeries("x", "pump" if announce else "kline", t, s, announce, announce, visible, int(t[-1] - t[0]))


def test_alarm_runs_merge_within_refractory() -> None:
    t = np.array([0, 1, 2, 10, 11, 30], dtype=np.int64) * MIN
    above = np.array([True, True, False, True, True, True])
    assert alarm_starts(t, above, refractory_ms=5 * MIN).tolist() == [0, 10 * MIN, 30 * MIN]


def test_detection_delay_false_alarms_and_exclusion_zone() -> None:
    # detected 1 min after the announcement; a false alarm 10 h before; an alert 30 min after is aftermath (ignored)
    s = _series([1.0, -600.0, 30.0])
    m = event_metrics([s], tau=0.5)
    assert m.detected == 1 and m.events == 1
    assert m.delay_median_s == pytest.approx(60.0)
    assert m.false_alarms == 1
    assert m.precision == pytest.approx(0.5) and m.recall == 1.0 and m.f1 == pytest.approx(2 / 3)
    assert m.quiet_days == pytest.approx(2.0 - (62 * MIN) / DAY_MS, rel=1e-3)


def test_pre_announce_alert_counts_as_zero_delay_and_misses() -> None:
    early = event_metrics([_series([-1.0])], 0.5)
    assert early.detected == 1 and early.delay_median_s == 0.0 and early.false_alarms == 0
    missed = event_metrics([_series([15.0])], 0.5)  # after the 10 min detection window, inside the aftermath
    assert missed.detected == 0 and missed.false_alarms == 0 and missed.f1 == 0.0


def test_invisible_events_can_be_left_out() -> None:
    vis, invis = _series([1.0]), _series([], visible=False)
    assert event_metrics([vis, invis], 0.5).recall == 0.5
    assert event_metrics([vis, invis], 0.5, include_invisible=False).recall == 1.0


def test_calibration_meets_the_budget_on_validation() -> None:
    rng = np.random.default_rng(0)
    quiet = _series([], days=10.0, announce=None)
    quiet.score = rng.random(len(quiet.score))
    for budget in (0.5, 2.0, 10.0):
        tau = calibrate_threshold([quiet], budget)
        assert false_alarm_rate([quiet], tau) <= budget
    assert calibrate_threshold([quiet], 0.5) >= calibrate_threshold([quiet], 10.0)
