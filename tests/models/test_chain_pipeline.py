"""End to end on the real accounts file: a small `rmad train chain` run exports an artifact the runtime can load."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from service.features.chain import CHAIN_FEATURES

pytestmark = [pytest.mark.data, pytest.mark.slow]


def test_train_and_evaluate_chain_small(shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import onnxruntime as ort

    from models.chain.data import signed_log1p
    from models.chain.pipeline import chain_spec_hash, evaluate_chain, train_chain

    args = argparse.Namespace(
        data=shared_data,
        artifacts=tmp_path / "artifacts",
        runs=tmp_path / "runs",
        version="test.1",
        seed=0,
        epochs=1,
        threads=1,
        no_ablations=True,
        set=["gan_epochs=1", "n_ref_latents=128"],
    )
    assert train_chain(args) == 0
    art = tmp_path / "artifacts" / "chain" / "test.1"
    man = json.loads((art / "manifest.json").read_text())
    assert man["kind"] == "chain" and man["features"]["names"] == list(CHAIN_FEATURES)
    assert man["spec_hash"] == chain_spec_hash(CHAIN_FEATURES)
    assert man["inputs"]["windows"] == [None, 1, len(CHAIN_FEATURES)]
    assert man["evaluation"]["onnx_parity_max_rel_diff"] < 1e-5
    files = {p.name for p in art.iterdir()}
    assert {"card.md", "model.onnx", "centres.npy", "ref_latents.npy", "results.json"} <= files

    # the runtime's path: raw features -> signed log1p -> manifest scaling -> [B, 1, F] -> ONNX, any batch size
    raw = np.abs(np.random.default_rng(0).normal(size=(3, len(CHAIN_FEATURES)))) * 10
    center, scale = np.asarray(man["features"]["center"]), np.asarray(man["features"]["scale"])
    clip = man["features"]["clip"]
    x = np.clip((signed_log1p(raw) - center) / scale, -clip, clip).astype(np.float32)[:, None, :]
    sess = ort.InferenceSession(str(art / "model.onnx"), providers=["CPUExecutionProvider"])
    out = sess.run(
        None, {"windows": x, "centres": np.load(art / "centres.npy"), "ref_latents": np.load(art / "ref_latents.npy")}
    )
    assert out[0].shape == (3,) and out[5].shape == (3, len(CHAIN_FEATURES)) and np.isfinite(out[0]).all()

    capsys.readouterr()
    assert evaluate_chain(args) == 0
    printed = capsys.readouterr().out
    assert "random forest (supervised)" in printed and "RMAD chain (fused, ONNX)" in printed
