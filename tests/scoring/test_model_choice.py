"""`rmad score` picks the model by input format and refuses, with a message naming what it needs, a model that
cannot take the input (never a traceback)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from harness.modelgen import export_tiny_model
from service.cli import main
from service.features.chain import CHAIN_FEATURES, CHAIN_MODEL_TRANSFORM, CHAIN_SPEC_HASH
from service.features.kline import KLINE_FEATURES, KLINE_SPEC_HASH

T0 = 1_700_000_000_000 - 1_700_000_000_000 % 3_600_000


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    export_tiny_model(root, version="v1", created_ms=1)
    d = export_tiny_model(
        root, name="market-kline", version="k1", window=8, bar_interval_s=60.0, features=KLINE_FEATURES,
        spec_hash=KLINE_SPEC_HASH, alert=1e9, created_ms=1,
    )  # fmt: skip
    man = json.loads((d / "manifest.json").read_text())
    man |= {"feature_set": "kline", "bar_intervals_s": [60.0, 300.0]}
    (d / "manifest.json").write_text(json.dumps(man))
    export_tiny_model(
        root, name="chain", version="c1", kind="chain", window=1, features=CHAIN_FEATURES, spec_hash=CHAIN_SPEC_HASH,
        transform=CHAIN_MODEL_TRANSFORM, created_ms=1,
    )  # fmt: skip
    return root


def _klines(path: Path, n: int, interval_ms: int = 60_000) -> Path:
    rng = np.random.default_rng(0)
    px = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.001, n)))
    lines = ["open_time,open,high,low,close,volume"]
    for i, c in enumerate(px):
        lines.append(f"{T0 + i * interval_ms},{c:.4f},{c * 1.001:.4f},{c * 0.999:.4f},{c:.4f},{1 + i % 7}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _trades(path: Path, n: int) -> Path:
    lines = ["symbol,timestamp,datetime,side,price,amount,btc_volume"]
    for i in range(n):
        p = 1e-6 * (1 + 0.01 * (i % 5))
        lines.append(f"OAX/BTC,{T0 + i * 700},x,{'buy' if i % 3 else 'sell'},{p:.8f},100,{p * 100:.10f}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _score(models: Path, args: list[str], out: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setenv("RMAD_SCORING_WARMUP_BARS", "10")
    return main(["score", "--model-dir", str(models), "--output", str(out), "--quiet", *args])


def test_without_model_klines_get_the_kline_model_and_trades_the_trade_bar_model(
    models: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    kl = _klines(tmp_path / "BTCUSDT-1m.csv", 60)
    out = tmp_path / "k.csv"
    assert _score(models, ["--input", str(kl), "--format", "binance-kline-csv"], out, monkeypatch) == 0
    err = capsys.readouterr().err
    assert "exchange klines" in err and "market-kline/k1 (picked by input format)" in err
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 60 - 10 + 1  # one window per bar from the first warm one on
    tr = _trades(tmp_path / "OAX_2023-11-14_22.00.csv", 400)
    assert _score(models, ["--input", str(tr), "--format", "binance-trades-csv"], out, monkeypatch) == 0
    err = capsys.readouterr().err
    assert "exchange trades" in err and "market/v1 (picked by input format)" in err


def test_ws_frames_are_accepted_and_read_for_what_they_hold(
    models: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    frames = ["wss://stream.binance.com:9443/stream?streams=btcusdt@kline_1m <-> 1700000000.0"]
    for i in range(30):
        t = T0 + i * 60_000
        k = {"t": t, "T": t + 59_999, "s": "BTCUSDT", "i": "1m", "f": 1, "L": 2, "o": "100", "c": f"{100 + i % 3}"}
        k |= {"h": "103", "l": "99", "v": "10", "n": 2, "x": True, "q": "1000", "V": "5", "Q": "500", "B": "0"}
        data = {"e": "kline", "E": t + 60_000, "s": "BTCUSDT", "k": k}
        frames.append(f"{(t + 60_000) / 1000}: " + json.dumps({"stream": "btcusdt@kline_1m", "data": data}))
    p = tmp_path / "klines.ws.txt"
    p.write_text("\n".join(frames) + "\n")
    out = tmp_path / "ws.csv"
    assert _score(models, ["--input", str(p), "--format", "ws-frames"], out, monkeypatch) == 0
    assert "market-kline/k1 (picked by input format)" in capsys.readouterr().err
    assert len(list(csv.DictReader(out.open()))) == 30 - 10 + 1


@pytest.mark.parametrize(
    ("model", "kind", "needs"),
    [
        ("chain", "klines", ["model 'chain' scores on-chain transactions", "exchange klines", "omit --model"]),
        ("chain", "trades", ["model 'chain' scores on-chain transactions", "exchange trades", "--model market"]),
        ("market-kline", "trades", ["model 'market-kline' takes exchange klines", "1m, 5m", "--model market"]),
        ("nab", "klines", ["model 'nab'", "no artifact", "model directories here: chain, market, market-kline"]),
    ],
)
def test_a_model_that_cannot_take_the_input_is_refused_with_what_it_needs(
    models: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    model: str,
    kind: str,
    needs: list[str],
) -> None:
    src = _klines(tmp_path / "k.csv", 40) if kind == "klines" else _trades(tmp_path / "OAX_2023-11-14_22.00.csv", 50)
    fmt = "binance-kline-csv" if kind == "klines" else "binance-trades-csv"
    out = tmp_path / "o.csv"
    rc = _score(models, ["--model", model, "--input", str(src), "--format", fmt], out, monkeypatch)
    err = capsys.readouterr().err
    assert rc == 2
    assert "Traceback" not in err
    for text in needs:
        assert text in err, err
    assert not out.exists()  # refused before any window was written


def test_the_kline_model_refuses_candles_of_an_interval_it_was_not_trained_on(
    models: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    src = _klines(tmp_path / "BTCUSDT-1h.csv", 40, interval_ms=3_600_000)
    rc = _score(models, ["--input", str(src), "--format", "binance-kline-csv"], tmp_path / "o.csv", monkeypatch)
    err = capsys.readouterr().err
    assert rc == 2 and "takes candles of 1m, 5m; this input's candles are 1h" in err, err


def test_a_file_with_no_market_events_is_refused(
    models: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    p = tmp_path / "empty.jsonl"
    p.write_text("")
    rc = _score(models, ["--input", str(p), "--format", "events-jsonl"], tmp_path / "o.csv", monkeypatch)
    err = capsys.readouterr().err
    assert rc == 2 and "no events" in err and "market-kline" in err
