"""The worker's kline lane: candles scored by the kline model, one alert per key and episode across models."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import numpy as np

from harness.modelgen import export_tiny_model
from service.features.kline import KLINE_FEATURES, KLINE_SPEC_HASH
from service.schemas.market import Bar, Trade
from service.schemas.scoring import AnomalyType
from service.scoring.alerts import AlertPolicy
from service.scoring.kline_lane import AlertEpisodes, KlineLane
from service.scoring.registry import ModelRegistry
from service.scoring.scorer import Scorer

T0 = 1_700_000_000_000 - 1_700_000_000_000 % 3_600_000
KEY = "binance-spot:BTCUSDT"


def _kline_model(root: Path, alert: float) -> Path:
    d = export_tiny_model(
        root, name="market-kline", version="k1", window=8, bar_interval_s=60.0, features=KLINE_FEATURES,
        spec_hash=KLINE_SPEC_HASH, alert=alert, created_ms=1,
    )  # fmt: skip
    man = json.loads((d / "manifest.json").read_text())
    man |= {"feature_set": "kline", "bar_intervals_s": [60.0, 300.0]}
    (d / "manifest.json").write_text(json.dumps(man))
    return root


def _bars(n: int, crash_at: int, interval_ms: int = 60_000) -> list[Bar]:
    rng = np.random.default_rng(4)
    rets = rng.normal(0, 0.0008, n)
    rets[crash_at : crash_at + 3] = -0.025  # -7 % in three candles
    px = 30_000 * np.exp(np.cumsum(rets))
    out = []
    for i, c in enumerate(px):
        o = px[i - 1] if i else c
        t = T0 + i * interval_ms
        out.append(
            Bar(
                venue="binance-spot",
                symbol="BTCUSDT",
                event_time_ms=t + interval_ms,
                ingest_time_ms=t + interval_ms,
                interval="1m" if interval_ms == 60_000 else "1h",
                open_time_ms=t,
                close_time_ms=t + interval_ms - 1,
                open=Decimal(f"{o:.2f}"),
                high=Decimal(f"{max(o, c) * 1.0003:.2f}"),
                low=Decimal(f"{min(o, c) * 0.9997:.2f}"),
                close=Decimal(f"{c:.2f}"),
                volume=Decimal("12.5"),
            )
        )
    return out


def test_kline_lane_alerts_a_crash_on_the_candles_and_nothing_before(tmp_path: Path) -> None:
    bars = _bars(900, crash_at=850)
    probe = KlineLane(Scorer(ModelRegistry(_kline_model(tmp_path / "probe", 1e9), reload_interval_s=0)), AlertPolicy())
    quiet = [w for b in bars[:840] for w in probe.feed(b)]
    assert quiet  # warm windows before the crash
    top = max(r.fused for r in probe.scorer.score_windows("market-kline", [w.features for w in quiet]))
    lane = KlineLane(Scorer(ModelRegistry(_kline_model(tmp_path / "m", top * 1.5), reload_interval_s=0)), AlertPolicy())
    alerts = []
    for b in bars:
        alerts += lane.decide(lane.feed(b))
    assert alerts, "no alert at the crash"
    crash_end = bars[850].close_time_ms + 1
    assert crash_end <= alerts[0].window_end_ms <= crash_end + 3 * 60_000
    assert alerts[0].anomaly_type == AnomalyType.CRASH and alerts[0].model_name == "market-kline"
    # trades and candles of an interval the model does not take build no kline windows
    trade = Trade(
        venue="binance-spot", symbol="BTCUSDT", event_time_ms=T0, ingest_time_ms=T0, price=Decimal(1),
        size=Decimal(1), side="buy", trade_id=1,
    )  # fmt: skip
    assert lane.feed(trade) == []
    assert all(lane.feed(b) == [] for b in _bars(20, crash_at=30, interval_ms=3_600_000))


def test_alert_episodes_keep_one_alert_per_key_across_models_unless_it_escalates() -> None:
    ep = AlertEpisodes(episode_ms=600_000)
    t = T0
    assert ep.admit(KEY, t, AnomalyType.VOLUME_SURGE)  # the trade-bar model, first
    assert not ep.admit(KEY, t + 120_000, AnomalyType.VOLUME_SURGE)  # the kline model, same episode
    assert ep.admit(KEY, t + 180_000, AnomalyType.CRASH)  # escalation to a strong type is heard
    assert not ep.admit(KEY, t + 400_000, AnomalyType.CRASH)
    assert not ep.admit(KEY, t + 900_000, AnomalyType.CRASH)  # within 10 min of the last one: still the episode
    assert ep.admit("bybit-linear:BTCUSDT", t + 120_000, AnomalyType.CRASH)  # another key, its own episode
    assert ep.admit(KEY, t + 900_000 + 600_001, AnomalyType.CRASH)  # quiet for over 10 min: a new episode
    assert ep.suppressed == 3
    small = AlertEpisodes(max_keys=2)
    for i in range(5):
        small.admit(f"k{i}", t, AnomalyType.CRASH)
    assert len(small._last) == 2


def test_kline_lane_says_which_offset_a_restart_must_reread(tmp_path: Path) -> None:
    from service.bus.base import TopicPartition

    lane = KlineLane(Scorer(ModelRegistry(_kline_model(tmp_path / "m", 1e9), reload_interval_s=0)), AlertPolicy())
    tp = TopicPartition("market.bars", 0)
    for i, b in enumerate(_bars(40, crash_at=100)):
        lane.feed(b, offset=1000 + i, tp=tp)
    assert lane.needed_offsets(lambda key: None) == {tp: 1000}  # nothing produced yet: from the first bar
