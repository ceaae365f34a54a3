"""A labelled simulated market, a test model calibrated on a normal run of it, and helpers to run real workers.

Why calibrate here: the test model is deliberately simple (distance of scaled features from the training median),
so its scaler and threshold are fitted the way training would: on a market without anomalies. The threshold is
1.5 x the highest score of that normal run, so any alert in the labelled run is the model seeing something the
normal market never showed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import orjson

from harness.modelgen import export_tiny_model
from harness.servers import free_port
from service.bus.base import Bus
from service.features.scaling import RobustScaler
from service.ingest.simulator import (
    DEFAULT_INSTRUMENTS,
    MarketSimulator,
    SimConfig,
    SimLabel,
    plan_anomaly,
    to_market,
)
from service.schemas.market import PublishedMarketEvent
from service.scoring.alerts import AlertPolicy
from service.scoring.crossvenue import CrossVenueMonitor
from service.scoring.offline import OfflineRow, score_events
from service.scoring.registry import ModelRegistry
from service.scoring.scorer import Scorer
from service.scoring.windows import WindowStore, apply_event

ROOT = Path(__file__).resolve().parents[1]  # the repository root (harness/ is one level down)
WINDOW = 8
WARMUP = 60
INTERVAL_MS = 5000
INSTRUMENTS = tuple(i for i in DEFAULT_INSTRUMENTS if not i.symbol.startswith("ALT"))  # liquid pairs only


@dataclass
class Scenario:
    events: list[PublishedMarketEvent]
    labels: list[SimLabel]
    model_dir: Path
    threshold: float
    offline: list[OfflineRow]
    max_event_ms: int
    center: list[float] = field(default_factory=list)
    scale: list[float] = field(default_factory=list)

    def expected_windows(self, margin_bars: int = 3) -> set[tuple[str, int]]:
        """Windows the stream must produce: all the offline ones except the last bars the stream cannot close."""
        cut = self.max_event_ms - margin_bars * INTERVAL_MS
        return {(r.key, r.timestamp) for r in self.offline if r.timestamp <= cut}


def labelled_config(duration_s: float = 900.0, seed: int = 11, spoofing: bool = False, wash: bool = False) -> SimConfig:
    """Pump (binance ETHUSDT), flash crash (bybit BTCUSDT), USDC de-peg; with `spoofing`, books are emitted and
    bybit ETHUSDT gets pulled walls; with `wash`, binance BTCUSDT gets wash-trading pairs."""
    base = SimConfig(seed=seed, duration_s=duration_s, emit_books=spoofing, instruments=INSTRUMENTS, rate_scale=0.5)
    t0 = base.start_ms
    eth_bybit = [i for i in INSTRUMENTS if i.key == "sim-bybit:ETHUSDT"]
    btc_binance = [i for i in INSTRUMENTS if i.key == "sim-binance:BTCUSDT"]
    plans = [
        *([plan_anomaly("spoofing_like", t0 + 480_000, eth_bybit, 4, 1.0)] if spoofing else []),
        *([plan_anomaly("wash_trading", t0 + 350_000, btc_binance, 5, 0.5)] if wash else []),
        plan_anomaly("pump_and_dump", t0 + 330_000, [i for i in INSTRUMENTS if i.key == "sim-binance:ETHUSDT"], 1, 0.2),
        plan_anomaly("flash_crash", t0 + 420_000, [i for i in INSTRUMENTS if i.key == "sim-bybit:BTCUSDT"], 2, 0.5),
        plan_anomaly("depeg", t0 + 560_000, INSTRUMENTS, 3, 0.3),
    ]
    return replace(base, anomalies=tuple(p for p in plans if p is not None))


def simulate(cfg: SimConfig) -> tuple[list[PublishedMarketEvent], list[SimLabel]]:
    sim = MarketSimulator(cfg)
    events = [to_market(e) for e in sim.events()]
    return events, list(sim.labels)


def build_scenario(root: Path, duration_s: float = 900.0, spoofing: bool = False, wash: bool = False) -> Scenario:
    normal_cfg = replace(labelled_config(duration_s, seed=5), anomalies=())
    normal, _ = simulate(normal_cfg)
    store = WindowStore(WINDOW, 27, INTERVAL_MS, warmup_bars=WARMUP)
    rows = [w.features[-1] for i, e in enumerate(normal) for w in apply_event(store, e, offset=i) if w.scorable]
    sc = RobustScaler.fit(np.stack(rows))
    center, scale = sc.center.tolist(), sc.scale.tolist()
    probe = root / "probe"
    export_tiny_model(probe, center=center, scale=scale, alert=1e9, window=WINDOW)
    reg = ModelRegistry(probe, reload_interval_s=0)
    normal_max = max(
        r.score
        for r, _ in score_events(iter(normal), reg.get("market"), Scorer(reg), policy=AlertPolicy(), warmup_bars=WARMUP)
    )
    threshold = 1.5 * normal_max
    model_dir = root / "models"
    export_tiny_model(model_dir, center=center, scale=scale, alert=threshold, window=WINDOW, created_ms=1)
    events, labels = simulate(labelled_config(duration_s, spoofing=spoofing, wash=wash))
    reg = ModelRegistry(model_dir, reload_interval_s=0)
    xv = CrossVenueMonitor(z=8.0, min_bps=100.0, half_life_bars=360.0, warmup_bars=30)  # as in worker_env
    model = reg.get("market")
    offline = [
        r
        for r, _ in score_events(
            iter(events), model, Scorer(reg), policy=AlertPolicy(), warmup_bars=WARMUP, crossvenue=xv
        )
    ]
    max_ms = max(e.event_time_ms for e in events)
    return Scenario(events, labels, model_dir, threshold, offline, max_ms, center, scale)


def worker_env(
    unique: str, kafka: str, redis: str, model_dir: Path, partitions: int = 4, **extra: str
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RMAD_")}
    env.update(
        {
            "PYTHONPATH": str(ROOT),
            "RMAD_ENV": "test",
            "RMAD_LOG_LEVEL": "INFO",
            "RMAD_KAFKA_BOOTSTRAP_SERVERS": kafka,
            "RMAD_REDIS_URL": redis,
            "RMAD_REDIS_KEY_PREFIX": f"t{unique}:",
            "RMAD_TOPIC_PARTITIONS": str(partitions),
            "RMAD_KAFKA_SESSION_TIMEOUT_MS": "6000",
            "RMAD_KAFKA_HEARTBEAT_INTERVAL_MS": "500",
            "RMAD_KAFKA_LINGER_MS": "2",
            "RMAD_MODEL_DIR": str(model_dir),
            "RMAD_MODEL_RELOAD_INTERVAL_S": "0",
            "RMAD_SCORING_GROUP_ID": f"workers-{unique}",
            "RMAD_SCORING_WARMUP_BARS": str(WARMUP),
            "RMAD_SCORING_CHECKPOINT_INTERVAL_MS": "300",
            "RMAD_SHUTDOWN_GRACE_S": "5",
            "RMAD_CROSSVENUE_WARMUP_BARS": "30",
            "RMAD_CROSSVENUE_MIN_BPS": "100",
        }
    )
    for name in ("trades", "books", "bars", "chain", "scores", "alerts", "dead_letters"):
        env[f"RMAD_TOPIC_{name.upper()}"] = f"{name}-{unique}"
    env.update(extra)
    return env


class WorkerProcess:
    """`rmad worker` as a child process, stopped or SIGKILLed by PID."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        self._fh = log.open("ab")
        self.port = free_port()
        env = {**env, "RMAD_HOST": "127.0.0.1", "RMAD_PORT": str(self.port)}  # every role serves /healthz
        prof = os.environ.get("RMAD_WORKER_PROFILE")  # a path: run the worker under cProfile (bench diagnosis)
        pre = ["-m", "cProfile", "-o", prof] if prof else []
        self.proc = subprocess.Popen(
            [sys.executable, *pre, "-m", "service.cli", "worker"], env=env, cwd=ROOT, stdout=self._fh, stderr=self._fh
        )

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self._fh.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        with contextlib.suppress(Exception):
            self._fh.close()

    def text(self) -> str:
        return self.log.read_text(errors="replace")


@dataclass
class Collected:
    scores: list[dict[str, object]] = field(default_factory=list)
    alerts: list[dict[str, object]] = field(default_factory=list)

    def windows(self) -> set[tuple[str, int]]:
        return {(str(s["key"]), int(str(s["window_end_ms"]))) for s in self.scores}


async def collect(bus: Bus, topics: tuple[str, str], out: Collected, stop: asyncio.Event, group: str) -> None:
    """Read the scores and alerts topics from the start until `stop` is set."""
    c = bus.consumer(list(topics), group, auto_offset_reset="earliest")
    await c.start()
    try:
        while not stop.is_set():
            for r in await c.getmany(timeout_ms=200):
                (out.scores if r.topic == topics[0] else out.alerts).append(orjson.loads(r.value))
    finally:
        await c.stop()


async def wait_for(pred: object, timeout_s: float, what: str) -> None:
    assert callable(pred)
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.2)


def stamped(events: list[PublishedMarketEvent]) -> Iterator[PublishedMarketEvent]:
    """The events with the real publish time as ingest time (what ingest would stamp)."""
    import msgspec

    for e in events:
        yield msgspec.structs.replace(e, ingest_time_ms=int(time.time() * 1000))
