"""The market harness end to end on synthetic series: training arrays, the common scored grid, validation
calibration and event metrics, with a trivial detector (no model training, so it stays fast)."""

from __future__ import annotations

import numpy as np

from models.evaluation.metrics import event_metrics
from models.market import pipeline as pl
from models.market.dataset import MarketSplit, anomaly_ends, normal_ends
from tests.models.test_baselines import _series


def test_harness_on_synthetic_pumps() -> None:
    split = MarketSplit(
        train=[_series(1, None), _series(2, 4000)],
        val=[_series(5, 4500)],
        test=[_series(6, 5000)],
    )
    for s in split.train + split.val + split.test:
        s.onset_ms = s.announce_ms
    T = 32
    scaler = pl.fit_scaler(split, T)
    prep = pl.Prepared(split=split, scaler=scaler, window=T)
    xn, xa, xv, yv, counts = pl.training_arrays(prep, 2000, 0.0, 500, seed=0)
    assert xn.shape[1:] == (T, xn.shape[2]) and xa.shape[1:] == xn.shape[1:]
    assert counts["anomalous"] == len(anomaly_ends(split.train[1], T)) == 13  # first minute, 5 s bars
    assert yv.sum() == counts["val_pos"] and len(yv) == len(xv)
    # normal windows keep away from the announcement
    s2 = split.train[1]
    assert s2.announce_ms is not None
    assert (np.abs(s2.decision_ms[normal_ends(s2, T, 1)] - s2.announce_ms) > 2 * 3_600_000).all()
    # the scored grid: dense around the event, sparse elsewhere
    idx = pl.score_points(split.test[0], T, quiet_stride=12, kline_stride=5)
    t = split.test[0].decision_ms[idx]
    near = np.abs(t - 5000 * 5000) < 5 * 60_000
    assert (np.diff(idx[near]) == 1).all() and np.diff(idx[~near]).max() >= 12

    def vol_detector(s, idx, xs):  # type: ignore[no-untyped-def]
        return s.quote_volume[idx]

    val_scored = pl.score_series(prep, split.val, vol_detector, 12, 5)
    th = pl.calibrate(val_scored, budget=1.0)
    assert th["watch"] <= th["critical"]
    test_scored = pl.score_series(prep, split.test, vol_detector, 12, 5)
    m = event_metrics(test_scored, th["alert"])
    assert m.detected == 1 and m.delay_median_s is not None and m.delay_median_s <= 10
