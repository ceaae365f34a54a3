"""Kline features: streaming, scale-free, adaptive to the key's own volatility, 5 m from 1 m."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from service.features.bars import bars_from_klines
from service.features.kline import KLINE_FEATURES, KlineFeatureState, crash_score, resample_bars

IDX = {n: i for i, n in enumerate(KLINE_FEATURES)}


def _rows(rets: np.ndarray, price: float = 100.0, vol: float = 5.0) -> list[tuple[float, ...]]:
    px = price * np.exp(np.cumsum(rets))
    out = []
    for i, c in enumerate(px):
        o = px[i - 1] if i else c
        out.append((i * 60_000, o, max(o, c) * 1.0002, min(o, c) * 0.9998, c, vol))
    return out


def test_features_are_scale_free_and_streaming_equals_batch() -> None:
    rets = np.random.default_rng(1).normal(0, 0.001, 1500)
    a = KlineFeatureState().update_many(bars_from_klines(_rows(rets)))
    b = KlineFeatureState().update_many(bars_from_klines(_rows(rets, price=30_000.0, vol=0.01)))
    assert a.shape == (1500, len(KLINE_FEATURES))
    np.testing.assert_allclose(a, b, atol=2e-3)  # price and volume levels never enter
    st = KlineFeatureState()
    one = np.stack([st.update(bar) for bar in bars_from_klines(_rows(rets))])
    np.testing.assert_array_equal(one, a)


def test_the_same_drop_is_alarming_on_a_calm_key_and_not_on_a_wild_one() -> None:
    rng = np.random.default_rng(2)
    for sigma, alarming in ((0.002, True), (0.02, False)):
        rets = rng.normal(0, sigma, 1200)
        rets[-1] = -0.05
        x = KlineFeatureState().update_many(bars_from_klines(_rows(rets)))
        assert (crash_score(x[-1]) > 6.0) is alarming, (sigma, crash_score(x[-1]))


def test_five_minute_bars_from_one_minute_klines() -> None:
    rets = np.random.default_rng(3).normal(0, 0.001, 23)
    bars = bars_from_klines(_rows(rets))
    five = resample_bars(bars, 300_000)
    assert len(five) == 4  # the last 3 one-minute bars do not close a 5 m bar yet
    assert five[1].open == bars[5].open and five[1].close == bars[9].close
    assert five[1].high == max(b.high for b in bars[5:10]) and five[1].volume == sum(b.volume for b in bars[5:10])


def test_training_and_serving_compute_the_same_kline_features(tmp_path: Path) -> None:
    """models/kline/data.py (training) and the runtime's windows (rmad score, the worker) read one file alike."""
    from models.kline.data import _build
    from service.ingest.readers import read_events
    from service.scoring.windows import WindowStore, apply_event

    rets = np.random.default_rng(5).normal(0, 0.002, 400)
    rows = [[int(1_600_000_000_000 + r[0]), *r[1:]] for r in _rows(rets)]
    del rows[100:103]  # a maintenance gap: both sides fill it with flat incomplete bars
    p = tmp_path / "BTC_USDT-1m.json"
    p.write_text(json.dumps(rows))
    train = _build(p, None)["X"]
    store = WindowStore(1, len(KLINE_FEATURES), 60_000, warmup_bars=0, features="kline")
    served = [
        w.features[-1] for i, e in enumerate(read_events(p, "freqtrade-json")) for w in apply_event(store, e, offset=i)
    ]
    assert len(served) == len(train) == 400
    np.testing.assert_allclose(np.stack(served), train, rtol=1e-5, atol=1e-5)
