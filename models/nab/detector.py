"""The market architecture (RMAD) run as an online, label-free detector on one NAB series.

NAB's protocol: the detector sees the series one row at a time, may learn freely during the probationary period
(the first 15 % of rows) and never sees labels. This detector:
1. Features per row (F = 3): the value, its first difference and its deviation from a trailing mean, each scaled
   with a robust scaler (median / IQR) fitted on the rows the current model was trained on; windows are the last
   `window` rows ending at the current one (causal).
2. Fits a small RMAD (same architecture and training code as the market model, narrower layers) on the
   probationary windows with no anomalous class: the GAN and the fusion gate need labels or anomalies, so they are
   skipped (equal fusion weights over the three standardised branch scores).
3. Adapts online: every `refit_every` rows the model is re-fitted on the most recent `history` rows (all of
   them past rows), so level shifts the detector has lived with for a while stop looking anomalous.
4. Turns the fused score into a surprise z (the argument of Numenta's anomaly likelihood): the short-term mean of
   recent scores against the mean / std of the scores over a trailing history; then reports a row only when its z
   exceeds every z of the previous `suppress` rows (no repeated reports of one anomaly). NAB thresholds the output
   with one corpus-wide threshold. These choices were fixed before the corpus was scored with them, not tuned on
   NAB's labels (a first full run with the saturating likelihood and no suppression scored 9.5 on 48 files).
Each row's output uses only rows up to and including it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.nab.scoring import probationary_length
from service.features.scaling import RobustScaler

N_FEATURES = 3


@dataclass(frozen=True)
class DetectorConfig:
    window: int = 32
    refit_every: int = 3000  # rows between online re-fits (after the probationary fit)
    history: int = 1200  # rows a (re-)fit trains on
    epochs: int = 2
    patch: int = 4  # bars per Transformer token (8 tokens per 32-row window keeps a re-fit to seconds)
    trailing_mean: int = 24  # rows of the trailing mean behind the deviation feature
    lik_history: int = 800  # scores behind the likelihood's mean / std
    lik_short: int = 5  # scores averaged into the likelihood's short-term mean
    suppress: int = 64  # rows after a reported peak during which lower scores are not reported again
    seed: int = 0
    threads: int = 1


def raw_features(values: np.ndarray, trailing: int) -> np.ndarray:
    """[n, 3] (value, first difference, value minus trailing mean of the previous `trailing` rows); causal."""
    v = np.asarray(values, dtype=np.float64)
    diff = np.concatenate([[0.0], np.diff(v)])
    csum = np.concatenate([[0.0], np.cumsum(v)])
    idx = np.arange(len(v))
    lo = np.maximum(idx - trailing, 0)
    counts = np.maximum(idx - lo, 1)
    mean_prev = np.where(idx > 0, (csum[idx] - csum[lo]) / counts, v[0])
    return np.stack([v, diff, v - mean_prev], axis=1)


def windows_at(x: np.ndarray, ends: np.ndarray, window: int) -> np.ndarray:
    """Windows [len(ends), window, F] of x ending at each index in `ends` (rows before 0 repeat row 0)."""
    offsets = np.arange(-window + 1, 1)
    rows = np.clip(ends[:, None] + offsets[None, :], 0, None)
    return x[rows]


def small_config(cfg: DetectorConfig) -> object:
    """A narrow RMAD for a few hundred windows of a univariate series (a few thousand parameters per layer)."""
    from models.rmad.config import RMADConfig

    return RMADConfig(
        n_features=N_FEATURES,
        window=cfg.window,
        patch=cfg.patch,
        latent_dim=8,
        conv_channels=(16, 32, 32, 32),
        time_fc=64,
        freq_hidden=(32, 16, 16),
        dec_hidden=(64, 64),
        n_ref_latents=256,
        data_hidden=(32, 32, 32),
        rho_dim=16,
        n_heads=4,
        ffn_dim=96,
        cluster_hidden=(48, 32),
        emb_dim=16,
        K=4,
        batch_size=64,
        vae_epochs=cfg.epochs,
        trans_warmup_epochs=1,
        trans_epochs=max(1, cfg.epochs - 1),
        use_gan=False,  # no anomalous windows without labels: nothing to augment
        use_gate=False,  # no labelled validation split: fixed equal weights
        seed=cfg.seed,
        threads=cfg.threads,
    )


def _fit(cfg: DetectorConfig, feats: np.ndarray, start: int, stop: int) -> tuple[object, RobustScaler]:
    """Fit scaler + RMAD on rows [start, stop) (all in the past of every row it will score)."""
    from models.rmad.train import fit

    scaler = RobustScaler.fit(feats[start:stop])
    scaled = scaler.transform(feats)
    ends = np.arange(max(start + cfg.window - 1, start), stop)
    x = windows_at(scaled, ends, cfg.window)
    empty = np.zeros((0, cfg.window, N_FEATURES), np.float32)
    trained = fit(small_config(cfg), x, empty, empty, np.zeros(0), progress=lambda _m: None)  # type: ignore[arg-type]
    return trained, scaler


def _score(trained: object, scaler: RobustScaler, feats: np.ndarray, ends: np.ndarray, window: int) -> np.ndarray:
    x = windows_at(scaler.transform(feats), ends, window)
    return np.asarray(trained.score(x)["fused"], dtype=np.float64)  # type: ignore[attr-defined]


def surprise(raw: np.ndarray, start: int, cfg: DetectorConfig) -> np.ndarray:
    """z-score of raw[start:], each from earlier entries only: (short-term mean - mu) / sd.

    mu and sd are taken over up to `lik_history` scores before the short-term block of the last `lik_short` scores.
    This is the argument of Numenta's anomaly likelihood; the z itself is returned because the likelihood
    (a Gaussian tail probability) saturates at 1.0 in floating point for z above ~8, which would tie every strong
    anomaly with every other one.
    """
    a = np.asarray(raw, dtype=np.float64)
    c1 = np.concatenate([[0.0], np.cumsum(a)])
    c2 = np.concatenate([[0.0], np.cumsum(a * a)])
    i = np.arange(start, len(a))
    hi = np.maximum(i - cfg.lik_short + 1, 0)  # history is a[lo:hi]
    lo = np.maximum(i - cfg.lik_history, 0)
    cnt = hi - lo
    safe = np.maximum(cnt, 1)
    mu = (c1[hi] - c1[lo]) / safe
    var = np.maximum((c2[hi] - c2[lo]) / safe - mu * mu, 0.0)
    sd = np.maximum(np.sqrt(var), 1e-6 * np.maximum(np.abs(mu), 1.0))
    s_lo = np.maximum(i - cfg.lik_short + 1, 0)
    short = (c1[i + 1] - c1[s_lo]) / (i + 1 - s_lo)
    return np.where(cnt >= 10, (short - mu) / sd, 0.0)


def suppress_repeats(z: np.ndarray, start: int, span: int) -> np.ndarray:
    """Keep a row's z only when it exceeds every z of the previous `span` rows; otherwise min(z, 0).

    A detector that has just reported an anomaly does not report it again on every following row: NAB counts only
    the first detection inside a window and charges every detection outside one. Causal (uses past outputs only)
    and independent of the threshold NAB later applies.
    """
    out = np.array(z, dtype=np.float64)
    for i in range(start, len(z)):
        prev = z[max(start, i - span) : i]
        if len(prev) and z[i] <= prev.max():
            out[i] = min(z[i], 0.0)
    return out


@dataclass(frozen=True)
class DetectorRun:
    scores: np.ndarray  # [n] detector output: surprise z with repeats suppressed (0 in the probationary period)
    raw: np.ndarray  # [n] fused RMAD score
    n_fits: int


def run_series(values: np.ndarray, cfg: DetectorConfig) -> DetectorRun:
    """Online pass over one series; returns one score per row, each computed from past rows only."""
    n = len(values)
    feats = raw_features(values, cfg.trailing_mean)
    prob = min(n, max(probationary_length(n), cfg.window + 10))
    raw = np.zeros(n)
    z = np.zeros(n)
    trained, scaler = _fit(cfg, feats, 0, prob)
    n_fits = 1
    hist_rows = np.arange(max(0, prob - cfg.lik_history), prob)
    raw[:prob] = _score(trained, scaler, feats, np.arange(prob), cfg.window)
    hist = raw[hist_rows]
    pos = prob
    while pos < n:
        stop = min(n, pos + cfg.refit_every)
        seg = _score(trained, scaler, feats, np.arange(pos, stop), cfg.window)
        raw[pos:stop] = seg
        z[pos:stop] = surprise(np.concatenate([hist, seg]), len(hist), cfg)
        pos = stop
        if pos < n:  # online adaptation: re-fit on the most recent past rows
            trained, scaler = _fit(cfg, feats, max(0, pos - cfg.history), pos)
            n_fits += 1
            # the likelihood's history, rescored by the new model so it shares the new model's scale
            hist = _score(trained, scaler, feats, np.arange(max(0, pos - cfg.lik_history), pos), cfg.window)
    return DetectorRun(scores=suppress_repeats(z, prob, cfg.suppress), raw=raw, n_fits=n_fits)
