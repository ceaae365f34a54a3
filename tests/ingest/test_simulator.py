"""The simulator: seeded reproducibility, stylised facts of real markets, and each injected anomaly as labelled."""

from __future__ import annotations

import asyncio
import collections
import itertools
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from service.bus.memory import MemoryBus
from service.ingest.simulator import (
    AnomalySpec,
    MarketSimulator,
    SimBar,
    SimBook,
    SimConfig,
    SimEvent,
    SimLabel,
    SimTrade,
    SimulatorSource,
    intraday_factor,
    plan_anomaly,
    read_labels,
    to_market,
    with_pump_at,
    write_labels,
)
from service.schemas.market import BookTop, Trade, decode_market, decode_market_records
from service.settings import load_settings

BASE = SimConfig(duration_s=600, anomalies=())


def _run(cfg: SimConfig) -> tuple[list[SimEvent], MarketSimulator]:
    sim = MarketSimulator(cfg)
    return list(sim.events()), sim


def _trades(events: list[SimEvent], key: str) -> list[SimTrade]:
    venue, _, symbol = key.partition(":")
    return [e for e in events if isinstance(e, SimTrade) and e.venue == venue and e.symbol == symbol]


def _books(events: list[SimEvent], key: str) -> list[SimBook]:
    venue, _, symbol = key.partition(":")
    return [e for e in events if isinstance(e, SimBook) and e.venue == venue and e.symbol == symbol]


def _mids(events: list[SimEvent], key: str) -> np.ndarray:
    return np.array([(float(b.bids[0][0]) + float(b.asks[0][0])) / 2 for b in _books(events, key)])


def test_same_seed_same_market_other_seed_other_market() -> None:
    cfg = replace(BASE, duration_s=240, first_anomaly_s=30, anomaly_every_s=60, anomalies=None)
    a, sa = _run(cfg)
    b, sb = _run(cfg)
    c, _ = _run(replace(cfg, seed=cfg.seed + 1))
    assert a == b and sa.labels == sb.labels and len(a) > 1000
    assert a != c
    times = [e.close_ms if isinstance(e, SimBar) else e.ts_ms for e in a]
    assert times == sorted(times)  # one time-ordered stream


def test_stylised_facts_heavy_tails_and_volatility_clustering() -> None:
    eth = tuple(i for i in BASE.instruments if i.key == "sim-binance:ETHUSDT")
    cfg = replace(BASE, duration_s=4 * 3600, emit_bars=False, rate_scale=0.02, instruments=eth)
    events, _ = _run(cfg)
    mids = _mids(events, "sim-binance:ETHUSDT")
    r = np.diff(np.log(mids))
    r = r[r != 0]
    kurt = float(((r - r.mean()) ** 4).mean() / r.var() ** 2)
    assert kurt > 4.0, f"excess kurtosis expected (Student-t innovations), got {kurt:.2f}"
    a = np.abs(np.diff(np.log(mids)))
    a = a - a.mean()
    acf = [float((a[:-lag] * a[lag:]).mean() / a.var()) for lag in (1, 5, 30)]
    assert all(x > 0.02 for x in acf), f"|returns| should be autocorrelated (GARCH), got {acf}"


def test_intraday_volume_pattern_and_fixed_rates() -> None:
    day = 19_003 * 86_400_000  # 2022-01-11, a Tuesday
    sat = 19_000 * 86_400_000  # 2022-01-08, a Saturday
    assert intraday_factor(day + 14 * 3_600_000) > 1.5 * intraday_factor(day + 4 * 3_600_000)
    assert intraday_factor(sat + 14 * 3_600_000) < 0.8 * intraday_factor(day + 14 * 3_600_000)
    us = replace(BASE, start_ms=day + 14 * 3_600_000, duration_s=300, emit_books=False)
    asia = replace(us, start_ms=day + 4 * 3_600_000)
    n_us = len(_trades(_run(us)[0], "sim-binance:BTCUSDT"))
    n_asia = len(_trades(_run(asia)[0], "sim-binance:BTCUSDT"))
    assert n_us > 1.4 * n_asia
    fixed = replace(us, fixed_rates=True, rate_scale=2.0)
    orders = {t.ts_ms for t in _trades(_run(fixed)[0], "sim-binance:BTCUSDT")}
    expected = 8.0 * 2.0 * 300  # rate_hz x scale x seconds (taker orders; sweeps add trades at the same ms)
    assert abs(len(orders) - expected) < 0.1 * expected


