"""Streaming pipeline: simulated ticks -> Kafka (Tansu) -> `rmad worker` -> scores, beside the one-hop broker baseline.

    .venv/bin/python -m bench.pipeline [--mode stress|live] [--rates 5000,20000] [--seconds 60] [--warmup-s 5]
                                       [--keys 200] [--model-dir models/artifacts] [--set RMAD_NAME=VALUE ...]
                                       [--json results.json]

Two modes:
- `stress`: every key at the same fixed tick rate, simulated time compressed so the whole market offers `--rates`
  ticks per wall second (its windows/s is that many times a live market's);
- `live`: `--keys` keys at realistic, uneven trade rates (a few liquid keys, a long tail of thin ones; about 1,000
  trades/s in all) in real time with 5 s bars, so the worker scores what a live market of that size closes
  (`--keys` / 5 windows per second). This is the rate the worker's CPU per tick is judged at.

Each run has two halves, one after the other, each on fresh topics and with its own processes:
1. the pipeline: a publisher process (MarketPublisher, as ingest runs it) -> `rmad worker` (its own process, Redis
   for centres, checkpoints and alert ids) -> a reader process on the scores topic. Tick-to-score is measured as a
   downstream consumer sees it: from the publish of the tick that closed a window (the first tick of its key at or
   after the window end) to the score arriving.
2. the baseline: the same publisher process, the same ticks, warm-up and pacing, read back by a plain consumer
   process on the trades topic: one hop through the broker and nothing else. Its topic has the same age as the
   pipeline's (the same records published, the same pause between warm-up and the measured part), because Tansu's
   fetch cost grows with the number of record batches a partition holds (docs/benchmarks.md).
Every Kafka setting (linger, batch size, fetch wait, poll size, partitions, packing) is the service's default unless
`--set` changes it, and one `--set` reaches every process of both halves alike.

Before the measured part, a warm-up segment fills every key's window (published unpaced) and the worker catches up.
The first `--warmup-s` seconds of the measured part are left out of the steady-state figures (by the closing tick's
publish time, so the figures do not depend on `--seconds`); the p99 over the first 15 s of the measured part is
printed on its own (a young topic). Printed per run: offered and sustained ticks/s, windows/s, tick->score p50/p99
beside the baseline's p50/p99, the worker's own `rmad_worker_end_to_end_seconds` p50/p99, the worker's CPU
microseconds per tick, the duration, the topic's age at the start and end of the measured part and the 1-minute load
average (other processes on this machine skew latencies; the CPU per tick is the steadier figure).
Servers: its own Tansu and redis-server unless RMAD_KAFKA_BOOTSTRAP_SERVERS / RMAD_REDIS_URL are set.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import collections
import contextlib
import datetime
import json
import math
import multiprocessing as mp
import os
import re
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import numpy as np

from harness.scenario import WorkerProcess, worker_env
from harness.servers import test_servers
from service.bus.factory import kafka_options, standard_topics
from service.bus.kafka import KafkaBus
from service.ingest.simulator import InstrumentSpec, MarketSimulator, SimConfig, to_market
from service.schemas.market import Trade
from service.settings import Settings, load_settings

STRESS_RATE_PER_KEY = 5.0  # taker orders per simulated second per key (sweeps print ~1.2 trades each)
LIVE_TOP_RATE = 40.0  # taker orders per second of the most liquid key in live mode
LIVE_TAIL = 0.8  # key i trades at LIVE_TOP_RATE / (i + 1) ** LIVE_TAIL orders per second
BAR_S = 5.0
FIRST_S = 15.0  # the young-topic figure: p99 over the first this many seconds of the measured part

# Settings the bench gives every service process unless --set says otherwise. None of them is a Kafka setting:
# the bench measures the service's own Kafka defaults.
BENCH_DEFAULTS = {
    "RMAD_SCORING_WARMUP_BARS": "0",  # score as soon as a window is full
    "RMAD_LOG_LEVEL": "WARNING",
    "RMAD_CROSSVENUE_ENABLED": "false",
    "RMAD_SCORING_CHECKPOINT_INTERVAL_MS": "1000",
}


# --------------------------------------------------------------------------------------------------- the market


@dataclass(frozen=True)
class Plan:
    """One measured run; the same plan drives the pipeline half and the baseline half."""

    mode: str  # "stress" | "live"
    rate: int  # stress: ticks per wall second offered; live: 0 (the market's own rate)
    seconds: float
    warmup_s: float
    keys: int
    window: int
    settings: dict[str, str] = field(default_factory=dict)  # RMAD_* for every process, --set applied

    def service_settings(self, **topics: str) -> Settings:
        values = {k.removeprefix("RMAD_").lower(): v for k, v in self.settings.items() if k.startswith("RMAD_")}
        return load_settings(**{**values, **topics})


def instruments(mode: str, n: int) -> tuple[InstrumentSpec, ...]:
    def rate(i: int) -> float:
        return STRESS_RATE_PER_KEY if mode == "stress" else LIVE_TOP_RATE / (i + 1) ** LIVE_TAIL

    return tuple(
        InstrumentSpec("bench", f"S{i:04d}USDT", "BTC", 0.01, 0.00001, rate(i), 0.05, peg="USDT") for i in range(n)
    )


def market(mode: str, keys: int, sim_seconds: float, seed: int = 1) -> list[Trade]:
    cfg = SimConfig(
        seed=seed,
        duration_s=sim_seconds,
        emit_books=False,
        emit_bars=False,
        fixed_rates=True,
        instruments=instruments(mode, keys),
        anomalies=(),
    )
    return [t for t in (to_market(e) for e in MarketSimulator(cfg).events()) if isinstance(t, Trade)]


@dataclass
class Schedule:
    """The ticks of one run with their publish schedule: event times shifted onto the wall clock, and how many
    milliseconds after the start of the measured part each measured tick is due."""

    trades: list[Trade]
    n_warm: int
    due_ms: np.ndarray  # per measured tick (index - n_warm)

    @classmethod
    def build(cls, plan: Plan) -> Schedule:
        warm_sim = (plan.window + 2) * BAR_S
        natural = sum(s.rate_hz for s in instruments(plan.mode, plan.keys)) * 1.2  # trades/s, for sizing
        speed = 1.0 if plan.mode == "live" else plan.rate / natural
        raw = market(plan.mode, plan.keys, warm_sim + (plan.seconds + 2 * BAR_S) * speed)
        t_first = raw[0].event_time_ms
        n_warm = bisect.bisect_left([t.event_time_ms for t in raw], t_first + int(warm_sim * 1000))
        if plan.mode == "stress":  # pace by count; every event time in the past (replayed history)
            speed = plan.rate / (len(raw) / (raw[-1].event_time_ms - t_first) * 1000)
            shift = int(time.time() * 1000) - raw[-1].event_time_ms
            due = np.arange(len(raw) - n_warm, dtype=np.float64) * 1000.0 / plan.rate
        else:  # pace by event time: the measured part is the market as it happens
            shift = int(time.time() * 1000) - raw[n_warm].event_time_ms
            due = np.asarray([t.event_time_ms - raw[n_warm].event_time_ms for t in raw[n_warm:]], dtype=np.float64)
        shifted = [replace_time(t, t.event_time_ms + shift) for t in raw]
        return cls(shifted, n_warm, due)


def replace_time(t: Trade, event_ms: int) -> Trade:
    import msgspec

    return msgspec.structs.replace(t, event_time_ms=event_ms, ingest_time_ms=event_ms)


# --------------------------------------------------------------------------------------------------- processes


def _publisher_main(plan: Plan, kafka: str, topics: dict[str, str], out: str, warm_done: Any, go: Any) -> None:
    """The publisher process: warm-up unpaced, then (on `go`) the measured part paced on the wall clock. Writes the
    publish time of every tick (ms, 0 = not published) and its key and event time to `out` (.npz)."""
    asyncio.run(_publish(plan, kafka, topics, Path(out), warm_done, go))


async def _publish(plan: Plan, kafka: str, topics: dict[str, str], out: Path, warm_done: Any, go: Any) -> None:
    import msgspec

    from service.ingest.publisher import MarketPublisher

    s = plan.service_settings(kafka_bootstrap_servers=kafka, **topics)
    sched = Schedule.build(plan)
    events, n_warm = sched.trades, sched.n_warm
    pub_ms = np.zeros(len(events), dtype=np.float64)
    bus = KafkaBus(kafka_options(s))
    p = bus.producer()
    await p.start()
    pub = MarketPublisher(p, s)
    replace_ = msgspec.structs.replace
    try:
        for i in range(n_warm):
            now = int(time.time() * 1000)
            pub_ms[i] = now
            await pub.publish(replace_(events[i], ingest_time_ms=now))
        await pub.flush()
        warm_done.set()
        await asyncio.to_thread(go.wait)
        t0 = time.monotonic()
        t0_ms = time.time() * 1000
        i, n = n_warm, len(events)
        due = sched.due_ms
        while i < n and time.monotonic() - t0 < plan.seconds:
            hi = min(n, n_warm + bisect.bisect_right(due, (time.monotonic() - t0) * 1000))
            if hi > i:
                now = int(time.time() * 1000)
                for j in range(i, hi):
                    pub_ms[j] = now
                    await pub.publish(replace_(events[j], ingest_time_ms=now))
                i = hi
            await asyncio.sleep(0.005)
        await pub.flush()
        t_pub = time.monotonic() - t0
    finally:
        await p.stop()
        await bus.close()
    keys = sorted({e.key for e in events})
    kix = {k: n for n, k in enumerate(keys)}
    np.savez(
        out,
        pub_ms=pub_ms,
        key=np.asarray([kix[e.key] for e in events], dtype=np.int32),
        event_ms=np.asarray([e.event_time_ms for e in events], dtype=np.int64),
        keys=np.asarray(keys),
        n_warm=n_warm,
        t0_ms=t0_ms,
        t_pub=t_pub,
        n_pub=i - n_warm,
    )


def _reader_main(plan: Plan, kafka: str, topic: str, kind: str, out: str, ready: Any, stop: Any) -> None:
    """A plain consumer process: `scores` -> (key, window end, receive ms); `trades` -> (publish ms, receive ms)
    of every trade (packed or single records alike)."""
    asyncio.run(_read(plan, kafka, topic, kind, Path(out), ready, stop))


async def _read(plan: Plan, kafka: str, topic: str, kind: str, out: Path, ready: Any, stop: Any) -> None:
    import orjson

    s = plan.service_settings(kafka_bootstrap_servers=kafka)
    bus = KafkaBus(kafka_options(s))
    c = bus.consumer([topic], f"bench-{uuid.uuid4().hex[:8]}", fetch_max_wait_ms=s.scoring_fetch_max_wait_ms)
    await c.start()
    keys: list[str] = []
    a: list[float] = []
    b: list[float] = []
    try:
        while not c.assignment():
            await c.getmany(timeout_ms=100)
        ready.set()
        while not stop.is_set():
            recs = await c.getmany(timeout_ms=100, max_records=s.scoring_poll_records)
            now = time.time() * 1000
            for r in recs:
                if kind == "scores":
                    x = orjson.loads(r.value)
                    keys.append(x["key"])
                    a.append(x["window_end_ms"])
                    b.append(now)
                else:
                    x = orjson.loads(r.value)
                    for e in x.get("trades") or (x,):  # packed or single records
                        a.append(e["ingest_time_ms"])
                        b.append(now)
    finally:
        await c.stop()
        await bus.close()
    np.savez(out, keys=np.asarray(keys), a=np.asarray(a, dtype=np.float64), b=np.asarray(b, dtype=np.float64))


def _spawn(target: Any, *args: Any) -> BaseProcess:
    p = mp.get_context("spawn").Process(target=target, args=args, daemon=True)
    p.start()
    return p


# --------------------------------------------------------------------------------------------------- figures


@dataclass
class Latency:
    p50: float
    p99: float
    first_p99: float  # over the first FIRST_S seconds of the measured part
    samples: int


@dataclass
class Result:
    mode: str
    rate: int
    seconds: float
    warmup_s: float
    offered: float
    sustained: float
    windows_per_s: float
    tick_to_score: Latency
    one_hop: Latency | None
    worker_p50: float
    worker_p99: float
    cpu_us_per_tick: float
    topic_age_start_s: float
    topic_age_end_s: float
    records_before: int
    load: tuple[float, float]
    settings: dict[str, str]


def latency(pub_ms: np.ndarray, lat_s: np.ndarray, t0_ms: float, warmup_s: float) -> Latency:
    """Quantiles of `lat_s` over samples whose closing tick was published at least `warmup_s` after `t0_ms`, and the
    p99 over the first FIRST_S seconds."""
    rel = (pub_ms - t0_ms) / 1000
    steady = lat_s[rel >= warmup_s]
    first = lat_s[(rel >= 0) & (rel < FIRST_S)]

    def q(x: np.ndarray, p: float) -> float:
        return float(np.percentile(x, p)) if len(x) else float("nan")

    return Latency(q(steady, 50), q(steady, 99), q(first, 99), len(steady))


def _hist_quantiles(text: str, name: str, qs: tuple[float, ...], minus: str = "") -> list[float]:
    """Quantiles from a Prometheus histogram's cumulative buckets (linear inside a bucket), of the observations
    made between the scrape `minus` and the scrape `text`."""
    buckets: dict[float, float] = collections.defaultdict(float)
    for sign, body in ((1.0, text), (-1.0, minus)):
        for m in re.finditer(rf'^{name}_bucket{{[^}}]*le="([^"]+)"[^}}]*}} ([0-9.e+]+)$', body, re.M):
            le = float("inf") if m.group(1) == "+Inf" else float(m.group(1))
            buckets[le] += sign * float(m.group(2))
    if not buckets:
        return [float("nan")] * len(qs)
    edges = sorted(buckets)
    total = buckets[edges[-1]]
    out = []
    for q in qs:
        want, prev_le, prev_c = q * total, 0.0, 0.0
        val = float("nan")
        for le in edges:
            c = buckets[le]
            if c >= want:
                val = (
                    prev_le
                    if le == float("inf")
                    else prev_le + (le - prev_le) * (want - prev_c) / max(c - prev_c, 1e-9)
                )
                break
            prev_le, prev_c = le, c
        out.append(val)
    return out


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc), 0 elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def _get(port: int, path: str) -> str:
    """The body of a GET to a local service process (also of a 503: /readyz explains itself), "" if none."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return str(r.read().decode())
    except urllib.error.HTTPError as exc:
        return str(exc.read().decode(errors="replace"))
    except OSError:
        return ""


