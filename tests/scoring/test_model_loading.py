"""Manifest validation, the ONNX session and the hot-reloading registry."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from service.features.spec import MARKET_FEATURES, SPEC_HASH
from service.scoring.manifest import ManifestError, load_artifact
from service.scoring.registry import ModelNotFoundError, ModelRegistry
from service.scoring.scorer import Scorer, WindowShapeError


def _copy(src: Path, root: Path, version: str, created_ms: int) -> Path:
    dst = root / "market" / version
    shutil.copytree(src / "market" / "v1", dst)
    m = json.loads((dst / "manifest.json").read_text())
    m["version"], m["created_ms"] = version, created_ms
    (dst / "manifest.json").write_text(json.dumps(m))
    return dst


def _edit(path: Path, **changes: object) -> None:
    m = json.loads((path / "manifest.json").read_text())
    m.update(changes)
    (path / "manifest.json").write_text(json.dumps(m))


def test_manifest_with_other_features_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    v1 = _copy(tiny_model_dir, tmp_path, "v1", 1)
    m = json.loads((v1 / "manifest.json").read_text())
    names = list(MARKET_FEATURES)
    names[0], names[1] = names[1], names[0]
    _edit(v1, features={**m["features"], "names": names})
    with pytest.raises(ManifestError, match="other features than service/features computes"):
        load_artifact(v1)


def test_manifest_with_other_spec_hash_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    _edit(_copy(tiny_model_dir, tmp_path, "v1", 1), spec_hash="0" * 64)
    with pytest.raises(ManifestError, match=r"spec_hash 000000000000\.\.\. differs from service/features"):
        load_artifact(tmp_path / "market" / "v1")
    reg = ModelRegistry(tmp_path, reload_interval_s=0)
    with pytest.raises(ModelNotFoundError, match="spec_hash"):
        reg.get("market")
    assert SPEC_HASH[:12] in next(iter(reg.failures().values()))


def test_scorer_scores_and_checks_shapes(tiny_model_dir: Path) -> None:
    scorer = Scorer(ModelRegistry(tiny_model_dir, reload_interval_s=0))
    model = scorer.model("market")
    rng = np.random.default_rng(0)
    quiet = rng.normal(0, 0.1, (model.window, model.n_features))
    loud = quiet.copy()
    loud[-1, :5] = 15.0  # last bar far from the training median
    res = scorer.score_windows("market", [quiet, loud])
    assert [r.model_version for r in res] == ["v1", "v1"]
    assert res[1].fused > res[0].fused
    assert res[0].embedding.shape == (8,) and res[0].feature_errors.shape == (model.n_features,)
    assert abs(sum(res[0].weights) - 1.0) < 1e-5
    assert int(np.argmax(res[1].feature_errors)) < 5  # the errors point at the features that moved
    with pytest.raises(WindowShapeError, match="takes windows of 8 bars x 27 features"):
        scorer.score_windows("market", [np.zeros((3, model.n_features))])


def test_failed_reload_keeps_old_model_and_good_one_swaps(tiny_model_dir: Path, tmp_path: Path) -> None:
    _copy(tiny_model_dir, tmp_path, "v1", 1)
    reg = ModelRegistry(tmp_path, reload_interval_s=0)
    scorer = Scorer(reg)
    x = np.zeros((1, 8, len(MARKET_FEATURES)), np.float32)
    assert scorer.score_windows("market", x)[0].model_version == "v1"
    # a newer version whose graph is garbage: refused, v1 keeps serving
    bad = _copy(tiny_model_dir, tmp_path, "v2", 2)
    (bad / "model.onnx").write_bytes(b"not an onnx graph")
    assert reg.refresh("market") is False
    assert scorer.score_windows("market", x)[0].model_version == "v1"
    assert "onnxruntime cannot load" in reg.failures()[str(bad)]
    # a newer version that loads but fails its self-check (centres of the wrong width)
    odd = _copy(tiny_model_dir, tmp_path, "v3", 3)
    np.save(odd / "centres.npy", np.zeros((4, 5), np.float32))
    assert reg.refresh("market") is False
    assert reg.get("market").version == "v1"
    # a good newer version swaps in
    _copy(tiny_model_dir, tmp_path, "v4", 4)
    assert reg.refresh("market") is True
    assert scorer.score_windows("market", x)[0].model_version == "v4"
    assert reg.refresh("market") is False  # nothing newer
