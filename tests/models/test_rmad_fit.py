"""End to end: fit() in the paper's order on small structured data, artifacts on disk, scoring, reload, seeding."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from models.rmad.config import RMADConfig
from models.rmad.model import OUTPUT_NAMES
from models.rmad.train import Trained, fit
from tests.models.test_rmad_parts import F, T, anomalous_windows, normal_windows, small_cfg


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def auc(y: np.ndarray, s: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, s))


def fit_cfg(**kw: object) -> RMADConfig:
    args: dict[str, object] = {
        "gan_epochs": 40,
        "vae_epochs": 3,
        "trans_warmup_epochs": 1,
        "trans_epochs": 2,
        "gate_epochs": 100,
        "batch_size": 64,
        "n_ref_latents": 128,
    }
    return small_cfg(**{**args, **kw})


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    xv = np.concatenate([normal_windows(200, seed=5), anomalous_windows(20, seed=6)])
    yv = np.r_[np.zeros(200), np.ones(20)]
    xt = np.concatenate([normal_windows(200, seed=7), anomalous_windows(20, seed=8)])
    return {"xn": normal_windows(1200), "xa": anomalous_windows(24), "xv": xv, "yv": yv, "xt": xt, "yt": yv.copy()}


@pytest.fixture(scope="module")
def trained(data: dict[str, np.ndarray], tmp_path_factory: pytest.TempPathFactory) -> tuple[Trained, Path]:
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("fit")
    tr = fit(fit_cfg(), data["xn"], data["xa"], data["xv"], data["yv"], out, data_fingerprints={"src.csv": "abc"})
    return tr, out


def test_fit_writes_config_fingerprints_and_curves(trained: tuple[Trained, Path]) -> None:
    tr, out = trained
    for name in ("config.json", "fingerprints.json", "curves.json", "curves.png", "model.pt", "trained.json"):
        assert (out / name).stat().st_size > 0, name
    assert json.loads((out / "config.json").read_text())["seed"] == 0
    fps = json.loads((out / "fingerprints.json").read_text())
    assert fps["src.csv"] == "abc" and len(fps["X_normal"]) == 64
    curves = json.loads((out / "curves.json").read_text())
    assert set(curves) == {"gan", "vae", "tc", "gate"}
    assert len(curves["vae"]["vae_rec"]) == 3 and len(curves["tc"]["tc_rec"]) == 3
    assert all(np.isfinite(v).all() for stage in curves.values() for v in stage.values())
    assert tr.info["n_synthetic"] == 96
    assert {"disc_features", "vae_latent"} <= set(tr.fid)
    assert tr.centres.shape == (4, 16) and tr.ref_latents.shape == (128, 32)
    assert len(tr.branch_stats["loc"]) == 3 and all(s > 0 for s in tr.branch_stats["scale"])


def test_fitted_model_separates_pumps_from_normal_windows(trained: tuple[Trained, Path], data: dict) -> None:
    tr, _ = trained
    s = tr.score(data["xt"])
    assert set(s) == set(OUTPUT_NAMES)
    assert s["fused"].shape == (220,) and s["weights"].shape == (220, 3) and s["feature_errors"].shape == (220, F)
    np.testing.assert_allclose(s["weights"].sum(1), 1.0, rtol=1e-5)
    for key in ("fused", "s_md", "s_trans", "s_clust"):
        assert auc(data["yt"], s[key]) > 0.9, key


def test_save_load_roundtrip(trained: tuple[Trained, Path], data: dict) -> None:
    tr, out = trained
    again = Trained.load(out)
    a, b = tr.score(data["xt"][:50]), again.score(data["xt"][:50])
    for k in OUTPUT_NAMES:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-6, atol=1e-6)


@pytest.mark.slow
def test_fit_is_seeded(data: dict[str, np.ndarray]) -> None:
    cfg = fit_cfg(gan_epochs=5, vae_epochs=1, trans_epochs=1, gate_epochs=20)
    xn = data["xn"][:400]
    a = fit(cfg, xn, data["xa"], data["xv"], data["yv"]).score(data["xt"][:40])
    b = fit(cfg, xn, data["xa"], data["xv"], data["yv"]).score(data["xt"][:40])
    np.testing.assert_array_equal(a["fused"], b["fused"])


def test_ablation_fit_without_gan_and_without_vae(data: dict[str, np.ndarray]) -> None:
    cfg = RMADConfig.ablation(
        RMADConfig.ablation(fit_cfg(vae_epochs=1, trans_epochs=1, gate_epochs=20), "no_gan"), "no_vae"
    )
    tr = fit(cfg, data["xn"][:400], data["xa"], data["xv"], data["yv"])
    assert "gan" not in tr.curves and "vae" not in tr.curves and not tr.fid
    s = tr.score(data["xt"][:30])
    assert (s["s_md"] == 0).all() and (s["weights"][:, 0] == 0).all()
    assert tr.model.vae is None


def test_fit_rejects_wrong_shapes() -> None:
    cfg = small_cfg()
    with pytest.raises(ValueError):
        fit(cfg, np.zeros((10, T + 1, F), np.float32), np.zeros((0, T, F)), np.zeros((0, T, F)), np.zeros(0))
