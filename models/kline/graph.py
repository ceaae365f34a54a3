"""The exported `market-kline` graph: the RMAD model plus the statistical crash branch, fused by their validated
thresholds, behind the unchanged ONNX contract (docs/model-contract.md).

fused = max(crash / tau_c, rmad_fused / tau_r), so the alert threshold is 1.0 and each branch alerts on its own
validated threshold; crash = how many floored robust standard deviations the last bar fell at the worst of four
horizons (service.features.kline.crash_score), read from the window's last row after undoing the manifest
scaling. A branch left out (ablation, or one that did not earn its place) has 1/tau = 0.
"""

from __future__ import annotations

import torch
from torch import nn

from models.rmad.model import RMAD
from service.features.kline import CRASH_COLUMNS


class KlineGraph(nn.Module):
    c_center: torch.Tensor
    c_scale: torch.Tensor
    inv_tau: torch.Tensor

    def __init__(self, rmad: RMAD, center: list[float], scale: list[float], tau_c: float, tau_r: float) -> None:
        super().__init__()
        self.rmad = rmad
        self.cfg = rmad.cfg
        cols = list(CRASH_COLUMNS)
        self.register_buffer("cols", torch.tensor(cols, dtype=torch.long))
        self.register_buffer("c_center", torch.tensor([center[i] for i in cols], dtype=torch.float32))
        self.register_buffer("c_scale", torch.tensor([scale[i] for i in cols], dtype=torch.float32))
        inv = [0.0 if not (tau_c > 0 and tau_c < float("inf")) else 1.0 / tau_c]
        inv.append(0.0 if not (tau_r > 0 and tau_r < float("inf")) else 1.0 / tau_r)
        self.register_buffer("inv_tau", torch.tensor(inv, dtype=torch.float32))

    def forward(
        self, windows: torch.Tensor, centres: torch.Tensor, ref_latents: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        fused, s_md, s_trans, s_clust, weights, feature_errors, embedding = self.rmad(windows, centres, ref_latents)
        last = windows[:, -1, :].index_select(1, self.cols) * self.c_scale + self.c_center
        crash = torch.clamp((-last).max(dim=1).values, min=0.0)
        out = torch.maximum(crash * self.inv_tau[0], fused * self.inv_tau[1])
        return out, s_md, s_trans, s_clust, weights, feature_errors, embedding