def test_pump_and_dump_accumulation_rush_same_millisecond_and_dump() -> None:
    key = "sim-binance:ALT1BTC"
    cfg = with_pump_at(replace(BASE, duration_s=2400), key, 300, magnitude=0.8, scale=2.0)
    events, sim = _run(cfg)
    (lab,) = sim.labels
    assert (lab.type, lab.key) == ("pump_and_dump", key)
    assert lab.start_ms < lab.onset_ms < lab.end_ms
    tr = _trades(events, key)

    def window(a: int, b: int) -> list[SimTrade]:
        return [t for t in tr if a <= t.ts_ms < b]

    pre = window(cfg.start_ms, lab.start_ms)
    acc = window(lab.start_ms, lab.onset_ms)
    rush = window(lab.onset_ms, lab.onset_ms + 60_000)
    after = window(lab.end_ms, cfg.start_ms + 2_400_000)
    pre_rate = len(pre) / ((lab.start_ms - cfg.start_ms) / 1000)
    rush_rate = len(rush) / 60
    assert rush_rate > 20 * pre_rate, (pre_rate, rush_rate)
    buys = sum(t.side == "buy" for t in rush) / len(rush)
    assert buys > 0.8
    acc_buys = sum(t.side == "buy" for t in acc) / max(1, len(acc))
    assert acc_buys > 0.55  # accumulation leans to buying before the rush
    same_ms = collections.Counter(t.ts_ms for t in rush)
    assert sum(1 for n in same_ms.values() if n >= 3) > 10  # sweeps: several trades in one millisecond
    p0 = float(pre[-1].price)
    peak = max(float(t.price) for t in rush + window(lab.onset_ms, lab.end_ms))
    assert peak > 1.4 * p0
    assert after and float(after[-1].price) < 1.15 * p0  # the dump gives it back
    assert any(t.anomaly == "pump_and_dump" for t in rush)


def test_flash_crash_and_recovery() -> None:
    key = "sim-binance:BTCUSDT"
    start = BASE.start_ms + 120_000
    spec = AnomalySpec("flash_crash", (key,), start, start, start + 400_000, 0.08, 1, peak_ms=start + 45_000)
    events, sim = _run(replace(BASE, anomalies=(spec,)))
    books = _books(events, key)
    mids = {b.ts_ms: (float(b.bids[0][0]) + float(b.asks[0][0])) / 2 for b in books}
    before = [m for t, m in mids.items() if t < start]
    bottom = min(m for t, m in mids.items() if start <= t < start + 60_000)
    late = [m for t, m in mids.items() if t > start + 400_000]
    assert bottom < 0.95 * before[-1]
    assert late[-1] > bottom * 1.04  # recovered most of it
    assert sim.labels[0].type == "flash_crash" and sim.labels[0].onset_ms == start


def test_wash_trading_pairs_have_equal_size_one_price_opposite_sides() -> None:
    key = "sim-bybit:ETHUSDT"
    start = BASE.start_ms + 60_000
    spec = AnomalySpec("wash_trading", (key,), start, start, start + 240_000, 10.0, 3)
    events, _ = _run(replace(BASE, anomalies=(spec,)))
    wash = [t for t in _trades(events, key) if t.anomaly == "wash_trading"]
    assert len(wash) >= 100 and all(start <= t.ts_ms < start + 240_000 for t in wash)
    by_price_size = collections.Counter((t.price, t.size) for t in wash)
    assert all(n % 2 == 0 for n in by_price_size.values())
    assert sum(t.side == "buy" for t in wash) == sum(t.side == "sell" for t in wash)
    normal = [float(t.size) for t in _trades(events, key) if not t.anomaly]
    assert np.median([float(t.size) for t in wash]) > 5 * np.median(normal)


def test_spoofing_wall_appears_and_vanishes_without_trades_at_it() -> None:
    key = "sim-binance:ETHUSDT"
    start = BASE.start_ms + 60_000
    walls = ((start + 5_000, start + 15_000), (start + 20_000, start + 30_000), (start + 40_000, start + 50_000))
    spec = AnomalySpec("spoofing_like", (key,), start, walls[0][0], start + 60_000, 40.0, 5, walls=walls, side="bid")
    events, _ = _run(replace(BASE, anomalies=(spec,)))

    def wall_up(b: SimBook) -> bool:
        sizes = [float(q) for _, q in b.bids]
        return sizes[3] > 10 * float(np.median(sizes))

    flags = [(b.ts_ms, wall_up(b)) for b in _books(events, key)]
    on = [t for t, up in flags if up]
    assert on and all(any(a <= t < b for a, b in walls) for t in on)  # only inside a wall window
    assert len(on) >= 25  # and visible through them
    transitions = sum(1 for (_, a), (_, b) in itertools.pairwise(flags) if a != b)
    assert transitions >= 5  # appears and vanishes, repeatedly
    tops = [to_market(b) for b in _books(events, key)]
    assert all(isinstance(t, BookTop) for t in tops)
    imb_on = np.mean([t.imbalance for t, (_, up) in zip(tops, flags, strict=True) if isinstance(t, BookTop) and up])
    imb_off = np.mean(
        [t.imbalance for t, (_, up) in zip(tops, flags, strict=True) if isinstance(t, BookTop) and not up]
    )
    assert imb_on > imb_off + 0.2