def _scrape(port: int) -> str:
    """A service process's /metrics text ("" when it does not answer)."""
    return _get(port, "/metrics")


def _wait(pred: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.1)


# --------------------------------------------------------------------------------------------------- one run


def _topics(unique: str) -> dict[str, str]:
    return {f"topic_{n}": f"{n}-{unique}" for n in ("trades", "books", "bars", "chain", "scores", "alerts")} | {
        "topic_dead_letters": f"dead_letters-{unique}"
    }


def _create_topics(plan: Plan, kafka: str, topics: dict[str, str]) -> float:
    async def go() -> None:
        s = plan.service_settings(kafka_bootstrap_servers=kafka, **topics)
        bus = KafkaBus(kafka_options(s))
        try:
            await bus.create_topics(standard_topics(s))
        finally:
            await bus.close()

    asyncio.run(go())
    return time.time()


def run_pipeline(plan: Plan, kafka: str, redis: str, model_dir: Path, tmp: Path) -> tuple[Result, float]:
    """The pipeline half; returns the result (one_hop None) and the seconds between warm-up and go."""
    unique = uuid.uuid4().hex[:8]
    topics = _topics(unique)
    created = _create_topics(plan, kafka, topics)
    s = plan.service_settings(kafka_bootstrap_servers=kafka, **topics)
    env = {
        k: v
        for k, v in worker_env(unique, kafka, redis, model_dir, partitions=s.topic_partitions).items()
        if not k.startswith("RMAD_KAFKA_") or k == "RMAD_KAFKA_BOOTSTRAP_SERVERS"  # the service's Kafka defaults
    }
    env.update({f"RMAD_{k.upper()}": v for k, v in topics.items()})
    env.update(plan.settings)
    ctx = mp.get_context("spawn")
    warm_done, go, ready, stop = ctx.Event(), ctx.Event(), ctx.Event(), ctx.Event()
    w = WorkerProcess(env, tmp / f"worker-{unique}.log")
    pub_out, read_out = tmp / f"pub-{unique}.npz", tmp / f"scores-{unique}.npz"
    procs: list[BaseProcess] = []
    try:
        procs.append(_spawn(_reader_main, plan, kafka, topics["topic_scores"], "scores", str(read_out), ready, stop))
        n_parts = (3 if s.spoofing_enabled else 2) * s.topic_partitions  # trades, bars (, books)
        _wait(lambda: _owned(w.port) >= n_parts, 120, "the worker's partitions")
        _wait(ready.is_set, 60, "the scores reader")
        procs.append(_spawn(_publisher_main, plan, kafka, topics, str(pub_out), warm_done, go))
        _wait(warm_done.is_set, 600, "the warm-up publish")
        t_warm = time.monotonic()
        _wait(lambda: _scored(w.port) >= plan.keys, 300, "the first windows")
        _quiet(w.port, 2.0)  # caught up with the warm-up
        wait_s = time.monotonic() - t_warm
        before, cpu0, load0 = _get(w.port, "/metrics"), _cpu_s(w.proc.pid), os.getloadavg()[0]
        go.set()
        t_go = time.monotonic()
        procs[1].join(plan.seconds + 120)
        t_last = _quiet(w.port, 3.0)  # drained: the last window scored
        after, cpu = _get(w.port, "/metrics"), _cpu_s(w.proc.pid) - cpu0
        load1 = os.getloadavg()[0]
    finally:
        stop.set()
        for p in procs:
            p.join(30)
            if p.is_alive():  # a publisher still waiting for `go` after a failure
                p.terminate()
        w.stop()
    pub = np.load(pub_out)
    got = np.load(read_out)
    t0_ms, t_pub, n_pub = float(pub["t0_ms"]), float(pub["t_pub"]), int(pub["n_pub"])
    # the tick that closed each window: the first tick of its key at or after the window end
    keys = list(pub["keys"])
    kix = {k: i for i, k in enumerate(keys)}
    by_key: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    order = np.argsort(pub["key"], kind="stable")
    bounds = np.searchsorted(pub["key"][order], np.arange(len(keys) + 1))
    for k in range(len(keys)):
        idx = order[bounds[k] : bounds[k + 1]]
        by_key[k] = (pub["event_ms"][idx], idx)
    pubs, lats = [], []
    for key, end, recv in zip(got["keys"], got["a"], got["b"], strict=True):
        if str(key) not in kix:
            continue
        ts, idx = by_key[kix[str(key)]]
        j = int(np.searchsorted(ts, end, side="left"))
        if j >= len(ts):
            continue  # closed by the quiet-key sweep, not by a tick
        tick = int(idx[j])
        if tick < int(pub["n_warm"]) or pub["pub_ms"][tick] == 0:
            continue
        pubs.append(pub["pub_ms"][tick])
        lats.append((recv - pub["pub_ms"][tick]) / 1000)
    span = max(t_last - t_go, t_pub)
    measured = int(np.sum(got["b"] >= t0_ms))
    wp50, wp99 = _hist_quantiles(after, "rmad_worker_end_to_end_seconds", (0.5, 0.99), before)
    res = Result(
        mode=plan.mode,
        rate=plan.rate,
        seconds=plan.seconds,
        warmup_s=plan.warmup_s,
        offered=n_pub / t_pub,
        sustained=n_pub / span,
        windows_per_s=measured / span,
        tick_to_score=latency(np.asarray(pubs), np.asarray(lats), t0_ms, plan.warmup_s),
        one_hop=None,
        worker_p50=wp50,
        worker_p99=wp99,
        cpu_us_per_tick=cpu / max(n_pub, 1) * 1e6,
        topic_age_start_s=t0_ms / 1000 - created,
        topic_age_end_s=t0_ms / 1000 + t_pub - created,
        records_before=int(pub["n_warm"]),
        load=(load0, load1),
        settings=dict(plan.settings),
    )
    return res, wait_s


