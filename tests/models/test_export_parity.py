"""ONNX export: contract inputs/outputs, dynamic batch and reference-count axes, torch vs onnxruntime parity."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from models.export import export_onnx
from models.rmad.config import RMADConfig
from models.rmad.model import INPUT_NAMES, OUTPUT_NAMES, RMAD
from models.rmad.train import Trained
from tests.models.test_rmad_parts import F, T, small_cfg


def random_trained(cfg: RMADConfig, seed: int = 0) -> Trained:
    """An untrained model with realistic branch statistics (fitted on random windows) and random inputs."""
    torch.manual_seed(seed)
    model = RMAD(cfg).eval()
    centres = torch.randn(cfg.K, cfg.emb_dim) * 0.1
    ref = torch.randn(200, cfg.latent_dim) * 0.1
    with torch.no_grad():
        s_md, s_tr, s_cl, _, _ = model.branch_scores(torch.randn(500, T, F), centres, ref)
        raw = torch.stack([s_md, s_tr, s_cl], 1)
        loc = raw.median(0).values
        scale = (raw.quantile(0.75, 0) - raw.quantile(0.25, 0)) / 1.349
        mask = torch.tensor([float(b) for b in cfg.branches])
        model.fusion.loc.copy_(loc * mask)
        model.fusion.scale.copy_(torch.where(mask > 0, scale.clamp_min(1e-6), torch.ones(3)))
        model.fusion.net[2].weight.normal_(0, 0.5)
    stats = {"loc": model.fusion.loc.tolist(), "scale": model.fusion.scale.tolist()}
    return Trained(cfg, model, centres.numpy(), ref.numpy(), stats)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Trained, Path]:
    tr = random_trained(small_cfg())
    out = tmp_path_factory.mktemp("export")
    path = export_onnx(tr, out, {"name": "market", "version": "test.1", "features": {"names": list("abcd")}})
    return tr, path


def test_parity_torch_vs_onnxruntime_on_1000_windows(exported: tuple[Trained, Path]) -> None:
    tr, path = exported
    x = np.random.default_rng(3).standard_normal((1000, T, F)).astype(np.float32)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = dict(
        zip(
            OUTPUT_NAMES,
            sess.run(None, {"windows": x, "centres": tr.centres, "ref_latents": tr.ref_latents}),
            strict=True,
        )
    )
    want = tr.score(x)
    assert np.abs(got["fused"] - want["fused"]).max() <= 1e-4
    assert np.std(want["fused"]) > 0.1  # a non-degenerate score, so the check means something
    for k in OUTPUT_NAMES:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-4, err_msg=k)


def test_graph_contract_and_dynamic_axes(exported: tuple[Trained, Path]) -> None:
    tr, path = exported
    model = onnx.load(str(path))
    assert [i.name for i in model.graph.input] == list(INPUT_NAMES)
    assert [o.name for o in model.graph.output] == list(OUTPUT_NAMES)
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch, n_ref in ((1, 1), (7, 33), (3, 500)):
        x = np.random.default_rng(batch).standard_normal((batch, T, F)).astype(np.float32)
        ref = tr.ref_latents[np.arange(n_ref) % len(tr.ref_latents)]
        outs = sess.run(None, {"windows": x, "centres": tr.centres, "ref_latents": ref})
        assert [o.shape for o in outs] == [(batch,)] * 4 + [(batch, 3), (batch, F), (batch, tr.cfg.emb_dim)]
        with torch.no_grad():
            want = tr.model(torch.from_numpy(x), torch.from_numpy(tr.centres), torch.from_numpy(ref))[0].numpy()
        np.testing.assert_allclose(outs[0], want, atol=1e-4, rtol=0)


def test_manifest_and_side_files(exported: tuple[Trained, Path]) -> None:
    tr, path = exported
    man = json.loads((path.parent / "manifest.json").read_text())
    assert man["name"] == "market" and man["version"] == "test.1" and man["features"]["names"] == list("abcd")
    assert man["inputs"] == {"windows": [None, T, F], "centres": [4, 16], "ref_latents": [None, 32]}
    assert man["outputs"] == list(OUTPUT_NAMES)
    assert man["training"]["config"]["n_features"] == F and man["training"]["seed"] == 0
    np.testing.assert_array_equal(np.load(path.parent / man["centres_file"]), tr.centres)
    np.testing.assert_array_equal(np.load(path.parent / man["ref_latents_file"]), tr.ref_latents)


@pytest.mark.parametrize("ablation", ["no_vae", "no_trans", "recency"])
def test_ablated_models_export_with_all_inputs(ablation: str, tmp_path: Path) -> None:
    if ablation == "recency":  # not an ablation: the recency-weighted reconstruction scores export alike
        tr = random_trained(small_cfg(recency_halflife=4.0))
    else:
        tr = random_trained(RMADConfig.ablation(small_cfg(), ablation))
    path = export_onnx(tr, tmp_path, {"name": ablation})
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == list(INPUT_NAMES)
    x = np.random.default_rng(0).standard_normal((50, T, F)).astype(np.float32)
    got = sess.run(None, {"windows": x, "centres": tr.centres, "ref_latents": tr.ref_latents})[0]
    np.testing.assert_allclose(got, tr.score(x)["fused"], atol=1e-4, rtol=0)
