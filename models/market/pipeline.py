"""The market model's pipeline: features -> scaler -> training arrays -> fit (+ ablations) -> threshold on
validation -> export; and evaluation of the model, every ablation and every baseline on the same scored points.

Scored points (the same for every detector): each pump file is scored densely (every bar, 5 s) from 10 minutes
before to 15 minutes after the announcement, and every `quiet_stride` bars elsewhere; kline series every
`kline_stride` bars. Scoring every 5 s bar of ~90 symbol-days with a ~1 M-parameter model does not fit the
2-core budget; the stride is written into the card, and false alarms per day are counted on the same grid in
validation (where the threshold is set) and test.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models.evaluation.metrics import ScoredSeries, calibrate_f1, calibrate_threshold
from models.market.dataset import (
    MarketSplit,
    Series,
    anomaly_ends,
    load_split,
    normal_ends,
    windows_at,
)
from service.features import MARKET_FEATURES, SPEC_HASH, RobustScaler, spec_dict

log = logging.getLogger(__name__)

DENSE_BEFORE_MS = 10 * 60_000
DENSE_AFTER_MS = 15 * 60_000


@dataclass
class Prepared:
    split: MarketSplit
    scaler: RobustScaler
    window: int
    scaled: dict[str, np.ndarray] = field(default_factory=dict)  # series name -> scaled X

    def xs(self, s: Series) -> np.ndarray:
        key = s.name.split("#")[0]
        if key not in self.scaled:
            self.scaled[key] = self.scaler.transform(s.X)
        return self.scaled[key]


def fit_scaler(split: MarketSplit, window: int, max_rows: int = 400_000, seed: int = 0) -> RobustScaler:
    """Median / IQR over training rows only (pump files away from their pumps, and the training kline months)."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in split.train + split.quiet_train:
        idx = normal_ends(s, window, 1)
        rows.append(s.X[idx])
    x = np.concatenate(rows)
    x = x[rng.permutation(len(x))[:max_rows]]
    return RobustScaler.fit(x)


def prepare(data_root: str | Path, cache_dir: Path | None, window: int = 64, seed: int = 0) -> Prepared:
    split = load_split(data_root, cache_dir=cache_dir)
    return Prepared(split=split, scaler=fit_scaler(split, window, seed=seed), window=window)


