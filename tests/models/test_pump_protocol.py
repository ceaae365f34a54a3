"""The issue-12 event protocol: alerts as the worker's AlertPolicy raises them, detection window, signed delay,
false-alarm episodes, calibration on validation files only."""

from __future__ import annotations

import numpy as np

from models.evaluation.protocol import Scored, alert_times, calibrate, episodes, metrics
from service.scoring.alerts import AlertPolicy, KeyAlertState

MIN = 60_000


def test_alert_times_match_the_worker_policy() -> None:
    rng = np.random.default_rng(3)
    t = np.arange(20_000, dtype=np.int64) * 5000
    s = np.abs(rng.standard_cauchy(len(t)))
    for tau in (1.0, 5.0, 30.0):
        pol, st = AlertPolicy(0.8, 300_000), KeyAlertState()
        want = [int(ti) for ti, si in zip(t, s, strict=True) if pol.decide(st, float(si), tau, int(ti))]
        assert alert_times(t, s, tau).tolist() == want


def test_detection_delay_and_false_alarm_episodes() -> None:
    day = 86_400_000
    t = np.arange(0, 2 * day, 5000, dtype=np.int64)
    onset = day
    s = np.zeros(len(t))
    s[t == onset + 10_000] = 1.0  # detected 10 s after the onset
    s[t == onset + 30 * MIN] = 1.0  # inside +-1 h: neither detection nor false alarm
    for k in (0, 6, 30):  # 3 alerts 6 and 24 min apart outside the guard: 2 episodes (merged within 10 min)
        s[t == 3 * 3_600_000 + k * MIN] = 1.0
    m = metrics([Scored("x", t, s, onset)], 0.5)
    assert m.detected == 1 and m.delay_median_s == 10.0
    assert m.fa_episodes == 2 and episodes(np.asarray([0, 6 * MIN, 30 * MIN])) == 2
    assert abs(m.fa_per_day - 2 / ((t[-1] - t[0]) / day)) < 1e-9
    assert m.precision == 1 / 3 and m.recall == 1.0
    # a pre-pump alert 60 s early still detects, with a negative delay; 3 min early does not
    s2 = np.zeros(len(t))
    s2[t == onset - 60_000] = 1.0
    assert metrics([Scored("x", t, s2, onset)], 0.5).delay_median_s == -60.0
    s3 = np.zeros(len(t))
    s3[t == onset - 180_000] = 1.0
    assert metrics([Scored("x", t, s3, onset)], 0.5).detected == 0


def test_calibration_respects_the_false_alarm_budget() -> None:
    day = 86_400_000
    t = np.arange(0, 4 * day, 5000, dtype=np.int64)
    rng = np.random.default_rng(0)
    s = rng.random(len(t)) * 0.5
    onset = 2 * day
    s[(t >= onset) & (t < onset + 20_000)] = 0.9
    tau = calibrate([Scored("v", t, s, onset)], budget_per_day=0.5)
    m = metrics([Scored("v", t, s, onset)], tau)
    assert m.detected == 1 and m.fa_per_day <= 0.5 and 0.5 <= tau <= 0.9
