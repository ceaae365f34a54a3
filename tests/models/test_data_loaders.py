"""Loaders for every market format in ../shared/data (real files; skipped when the folder is absent) and
small files written here in the same layouts."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.data import (
    NO_PUMP_VISIBLE,
    fingerprint,
    list_pump_files,
    load_klines,
    load_lamorgia_onsets,
    load_trades,
)
from models.data.klines import kline_rows
from models.data.labels import onset_for
from models.data.simulator import load_sim_labels
from models.data.trades import parse_pump_name
from service.features import bars_from_klines


def test_pump_file_name_is_the_announced_minute() -> None:
    pf = parse_pump_name("x/CTXC_2021-03-18_17.00.csv.gz")
    assert pf.symbol == "CTXC" and pf.announce_ms == 1616086800000 and pf.pump_visible
    assert not parse_pump_name("DLT_2021-01-28_19.00.csv.gz").pump_visible
    assert len(NO_PUMP_VISIBLE) == 6


def test_small_files_in_each_layout(tmp_path: Path) -> None:
    rows = [[60_000 * i, 1.0, 2.0, 0.5, 1.5, 10.0] for i in range(3)]
    with gzip.open(tmp_path / "a.json.gz", "wt") as fh:
        json.dump(rows, fh)
    pd.DataFrame(
        {
            "date": pd.to_datetime([0, 60_000], unit="ms", utc=True),
            **{c: [1.0, 2.0] for c in "open high low close volume".split()},
        }
    ).to_feather(tmp_path / "b.feather")
    (tmp_path / "c.csv").write_text(
        "open_time,open,high,low,close,volume,number_of_trades\n2023-03-01 00:01:00+00:00,1,2,0.5,1.5,3,7\n"
        "2023-03-01 00:00:00+00:00,1,1,1,1,1,1\n"
    )
    a, b, c = (load_klines(tmp_path / n) for n in ("a.json.gz", "b.feather", "c.csv"))
    assert a["open_time_ms"].tolist() == [0, 60_000, 120_000]
    assert b["open_time_ms"].tolist() == [0, 60_000]
    assert c["open_time_ms"].tolist() == [1677628800000, 1677628860000]  # sorted, ms
    bars = bars_from_klines(kline_rows(c))
    assert bars[1].trades == 7 and bars[0].taker_buy_volume is None
    assert len(fingerprint(tmp_path / "c.csv")) == 64


def test_simulator_labels(tmp_path: Path) -> None:
    p = tmp_path / "labels.json"
    p.write_text(
        json.dumps(
            [
                {
                    "type": "pump_and_dump",
                    "key": "binance:XBTC",
                    "start_ms": 1,
                    "onset_ms": 5,
                    "end_ms": 9,
                    "magnitude": 0.5,
                    "seed": 0,
                }
            ]
        )
    )
    (lab,) = load_sim_labels(p)
    assert lab.onset_ms == 5 and lab.key == "binance:XBTC"


@pytest.mark.data
def test_real_pump_trades_and_labels(shared_data: Path) -> None:
    files = list_pump_files(shared_data)
    assert len(files) == 39
    assert [f.announce_ms for f in files] == sorted(f.announce_ms for f in files)
    df = load_trades(files[0].path)
    assert df["ts_ms"].is_monotonic_increasing and df["taker_buy"].dtype == bool
    np.testing.assert_allclose(df["quote"], df["price"] * df["size"], rtol=1e-6)
    onsets = load_lamorgia_onsets(shared_data)
    assert len(onsets) == 317
    # BNT 2020-04-24: La Morgia flagged the onset 75 s before the announced 15:59
    bnt = next(f for f in files if f.stem == "BNT_2020-04-24_15.59")
    assert onset_for(onsets, "BNT", bnt.announce_ms) == bnt.announce_ms - 15_000


@pytest.mark.data
def test_real_kline_formats(shared_data: Path) -> None:
    ft = load_klines(shared_data / "binance-1m-klines" / "spot_BTCUSDT_1m_2023-03-16_2023-05-01.json.gz")
    fe = load_klines(shared_data / "binance-1m-klines" / "spot_ETHUSDT_1m_2025-06-01_2025-07-01.feather")
    us = load_klines(shared_data / "binanceus-usdc-depeg-2023-03" / "BTCUSDC_1m_20230301_20230321.csv")
    for df in (ft, fe, us):
        d = np.diff(df["open_time_ms"].to_numpy())
        assert (d > 0).all() and np.median(d) == 60_000
    assert len(us) == 30240 and us["open_time_ms"].iloc[0] == 1677628800000
