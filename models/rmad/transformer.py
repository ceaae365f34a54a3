"""Transformer-clustering (paper part 3).

Each bar (or patch of `patch` bars) becomes a 160-d token: MLP_data (256, 256, 128) on the bar's features
concatenated with a 32-d gating vector from MLP_rho (sigmoid). A learned global token is prepended and two
pre-LN encoder layers (8 heads, FFN 512, GELU) mix them. From the global token:
- the cluster head MLP (160, 128, 64) gives the window embedding e (D = emb_dim), the vector the runtime uses for
  online centre updates;
- MLP_k gives the prior P(k|X) over the K centres; the soft assignment P(z|X,k) is the posterior
  softmax_k(log P(k|X) - ||e - mu_k||^2 / (2 tau)), and s_clust = ||e - sum_k P(z|X,k) mu_k||^2;
- a linear decoder reconstructs the window, giving s_trans and per-feature errors.
The centres mu_k are an input (they live in Redis at runtime and move online).

Attention is written out with matmuls (no fused kernels) so the exported graph is plain ONNX.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn

from models.rmad.config import RMADConfig
from models.rmad.vae import time_weights


def _t(x: object) -> torch.Tensor:
    """Narrow an nn.Module call's result (typed Any by torch) to a Tensor; free at export (a Python check)."""
    assert isinstance(x, torch.Tensor)
    return x


def mlp(widths: tuple[int, ...], last_act: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = []
    pairs = list(itertools.pairwise(widths))
    for i, (a, b) in enumerate(pairs):
        layers.append(nn.Linear(a, b))
        if i < len(pairs) - 1 or last_act:
            layers.append(nn.GELU())
    return nn.Sequential(*layers)


class SelfAttention(nn.Module):
    """Multi-head self-attention on token rows [B*N, C] (2-D so every projection exports as one Gemm)."""

    def __init__(self, dim: int, heads: int, n: int) -> None:
        super().__init__()
        self.heads = heads
        self.n = n
        self.dh = dim // heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.scale = 1.0 / math.sqrt(self.dh)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = x.shape[1]
        qkv = self.qkv(x).reshape(-1, self.n, 3, self.heads, self.dh).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # [B, H, N, dh]
        att = torch.softmax((q * self.scale) @ k.transpose(-2, -1), dim=-1)
        out = (att @ v).transpose(1, 2).reshape(-1, d)
        return _t(self.proj(out))


class EncoderLayer(nn.Module):
    """Pre-LN Transformer encoder layer on token rows [B*N, C]: x + MHA(LN(x)); x + FFN(LN(x)) with GELU."""

    def __init__(self, dim: int, heads: int, ffn: int, n: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads, n)
        self.norm2 = nn.LayerNorm(dim)
        self.ff1 = nn.Linear(dim, ffn)
        self.ff2 = nn.Linear(ffn, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return _t(x + self.ff2(F.gelu(self.ff1(self.norm2(x)))))


class TransformerClustering(nn.Module):
    time_w: torch.Tensor

    def __init__(self, cfg: RMADConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.register_buffer("time_w", time_weights(cfg), persistent=False)
        dim = cfg.token_dim
        tok_in = cfg.patch * cfg.n_features
        self.n_tokens = cfg.window // cfg.patch
        self.mlp_data = mlp((tok_in, *cfg.data_hidden), last_act=False)
        self.mlp_rho = nn.Sequential(nn.Linear(tok_in, 64), nn.GELU(), nn.Linear(64, cfg.rho_dim), nn.Sigmoid())
        self.global_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, self.n_tokens + 1, dim) * 0.02)
        self.layers = nn.ModuleList(
            EncoderLayer(dim, cfg.n_heads, cfg.ffn_dim, self.n_tokens + 1)
            for _ in range(cfg.n_layers if cfg.use_trans else 0)
        )
        self.norm = nn.LayerNorm(dim)
        self.decoder = nn.Linear(dim, cfg.d)  # s_trans: linear decoder from the global token
        self.cluster_head = mlp((dim, *cfg.cluster_hidden, cfg.emb_dim))
        self.mlp_k = nn.Sequential(nn.Linear(dim, 128), nn.GELU(), nn.Linear(128, cfg.K))
        # Training-only IDEC-style decoder from the embedding: keeps e informative so the clustering loss cannot
        # collapse every embedding onto one centre. Not used in forward(), so it is not in the exported graph.
        self.emb_decoder = nn.Linear(cfg.emb_dim, cfg.d)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, F] -> global token [B, 160] after the encoder (mean of tokens when the encoder is ablated)."""
        n, dim = self.n_tokens, self.cfg.token_dim
        t = x.reshape(-1, self.cfg.patch * self.cfg.n_features)  # token rows [B*N, P*F]
        tokens = torch.cat([self.mlp_data(t), self.mlp_rho(t)], dim=1).reshape(-1, n, dim)
        if len(self.layers) == 0:
            return _t(self.norm(tokens.mean(1) + self.global_token[:, 0]))
        h = torch.cat([self.global_token.expand(tokens.shape[0], -1, -1), tokens], dim=1) + self.pos
        h = h.reshape(-1, dim)
        for layer in self.layers:
            h = layer(h)
        return _t(self.norm(h.reshape(-1, n + 1, dim)[:, 0]))

    def reconstruct(self, g: torch.Tensor) -> torch.Tensor:
        return _t(self.decoder(g)).view(-1, self.cfg.window, self.cfg.n_features)

    def embed(self, g: torch.Tensor) -> torch.Tensor:
        return _t(self.cluster_head(g))

    def assignment(self, g: torch.Tensor, e: torch.Tensor, centres: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(P(z|X,k) [B, K], P(k|X) [B, K])."""
        log_prior = torch.log_softmax(self.mlp_k(g), dim=1)
        d2 = ((e.unsqueeze(1) - centres.unsqueeze(0)) ** 2).sum(2)  # [B, K]
        post = torch.softmax(log_prior - 0.5 * d2 / self.cfg.cluster_temp, dim=1)
        return post, log_prior.exp()

    def cluster_score(self, g: torch.Tensor, e: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
        post, _ = self.assignment(g, e, centres)
        return ((e - post @ centres) ** 2).sum(1)
