"""The `market-kline` pipeline: kline series -> windows -> RMAD fit per leave-one-period-out fold -> out-of-fold
scores -> thresholds on validation folds only -> the shipped model (all folds) -> ONNX with the crash branch.

Folds. Each period of events.PERIODS is a fold, except that a 1 m month overlapping a 5 m crash period in time
joins that period's fold (the same market must not be in training and test at once): 1m-2021-09 -> 2021Q3,
1m-2023-03 -> 2022Q4. A fold's files (1 m natively and resampled to 5 m) are scored by the model trained on all
other folds; its thresholds are set on the out-of-fold scores of the *other* folds (nested: the held-out fold's
scores never choose its own threshold).

Scored points: every bar of every native series (1 m and 5 m); the 5 m resampling of the 1 m months is used for
training only (more 5 m normals), so no event is counted twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.kline.data import KSeries
from models.kline.events import EXCLUDE_MS
from models.kline.metrics import Scored, calm_spans
from service.features.kline import CRASH_COLUMNS
from service.features.scaling import RobustScaler

log = logging.getLogger(__name__)

FOLD_OF = {"1m-2021-09": "2021Q3", "1m-2023-03": "2022Q4"}
#: Window-level anomalies for the GAN / outlier exposure / gate: decision times from 5 min before to 30 min after
#: a primary event's worst bar.
ANOM_BEFORE_MS = 5 * 60_000
ANOM_AFTER_MS = 30 * 60_000


def fold_of(period: str) -> str:
    return FOLD_OF.get(period, period)


def folds(series: list[KSeries]) -> list[str]:
    return sorted({fold_of(s.period) for s in series})


def valid_ends(s: KSeries, window: int) -> np.ndarray:
    return np.arange(max(s.warmup, window - 1), len(s.bar_ms))


def normal_ends(s: KSeries, window: int) -> np.ndarray:
    idx = valid_ends(s, window)
    t = s.decision_ms[idx]
    keep = np.ones(len(idx), bool)
    for _, w in s.events:
        keep &= np.abs(t - w) > EXCLUDE_MS
    # windows holding a maintenance gap are not normal market behaviour
    inc = np.convolve(s.incomplete.astype(np.int32), np.ones(window, np.int32))[: len(s.incomplete)] > 0
    keep &= ~inc[idx]
    return idx[keep]


def anomaly_ends(s: KSeries, window: int) -> np.ndarray:
    idx = valid_ends(s, window)
    t = s.decision_ms[idx]
    keep = np.zeros(len(idx), bool)
    for ev, w in s.events:
        if ev.primary:
            keep |= (t >= w - ANOM_BEFORE_MS) & (t <= w + ANOM_AFTER_MS)
    return idx[keep]


def windows_at(X: np.ndarray, ends: np.ndarray, window: int) -> np.ndarray:
    if len(ends) == 0:
        return np.zeros((0, window, X.shape[1]), np.float32)
    offs = np.arange(-window + 1, 1)
    return X[ends[:, None] + offs[None, :]]


def crash_scores(X: np.ndarray) -> np.ndarray:
    """The statistical crash branch (service.features.kline.crash_score) over every row."""
    return np.maximum(np.max(-X[:, list(CRASH_COLUMNS)], axis=1), 0.0).astype(np.float64)


def fit_scaler(train: list[KSeries], window: int, max_rows: int = 300_000, seed: int = 0) -> RobustScaler:
    rng = np.random.default_rng(seed)
    x = np.concatenate([s.X[normal_ends(s, window)] for s in train])
    return RobustScaler.fit(x[rng.permutation(len(x))[:max_rows]])


@dataclass
class Arrays:
    X_normal: np.ndarray
    X_anom: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray

    def counts(self) -> dict[str, int]:
        return {
            "normal": len(self.X_normal),
            "anomalous": len(self.X_anom),
            "val_pos": int(self.y_val.sum()),
            "val_neg": int(len(self.y_val) - self.y_val.sum()),
        }


def training_arrays(
    train: list[KSeries], scaler: RobustScaler, window: int, n_normal: int, seed: int, val_share: float = 0.2
) -> Arrays:
    """Normal windows spread evenly over the training series; anomalous windows around their primary events.
    The gate's validation windows are a time-ordered tail of the training folds' events and normals (the
    held-out fold never enters)."""
    rng = np.random.default_rng(seed)
    per = max(1, n_normal // max(1, len(train)))
    xn, xa, vn, va = [], [], [], []
    for s in train:
        xs = scaler.transform(s.X)
        ne = normal_ends(s, window)
        take = np.sort(rng.choice(ne, size=min(per, len(ne)), replace=False)) if len(ne) else ne
        cut = int(len(take) * (1 - val_share))
        xn.append(windows_at(xs, take[:cut], window))
        vn.append(windows_at(xs, take[cut:][:: max(1, (len(take) - cut) // 200)], window))
        ae = anomaly_ends(s, window)
        if len(ae):
            w = windows_at(xs, ae, window)
            # events alternate between the GAN / outlier set and the gate's validation positives
            (xa if len(xa) <= len(va) else va).append(w)
    X_normal = np.concatenate(xn)
    X_anom = np.concatenate(xa) if xa else np.zeros((0, window, X_normal.shape[2]), np.float32)
    X_vp = np.concatenate(va) if va else np.zeros((0, window, X_normal.shape[2]), np.float32)
    X_vn = np.concatenate(vn)
    return Arrays(
        X_normal,
        X_anom,
        np.concatenate([X_vp, X_vn]),
        np.concatenate([np.ones(len(X_vp)), np.zeros(len(X_vn))]).astype(np.float32),
    )


ModelScore = Callable[[np.ndarray], dict[str, np.ndarray]]


def score_series(s: KSeries, scaler: RobustScaler, window: int, fn: ModelScore, batch: int = 4096) -> np.ndarray:
    """Fused RMAD score at every valid end of `s` (NaN before)."""
    xs = scaler.transform(s.X)
    idx = valid_ends(s, window)
    out = np.full(len(s.bar_ms), np.nan)
    for i in range(0, len(idx), batch):
        e = idx[i : i + batch]
        out[e] = fn(windows_at(xs, e, window))["fused"]
    return out


def to_scored(s: KSeries, score: np.ndarray, window: int) -> Scored:
    idx = valid_ends(s, window)
    t = s.decision_ms[idx]
    return Scored(
        name=s.name,
        period=fold_of(s.period),
        symbol=s.symbol,
        t_ms=t,
        score=np.nan_to_num(score[idx], nan=0.0),
        events=[(e.name, e.primary, w) for e, w in s.events],
        calm=calm_spans(s.period, int(t[0]), int(t[-1])),
        span_days=float(len(idx) * s.interval_ms / 86_400_000),
    )


def combine(stat: np.ndarray, rmad: np.ndarray, tau_c: float, tau_r: float) -> np.ndarray:
    """The shipped fusion: an alert when either branch passes its own validated threshold, as one number
    (>= 1 alerts). The exported graph computes exactly this (models/kline/graph.py)."""
    parts = []
    if np.isfinite(tau_c):
        parts.append(stat / tau_c)
    if np.isfinite(tau_r):
        parts.append(np.nan_to_num(rmad, nan=-np.inf) / tau_r)
    return np.maximum.reduce(parts) if len(parts) > 1 else parts[0]


def timer() -> Callable[[], float]:
    t0 = time.monotonic()
    return lambda: time.monotonic() - t0


def as_dict(obj: Any) -> dict[str, Any]:
    return dict(obj.__dict__)