def _owned(port: int) -> int:
    """How many partitions the worker says it owns (its /readyz detail), 0 before it has joined."""
    m = re.search(r"(\d+) partitions", _get(port, "/readyz"))
    return int(m.group(1)) if m else 0


def _windows(port: int) -> str:
    """The worker's windows-scored counters, as text (compared, not parsed)."""
    return "|".join(re.findall(r"^rmad_worker_windows_scored_total{[^}]*} ([0-9.e+]+)$", _get(port, "/metrics"), re.M))


def _scored(port: int) -> float:
    return sum(float(x) for x in _windows(port).split("|") if x)


def _quiet(port: int, quiet_s: float) -> float:
    """Wait until the worker has scored no window for `quiet_s`; returns the monotonic time of its last change."""
    last, since = _windows(port), time.monotonic()
    while time.monotonic() - since < quiet_s:
        time.sleep(0.2)
        now = _windows(port)
        if now != last:
            last, since = now, time.monotonic()
    return since


def run_baseline(plan: Plan, kafka: str, wait_s: float, tmp: Path) -> Latency:
    """The baseline half: the same publisher process and pause on a fresh topic, a plain consumer process."""
    unique = uuid.uuid4().hex[:8]
    topics = _topics(unique)
    _create_topics(plan, kafka, topics)
    ctx = mp.get_context("spawn")
    warm_done, go, ready, stop = ctx.Event(), ctx.Event(), ctx.Event(), ctx.Event()
    pub_out, read_out = tmp / f"floor-pub-{unique}.npz", tmp / f"floor-{unique}.npz"
    reader = _spawn(_reader_main, plan, kafka, topics["topic_trades"], "trades", str(read_out), ready, stop)
    pub: BaseProcess | None = None
    try:
        _wait(ready.is_set, 60, "the baseline reader")
        pub = _spawn(_publisher_main, plan, kafka, topics, str(pub_out), warm_done, go)
        _wait(warm_done.is_set, 600, "the warm-up publish")
        time.sleep(wait_s)  # the same pause the pipeline's worker took to catch up: the same topic age
        go.set()
        pub.join(plan.seconds + 120)
        time.sleep(3.0)
    finally:
        stop.set()
        reader.join(30)
        if pub is not None and pub.is_alive():
            pub.terminate()
    t0_ms = float(np.load(pub_out)["t0_ms"])
    got = np.load(read_out)
    return latency(got["a"], (got["b"] - got["a"]) / 1000, t0_ms, plan.warmup_s)


