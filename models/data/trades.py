"""Binance trade CSVs around pump announcements (binance-pump-trades).

File name = `<SYM>_<YYYY-MM-DD>_<HH.MM>.csv.gz`, the announced minute in UTC. Columns: symbol, timestamp (ms),
datetime, side (taker side), price, amount (base), btc_volume (quote).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

#: Files where no pump is visible at the stated minute (binance-pump-trades/SOURCE.md): label noise or cancelled.
NO_PUMP_VISIBLE: frozenset[str] = frozenset(
    {
        "DLT_2021-01-28_19.00",
        "MTH_2021-07-27_17.00",
        "NEBL_2020-11-02_18.00",
        "NEBL_2021-04-02_21.00",
        "NXS_2021-03-03_16.00",
        "SNM_2021-11-20_17.01",
    }
)

_NAME = re.compile(r"^(?P<sym>[A-Z0-9]+)_(?P<date>\d{4}-\d{2}-\d{2})_(?P<hh>\d{2})\.(?P<mm>\d{2})\.csv(\.gz)?$")


@dataclass(frozen=True, slots=True)
class PumpFile:
    """One trade file and the pump announcement its name carries."""

    path: Path
    symbol: str
    announce_ms: int

    @property
    def stem(self) -> str:
        return self.path.name.split(".csv")[0]

    @property
    def pump_visible(self) -> bool:
        return self.stem not in NO_PUMP_VISIBLE


def parse_pump_name(path: str | Path) -> PumpFile:
    p = Path(path)
    m = _NAME.match(p.name)
    if m is None:
        raise ValueError(f"not a pump trade file name: {p.name}")
    when = datetime.strptime(f"{m['date']} {m['hh']}:{m['mm']}", "%Y-%m-%d %H:%M").replace(tzinfo=UTC)
    return PumpFile(path=p, symbol=m["sym"], announce_ms=int(when.timestamp() * 1000))


def list_pump_files(folder: str | Path) -> list[PumpFile]:
    """Every pump trade file under `folder` (the dataset root, its trades/ folder, or a folder of files),
    sorted by announcement time."""
    root = Path(folder)
    for cand in (root / "binance-pump-trades" / "trades", root / "trades", root):
        if cand.is_dir() and any(_NAME.match(f.name) for f in cand.iterdir()):
            files = [parse_pump_name(f) for f in cand.iterdir() if _NAME.match(f.name)]
            return sorted(files, key=lambda f: (f.announce_ms, f.symbol))
    raise FileNotFoundError(f"no pump trade files under {root}")


def load_trades(path: str | Path) -> pd.DataFrame:
    """Trades sorted by time: ts_ms (int64), price, size, quote (float64), taker_buy (bool)."""
    df = pd.read_csv(path, usecols=["timestamp", "side", "price", "amount", "btc_volume"])
    out = pd.DataFrame(
        {
            "ts_ms": df["timestamp"].to_numpy(np.int64),
            "price": df["price"].to_numpy(np.float64),
            "size": df["amount"].to_numpy(np.float64),
            "quote": df["btc_volume"].to_numpy(np.float64),
            "taker_buy": (df["side"].str.lower() == "buy").to_numpy(),
        }
    )
    out = out[(out["price"] > 0) & (out["size"] >= 0)]
    return out.sort_values("ts_ms", kind="stable").reset_index(drop=True)
