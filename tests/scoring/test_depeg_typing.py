"""De-peg vs one-venue crash: the cross-quote check raises the simulator's USDC de-peg and the real Binance.US
USDC de-peg of 2023-03-11, and a crash on one venue is a venue dislocation, never typed a de-peg."""

from __future__ import annotations

import csv
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from service.ingest.simulator import MarketSimulator, SimBar, SimConfig, plan_anomaly
from service.scoring.crossvenue import CrossVenueMonitor, Dislocation
from service.settings import load_settings


def _monitor() -> CrossVenueMonitor:
    s = load_settings()  # the service's own defaults, as the worker and `rmad score` use them
    return CrossVenueMonitor(
        s.crossvenue_z, s.crossvenue_min_bps, s.crossvenue_half_life_bars, s.crossvenue_warmup_bars
    )


def _simulate(kind: str, seed: int) -> tuple[list[Dislocation], int, int, tuple[str, ...]]:
    base = SimConfig(duration_s=600, anomalies=(), bar_interval_ms=5000)
    spec = plan_anomaly(kind, base.start_ms + 8 * 60_000, base.instruments, seed=seed, time_scale=0.25)
    assert spec is not None
    cfg = replace(base, duration_s=(spec.end_ms - base.start_ms) / 1000 + 120, anomalies=(spec,))
    bars = [e for e in MarketSimulator(cfg).events() if isinstance(e, SimBar)]
    m = _monitor()
    found: list[Dislocation] = []
    for b in sorted(bars, key=lambda b: b.close_ms):
        found += m.observe(f"{b.venue}:{b.symbol}", b.close_ms + 1, float(b.close))
    return found, spec.start_ms, spec.end_ms, spec.keys


def test_the_simulators_usdc_depeg_is_raised_as_a_depeg_on_the_usdc_pair() -> None:
    found, start, end, keys = _simulate("depeg", seed=11)
    assert keys == ("sim-binance:BTCUSDC",)
    depegs = [d for d in found if d.is_depeg]
    assert depegs and {d.key for d in depegs} == {"sim-binance:BTCUSDC"}
    assert all(start <= d.bar_end_ms <= end + 60_000 for d in found), [(d.key, d.bar_end_ms) for d in found]
    assert "de-peg of its quote currency" in depegs[0].explanation()


def test_a_crash_on_one_venue_is_never_typed_a_depeg() -> None:
    m = _monitor()
    found: list[Dislocation] = []
    for i in range(300):
        end = 1_000 + i * 5000
        btc = 60_000.0 * (1 + 0.0002 * ((i * 7) % 5 - 2))
        bybit = btc * (0.923 if 200 <= i < 210 else 1.0)  # -7.7 % on Bybit alone for ten bars
        found += m.observe("sim-binance:BTCUSDT", end, btc)
        found += m.observe("sim-bybit:BTCUSDT", end, bybit)
    assert found  # the venues drift apart: a dislocation ...
    assert not any(d.is_depeg for d in found)  # ... but no de-peg: USDT is the quote on both sides
    assert "cross-venue dislocation" in found[0].explanation()
    # the model's own alert on the crashing key keeps the type its features give it (crash)
    assert not m.is_dislocated("sim-bybit:BTCUSDT", 1_000 + 205 * 5000)
    assert not m.is_dislocated("sim-binance:BTCUSDT", 1_000 + 205 * 5000)


def _closes(path: Path) -> dict[int, float]:
    out = {}
    with path.open() as fh:
        for row in csv.DictReader(fh):
            t = datetime.fromisoformat(row["open_time"].replace("Z", "+00:00"))
            if t.tzinfo is None:
                t = t.replace(tzinfo=UTC)
            out[int(t.timestamp() * 1000) + 60_000] = float(row["close"])
    return out


@pytest.mark.data
def test_binanceus_usdc_depeg_of_march_2023_is_raised_and_the_quiet_days_are_quiet(shared_data: Path) -> None:
    d = shared_data / "binanceus-usdc-depeg-2023-03"
    if not d.is_dir():
        pytest.skip("binanceus-usdc-depeg-2023-03 not present")
    series = {f"binanceus:{s}": _closes(d / f"{s}_1m_20230301_20230321.csv") for s in ("BTCUSDT", "BTCUSDC", "BTCUSD")}
    m = _monitor()
    found: list[Dislocation] = []
    for end in sorted(set().union(*series.values())):
        for key, closes in series.items():
            if end in closes:
                found += m.observe(key, end, closes[end])
    day = {d_.bar_end_ms: datetime.fromtimestamp(d_.bar_end_ms / 1000, UTC).date().isoformat() for d_ in found}
    usdc_days = sorted({day[x.bar_end_ms] for x in found if x.key == "binanceus:BTCUSDC" and x.is_depeg})
    assert "2023-03-11" in usdc_days, usdc_days
    quiet = [x for x in found if not ("2023-03-10" <= day[x.bar_end_ms] <= "2023-03-15")]
    assert not quiet, [(x.key, day[x.bar_end_ms], round(x.basis_bps)) for x in quiet[:10]]


def test_kline_windows_are_typed_crash_pump_or_surge_from_direction_and_shape() -> None:
    import numpy as np

    from service.features.kline import KLINE_FEATURES
    from service.schemas.scoring import AnomalyType
    from service.scoring.alerts import classify

    idx = {n: i for i, n in enumerate(KLINE_FEATURES)}

    def window(rets: list[float], qv: float = 0.0) -> np.ndarray:
        w = np.zeros((32, len(KLINE_FEATURES)), np.float32)
        w[-len(rets) :, idx["ret_1"]] = rets
        w[-3:, idx["qv_rel"]] = qv
        return w

    key = "binance-spot:BTCUSDT"
    assert classify(key, KLINE_FEATURES, window([-0.03, -0.04, 0.01])) == AnomalyType.CRASH
    assert classify(key, KLINE_FEATURES, window([0.04, 0.02, -0.05])) == AnomalyType.PUMP_AND_DUMP
    assert classify(key, KLINE_FEATURES, window([0.001, -0.001], qv=2.5)) == AnomalyType.VOLUME_SURGE
    assert classify(key, KLINE_FEATURES, window([0.001, -0.001], qv=0.2)) == AnomalyType.OTHER
