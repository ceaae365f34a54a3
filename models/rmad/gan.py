"""Feature-consistent conditional GAN (paper part 1): synthesises anomalous windows to enrich scarce labels.

Generator: 4 FC layers (256, 512, 512, d) with LeakyReLU + LayerNorm and noise injection, the class condition y
(one-hot) concatenated to z. Discriminator: 3 spectrally normalised FC layers (512, 256, 1), conditioned on y.
Generator loss: L_adv + lambda * ||F(G(z, y)) - F(x_y)||^2 where F is the discriminator's penultimate feature
(feature matching on batch means keeps the synthetic windows consistent with real ones in the discriminator's
feature space). The GAN is used only at training time; it is not part of the exported graph.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from models.rmad.config import RMADConfig


class NoisyBlock(nn.Module):
    """FC -> LayerNorm -> LeakyReLU, plus per-unit Gaussian noise injection (StyleGAN-style learned gain)."""

    def __init__(self, d_in: int, d_out: int, noise_std: float) -> None:
        super().__init__()
        self.fc = nn.Linear(d_in, d_out)
        self.norm = nn.LayerNorm(d_out)
        self.noise_gain = nn.Parameter(torch.full((d_out,), noise_std))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)
        h = h + self.noise_gain * torch.randn_like(h)
        return F.leaky_relu(self.norm(h), 0.2)


class Generator(nn.Module):
    """With cfg.gan_standardise, works in a per-feature standardised space (`mean`, `std` buffers set from the GAN's
    training data) and returns windows in data space: anomalous market windows have feature scales ~10x the normal
    ones, far from what a LayerNorm'd generator's output layer reaches in a few hundred steps from its initialisation.
    Without it the buffers stay (0, 1), the identity."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, cfg: RMADConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.register_buffer("mean", torch.zeros(cfg.d))
        self.register_buffer("std", torch.ones(cfg.d))
        widths = (cfg.noise_dim + cfg.n_classes, *cfg.gan_hidden)
        self.blocks = nn.ModuleList(NoisyBlock(a, b, cfg.gan_noise_std) for a, b in itertools.pairwise(widths))
        self.out = nn.Linear(widths[-1], cfg.d)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """z [B, noise_dim], y [B] int class -> flattened windows [B, T*F]."""
        h = torch.cat([z, F.one_hot(y, self.cfg.n_classes).to(z.dtype)], dim=1)
        for b in self.blocks:
            h = b(h)
        out: torch.Tensor = self.out(h)
        return out * self.std + self.mean

    @torch.no_grad()
    def sample(self, n: int, label: int = 1, generator: torch.Generator | None = None) -> torch.Tensor:
        """n windows [n, T, F] of class `label`."""
        self.eval()
        z = torch.randn(n, self.cfg.noise_dim, generator=generator)
        y = torch.full((n,), label, dtype=torch.long)
        out: torch.Tensor = self(z, y)
        return out.view(n, self.cfg.window, self.cfg.n_features)


