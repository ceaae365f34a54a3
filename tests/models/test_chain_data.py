"""Chain model data handling: column matching, de-duplication, the leak-free fill, the split, the transform."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.chain.data import (
    DATA_FILE,
    load_accounts,
    norm_name,
    prepare,
    signed_log1p,
    stratified_split,
)
from models.chain.pipeline import as_windows, chain_spec_hash
from service.features.chain import CHAIN_FEATURES

CSV = """Index,FLAG,Sent tnx,max value received , ERC20 avg val rec,ERC20 most sent token type
1,0,3,1.5,,OmiseGO
2,1,0,0.0,7.0,
3,1,0,0.0,7.0,
4,0,10,-2.0,1.0,Tether
"""


def test_column_names_match_across_spacing_and_punctuation() -> None:
    assert norm_name("max value received ") == norm_name("Max Value Received") == "max_value_received"
    assert norm_name(" ERC20 uniq sent addr.1") == "erc20_uniq_sent_addr_1"


def test_load_fills_empty_cells_with_zero_and_drops_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "accounts.csv"
    path.write_text(CSV)
    data = load_accounts(path, ("Sent tnx", "max value received", "ERC20 avg val rec"))
    assert data.n_rows_file == 4 and data.n_duplicates_dropped == 1
    np.testing.assert_array_equal(data.y, [0, 1, 0])
    np.testing.assert_array_equal(data.x[0], [3.0, 1.5, 0.0])  # empty ERC20 cell -> 0, no missing indicator
    with pytest.raises(KeyError):
        load_accounts(path, ("no such column",))


def test_signed_log1p_keeps_sign_and_zero() -> None:
    np.testing.assert_allclose(signed_log1p(np.array([-(np.e - 1), 0.0, np.e - 1])), [-1.0, 0.0, 1.0])


def test_split_is_stratified_disjoint_and_seeded() -> None:
    y = np.array([0] * 80 + [1] * 20)
    a, b = stratified_split(y, seed=3), stratified_split(y, seed=3)
    np.testing.assert_array_equal(a.test, b.test)
    everything = np.concatenate([a.train, a.val, a.test])
    assert len(everything) == 100 and len(np.unique(everything)) == 100
    assert y[a.test].sum() == 4 and y[a.val].sum() == 4 and len(a.test) == 20
    assert not np.array_equal(stratified_split(y, seed=4).test, a.test)


def test_scaler_is_fitted_on_training_rows_only(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = ["Index,FLAG,Sent tnx,Received Tnx"]
    for i in range(200):
        rows.append(f"{i},{int(i % 5 == 0)},{rng.integers(0, 1000)},{rng.integers(0, 50)}")
    path = tmp_path / "a.csv"
    path.write_text("\n".join(rows) + "\n")
    data = load_accounts(path, ("Sent tnx", "Received Tnx"))
    split = stratified_split(data.y, seed=0)
    prep = prepare(data, split)
    np.testing.assert_allclose(prep.scaler.center, np.median(signed_log1p(data.x[split.train]), axis=0), rtol=1e-6)
    np.testing.assert_allclose(prep.raw_median, np.median(data.x[split.train], axis=0))
    assert as_windows(prep.x_test).shape == (len(split.test), 1, 2)


def test_spec_hash_is_the_runtimes_and_refuses_another_feature_order() -> None:
    from service.features.chain import CHAIN_SPEC_HASH

    assert chain_spec_hash(CHAIN_FEATURES) == CHAIN_SPEC_HASH
    with pytest.raises(ValueError, match="CHAIN_FEATURES"):
        chain_spec_hash(tuple(reversed(CHAIN_FEATURES)))


@pytest.mark.data
def test_real_file_has_every_live_chain_feature(shared_data: Path) -> None:
    data = load_accounts(shared_data / DATA_FILE, CHAIN_FEATURES)
    assert data.x.shape[1] == len(CHAIN_FEATURES)
    assert data.n_rows_file == 9841 and data.n_duplicates_dropped > 0
    assert len(data.y) + data.n_duplicates_dropped == 9841
    assert np.isfinite(data.x).all()
    assert len(np.unique(np.column_stack([data.x, data.y]), axis=0)) == len(data.y)  # no copies left