def _take(idx: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    return np.sort(rng.choice(idx, size=n, replace=False)) if len(idx) > n else idx


def training_arrays(
    prep: Prepared, n_normal: int, kline_share: float, n_val_neg: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, int]]:
    """X_normal, X_anom (train split), X_val, y_val (validation split), counts."""
    rng = np.random.default_rng(seed)
    T = prep.window
    sp = prep.split
    n_k = int(n_normal * kline_share) if sp.quiet_train else 0
    n_p = n_normal - n_k
    per_p = max(1, n_p // max(1, len(sp.train)))
    per_k = max(1, n_k // max(1, len(sp.quiet_train))) if n_k else 0
    xn = [windows_at(prep.xs(s), _take(normal_ends(s, T, 4), per_p, rng), T) for s in sp.train]
    xn += [windows_at(prep.xs(s), _take(normal_ends(s, T, 1), per_k, rng), T) for s in sp.quiet_train if per_k]
    xa = [windows_at(prep.xs(s), anomaly_ends(s, T), T) for s in sp.train if len(anomaly_ends(s, T))]
    vp = [windows_at(prep.xs(s), anomaly_ends(s, T), T) for s in sp.val if len(anomaly_ends(s, T))]
    vals = sp.val + sp.quiet_val
    per_v = max(1, n_val_neg // max(1, len(vals)))
    vn = [windows_at(prep.xs(s), _take(normal_ends(s, T, 1), per_v, rng), T) for s in vals]
    X_normal, X_anom = np.concatenate(xn), np.concatenate(xa)
    X_vp, X_vn = np.concatenate(vp), np.concatenate(vn)
    X_val = np.concatenate([X_vp, X_vn])
    y_val = np.concatenate([np.ones(len(X_vp)), np.zeros(len(X_vn))]).astype(np.float32)
    counts = {"normal": len(X_normal), "anomalous": len(X_anom), "val_pos": len(X_vp), "val_neg": len(X_vn)}
    return X_normal, X_anom, X_val, y_val, counts


def score_points(s: Series, window: int, quiet_stride: int, kline_stride: int) -> np.ndarray:
    idx = s.valid_ends(window)
    if s.announce_ms is None:
        return idx[::kline_stride]
    t = s.decision_ms[idx]
    dense = (t >= s.announce_ms - DENSE_BEFORE_MS) & (t <= s.announce_ms + DENSE_AFTER_MS)
    sparse = np.zeros(len(idx), bool)
    sparse[::quiet_stride] = True
    return idx[dense | sparse]


ScoreFn = Callable[[Series, np.ndarray, np.ndarray], np.ndarray]


def score_series(
    prep: Prepared, series: list[Series], fn: ScoreFn, quiet_stride: int, kline_stride: int
) -> list[ScoredSeries]:
    """Run one detector over `series` at the common scored points."""
    out = []
    for s in series:
        idx = score_points(s, prep.window, quiet_stride, kline_stride)
        sc = np.asarray(fn(s, idx, prep.xs(s)), dtype=np.float64)
        t = s.decision_ms[idx]
        span = int(t[-1] - t[0]) if len(t) > 1 else 0
        out.append(
            ScoredSeries(
                name=s.name,
                kind=s.kind,
                t_ms=t,
                score=sc,
                announce_ms=s.announce_ms,
                onset_ms=s.onset_ms,
                pump_visible=s.pump_visible,
                span_ms=span,
            )
        )
    return out


def model_score_fn(trained: Any, window: int, batch: int = 1024) -> ScoreFn:
    """Fused score of a `models.rmad.train.Trained` (torch)."""

    def fn(s: Series, idx: np.ndarray, xs: np.ndarray) -> np.ndarray:
        parts = []
        for i in range(0, len(idx), batch):
            w = windows_at(xs, idx[i : i + batch], window)
            parts.append(trained.score(w, batch=batch)["fused"])
        return np.concatenate(parts) if parts else np.zeros(0)

    return fn


def save_scored(path: Path, scored: list[ScoredSeries]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    meta = []
    for k, s in enumerate(scored):
        arrays[f"t{k}"] = s.t_ms
        arrays[f"s{k}"] = s.score
        meta.append(
            {
                "name": s.name,
                "kind": s.kind,
                "announce_ms": s.announce_ms,
                "onset_ms": s.onset_ms,
                "pump_visible": s.pump_visible,
                "span_ms": s.span_ms,
            }
        )
    np.savez_compressed(path, meta=json.dumps(meta), **arrays)


def load_scored(path: Path) -> list[ScoredSeries]:
    z = np.load(path)
    meta = json.loads(str(z["meta"]))
    return [ScoredSeries(t_ms=z[f"t{k}"], score=z[f"s{k}"], **m) for k, m in enumerate(meta)]


def calibrate(val_scored: list[ScoredSeries], budget: float) -> dict[str, float]:
    """On validation only. alert = best validation event F1 within the false-alarm budget; watch = the most
    sensitive threshold within 4x the budget; critical = the most sensitive within budget / 4."""
    return {
        "alert": calibrate_f1(val_scored, budget),
        "watch": calibrate_threshold(val_scored, budget * 4),
        "critical": calibrate_threshold(val_scored, budget / 4),
        "false_alarm_budget_per_day": budget,
    }


def manifest_base(
    name: str, version: str, prep: Prepared, cfg_dict: dict[str, Any], bar_interval_s: float
) -> dict[str, Any]:
    feats: dict[str, Any] = {"names": list(MARKET_FEATURES), **prep.scaler.to_manifest()}
    return {
        "name": name,
        "version": version,
        "created_ms": int(time.time() * 1000),
        "kind": "market",
        "window": prep.window,
        "bar_interval_s": bar_interval_s,
        "features": feats,
        "spec_hash": SPEC_HASH,
        "feature_spec": spec_dict(),
        "training": {
            "data_fingerprints": prep.split.fingerprints(),
            "split": prep.split.describe(),
            "config": cfg_dict,
        },
    }