class Discriminator(nn.Module):
    """Standardises its input with the same per-feature statistics as the generator."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, cfg: RMADConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.register_buffer("mean", torch.zeros(cfg.d))
        self.register_buffer("std", torch.ones(cfg.d))
        widths = (cfg.d + cfg.n_classes, *cfg.disc_hidden)
        self.layers = nn.ModuleList(spectral_norm(nn.Linear(a, b)) for a, b in itertools.pairwise(widths))
        self.out = spectral_norm(nn.Linear(widths[-1], 1))

    def features(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """F(x): the penultimate activations [B, 256] used for feature matching and FID."""
        h = torch.cat([(x - self.mean) / self.std, F.one_hot(y, self.cfg.n_classes).to(x.dtype)], dim=1)
        for layer in self.layers:
            h = F.leaky_relu(layer(h), 0.2)
        return h

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(x, y)
        return self.out(f).squeeze(1), f


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to feature sets a [N, k] and b [M, k] (the FID formula)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    mu1, mu2 = a.mean(0), b.mean(0)
    s1 = np.atleast_2d(np.cov(a, rowvar=False))
    s2 = np.atleast_2d(np.cov(b, rowvar=False))
    # tr sqrt(S1 S2) = sum of sqrt of the eigenvalues of S1 S2 (real, >= 0 for PSD S1, S2): avoids a full sqrtm
    eig = np.linalg.eigvals(s1 @ s2)
    tr_covmean = float(np.sqrt(np.clip(eig.real, 0.0, None)).sum())
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)


def _batches(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    return rng.choice(n, size=size, replace=n < size)


def train_gan(
    cfg: RMADConfig,
    x_normal: np.ndarray,
    x_anom: np.ndarray,
    rng: np.random.Generator,
) -> tuple[Generator, Discriminator, dict[str, list[float]]]:
    """Train the conditional GAN on balanced batches: the scarce anomalous windows (y=1) beside normal ones (y=0).

    Feature matching is per class: synthetic windows of class y match the discriminator-feature mean of real
    windows of class y, so F(G(z, 1)) is pulled toward F(x_fraud). One epoch = one pass over the anomalies.
    """
    gen, disc = Generator(cfg), Discriminator(cfg)
    if cfg.gan_standardise:
        # per-feature statistics of the balanced training mix (all anomalies + as many normal windows), tiled over T
        n_mix = min(len(x_normal), max(len(x_anom), 1))
        mix = np.concatenate([x_anom, x_normal[rng.choice(len(x_normal), size=n_mix, replace=False)]])
        mix = mix.reshape(-1, cfg.n_features).astype(np.float64)
        mu, sd = mix.mean(0), np.maximum(mix.std(0), 1e-3)
        for m in (gen, disc):
            m.mean.copy_(torch.from_numpy(np.tile(mu, cfg.window).astype(np.float32)))
            m.std.copy_(torch.from_numpy(np.tile(sd, cfg.window).astype(np.float32)))
    opt_g = torch.optim.Adam(gen.parameters(), lr=cfg.lr_g, betas=cfg.gan_betas)
    opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.lr_d, betas=cfg.gan_betas)
    xa = torch.from_numpy(np.ascontiguousarray(x_anom.reshape(len(x_anom), -1), dtype=np.float32))
    xn = torch.from_numpy(np.ascontiguousarray(x_normal.reshape(len(x_normal), -1), dtype=np.float32))
    half = max(1, cfg.gan_batch // 2)
    steps = max(1, int(np.ceil(len(xa) / half)))
    curves: dict[str, list[float]] = {"gan_d": [], "gan_g_adv": [], "gan_fm": []}
    for _ in range(cfg.gan_epochs):
        gen.train()
        disc.train()
        sums = np.zeros(3)
        for _ in range(steps):
            real = torch.cat([xa[_batches(len(xa), half, rng)], xn[_batches(len(xn), half, rng)]])
            y = torch.cat([torch.ones(half, dtype=torch.long), torch.zeros(half, dtype=torch.long)])
            z = torch.randn(len(y), cfg.noise_dim)
            # discriminator step
            fake = gen(z, y).detach()
            d_real, _ = disc(real, y)
            d_fake, _ = disc(fake, y)
            loss_d = F.binary_cross_entropy_with_logits(
                d_real, torch.ones_like(d_real)
            ) + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake))
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()  # type: ignore[no-untyped-call]
            opt_d.step()
            # generator step: non-saturating adversarial loss + lambda * feature matching per class
            fake = gen(z, y)
            d_fake, f_fake = disc(fake, y)
            with torch.no_grad():
                _, f_real = disc(real, y)
            adv = F.binary_cross_entropy_with_logits(d_fake, torch.ones_like(d_fake))
            fm = feature_matching(f_fake, f_real, y, cfg.n_classes)
            loss_g = adv + cfg.gan_lambda * fm
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()  # type: ignore[no-untyped-call]
            opt_g.step()
            sums += (loss_d.item(), adv.item(), fm.item())
        for k, v in zip(curves, sums / steps, strict=True):
            curves[k].append(float(v))
    gen.eval()
    disc.eval()
    return gen, disc, curves


def feature_matching(f_fake: torch.Tensor, f_real: torch.Tensor, y: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Sum over classes present of ||mean F(G(z, y)) - mean F(x_y)||^2."""
    total = f_fake.new_zeros(())
    for c in range(n_classes):
        m = y == c
        if bool(m.any()):
            total = total + ((f_fake[m].mean(0) - f_real[m].mean(0)) ** 2).sum()
    return total


@torch.no_grad()
def feature_matching_loss(gen: Generator, disc: Discriminator, x_anom: np.ndarray, n: int = 256) -> float:
    """||mean F(G(z, 1)) - mean F(x_fraud)||^2 measured on fresh noise (the quantity training should reduce)."""
    gen.eval()
    disc.eval()
    xa = torch.from_numpy(np.ascontiguousarray(x_anom.reshape(len(x_anom), -1), dtype=np.float32))
    y_real = torch.ones(len(xa), dtype=torch.long)
    fake = gen.sample(n).reshape(n, -1)
    f_fake = disc.features(fake, torch.ones(n, dtype=torch.long))
    f_real = disc.features(xa, y_real)
    return float(((f_fake.mean(0) - f_real.mean(0)) ** 2).sum())


@torch.no_grad()
def disc_feature_fid(gen: Generator, disc: Discriminator, x_anom: np.ndarray, n: int = 1024) -> float:
    """FID in the discriminator's feature space between real anomalous windows and n synthetic ones."""
    xa = torch.from_numpy(np.ascontiguousarray(x_anom.reshape(len(x_anom), -1), dtype=np.float32))
    fake = gen.sample(n).reshape(n, -1)
    f_real = disc.features(xa, torch.ones(len(xa), dtype=torch.long)).numpy()
    f_fake = disc.features(fake, torch.ones(n, dtype=torch.long)).numpy()
    return frechet_distance(f_real, f_fake)
