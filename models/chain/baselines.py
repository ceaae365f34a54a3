"""Baselines for the chain model, fitted on the same training rows and scored by the same harness.

- random forest: supervised on all training rows (fraud and normal); the strong reference the issue names.
- Isolation Forest and One-Class SVM: unsupervised, fitted on the training normals only (what an anomaly
  detector without fraud labels could do).
- River HalfSpaceTrees: the streaming detector of the market baselines, learning one normal address at a time.
Scores are oriented so that higher = more suspicious.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn.ensemble import IsolationForest, RandomForestClassifier
from sklearn.svm import OneClassSVM

Scorer = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Fitted:
    name: str
    score: Scorer
    fit_s: float


def fit_random_forest(x: np.ndarray, y: np.ndarray, seed: int = 0) -> Fitted:
    t0 = time.perf_counter()
    rf = RandomForestClassifier(n_estimators=300, min_samples_leaf=1, n_jobs=2, random_state=seed)
    rf.fit(x, y)
    return Fitted("random forest (supervised)", lambda z: rf.predict_proba(z)[:, 1], time.perf_counter() - t0)


def fit_isolation_forest(x_normal: np.ndarray, seed: int = 0) -> Fitted:
    t0 = time.perf_counter()
    iso = IsolationForest(n_estimators=300, random_state=seed, n_jobs=2).fit(x_normal)
    return Fitted("Isolation Forest", lambda z: -iso.score_samples(z), time.perf_counter() - t0)


def fit_ocsvm(x_normal: np.ndarray, seed: int = 0, max_rows: int = 3000) -> Fitted:
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    rows = x_normal if len(x_normal) <= max_rows else x_normal[rng.choice(len(x_normal), max_rows, replace=False)]
    svm = OneClassSVM(kernel="rbf", gamma="scale", nu=0.05).fit(rows)
    return Fitted("One-Class SVM", lambda z: -svm.score_samples(z), time.perf_counter() - t0)


def fit_half_space_trees(x_normal: np.ndarray, seed: int = 0) -> Fitted:
    from river import anomaly

    t0 = time.perf_counter()
    lo, hi = x_normal.min(axis=0), x_normal.max(axis=0)
    span = np.where(hi - lo > 1e-9, hi - lo, 1.0)
    hst = anomaly.HalfSpaceTrees(n_trees=25, height=8, window_size=250, seed=seed)

    def as_dict(row: np.ndarray) -> dict[str, float]:
        return {str(i): float(v) for i, v in enumerate(np.clip((row - lo) / span, 0.0, 1.0))}

    for row in x_normal:
        hst.learn_one(as_dict(row))  # type: ignore[no-untyped-call]
    return Fitted(
        "River HalfSpaceTrees",
        lambda z: np.array([hst.score_one(as_dict(r)) for r in z]),  # type: ignore[no-untyped-call]
        time.perf_counter() - t0,
    )


def fit_all(x_train: np.ndarray, y_train: np.ndarray, seed: int = 0) -> list[Fitted]:
    normal = x_train[y_train == 0]
    return [
        fit_random_forest(x_train, y_train, seed),
        fit_isolation_forest(normal, seed),
        fit_ocsvm(normal, seed),
        fit_half_space_trees(normal, seed),
    ]