def test_depeg_lifts_usdc_pair_against_usdt_twin() -> None:
    spec = plan_anomaly("depeg", BASE.start_ms + 60_000, BASE.instruments, seed=11, time_scale=0.25)
    assert spec is not None and spec.keys == ("sim-binance:BTCUSDC",)
    cfg = replace(BASE, duration_s=(spec.end_ms - BASE.start_ms) / 1000 + 60, emit_bars=False, anomalies=(spec,))
    events, sim = _run(cfg)
    usdc = dict(
        zip([b.ts_ms for b in _books(events, "sim-binance:BTCUSDC")], _mids(events, "sim-binance:BTCUSDC"), strict=True)
    )
    usdt = dict(
        zip([b.ts_ms for b in _books(events, "sim-binance:BTCUSDT")], _mids(events, "sim-binance:BTCUSDT"), strict=True)
    )
    basis = {t: usdc[t] / usdt[t] - 1 for t in usdc}
    before = [v for t, v in basis.items() if t < spec.start_ms]
    span = spec.end_ms - spec.start_ms
    hold = [v for t, v in basis.items() if spec.start_ms + 0.3 * span <= t < spec.start_ms + 0.6 * span]
    after = [v for t, v in basis.items() if t > spec.end_ms]
    assert max(abs(v) for v in before) < 0.003
    expected = 1 / (1 - spec.magnitude) - 1
    assert min(hold) > 0.8 * expected
    assert max(abs(v) for v in after) < 0.003
    assert [lab.key for lab in sim.labels] == ["sim-binance:BTCUSDC"]


def test_automatic_schedule_covers_every_kind_and_labels_round_trip(tmp_path: Path) -> None:
    keep = {"sim-binance:BTCUSDT", "sim-binance:BTCUSDC", "sim-binance:ALT1BTC"}
    cfg = replace(
        BASE,
        duration_s=3600,
        anomalies=None,
        first_anomaly_s=60,
        anomaly_every_s=600,
        anomaly_time_scale=0.2,
        emit_books=False,
        rate_scale=0.1,
        instruments=tuple(i for i in BASE.instruments if i.key in keep),
    )
    sim = MarketSimulator(cfg)
    for _ in sim.events():
        pass
    kinds = {lab.type for lab in sim.labels}
    assert kinds == {"pump_and_dump", "flash_crash", "wash_trading", "spoofing_like", "depeg"}
    assert all(lab.start_ms <= lab.onset_ms < lab.end_ms for lab in sim.labels)
    jpath, cpath = write_labels(sim.labels, tmp_path)
    assert read_labels(jpath) == sim.labels == read_labels(cpath)
    header = cpath.read_text().splitlines()[0]
    assert header.startswith("type,key,start_ms,end_ms,onset_ms")


def test_events_normalise_to_market_schemas() -> None:
    events, _ = _run(replace(BASE, duration_s=180))
    out = [to_market(e, ingest_ms=1) for e in events]
    kinds = collections.Counter(type(e).__name__ for e in out)
    assert kinds["Trade"] > 500 and kinds["BookTop"] > 100 and kinds["Bar"] == 2 * 7
    for e in out[:500]:
        from service.schemas.market import encode

        assert decode_market(encode(e)) == e
    bars = [e for e in events if isinstance(e, SimBar) and e.symbol == "BTCUSDT" and e.venue == "sim-binance"]
    tr = [t for t in _trades(events, "sim-binance:BTCUSDT") if bars[0].open_ms <= t.ts_ms <= bars[0].close_ms]
    assert bars[0].trades == len(tr)
    assert math.isclose(float(bars[0].volume), sum(float(t.size) for t in tr), rel_tol=1e-6)
    assert float(bars[0].high) == max(float(t.price) for t in tr)


