"""MarketFeatureState: shape, names, no clock leakage, scale-freeness, and the pump signature on real trades."""

from __future__ import annotations

import dataclasses
import math
import random
from pathlib import Path

import numpy as np
import pytest

from service.features import (
    MARKET_FEATURES,
    SPEC_HASH,
    FeatureParams,
    MarketFeatureState,
    RobustScaler,
    TimeBar,
    bars_from_klines,
    bars_from_trades,
    spec_hash,
)


def _random_bars(n: int, seed: int = 0, start_ms: int = 0, price_mult: float = 1.0) -> list[TimeBar]:
    rng = random.Random(seed)
    ts, px, sz, side = [], [], [], []
    p = 1.0
    t = start_ms
    for _ in range(n):
        t += rng.randrange(1, 9000)
        p *= math.exp(rng.gauss(0, 0.002))
        ts.append(t)
        px.append(p * price_mult)
        sz.append(rng.expovariate(1.0) / price_mult)
        side.append(rng.random() < 0.5)
    return bars_from_trades(ts, px, sz, side)


def test_vector_matches_names_and_is_finite() -> None:
    st = MarketFeatureState()
    x = st.update_many(_random_bars(3000))
    assert x.shape[1] == len(MARKET_FEATURES) == len(set(MARKET_FEATURES))
    assert x.dtype == np.float32 and np.isfinite(x).all()
    assert st.warm


def test_no_time_of_day_leak() -> None:
    """Shifting the whole stream by 7 hours must not change a single feature value."""
    a = MarketFeatureState().update_many(_random_bars(2000, seed=1, start_ms=0))
    b = MarketFeatureState().update_many(_random_bars(2000, seed=1, start_ms=7 * 3_600_000))
    np.testing.assert_array_equal(a, b)


def test_scale_free_in_price_level() -> None:
    a = MarketFeatureState().update_many(_random_bars(2000, seed=2))
    b = MarketFeatureState().update_many(_random_bars(2000, seed=2, price_mult=1e-6))
    np.testing.assert_allclose(a, b, atol=2e-3, rtol=1e-3)


def test_incremental_equals_batch_and_klines_neutral_flow() -> None:
    bars = _random_bars(500, seed=4)
    st = MarketFeatureState()
    rows = [st.update(b) for b in bars]
    np.testing.assert_array_equal(np.stack(rows), MarketFeatureState().update_many(bars))
    kl = bars_from_klines([(i * 60_000, 1.0, 1.01, 0.99, 1.0 + 0.001 * (i % 3), 5.0) for i in range(100)])
    xk = MarketFeatureState().update_many(kl)
    idx = [MARKET_FEATURES.index(n) for n in ("trades_rel", "imbalance", "rush_chunk", "rush_mean")]
    assert (xk[:, idx] == 0).all()


def test_spec_hash_changes_with_parameters() -> None:
    assert spec_hash() == SPEC_HASH and len(SPEC_HASH) == 64
    assert spec_hash(dataclasses.replace(FeatureParams(), long_span=360)) != SPEC_HASH


def test_robust_scaler_iqr_fallback_and_manifest_roundtrip() -> None:
    rng = np.random.default_rng(0)
    x = np.stack([rng.normal(5, 2, 4000), np.where(rng.random(4000) < 0.9, 0.0, 3.0)], axis=1)
    sc = RobustScaler.fit(x)
    assert sc.center[0] == pytest.approx(5, abs=0.2) and sc.scale[0] == pytest.approx(2.7, rel=0.1)
    assert sc.center[1] == 0.0 and sc.scale[1] > 0  # IQR 0 -> mean absolute deviation
    z = sc.transform(np.array([[1e9, -1e9]]))
    assert z.max() == sc.clip and z.min() == -sc.clip
    back = RobustScaler.from_manifest(sc.to_manifest())
    np.testing.assert_array_equal(back.transform(x), sc.transform(x))


@pytest.mark.data
def test_real_pump_lights_up_volume_and_rush(shared_data: Path) -> None:
    pd = pytest.importorskip("pandas")
    df = pd.read_csv(shared_data / "binance-pump-trades" / "trades" / "CTXC_2021-03-18_17.00.csv.gz")
    bars = bars_from_trades(
        df.timestamp.to_numpy(),
        df.price.to_numpy(),
        df.amount.to_numpy(),
        (df.side == "buy").to_numpy(),
        quote=df.btc_volume.to_numpy(),
    )
    x = MarketFeatureState().update_many(bars)
    announce = int(pd.Timestamp("2021-03-18 17:00", tz="UTC").value // 1_000_000)
    i = next(k for k, b in enumerate(bars) if b.start_ms >= announce)
    vz, rush = MARKET_FEATURES.index("vol_rel_short"), MARKET_FEATURES.index("rush_chunk")
    before = x[i - 720 : i - 12]
    assert x[i : i + 3, vz].max() > before[:, vz].max()
    assert x[i : i + 3, rush].max() > before[:, rush].max()
