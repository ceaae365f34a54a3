"""Multi-domain VAE with KDE scoring (paper part 2).

A time branch (4 Conv1d, kernels 5/3/3/3, channels 32/64/64/128, ReLU, max-pool, then a 2-layer FC) and a
frequency branch (FFT magnitudes -> GELU MLP 128/64/32) each propose a Gaussian posterior; a scalar gate
alpha = sigmoid(w^T [z_time || z_freq]) mixes them, z = alpha * z_time + (1 - alpha) * z_freq. The decoder
reconstructs the window; the score is S_md = beta * L1_rec + (1 - beta) * (-log p(z)) with p a Gaussian KDE
(bandwidth h) over reference latents that come in as a graph input.

The FFT is a fixed real DFT matrix (exact for the configured T), so every ONNX exporter and runtime handles it.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn

from models.rmad.config import RMADConfig


def dft_matrices(t: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin matrices [T, T//2+1] such that x @ cos, x @ sin give rfft's real and (negated) imaginary parts."""
    n = torch.arange(t, dtype=torch.float64).unsqueeze(1)
    k = torch.arange(t // 2 + 1, dtype=torch.float64).unsqueeze(0)
    ang = 2.0 * math.pi * n * k / t
    return torch.cos(ang).float(), torch.sin(ang).float()


def time_weights(cfg: RMADConfig) -> torch.Tensor:
    """[T, 1] weights summing to 1 that aggregate per-bar errors into a window score (uniform = the mean)."""
    t = torch.arange(cfg.window, dtype=torch.float64)
    if cfg.recency_halflife is None:
        w = torch.ones(cfg.window, dtype=torch.float64)
    else:
        w = torch.pow(0.5, (cfg.window - 1 - t) / float(cfg.recency_halflife))
    return (w / w.sum()).float().unsqueeze(1)


class TimeEncoder(nn.Module):
    """4 Conv1d + ReLU + MaxPool(2) over time (pooling stops once the sequence is length 1), then 2 FC layers."""

    def __init__(self, cfg: RMADConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in, length = cfg.n_features, cfg.window
        for c_out, k in zip(cfg.conv_channels, cfg.conv_kernels, strict=True):
            layers += [nn.Conv1d(c_in, c_out, k, padding=k // 2), nn.ReLU()]
            if length >= 2:
                layers.append(nn.MaxPool1d(2))
                length //= 2
            c_in = c_out
        self.conv = nn.Sequential(*layers)
        self.fc1 = nn.Linear(c_in * length, cfg.time_fc)
        self.fc2 = nn.Linear(cfg.time_fc, 2 * cfg.latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.conv(x.transpose(1, 2)).flatten(1)
        mu, logvar = self.fc2(F.relu(self.fc1(h))).chunk(2, dim=1)
        return mu, logvar


class FreqEncoder(nn.Module):
    """|rfft| of each feature over time -> GELU MLP (128, 64, 32) -> Gaussian posterior."""

    dft_cos: torch.Tensor
    dft_sin: torch.Tensor

    def __init__(self, cfg: RMADConfig) -> None:
        super().__init__()
        cos, sin = dft_matrices(cfg.window)
        self.register_buffer("dft_cos", cos, persistent=False)
        self.register_buffer("dft_sin", sin, persistent=False)
        self.scale = 1.0 / math.sqrt(cfg.window)
        widths = (cfg.n_features * (cfg.window // 2 + 1), *cfg.freq_hidden)
        mlp: list[nn.Module] = []
        for a, b in itertools.pairwise(widths):
            mlp += [nn.Linear(a, b), nn.GELU()]
        self.mlp = nn.Sequential(*mlp)
        self.head = nn.Linear(widths[-1], 2 * cfg.latent_dim)

    def magnitudes(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, F] -> [B, F, T//2+1] DFT magnitudes (orthonormal scaling)."""
        xt = x.transpose(1, 2)  # [B, F, T]
        re = xt @ self.dft_cos
        im = xt @ self.dft_sin
        return torch.sqrt(re * re + im * im + 1e-12) * self.scale

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.mlp(self.magnitudes(x).flatten(1))
        mu, logvar = self.head(h).chunk(2, dim=1)
        return mu, logvar


class MultiDomainVAE(nn.Module):
    time_w: torch.Tensor

    def __init__(self, cfg: RMADConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.register_buffer("time_w", time_weights(cfg), persistent=False)
        self.use_time = cfg.vae_domains in ("both", "time")
        self.use_freq = cfg.vae_domains in ("both", "freq")
        self.time = TimeEncoder(cfg) if self.use_time else None
        self.freq = FreqEncoder(cfg) if self.use_freq else None
        self.gate = nn.Linear(2 * cfg.latent_dim, 1) if (self.use_time and self.use_freq) else None
        widths = (cfg.latent_dim, *cfg.dec_hidden)
        dec: list[nn.Module] = []
        for a, b in itertools.pairwise(widths):
            dec += [nn.Linear(a, b), nn.GELU()]
        dec.append(nn.Linear(widths[-1], cfg.d))
        self.decoder = nn.Sequential(*dec)
        self.log_norm_const = -0.5 * cfg.latent_dim * math.log(2.0 * math.pi * cfg.kde_bandwidth**2)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Posterior (mu, logvar) of the gated latent and the gate alpha [B, 1] (1 = all time branch)."""
        if self.time is not None and self.freq is not None and self.gate is not None:
            mu_t, lv_t = self.time(x)
            mu_f, lv_f = self.freq(x)
            alpha = torch.sigmoid(self.gate(torch.cat([mu_t, mu_f], dim=1)))
            return alpha * mu_t + (1 - alpha) * mu_f, alpha * lv_t + (1 - alpha) * lv_f, alpha
        if self.time is not None:
            mu, lv = self.time(x)
            return mu, lv, torch.ones_like(mu[:, :1])
        assert self.freq is not None
        mu, lv = self.freq(x)
        return mu, lv, torch.zeros_like(mu[:, :1])

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.decoder(z)
        return out.view(-1, self.cfg.window, self.cfg.n_features)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training pass: (reconstruction from a sampled z, mu, logvar, alpha)."""
        mu, logvar, alpha = self.encode(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
        return self.decode(z), mu, logvar, alpha

    def kde_log_density(self, z: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        """log p(z) under a Gaussian KDE with bandwidth h over ref [M, Z]; [B].

        The 1/M normaliser is log-sum-exp minus log of a count taken from the tensor, so the reference count stays
        a symbolic dimension in the exported graph.
        """
        h2 = self.cfg.kde_bandwidth**2
        d2 = (z * z).sum(1, keepdim=True) + (ref * ref).sum(1).unsqueeze(0) - 2.0 * (z @ ref.t())
        d2 = torch.clamp(d2, min=0.0)
        count = torch.ones_like(ref[:, 0]).sum()
        return torch.logsumexp(-0.5 * d2 / h2, dim=1) - torch.log(count) + self.log_norm_const

    def score(self, x: torch.Tensor, ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Inference: S_md [B], per-feature L1 errors [B, F], latent mu [B, Z]."""
        mu, _, _ = self.encode(x)
        err = ((self.decode(mu) - x).abs() * self.time_w).sum(1)  # [B, F]
        rec = err.mean(1)
        nll = -self.kde_log_density(mu, ref)
        beta = self.cfg.md_beta
        return beta * rec + (1.0 - beta) * nll, err, mu


def vae_loss(vae: MultiDomainVAE, x: torch.Tensor, kl_weight: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-window L1 reconstruction [B] as the score aggregates it (time weights), KL [B], and the batch loss
    (uniform mean L1 + w * KL: every bar is learned alike whatever the scoring emphasis)."""
    recon, mu, logvar, _ = vae(x)
    abs_err = (recon - x).abs()
    rec_score = (abs_err * vae.time_w).sum(1).mean(1)
    kl = -0.5 * (1 + logvar - mu * mu - logvar.exp()).sum(1)
    return rec_score, kl, (abs_err.mean((1, 2)) + kl_weight * kl).mean()