async def test_realtime_source_catches_up_and_publishes_labels() -> None:
    """The runtime source on the in-process bus: backfill at high speed, a pump labelled within seconds."""
    settings = load_settings(
        sim_speed=300.0, sim_backfill_s=600.0, sim_first_anomaly_s=20.0, sim_anomaly_every_s=10_000.0
    )
    bus = MemoryBus(default_partitions=2)
    src = SimulatorSource(bus, settings)
    await src.start()
    try:
        consumer = bus.consumer([settings.topic_sim_labels, settings.topic_trades], group_id="t")
        await consumer.start()
        labels: list[SimLabel] = []
        trades = 0
        for _ in range(100):
            for rec in await consumer.getmany(timeout_ms=100):
                if rec.topic == settings.topic_sim_labels:
                    labels.append(SimLabel.model_validate_json(rec.value))
                else:
                    for ev in decode_market_records(rec.value):
                        assert isinstance(ev, Trade) and ev.event_time_ms <= ev.ingest_time_ms + 1
                        trades += 1
            if labels and trades > 200:
                break
            await asyncio.sleep(0.02)
        await consumer.stop()
        assert labels and labels[0].type == "pump_and_dump" and trades > 200
        assert src.health().ok
        assert src.sim is not None and src.sim.t_ms > src.cfg.start_ms + 20_000
    finally:
        await src.stop()
    await bus.close()


def test_target_time_never_passes_now() -> None:
    settings = load_settings(sim_speed=10.0, sim_backfill_s=100.0)
    src = SimulatorSource(MemoryBus(), settings)
    start = src.cfg.start_ms
    assert src.target_ms(1.0, start + 100_000) == start + 10_000  # 10x while behind
    assert src.target_ms(20.0, start + 120_000) == start + 120_000  # caught up: never in the future


@pytest.mark.parametrize("kind", ["pump_and_dump", "flash_crash", "wash_trading", "spoofing_like", "depeg"])
def test_plan_anomaly_is_seeded(kind: str) -> None:
    a = plan_anomaly(kind, BASE.start_ms, BASE.instruments, seed=42)  # type: ignore[arg-type]
    b = plan_anomaly(kind, BASE.start_ms, BASE.instruments, seed=42)  # type: ignore[arg-type]
    assert a == b and a is not None and a.start_ms == BASE.start_ms


def test_trades_csv_in_the_pump_file_layout_reads_back(tmp_path: Path) -> None:
    from service.ingest.readers import read_events
    from service.ingest.simulator import write_trades_csv

    events, _ = _run(replace(BASE, duration_s=120, emit_books=False))
    path = tmp_path / "sim-binance_BTCUSDT_trades.csv.gz"
    n = write_trades_csv(events, path, "sim-binance:BTCUSDT")
    back = [e for e in read_events(path) if isinstance(e, Trade)]
    sim = _trades(events, "sim-binance:BTCUSDT")
    assert n == len(back) == len(sim) > 100
    assert [(t.event_time_ms, str(t.price), str(t.size), t.side) for t in back] == [
        (s.ts_ms, s.price, s.size, s.side) for s in sim
    ]


@pytest.mark.slow
def test_rmad_run_source_simulator_serves_the_simulated_market(tmp_path: Path) -> None:
    """What `make demo` runs: the whole service offline on the simulator; ingest is ready and publishing, and the
    first pump's label is written within seconds at a high simulation speed."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import httpx

    from harness.servers import free_port

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RMAD_")}
    env.update(
        RMAD_PORT=str(port),
        RMAD_SIM_SPEED="200",
        RMAD_SIM_BACKFILL_S="1200",
        RMAD_SIM_FIRST_ANOMALY_S="30",
        RMAD_SIM_LABELS_DIR=str(tmp_path),
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "run", "--source", "simulator"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        detail, metrics = "", ""
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"rmad run exited: {proc.stderr.read() if proc.stderr else ''}")
            try:
                parts = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).json()["parts"]
                detail = parts["ingest.simulator"]["detail"] if parts["ingest.simulator"]["ok"] else ""
                metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
            except (httpx.HTTPError, KeyError, ValueError):
                time.sleep(0.3)
                continue
            if detail and 'venue="sim-binance"' in metrics and (tmp_path / "labels.json").exists():
                break
            time.sleep(0.3)
        assert detail, "the simulator part never reported ready"
        assert 'rmad_ingest_messages_total{type="trade",venue="sim-binance"}' in metrics
        labels = read_labels(tmp_path / "labels.json")
        assert labels and labels[0].type == "pump_and_dump"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