# --------------------------------------------------------------------------------------------------- main


def _tiny_model(root: Path, window: int) -> Path:
    from harness.modelgen import export_tiny_model

    export_tiny_model(root, window=window, alert=1e9, created_ms=1)
    return root


def _fmt_row(r: Result) -> str:
    t, h = r.tick_to_score, r.one_hop or Latency(math.nan, math.nan, math.nan, 0)
    rate = "live" if r.mode == "live" else f"{r.rate:,}"
    return (
        f"{rate:>8} {r.offered:>9,.0f} {r.sustained:>9,.0f} {r.windows_per_s:>8,.0f} "
        f"{t.p50 * 1000:>7.1f} {t.p99 * 1000:>7.1f} {t.first_p99 * 1000:>9.1f} "
        f"{h.p50 * 1000:>7.1f} {h.p99 * 1000:>7.1f} {h.first_p99 * 1000:>9.1f} "
        f"{r.worker_p50 * 1000:>7.1f} {r.worker_p99 * 1000:>7.1f} {r.cpu_us_per_tick:>7.1f} "
        f"{r.seconds:>5.0f} {r.topic_age_start_s:>5.0f}-{r.topic_age_end_s:<5.0f} "
        f"{r.load[0]:>4.1f}-{r.load[1]:<4.1f}"
    )


