"""Loader, preprocessing and the held-back split for ../shared/data/ethereum-fraud-accounts/transaction_dataset.csv.

Why it looks like this:
- The file is account-level aggregates with no time column, so no time-forward split is possible. The held-back
  part is a stratified random split (by FLAG, fixed seed), and the card says so.
- 546 rows are exact copies of other rows (mostly fraud). They are dropped before splitting, or copies of
  training rows would sit in the test part and flatter every method.
- The detailed ERC20 columns are empty for 829 accounts, all of them fraud: a missing-value indicator would be a
  perfect label leak. Empty cells become 0 ("no ERC20 activity seen"), which is what the live feature code reports
  for an address without token transfers; no missing-value indicator is added. The token-name columns are dropped.
- Features are exactly `service.features.chain.CHAIN_FEATURES` (the live address features), matched to the CSV's
  column names after normalising case, spaces and punctuation.
- Values are heavy-tailed counts and ether amounts: signed log1p, then robust scaling (median / IQR) fitted on
  the training part only.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from service.features.chain import signed_log1p
from service.features.scaling import RobustScaler

DATA_FILE = "ethereum-fraud-accounts/transaction_dataset.csv"
LABEL = "FLAG"
DROPPED = ("Index", "Address", "FLAG", "ERC20 most sent token type", "ERC20_most_rec_token_type")


def norm_name(name: str) -> str:
    """Case-, space- and punctuation-insensitive column key: ' ERC20 uniq sent addr.1' -> 'erc20_uniq_sent_addr_1'."""
    return re.sub(r"[^a-z0-9]+", "_", name.strip().lower()).strip("_")


def chain_features() -> tuple[str, ...]:
    """The live feature names (service.features.chain.CHAIN_FEATURES); the model takes exactly these, in order."""
    from service.features.chain import CHAIN_FEATURES

    return tuple(CHAIN_FEATURES)


@dataclass(frozen=True)
class AccountsData:
    """Raw (unscaled) feature matrix with labels, after de-duplication."""

    x: np.ndarray  # float64 [N, F]
    y: np.ndarray  # int64 [N], 1 = fraud / phishing
    features: tuple[str, ...]
    n_rows_file: int
    n_duplicates_dropped: int
    fingerprint: str  # sha256 of the file


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_accounts(path: Path, features: Sequence[str]) -> AccountsData:
    """Read the CSV, pick `features` (by normalised name), fill empty cells with 0, drop duplicate rows."""
    frame = pd.read_csv(path)
    by_key = {norm_name(c): c for c in frame.columns}
    missing = [f for f in features if norm_name(f) not in by_key]
    if missing:
        raise KeyError(f"features not in {path.name}: {missing}")
    cols = [by_key[norm_name(f)] for f in features]
    table = frame[[*cols, LABEL]].apply(pd.to_numeric, errors="coerce").fillna(0.0)
    deduped = table.drop_duplicates()
    return AccountsData(
        x=deduped[cols].to_numpy(dtype=np.float64),
        y=deduped[LABEL].to_numpy(dtype=np.int64),
        features=tuple(features),
        n_rows_file=len(frame),
        n_duplicates_dropped=len(table) - len(deduped),
        fingerprint=sha256_file(path),
    )


@dataclass(frozen=True)
class Split:
    train: np.ndarray  # row indices
    val: np.ndarray
    test: np.ndarray


def stratified_split(y: np.ndarray, seed: int = 0, val_frac: float = 0.2, test_frac: float = 0.2) -> Split:
    """Per-class shuffled split (train / validation / held-back test); NOT time-forward: the file has no time."""
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for cls in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == cls))
        n_test = round(len(idx) * test_frac)
        n_val = round(len(idx) * val_frac)
        parts["test"].append(idx[:n_test])
        parts["val"].append(idx[n_test : n_test + n_val])
        parts["train"].append(idx[n_test + n_val :])
    return Split(**{k: np.sort(np.concatenate(v)) for k, v in parts.items()})


@dataclass(frozen=True)
class Prepared:
    """Scaled features per split (float32 [n, F]) with labels and the fitted scaler."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    scaler: RobustScaler
    raw_median: np.ndarray  # unscaled training median per feature (manifest features.normal)


def prepare(data: AccountsData, split: Split) -> Prepared:
    """log1p then robust scaling fitted on the training rows only."""
    logged = signed_log1p(data.x)
    scaler = RobustScaler.fit(logged[split.train])
    return Prepared(
        x_train=scaler.transform(logged[split.train]),
        y_train=data.y[split.train],
        x_val=scaler.transform(logged[split.val]),
        y_val=data.y[split.val],
        x_test=scaler.transform(logged[split.test]),
        y_test=data.y[split.test],
        scaler=scaler,
        raw_median=np.median(data.x[split.train], axis=0),
    )
