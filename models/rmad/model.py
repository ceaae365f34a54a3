"""The RMAD-Crypto scoring graph: multi-domain VAE + Transformer-clustering + adaptive risk fusion.

forward(windows [B,T,F], centres [K,D], ref_latents [M,Z]) ->
    (fused [B], s_md [B], s_trans [B], s_clust [B], weights [B,3], feature_errors [B,F], embedding [B,D])
exactly the ONNX contract of docs/model-contract.md. An ablated branch outputs zeros and gets weight 0.
"""

from __future__ import annotations

import torch
from torch import nn

from models.rmad.config import RMADConfig
from models.rmad.transformer import TransformerClustering
from models.rmad.vae import MultiDomainVAE

OUTPUT_NAMES: tuple[str, ...] = ("fused", "s_md", "s_trans", "s_clust", "weights", "feature_errors", "embedding")
INPUT_NAMES: tuple[str, ...] = ("windows", "centres", "ref_latents")
BRANCHES: tuple[str, ...] = ("md", "trans", "clust")


class FusionGate(nn.Module):
    """Adaptive risk fusion (paper part 4): softmax weights from a gating MLP on the normalised branch scores.

    Each branch score is standardised with (loc, scale) fitted on training windows and baked into the graph as
    buffers, so branches on different scales are comparable. fused = sum_b w_b * (s_b - loc_b) / scale_b. Absent
    branches (ablations) get weight exactly 0; with use_gate False the weights are fixed and equal.
    """

    loc: torch.Tensor
    scale: torch.Tensor
    mask: torch.Tensor
    mask_bias: torch.Tensor

    def __init__(self, cfg: RMADConfig) -> None:
        super().__init__()
        self.use_gate = cfg.use_gate
        self.register_buffer("loc", torch.zeros(3))
        self.register_buffer("scale", torch.ones(3))
        mask = torch.tensor([float(b) for b in cfg.branches])
        self.register_buffer("mask", mask)
        self.register_buffer("mask_bias", (mask - 1.0) * 1e4)  # 0 for present branches, -1e4 for absent ones
        out = nn.Linear(cfg.gate_hidden, 3)
        nn.init.zeros_(out.weight)  # start at equal weights
        nn.init.zeros_(out.bias)
        self.net = nn.Sequential(nn.Linear(3, cfg.gate_hidden), nn.GELU(), out)

    def normalise(self, scores: torch.Tensor) -> torch.Tensor:
        return (scores - self.loc) / self.scale * self.mask

    def forward(self, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """scores [B, 3] raw -> (fused [B], weights [B, 3])."""
        z = self.normalise(scores)
        if self.use_gate:
            w = torch.softmax(self.net(z) + self.mask_bias, dim=1)
        else:
            w = (self.mask / self.mask.sum()).expand_as(z)
        return (w * z).sum(1), w


class RMAD(nn.Module):
    def __init__(self, cfg: RMADConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.vae = MultiDomainVAE(cfg) if cfg.use_vae else None
        self.tc = TransformerClustering(cfg) if (cfg.use_trans or cfg.use_clust) else None
        self.fusion = FusionGate(cfg)

    def branch_scores(
        self, windows: torch.Tensor, centres: torch.Tensor, ref_latents: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Raw (s_md, s_trans, s_clust, feature_errors, embedding)."""
        zero = windows[:, 0, 0] * 0.0
        errs: list[torch.Tensor] = []
        s_md = s_trans = s_clust = zero
        if self.vae is not None:
            s_md, err_md, _ = self.vae.score(windows, ref_latents)
            errs.append(err_md)
        embedding = windows[:, 0, :1] * 0.0 + centres[:1, :] * 0.0  # [B, D] zeros when the TC module is absent
        if self.tc is not None:
            g = self.tc.encode(windows)
            if self.cfg.use_trans:
                err_tr = ((self.tc.reconstruct(g) - windows).abs() * self.tc.time_w).sum(1)
                s_trans = err_tr.mean(1)
                errs.append(err_tr)
            embedding = self.tc.embed(g)
            if self.cfg.use_clust:
                s_clust = self.tc.cluster_score(g, embedding, centres)
        feature_errors = errs[0] if len(errs) == 1 else 0.5 * (errs[0] + errs[1])
        return s_md, s_trans, s_clust, feature_errors, embedding

    def forward(
        self, windows: torch.Tensor, centres: torch.Tensor, ref_latents: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        s_md, s_trans, s_clust, feature_errors, embedding = self.branch_scores(windows, centres, ref_latents)
        fused, weights = self.fusion(torch.stack([s_md, s_trans, s_clust], dim=1))
        return fused, s_md, s_trans, s_clust, weights, feature_errors, embedding


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def inference_parameters(model: RMAD) -> int:
    """Parameters reachable from forward() (excludes the training-only IDEC decoder)."""
    n = count_parameters(model)
    if model.tc is not None:
        n -= count_parameters(model.tc.emb_decoder)
        if not model.cfg.use_trans:
            n -= count_parameters(model.tc.decoder)
        if not model.cfg.use_clust:
            n -= count_parameters(model.tc.mlp_k)
    return n