HEADER = (
    f"{'rate':>8} {'offered':>9} {'sustain':>9} {'win/s':>8} "
    f"{'t2s p50':>7} {'t2s p99':>7} {'p99 <15s':>9} {'hop p50':>7} {'hop p99':>7} {'p99 <15s':>9} "
    f"{'wrk p50':>7} {'wrk p99':>7} {'µs/tick':>7} {'dur s':>5} {'age s':>11} {'load':>9}"
)


def amain(args: argparse.Namespace) -> list[Result]:
    sets = {k: v for k, v in args.set}
    settings = {**BENCH_DEFAULTS, **sets}
    results: list[Result] = []
    with contextlib.ExitStack() as stack:
        kafka = os.environ.get("RMAD_KAFKA_BOOTSTRAP_SERVERS")
        redis = os.environ.get("RMAD_REDIS_URL")
        if not kafka or not redis:
            servers = stack.enter_context(test_servers())
            kafka, redis = servers.kafka_bootstrap, servers.redis_url
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        model_dir = args.model_dir.resolve() if args.model_dir else _tiny_model(tmp / "models", args.window)
        from service.scoring.manifest import load_manifest

        versions = sorted((model_dir / "market").iterdir())
        window = load_manifest(versions[-1]).window
        probe = Plan(args.mode, 0, args.seconds, args.warmup_s, args.keys, window, settings)
        s = probe.service_settings()
        print(
            f"pipeline ({args.mode}): {args.keys} keys, 5 s bars, window {window} bars, model {model_dir}; "
            f"{os.cpu_count()} CPUs shared by broker, Redis, publisher, worker and reader; "
            f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC"
        )
        print(
            f"kafka: linger {s.kafka_linger_ms} ms, batch {s.kafka_max_batch_bytes} B, {s.topic_partitions} "
            f"partitions, worker fetch wait {s.scoring_fetch_max_wait_ms} ms, poll {s.scoring_poll_records} records; "
            f"--set {sets or '{}'}"
        )
        print(HEADER)
        rates = [0] if args.mode == "live" else args.rates
        for rate in rates:
            plan = replace(probe, rate=rate)
            r, wait_s = run_pipeline(plan, kafka, redis, model_dir, tmp)
            if args.floor:
                r.one_hop = run_baseline(plan, kafka, wait_s, tmp)
            results.append(r)
            print(_fmt_row(r), flush=True)
        print(
            "ms except where named. t2s: tick->score (publish of the closing tick -> score read by a consumer); hop: "
            "the baseline, the same ticks through the broker to a plain consumer on a topic of the same age; "
            f"p50/p99 leave out the first {args.warmup_s:g} s, 'p99 <15s' is the first 15 s alone; wrk: the worker's "
            "own ingest->score histogram; µs/tick: worker CPU per tick (1e6 / it = ticks/s on one core); "
            "age: the trades topic's age (s) at the start and end of the measured part; load: 1-minute load average "
            "before and after."
        )
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=1, default=float))
        print(f"results written to {args.json}")
    return results


