"""Kline loaders: freqtrade JSON(.gz), freqtrade feather, Binance.US / exchange CSVs. One frame layout out:
open_time_ms (int64), open, high, low, close, volume, and where the source has them quote_volume, trades,
taker_buy_base, taker_buy_quote (else absent)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd

OHLCV = ["open", "high", "low", "close", "volume"]
EXTRA = ["quote_volume", "trades", "taker_buy_base", "taker_buy_quote"]


def _finish(df: pd.DataFrame) -> pd.DataFrame:
    df = df.sort_values("open_time_ms", kind="stable").drop_duplicates("open_time_ms", keep="last")
    return df.reset_index(drop=True)


def load_freqtrade_json(path: str | Path) -> pd.DataFrame:
    """freqtrade cache: [[open_time_ms, open, high, low, close, volume], ...], optionally gzipped."""
    p = Path(path)
    opener = gzip.open if p.suffix == ".gz" else open
    with opener(p, "rt") as fh:
        rows = json.load(fh)
    arr = np.asarray(rows, dtype=np.float64)
    df = pd.DataFrame(arr[:, 1:6], columns=OHLCV)
    df.insert(0, "open_time_ms", arr[:, 0].astype(np.int64))
    return _finish(df)


def load_feather_klines(path: str | Path) -> pd.DataFrame:
    """freqtrade feather: columns date (UTC candle open), open, high, low, close, volume."""
    raw = pd.read_feather(path)
    dates = pd.to_datetime(raw["date"], utc=True)
    df = pd.DataFrame({"open_time_ms": dates.dt.as_unit("ms").astype("int64").to_numpy(np.int64)})
    for c in OHLCV:
        df[c] = raw[c].to_numpy(np.float64)
    return _finish(df)


_CSV_ALIASES = {
    "number_of_trades": "trades",
    "count": "trades",
    "quote_asset_volume": "quote_volume",
    "taker_buy_base_asset_volume": "taker_buy_base",
    "taker_buy_quote_asset_volume": "taker_buy_quote",
}


def load_binanceus_csv(path: str | Path) -> pd.DataFrame:
    """Binance(.US) kline CSV with `open_time` (ISO or ms) and OHLCV (+ the exchange's extra columns if present)."""
    raw = pd.read_csv(path)
    raw.columns = [_CSV_ALIASES.get(c.strip().lower(), c.strip().lower()) for c in raw.columns]
    ot = raw["open_time"]
    if pd.api.types.is_numeric_dtype(ot):
        ms = ot.to_numpy(np.int64)
        if ms.max() > 10**14:  # microseconds (Binance's 2025+ dumps)
            ms = ms // 1000
    else:
        ms = pd.to_datetime(ot, utc=True).dt.as_unit("ms").astype("int64").to_numpy(np.int64)
    df = pd.DataFrame({"open_time_ms": ms})
    for c in OHLCV:
        df[c] = raw[c].to_numpy(np.float64)
    for c in EXTRA:
        if c in raw.columns:
            df[c] = raw[c].to_numpy(np.float64)
    return _finish(df)


def load_klines(path: str | Path) -> pd.DataFrame:
    """Dispatch on the file name."""
    name = Path(path).name
    if name.endswith(".json") or name.endswith(".json.gz"):
        return load_freqtrade_json(path)
    if name.endswith(".feather"):
        return load_feather_klines(path)
    if name.endswith(".csv") or name.endswith(".csv.gz"):
        return load_binanceus_csv(path)
    raise ValueError(f"unknown kline format: {name}")


def kline_rows(df: pd.DataFrame) -> list[tuple[float | int | None, ...]]:
    """Rows for `service.features.bars_from_klines` (missing columns as None)."""
    cols = [df[c].to_numpy() if c in df.columns else None for c in EXTRA]
    t = df["open_time_ms"].to_numpy(np.int64)
    o, h, lo, c, v = (df[k].to_numpy(np.float64) for k in OHLCV)
    out: list[tuple[float | int | None, ...]] = []
    for i in range(len(df)):
        extra = tuple(None if col is None else float(col[i]) for col in cols)
        out.append((int(t[i]), float(o[i]), float(h[i]), float(lo[i]), float(c[i]), float(v[i]), *extra))
    return out
