"""A small model that follows docs/model-contract.md, exported with torch.onnx, for the scoring tests.

Why not the trained model: the tests must run before (and independently of) training, and must know exactly what
the model does. This one scores a window by how far its scaled features are from zero (the training median),
mostly from the last bar, so a pump (volume and price features far above normal) scores high and a quiet market
scores low. It has every input and output of the contract, so the runtime code paths are the real ones.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from service.features.spec import MARKET_FEATURES, SPEC_HASH


def export_tiny_model(
    root: Path,
    *,
    name: str = "market",
    version: str = "v1",
    window: int = 8,
    bar_interval_s: float = 5.0,
    features: Sequence[str] = MARKET_FEATURES,
    spec_hash: str = SPEC_HASH,
    center: Sequence[float] | None = None,
    scale: Sequence[float] | None = None,
    alert: float = 20.0,
    embed_dim: int = 8,
    n_centres: int = 4,
    created_ms: int | None = None,
    seed: int = 0,
    fused_offset: float = 0.0,
    kind: str = "market",
    transform: str = "none",
) -> Path:
    """Write <root>/<name>/<version>/{model.onnx, manifest.json, centres.npy, ref_latents.npy}; return the dir."""
    import torch
    from torch import nn

    f = len(features)
    torch.manual_seed(seed)

    class Tiny(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Linear(f, embed_dim)
            self.logits = nn.Parameter(torch.tensor([0.0, 1.5, -1.0]))

        def forward(
            self, windows: torch.Tensor, centres: torch.Tensor, ref_latents: torch.Tensor
        ) -> tuple[torch.Tensor, ...]:
            last = windows[:, -1, :]
            fe = last * last
            s_trans = fe.mean(1)
            s_md = (windows * windows).mean(dim=(1, 2)) + 1e-6 * ref_latents.abs().mean()
            emb = torch.tanh(self.proj(windows.mean(1)))
            d = ((emb[:, None, :] - centres[None, :, :]) ** 2).sum(-1)
            s_clust = d.min(1).values
            w = torch.softmax(self.logits, 0)[None, :].expand(windows.shape[0], 3)
            fused = (w * torch.stack([s_md, s_trans, s_clust], 1)).sum(1) + fused_offset
            return fused, s_md, s_trans, s_clust, w, fe, emb

    model = Tiny().eval()
    out = root / name / version
    out.mkdir(parents=True, exist_ok=True)
    ex = (torch.zeros(2, window, f), torch.zeros(n_centres, embed_dim), torch.zeros(16, 4))
    outputs = ["fused", "s_md", "s_trans", "s_clust", "weights", "feature_errors", "embedding"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter is deprecated but needs no onnxscript rewrite
        torch.onnx.export(
            model,
            ex,
            str(out / "model.onnx"),
            input_names=["windows", "centres", "ref_latents"],
            output_names=outputs,
            dynamic_axes={"windows": {0: "batch"}, **{o: {0: "batch"} for o in outputs}, "ref_latents": {0: "m"}},
            opset_version=17,
            dynamo=False,
        )
    rng = np.random.default_rng(seed)
    np.save(out / "centres.npy", rng.uniform(-0.5, 0.5, (n_centres, embed_dim)).astype(np.float32))
    np.save(out / "ref_latents.npy", rng.normal(size=(16, 4)).astype(np.float32))
    c = list(center) if center is not None else [0.0] * f
    s = list(scale) if scale is not None else [1.0] * f
    manifest = {
        "name": name,
        "version": version,
        "created_ms": int(time.time() * 1000) if created_ms is None else created_ms,
        "kind": kind,
        "window": window,
        "bar_interval_s": bar_interval_s,
        "features": {"names": list(features), "center": c, "scale": s, "normal": c, "transform": transform},
        "spec_hash": spec_hash,
        "inputs": {"windows": [None, window, f], "centres": [n_centres, embed_dim], "ref_latents": [None, 4]},
        "outputs": outputs,
        "centres_file": "centres.npy",
        "ref_latents_file": "ref_latents.npy",
        "thresholds": {"alert": alert, "watch": alert * 0.7, "critical": alert * 3, "false_alarm_budget_per_day": 1.0},
        "training": {"data_fingerprints": {}, "seed": seed, "config": {"tiny_test_model": True}},
        "evaluation": {},
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return out