def add_set_option(ap: argparse.ArgumentParser, help_text: str) -> None:
    """`--set RMAD_NAME=VALUE` (repeatable): settings passed to the service processes a bench starts."""
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        type=_set_pair,
        metavar="RMAD_NAME=VALUE",
        help=help_text,
    )


def _set_pair(kv: str) -> tuple[str, str]:
    name, eq, value = kv.partition("=")
    if not eq or not name.startswith("RMAD_"):
        raise argparse.ArgumentTypeError(f"expected RMAD_NAME=VALUE, got {kv!r}")
    return name, value


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--mode", choices=("stress", "live"), default="stress")
    ap.add_argument("--rates", type=lambda v: [int(x) for x in v.split(",")], default=[5000, 20000])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--warmup-s", type=float, default=5.0, help="seconds of the measured part left out of p50/p99")
    ap.add_argument("--keys", type=int, default=200)
    ap.add_argument("--window", type=int, default=16, help="window of the test model when no --model-dir")
    ap.add_argument("--model-dir", type=Path, default=None, help="a models root holding market/<version>/")
    ap.add_argument("--no-floor", dest="floor", action="store_false", help="skip the one-hop broker baseline")
    ap.add_argument("--json", type=Path, default=None, help="write the results here as JSON")
    add_set_option(ap, "a setting for every process of the run (repeatable), e.g. --set RMAD_KAFKA_LINGER_MS=2")
    amain(ap.parse_args(argv))


if __name__ == "__main__":
    main()
