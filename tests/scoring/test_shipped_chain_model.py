"""The shipped chain artifact serves through the runtime exactly as it was evaluated in training.

Why: the chain model takes sign(x)*log1p(|x|) of the raw address features before scaling; a runtime that skipped
the transform would still produce numbers, just meaningless ones. Scoring the held-back accounts with the
runtime's Scorer must rank fraud above normal about as well as the card says (ROC-AUC 0.95 in training).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.features.chain import CHAIN_FEATURES
from service.scoring.registry import ModelRegistry
from service.scoring.scorer import Scorer

ARTIFACTS = Path(__file__).resolve().parents[2] / "models" / "artifacts"


@pytest.mark.data
def test_runtime_scores_held_back_accounts_like_training(shared_data: Path) -> None:
    from sklearn.metrics import roc_auc_score

    from models.chain.data import DATA_FILE, load_accounts, stratified_split

    registry = ModelRegistry(ARTIFACTS)
    assert registry.refresh("chain"), registry.failures()
    model = registry.get("chain")
    assert model.artifact.manifest.features.transform == "signed_log1p"
    data = load_accounts(shared_data / DATA_FILE, CHAIN_FEATURES)
    test_rows = stratified_split(data.y, seed=0).test
    raw = data.x[test_rows].astype(np.float32)
    results = Scorer(registry).score_windows("chain", raw[:, None, :])
    fused = np.array([r.fused for r in results])
    auc = roc_auc_score(data.y[test_rows], fused)
    assert auc > 0.9, f"runtime ROC-AUC {auc:.3f} on the held-back accounts"
