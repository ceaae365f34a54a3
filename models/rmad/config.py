"""RMAD-Crypto model configuration: one dataclass shared by training, export and the benchmarks.

Defaults follow the paper (../shared/DESIGN.md, "The model"); anything the paper leaves open is a named field here
so a run's config.json says exactly what was trained.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RMADConfig:
    """Architecture, training and ablation settings of one RMAD model.

    `n_features` (F) and `window` (T) fix the input shape [B, T, F]; everything else has a paper default.
    """

    n_features: int
    window: int = 64

    # --- conditional GAN (training only; not part of the exported graph) ---
    noise_dim: int = 64
    n_classes: int = 2  # condition y: 0 = normal, 1 = anomalous
    gan_hidden: tuple[int, ...] = (256, 512, 512)  # generator FC widths; the 4th layer outputs d = T*F
    disc_hidden: tuple[int, ...] = (512, 256)  # discriminator FC widths; the 3rd layer outputs 1
    gan_lambda: float = 10.0  # weight of the feature-matching term
    gan_noise_std: float = 0.1  # noise injection into the generator's hidden layers (scaled by a learned gain)
    lr_g: float = 1e-4
    lr_d: float = 4e-4
    gan_betas: tuple[float, float] = (0.9, 0.999)
    gan_batch: int = 64
    gan_epochs: int = 30  # passes over the anomalous windows (few hundred windows: cheap)
    synth_multiplier: float = 4.0  # synthetic anomalies generated = multiplier * real anomalies
    synth_max: int = 4096
    # Train G and D in a per-feature standardised space (G de-standardises its output). Off by default so that
    # `rmad train` reproduces the committed artifacts; on, the synthetic pumps reach the real feature scales
    # (see README, "The RMAD model").
    gan_standardise: bool = False

    # --- multi-domain VAE ---
    latent_dim: int = 32  # Z
    conv_channels: tuple[int, ...] = (32, 64, 64, 128)
    conv_kernels: tuple[int, ...] = (5, 3, 3, 3)
    time_fc: int = 256  # hidden width of the time branch's 2-layer FC
    freq_hidden: tuple[int, ...] = (128, 64, 32)  # GELU MLP on the FFT magnitudes
    dec_hidden: tuple[int, ...] = (256, 256)
    kde_bandwidth: float = 1.0  # h
    md_beta: float = 0.6  # S_md = beta * L_rec + (1 - beta) * (-log p(z))
    kl_weight: float = 1e-3
    n_ref_latents: int = 1024  # M, KDE reference latents kept from training normals
    # Time aggregation of the reconstruction scores (VAE L1, s_trans, feature_errors): None = the paper's plain mean
    # over the window; a half-life in bars weights recent bars more (w_t ~ 0.5 ** ((T-1-t) / h)), so an event in the
    # last few bars is not diluted by the 60 quiet bars before it (earlier alerts). Training losses stay uniform.
    recency_halflife: float | None = None
    vae_domains: str = "both"  # both | time | freq (finer ablation than use_vae)

    # --- Transformer-clustering ---
    data_hidden: tuple[int, ...] = (256, 256, 128)  # MLP_data
    rho_dim: int = 32  # gating vector from MLP_rho; token width = data_hidden[-1] + rho_dim = 160
    n_layers: int = 2
    n_heads: int = 8
    ffn_dim: int = 512
    patch: int = 1  # bars per token (1 = the paper: one token per bar)
    cluster_hidden: tuple[int, ...] = (160, 128)  # cluster head MLP widths; output = emb_dim
    emb_dim: int = 64  # D, the window embedding and the cluster centre width
    K: int = 8  # cluster centres
    cluster_temp: float = 1.0  # temperature of P(z|X,k) (distance-based soft assignment)

    # --- fusion ---
    gate_hidden: int = 16

    # --- training ---
    seed: int = 0
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-5
    vae_epochs: int = 4
    trans_warmup_epochs: int = 1  # reconstruction-only epochs before k-means initialises the centres
    trans_epochs: int = 4
    gate_epochs: int = 200
    lr_gate: float = 1e-2
    outlier_margin: float = 1.0  # hinge margin pushing anomalous (real + synthetic) scores up, in branch-std units
    outlier_weight: float = 0.2
    max_train_windows: int | None = None  # subsample normal windows per epoch (None = all)
    threads: int | None = None  # torch intra-op threads during training (None = torch default)

    # --- ablations (paper Table 7) ---
    use_gan: bool = True  # False: no synthetic anomalies (real ones still used)
    use_vae: bool = True  # False: "w/o multi-domain VAE": the VAE branch is removed, s_md = 0, weight 0
    use_trans: bool = True  # False: "w/o Transformer branch": no encoder layers, s_trans = 0
    use_clust: bool = True  # False: "w/o clustering branch": s_clust = 0
    use_gate: bool = True  # False: "w/o fusion gate": fixed equal weights over the branches present

    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes a caller wants in config.json

    def __post_init__(self) -> None:
        if self.n_features < 1 or self.window < 1:
            raise ValueError("n_features and window must be >= 1")
        if self.window % self.patch:
            raise ValueError(f"window {self.window} must be a multiple of patch {self.patch}")
        if self.token_dim % self.n_heads:
            raise ValueError(f"token width {self.token_dim} must be divisible by n_heads {self.n_heads}")
        if self.vae_domains not in ("both", "time", "freq"):
            raise ValueError("vae_domains must be both, time or freq")
        if not (self.use_vae or self.use_trans or self.use_clust):
            raise ValueError("at least one scoring branch must remain")

    @property
    def token_dim(self) -> int:
        return self.data_hidden[-1] + self.rho_dim

    @property
    def d(self) -> int:
        """Flattened window size T*F (the GAN's sample size)."""
        return self.window * self.n_features

    @property
    def branches(self) -> tuple[bool, bool, bool]:
        """Which of (md, trans, clust) are present."""
        return (self.use_vae, self.use_trans, self.use_clust)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RMADConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for k, v in data.items():
            if k not in names:
                continue
            kwargs[k] = tuple(v) if isinstance(v, list) else v
        return cls(**kwargs)

    @classmethod
    def ablation(cls, base: RMADConfig, name: str) -> RMADConfig:
        """The config of one Table 7 row: full, no_gan, no_vae, no_trans, no_clust, no_gate."""
        flags: dict[str, dict[str, Any]] = {
            "full": {},
            "no_gan": {"use_gan": False},
            "no_vae": {"use_vae": False},
            "no_trans": {"use_trans": False},
            "no_clust": {"use_clust": False},
            "no_gate": {"use_gate": False},
        }
        if name not in flags:
            raise ValueError(f"unknown ablation {name!r}; one of {sorted(flags)}")
        return dataclasses.replace(base, **flags[name])


ABLATIONS: tuple[str, ...] = ("full", "no_gan", "no_vae", "no_trans", "no_clust", "no_gate")
