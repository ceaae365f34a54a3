"""`rmad score` offline: alerts at a real pump (../shared/data), and the same scores as the streaming worker."""

from __future__ import annotations

import asyncio
import csv
import re
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from harness.modelgen import export_tiny_model
from harness.scenario import Collected, build_scenario, collect, stamped, wait_for, worker_env
from service.bus.factory import standard_topics
from service.bus.kafka import KafkaBus, KafkaOptions
from service.cli import main
from service.features.scaling import RobustScaler
from service.ingest.publisher import MarketPublisher
from service.ingest.readers import read_events
from service.scoring.registry import ModelRegistry
from service.scoring.scorer import Scorer
from service.scoring.windows import WindowStore, apply_event
from service.scoring.worker import ScoringWorker
from service.settings import load_settings
from service.state.redis import RedisState

PUMP_FILE = "binance-pump-trades/trades/APPC_2020-11-18_18.00.csv.gz"


@pytest.mark.data
@pytest.mark.slow
def test_rmad_score_prints_alerts_at_a_real_pump(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = shared_data / PUMP_FILE
    pump_ms = int(datetime(2020, 11, 18, 18, 0, tzinfo=UTC).timestamp() * 1000)  # announced minute (file name)
    # "training": scaler and threshold from the day before the pump only (time split), through the same windows
    store = WindowStore(8, 27, 5000, warmup_bars=60)
    before = [
        w.features
        for i, e in enumerate(read_events(path, "binance-trades-csv"))
        for w in apply_event(store, e, offset=i)
        if w.scorable and w.window_end_ms < pump_ms - 3_600_000
    ]
    sc = RobustScaler.fit(np.stack(before)[:, -1])
    probe = tmp_path / "probe"
    export_tiny_model(probe, center=sc.center.tolist(), scale=sc.scale.tolist(), alert=1e9)
    reg = ModelRegistry(probe, reload_interval_s=0)
    quiet_max = max(r.fused for r in Scorer(reg).score_windows("market", np.stack(before)))
    models = tmp_path / "models"
    export_tiny_model(models, center=sc.center.tolist(), scale=sc.scale.tolist(), alert=quiet_max * 1.05)

    monkeypatch.setenv("RMAD_SCORING_WARMUP_BARS", "60")
    out = tmp_path / "appc.csv"
    rc = main(
        ["score", "--model", "market", "--model-dir", str(models), "--input", str(path),
         "--format", "binance-trades-csv", "--output", str(out)]
    )  # fmt: skip
    assert rc == 0
    printed = capsys.readouterr().out
    alerts = [(int(t), kind) for t, kind in re.findall(r"^ALERT (\d+) binance-spot:APPC\S* (\S+)", printed, re.M)]
    assert alerts, printed
    # an alert at the pump (announced 18:00; the file's own trades show the rush within the first minute)
    at_pump = [(t, k) for t, k in alerts if pump_ms - 60_000 <= t <= pump_ms + 300_000]
    assert at_pump and at_pump[0][1] == "pump_and_dump", alerts
    assert alerts[0] == at_pump[0]  # nothing before it: the two days before the pump stay quiet
    # after it, the dump (typed a crash) and the hour of aftershocks; at most two alerts elsewhere in 4 days
    assert any(k == "crash" for t, k in alerts if pump_ms < t <= pump_ms + 3_600_000), alerts
    assert len([t for t, _ in alerts if t > pump_ms + 3_600_000]) <= 2, alerts
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == ["timestamp", "key", "score", "threshold", "is_alert", "alert_type"]
    flagged = [r for r in rows if r["is_alert"] == "1"]
    assert [int(r["timestamp"]) for r in flagged] == [t for t, _ in alerts]
    assert all(r["alert_type"] for r in flagged) and not any(r["alert_type"] for r in rows if r["is_alert"] == "0")


@pytest.mark.integration
@pytest.mark.slow
async def test_replay_through_the_worker_gives_the_offline_scores(
    tmp_path: Path, kafka_bootstrap: str, redis_url: str, unique: str
) -> None:
    scn = build_scenario(tmp_path)
    env = worker_env(unique, kafka_bootstrap, redis_url, scn.model_dir, RMAD_CENTRES_ONLINE="false")
    s = load_settings(**{k.removeprefix("RMAD_").lower(): v for k, v in env.items() if k.startswith("RMAD_")})
    bus = KafkaBus(KafkaOptions(kafka_bootstrap, session_timeout_ms=6000, heartbeat_interval_ms=500, linger_ms=2))
    state = RedisState(redis_url, key_prefix=f"t{unique}:")
    await bus.create_topics(standard_topics(s))
    worker = ScoringWorker(s, bus, state)
    out, stop = Collected(), asyncio.Event()
    reader = asyncio.create_task(collect(bus, (s.topic_scores, s.topic_alerts), out, stop, f"c-{unique}"))
    await worker.start()
    try:
        p = bus.producer()
        await p.start()
        pub = MarketPublisher(p, s)
        for e in stamped(scn.events):
            await pub.publish(e)
        await p.stop()
        expected = scn.expected_windows()
        await wait_for(lambda: expected <= out.windows(), 120, "every window")
    finally:
        await worker.stop()
        stop.set()
        await reader
        await bus.close()
        await state.close()
    offline = {(r.key, r.timestamp): r.score for r in scn.offline}
    streamed = {(str(x["key"]), int(str(x["window_end_ms"]))): float(str(x["fused"])) for x in out.scores}
    common = set(offline) & set(streamed)
    assert common >= expected
    np.testing.assert_allclose([streamed[k] for k in sorted(common)], [offline[k] for k in sorted(common)], rtol=1e-5)


def test_rmad_score_on_kline_csv_uses_the_file_interval(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(3)
    path = tmp_path / "XYZUSDT-1m.csv"
    px = 100.0
    lines = ["open_time,open,high,low,close,volume"]
    for i in range(200):
        nxt = px * float(np.exp(rng.normal(0, 1e-3)))
        lines.append(f"{1_700_000_000_000 + i * 60_000},{px},{max(px, nxt)},{min(px, nxt)},{nxt},{rng.uniform(1, 5)}")
        px = nxt
    path.write_text("\n".join(lines) + "\n")
    monkeypatch.setenv("RMAD_SCORING_WARMUP_BARS", "10")
    out = tmp_path / "out.csv"
    rc = main(
        ["score", "--model", "market", "--model-dir", str(tiny_model_dir), "--input", str(path),
         "--format", "binance-kline-csv", "--output", str(out), "--quiet"]
    )  # fmt: skip
    assert rc == 0
    rows = list(csv.DictReader(out.open()))
    ends = [int(r["timestamp"]) for r in rows]
    assert len(rows) == 200 - 9  # every 1 m bar from the 10th on ends a scored window
    assert set(np.diff(ends).tolist()) == {60_000}
    assert "scored 191 windows" in capsys.readouterr().err
