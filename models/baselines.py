"""Baselines scored in the same harness, on the same splits and windows, with the same metrics as the model.

Every baseline implements `fit(ctx)` on training data only and `score(series, idx, Xs)` -> a score per window
end (higher = more anomalous); thresholds are calibrated on validation like the model's, except the rolling
z-score whose threshold is the textbook 3 (reported as such).

- `rolling_z`: |z| of the last bar's log return and z of its log quote volume against the window's previous bars;
  score = max of the two; fixed threshold 3.
- `isolation_forest`, `ocsvm`: on a window summary (last bar, mean of the last 12 bars, max over the window).
- `lstm_ae`: LSTM encoder-decoder reconstructing the scaled window; score = mean squared error.
- `random_forest`: La Morgia et al.'s chunk features (25 s chunks: rush orders, trades, volume, price; the
  current chunk against the moving window of previous chunks), supervised on the training pumps.
- `hst`: River HalfSpaceTrees on the last bar's scaled features, learning online as it scores.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from models.market.dataset import Series, windows_at

log = logging.getLogger(__name__)


@dataclass
class FitContext:
    """Training data every baseline may use (all from the training split only)."""

    window: int
    normal: list[tuple[Series, np.ndarray, np.ndarray]]  # (series, window-end idx, scaled features)
    anomalous: list[tuple[Series, np.ndarray, np.ndarray]]
    seed: int = 0
    max_fit: int = 20_000
    extra: dict[str, object] = field(default_factory=dict)


class Baseline(Protocol):
    name: str
    fixed_threshold: float | None

    def fit(self, ctx: FitContext) -> None: ...

    def score(self, s: Series, idx: np.ndarray, Xs: np.ndarray) -> np.ndarray: ...


# -------------------------------------------------------------------------------------------- rolling z


class RollingZ:
    """Rolling z-score on price (log return) and volume (log quote volume), threshold 3."""

    name = "rolling_z"
    fixed_threshold: float | None = 3.0

    def __init__(self, window: int = 64) -> None:
        self.window = window

    def fit(self, ctx: FitContext) -> None:
        self.window = ctx.window

    def score(self, s: Series, idx: np.ndarray, Xs: np.ndarray) -> np.ndarray:
        lr = np.diff(np.log(s.close), prepend=np.log(s.close[0]))
        pos = s.quote_volume[s.quote_volume > 0]
        eps = 1e-3 * float(np.median(pos)) if len(pos) else 1e-12
        lv = np.log(s.quote_volume + eps)
        out = np.zeros(len(idx))
        w = self.window
        vr = np.lib.stride_tricks.sliding_window_view(lr, w)[idx - w + 1]
        vv = np.lib.stride_tricks.sliding_window_view(lv, w)[idx - w + 1]
        for arr, absval in ((vr, True), (vv, False)):
            hist, last = arr[:, :-1], arr[:, -1]
            mu, sd = hist.mean(1), hist.std(1)
            z = (last - mu) / np.maximum(sd, 1e-9)
            z = np.where(sd > 1e-12, z, 0.0)
            out = np.maximum(out, np.abs(z) if absval else z)
        return out


# ------------------------------------------------------------------------------------ window summaries


def summary(Xs: np.ndarray, idx: np.ndarray, window: int) -> np.ndarray:
    w = windows_at(Xs, idx, window)
    return np.concatenate([w[:, -1], w[:, -12:].mean(1), w.max(1)], axis=1)


def _stack_summaries(groups: list[tuple[Series, np.ndarray, np.ndarray]], window: int) -> np.ndarray:
    parts = [summary(Xs, idx, window) for _, idx, Xs in groups if len(idx)]
    return np.concatenate(parts) if parts else np.zeros((0, 1))


class IsolationForestBaseline:
    name = "isolation_forest"
    fixed_threshold: float | None = None

    def fit(self, ctx: FitContext) -> None:
        from sklearn.ensemble import IsolationForest

        self.window = ctx.window
        x = _stack_summaries(ctx.normal, ctx.window)
        rng = np.random.default_rng(ctx.seed)
        x = x[rng.permutation(len(x))[: ctx.max_fit]]
        self.model = IsolationForest(n_estimators=200, random_state=ctx.seed, n_jobs=1).fit(x)

    def score(self, s: Series, idx: np.ndarray, Xs: np.ndarray) -> np.ndarray:
        return np.asarray(-self.model.score_samples(summary(Xs, idx, self.window)))


class OCSVMBaseline:
    name = "ocsvm"
    fixed_threshold: float | None = None

    def fit(self, ctx: FitContext) -> None:
        from sklearn.svm import OneClassSVM

        self.window = ctx.window
        x = _stack_summaries(ctx.normal, ctx.window)
        rng = np.random.default_rng(ctx.seed)
        x = x[rng.permutation(len(x))[:3000]]  # O(n^2) kernel: a few thousand support candidates at most
        self.model = OneClassSVM(kernel="rbf", gamma="scale", nu=0.01).fit(x)

    def score(self, s: Series, idx: np.ndarray, Xs: np.ndarray) -> np.ndarray:
        return np.asarray(-self.model.decision_function(summary(Xs, idx, self.window)))


# ----------------------------------------------------------------------------------------- LSTM AE


class LSTMAEBaseline:
    name = "lstm_ae"
    fixed_threshold: float | None = None

    def __init__(self, hidden: int = 32, epochs: int = 3, max_fit: int = 12_000) -> None:
        self.hidden, self.epochs, self.max_fit = hidden, epochs, max_fit

    def fit(self, ctx: FitContext) -> None:
        import torch
        from torch import nn

        torch.manual_seed(ctx.seed)
        self.window = ctx.window
        parts = [windows_at(Xs, idx, ctx.window) for _, idx, Xs in ctx.normal if len(idx)]
        x = np.concatenate(parts)
        rng = np.random.default_rng(ctx.seed)
        x = x[rng.permutation(len(x))[: self.max_fit]]
        f = x.shape[2]

        class AE(nn.Module):
            def __init__(self, f: int, h: int) -> None:
                super().__init__()
                self.enc = nn.LSTM(f, h, batch_first=True)
                self.dec = nn.LSTM(h, h, batch_first=True)
                self.out = nn.Linear(h, f)

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                _, (h, _) = self.enc(x)
                z = h[-1].unsqueeze(1).expand(-1, x.shape[1], -1)
                y, _ = self.dec(z)
                return self.out(y)  # type: ignore[no-any-return]

        self.model = AE(f, self.hidden)
        opt = torch.optim.Adam(self.model.parameters(), lr=2e-3)
        xt = torch.from_numpy(x)
        self.model.train()
        for ep in range(self.epochs):
            perm = torch.randperm(len(xt))
            tot = 0.0
            for i in range(0, len(xt), 256):
                b = xt[perm[i : i + 256]]
                loss = ((self.model(b) - b) ** 2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                tot += loss.item() * len(b)
            log.info("lstm_ae epoch %d loss %.4f", ep + 1, tot / len(xt))
        self.model.eval()

    def score(self, s: Series, idx: np.ndarray, Xs: np.ndarray) -> np.ndarray:
        import torch

        out = []
        with torch.no_grad():
            for i in range(0, len(idx), 2048):
                w = torch.from_numpy(windows_at(Xs, idx[i : i + 2048], self.window))
                out.append(((self.model(w) - w) ** 2).mean((1, 2)).numpy())
        return np.concatenate(out) if out else np.zeros(0)


# ------------------------------------------------------------------------ La Morgia chunk features + RF

LAMORGIA_FEATURES = (
    "std_rush_order",
    "avg_rush_order",
    "std_trades",
    "std_volume",
    "avg_volume",
    "std_price",
    "avg_price",
    "avg_price_max",
)


def lamorgia_features(s: Series, idx: np.ndarray, chunk_bars: int = 5, n_chunks: int = 12) -> np.ndarray:
    """La Morgia et al.'s 8 chunk features at each window end: the last 25 s chunk (5 bars of 5 s) compared
    with the moving window of the previous `n_chunks` chunks (their features are rolling statistics' relative
    change; here the current chunk's value over the moving window's mean, which keeps it defined on quiet coins).
    No time-of-day features (their hour/minute columns would leak the label here)."""
    rush = np.nan_to_num(s.rush, nan=0.0)
    trades = np.nan_to_num(s.trades, nan=0.0)
    vol = s.quote_volume
    logp = np.log(s.close)
    n_hist = chunk_bars * (n_chunks + 1)

    def chunk_sums(x: np.ndarray, fn: str) -> np.ndarray:
        # [len(idx), n_chunks + 1] chunk aggregates ending at each idx (oldest first)
        pad = np.concatenate([np.full(n_hist, x[0]), x])
        v = np.lib.stride_tricks.sliding_window_view(pad, n_hist)[idx + 1]  # window ends at idx (padded)
        v = v.reshape(len(idx), n_chunks + 1, chunk_bars)
        if fn == "sum":
            return np.asarray(v.sum(2))
        if fn == "mean":
            return np.asarray(v.mean(2))
        if fn == "max":
            return np.asarray(v.max(2))
        return np.asarray(v.std(2))

    cols = []
    for x, fn in ((rush, "sum"), (trades, "sum"), (vol, "sum")):
        c = chunk_sums(x, fn)
        hist, cur = c[:, :-1], c[:, -1]
        m, sd = hist.mean(1), hist.std(1)
        cols.append(np.log1p(np.abs(cur - m) / (sd + 1e-9 + 1e-3 * m)) * np.sign(cur - m))  # std-relative jump
        cols.append(np.log1p(cur / (m + 1e-12)))
    pstd = chunk_sums(logp, "std")
    cols.append(np.log1p(pstd[:, -1] / (pstd[:, :-1].mean(1) + 1e-9)))
    pmean = chunk_sums(logp, "mean")
    cols.append(pmean[:, -1] - pmean[:, :-1].mean(1))
    pmax = chunk_sums(logp, "max")
    cols.append(pmax[:, -1] - pmax[:, :-1].mean(1))
    f = np.stack(cols, 1)
    # order as LAMORGIA_FEATURES
    order = [0, 1, 2, 4, 5, 6, 7, 8]
    return np.nan_to_num(f[:, order], nan=0.0, posinf=50.0, neginf=-50.0)


class RandomForestBaseline:
    name = "random_forest"
    fixed_threshold: float | None = None

    def fit(self, ctx: FitContext) -> None:
        from sklearn.ensemble import RandomForestClassifier

        xn = np.concatenate([lamorgia_features(s, idx) for s, idx, _ in ctx.normal if len(idx)])
        xa = np.concatenate([lamorgia_features(s, idx) for s, idx, _ in ctx.anomalous if len(idx)])
        rng = np.random.default_rng(ctx.seed)
        xn = xn[rng.permutation(len(xn))[: ctx.max_fit]]
        x = np.concatenate([xn, xa])
        y = np.concatenate([np.zeros(len(xn)), np.ones(len(xa))])
        self.model = RandomForestClassifier(
            n_estimators=200, min_samples_leaf=2, class_weight="balanced", random_state=ctx.seed, n_jobs=1
        ).fit(x, y)

    def score(self, s: Series, idx: np.ndarray, Xs: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict_proba(lamorgia_features(s, idx))[:, 1])


# ----------------------------------------------------------------------------------- River HST


class HSTBaseline:
    """HalfSpaceTrees needs inputs in [0, 1]: features are mapped with the training 1st/99th percentiles."""

    name = "hst"
    fixed_threshold: float | None = None

    def __init__(self, n_trees: int = 25, height: int = 12, window_size: int = 250, pretrain: int = 5000) -> None:
        self.kw = dict(n_trees=n_trees, height=height, window_size=window_size)
        self.pretrain = pretrain

    def fit(self, ctx: FitContext) -> None:
        x = np.concatenate([Xs[idx] for _, idx, Xs in ctx.normal if len(idx)])
        self.lo, self.hi = np.percentile(x, 1, axis=0), np.percentile(x, 99, axis=0)
        self.hi = np.where(self.hi - self.lo > 1e-9, self.hi, self.lo + 1.0)
        rng = np.random.default_rng(ctx.seed)
        self.warm = x[rng.permutation(len(x))[: self.pretrain]]
        self.seed = ctx.seed

    def _new(self):  # type: ignore[no-untyped-def]
        from river import anomaly

        m = anomaly.HalfSpaceTrees(seed=self.seed, **self.kw)
        for row in self._unit(self.warm):
            m.learn_one(row)
        return m

    def _unit(self, x: np.ndarray) -> list[dict[int, float]]:
        u = np.clip((x - self.lo) / (self.hi - self.lo), 0.0, 1.0)
        return [dict(enumerate(r.tolist())) for r in u]

    def score(self, s: Series, idx: np.ndarray, Xs: np.ndarray) -> np.ndarray:
        m = self._new()  # one online model per symbol stream, as a deployment would run it
        out = np.empty(len(idx))
        for k, row in enumerate(self._unit(Xs[idx])):
            out[k] = m.score_one(row)
            m.learn_one(row)
        return out


def all_baselines() -> list[Baseline]:
    return [
        RollingZ(),
        IsolationForestBaseline(),
        OCSVMBaseline(),
        LSTMAEBaseline(),
        RandomForestBaseline(),
        HSTBaseline(),
    ]
