"""Streaming pipeline: replayed ticks at fixed rates -> Kafka (Tansu) -> `rmad worker` -> scores, with Redis centres.

    .venv/bin/python -m bench.pipeline [--rates 5000,20000,50000] [--seconds 15] [--keys 200] [--model-dir DIR]

For each rate the benchmark publishes a simulated market (fixed tick rates, `--keys` symbols) through
MarketPublisher into the broker at that many trades per second (wall clock), with a real `rmad worker` process
consuming it (its own process, as deployed: Redis for centres, checkpoints and alert ids), and reads the scores
topic back. It prints:
- offered and sustained ticks/s (sustained = ticks the worker consumed over the time it took, until the last score);
- windows/s scored;
- tick-to-score seconds p50 / p99 as a downstream consumer sees them: from the publish of the tick that closed a
  window (the first tick of its key at or after the window end) to the score arriving on the scores topic;
- the worker's own `rmad_worker_end_to_end_seconds` p50 / p99 (closing tick's ingest time -> score produced),
  interpolated from its /metrics histogram.
- the worker's CPU microseconds per tick over the measured part (its capacity on one core, independent of how
  busy the machine is) and the load average (other processes on the machine skew the latencies).
Before measuring, a warm-up segment fills every key's window (unpaced) and the worker catches up, so the measured
part is steady state. Everything (broker, Redis, publisher, worker, reader) shares this machine's cores.
Servers: its own Tansu and redis-server unless RMAD_KAFKA_BOOTSTRAP_SERVERS / RMAD_REDIS_URL are set.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import collections
import contextlib
import os
import re
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec
import numpy as np
import orjson

from harness.scenario import WorkerProcess, worker_env
from harness.servers import test_servers
from service.bus.factory import standard_topics
from service.bus.kafka import KafkaBus, KafkaOptions
from service.ingest.publisher import MarketPublisher
from service.ingest.simulator import InstrumentSpec, MarketSimulator, SimConfig, to_market
from service.schemas.market import Trade
from service.settings import load_settings

NATURAL_RATE_PER_KEY = 5.0  # taker orders per simulated second per key (sweeps print a few trades each)


def instruments(n: int) -> tuple[InstrumentSpec, ...]:
    return tuple(
        InstrumentSpec("bench", f"S{i:04d}USDT", "BTC", 0.01, 0.00001, NATURAL_RATE_PER_KEY, 0.05, peg="USDT")
        for i in range(n)
    )


def trades(keys: int, sim_seconds: float, seed: int = 1) -> list[Trade]:
    cfg = SimConfig(
        seed=seed,
        duration_s=sim_seconds,
        emit_books=False,
        emit_bars=False,
        fixed_rates=True,
        instruments=instruments(keys),
        anomalies=(),
    )
    out = [to_market(e) for e in MarketSimulator(cfg).events()]
    return [e for e in out if isinstance(e, Trade)]


@dataclass
class Result:
    rate: int
    offered: float
    sustained: float
    windows_per_s: float
    p50: float
    p99: float
    worker_p50: float
    worker_p99: float
    scores: int
    cpu_us_per_tick: float


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


def _scrape(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            return str(r.read().decode())
    except OSError:
        return ""


def _stamp(events: list[Trade], start: int, stop: int, shift_ms: int) -> Iterator[Trade]:
    now = int(time.time() * 1000)
    for e in events[start:stop]:
        yield msgspec.structs.replace(e, event_time_ms=e.event_time_ms + shift_ms, ingest_time_ms=now)


async def run_rate(
    rate: int,
    seconds: float,
    keys: int,
    kafka: str,
    redis: str,
    model_dir: Path,
    window: int,
    tmp: Path,
    worker_settings: dict[str, str] | None = None,
) -> Result:
    unique = uuid.uuid4().hex[:8]
    env = worker_env(
        unique,
        kafka,
        redis,
        model_dir,
        partitions=6,
        RMAD_SCORING_WARMUP_BARS="0",
        RMAD_LOG_LEVEL="WARNING",
        RMAD_CROSSVENUE_ENABLED="false",
        RMAD_SCORING_CHECKPOINT_INTERVAL_MS="1000",
        RMAD_KAFKA_LINGER_MS="1",
        **(worker_settings or {}),
    )
    s = load_settings(**{k.removeprefix("RMAD_").lower(): v for k, v in env.items() if k.startswith("RMAD_")})
    bus = KafkaBus(KafkaOptions(kafka, linger_ms=1, session_timeout_ms=6000, heartbeat_interval_ms=500))
    await bus.create_topics(standard_topics(s))
    interval_s = 5.0
    speed = rate / (keys * NATURAL_RATE_PER_KEY * 1.6)  # sweeps print ~1.6 trades per order on average
    warm_sim = (window + 2) * interval_s
    events = trades(keys, warm_sim + seconds * speed + 2 * interval_s)
    rate_natural = len(events) / (warm_sim + seconds * speed + 2 * interval_s)
    speed = rate / rate_natural
    n_warm = sum(1 for e in events if e.event_time_ms < events[0].event_time_ms + warm_sim * 1000)
    shift = int(time.time() * 1000) - events[0].event_time_ms - int(warm_sim * 1000)  # measured part ~ "now"
    by_key: dict[str, list[int]] = collections.defaultdict(list)
    idx_by_key: dict[str, list[int]] = collections.defaultdict(list)
    for i, e in enumerate(events):
        by_key[e.key].append(e.event_time_ms + shift)
        idx_by_key[e.key].append(i)
    pub_ms = np.zeros(len(events), dtype=np.float64)

    w = WorkerProcess(env, tmp / f"worker-{rate}.log")
    got: list[tuple[str, int, float]] = []
    stop = asyncio.Event()

    async def reader() -> None:
        c = bus.consumer([s.topic_scores], f"bench-{unique}", auto_offset_reset="earliest", fetch_max_wait_ms=5)
        await c.start()
        try:
            while not stop.is_set():
                for r in await c.getmany(timeout_ms=100):
                    now = time.time() * 1000
                    x = orjson.loads(r.value)
                    got.append((x["key"], x["window_end_ms"], now))
        finally:
            await c.stop()

    rtask = asyncio.create_task(reader())
    p = bus.producer()
    await p.start()
    pub = MarketPublisher(p, s)
    try:
        await asyncio.sleep(6)  # the worker joins its group
        # warm-up: fill every key's window, unpaced, and let the worker catch up
        for i, e in enumerate(_stamp(events, 0, n_warm, shift)):
            pub_ms[i] = e.ingest_time_ms
            await pub.publish(e)
        await pub.flush()
        deadline = time.monotonic() + 120
        while len({k for k, _, _ in got}) < keys and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)
        n_before = len(got)
        before = _scrape(w.port)
        cpu0 = _cpu_s(w.proc.pid)
        # measured part: paced at `rate` ticks per wall second, in 5 ms slices
        t0 = time.monotonic()
        i = n_warm
        n_total = len(events)
        while i < n_total and time.monotonic() - t0 < seconds:
            due = int((time.monotonic() - t0) * rate) + n_warm
            if due > i:
                hi = min(due, n_total)
                now = int(time.time() * 1000)
                for j in range(i, hi):
                    e = events[j]
                    ev = msgspec.structs.replace(e, event_time_ms=e.event_time_ms + shift, ingest_time_ms=now)
                    pub_ms[j] = now
                    await pub.publish(ev)
                i = hi
            await asyncio.sleep(0.005)
        await pub.flush()
        t_pub = time.monotonic() - t0
        n_pub = i - n_warm
        # drain: until no new score for 3 s
        last = len(got)
        quiet = time.monotonic()
        while time.monotonic() - quiet < 3.0:
            await asyncio.sleep(0.2)
            if len(got) != last:
                last, quiet = len(got), time.monotonic()
        t_done = quiet - t0
        scraped = _scrape(w.port)
        cpu = _cpu_s(w.proc.pid) - cpu0
    finally:
        stop.set()
        await rtask
        await p.stop()
        w.stop()
        await bus.close()
    measured = got[n_before:]
    lat = []
    for key, end, recv in measured:
        ts = by_key.get(key)
        if not ts:
            continue
        k = bisect.bisect_left(ts, end)
        if k >= len(ts):
            continue  # closed by the quiet-key sweep, not by a tick
        j = idx_by_key[key][k]
        if j < n_warm or pub_ms[j] == 0:
            continue
        lat.append((recv - pub_ms[j]) / 1000)
    arr = np.asarray(lat) if lat else np.asarray([float("nan")])
    wp50, wp99 = _hist_quantiles(scraped, "rmad_worker_end_to_end_seconds", (0.5, 0.99), before)
    return Result(
        rate=rate,
        offered=n_pub / t_pub,
        sustained=n_pub / max(t_done - 3.0, t_pub),
        windows_per_s=len(measured) / max(t_done - 3.0, t_pub),
        p50=float(np.percentile(arr, 50)),
        p99=float(np.percentile(arr, 99)),
        worker_p50=wp50,
        worker_p99=wp99,
        scores=len(measured),
        cpu_us_per_tick=cpu / max(n_pub, 1) * 1e6,
    )


async def broker_floor(rate: int, seconds: float, keys: int, kafka: str, fetch_wait_ms: int) -> tuple[float, float]:
    """The baseline: one hop through the same broker at the same rate, nothing else. The same trades, publisher
    and pacing as the measured run, read back by a plain consumer with the worker's fetch wait; returns the p50
    and p99 seconds from publish to consume. A window's score crosses the broker twice (its closing tick in, the
    score out), so twice this is the floor under the pipeline's tick-to-score on this machine."""
    s = load_settings(topic_trades=f"floor-{uuid.uuid4().hex[:8]}", topic_partitions=6)
    bus = KafkaBus(KafkaOptions(kafka, linger_ms=1, session_timeout_ms=6000, heartbeat_interval_ms=500))
    await bus.create_topics([t for t in standard_topics(s) if t.name == s.topic_trades])
    events = trades(keys, seconds * rate / (keys * NATURAL_RATE_PER_KEY * 1.6) + 5)
    lat: list[float] = []
    stop = asyncio.Event()

    async def reader() -> None:
        c = bus.consumer([s.topic_trades], f"floor-{uuid.uuid4().hex[:8]}", fetch_max_wait_ms=fetch_wait_ms)
        await c.start()
        try:
            while not stop.is_set():
                for r in await c.getmany(timeout_ms=100):
                    lat.append(time.time() * 1000 - orjson.loads(r.value)["ingest_time_ms"])
        finally:
            await c.stop()

    rtask = asyncio.create_task(reader())
    p = bus.producer()
    await p.start()
    pub = MarketPublisher(p, s)
    try:
        await asyncio.sleep(6)  # the reader joins its group
        t0 = time.monotonic()
        i = 0
        while i < len(events) and time.monotonic() - t0 < seconds:
            due = min(int((time.monotonic() - t0) * rate), len(events))
            now = int(time.time() * 1000)
            for j in range(i, due):
                await pub.publish(msgspec.structs.replace(events[j], ingest_time_ms=now))
            i = max(i, due)
            await asyncio.sleep(0.005)
        await pub.flush()
        await asyncio.sleep(2.0)
    finally:
        stop.set()
        await rtask
        await p.stop()
        await bus.close()
    arr = np.asarray(lat[len(lat) // 5 :] or [float("nan")]) / 1000  # past the first second of warm-up
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 99))


def _tiny_model(root: Path, window: int) -> Path:
    from harness.modelgen import export_tiny_model

    export_tiny_model(root, window=window, alert=1e9, created_ms=1)
    return root


async def amain(args: argparse.Namespace) -> None:
    with contextlib.ExitStack() as stack:
        kafka = os.environ.get("RMAD_KAFKA_BOOTSTRAP_SERVERS")
        redis = os.environ.get("RMAD_REDIS_URL")
        if not kafka or not redis:
            servers = stack.enter_context(test_servers())
            kafka, redis = servers.kafka_bootstrap, servers.redis_url
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        model_dir = args.model_dir or _tiny_model(tmp / "models", args.window)
        from service.scoring.manifest import load_manifest

        versions = sorted((model_dir / "market").iterdir())
        window = load_manifest(versions[-1]).window
        print(
            f"pipeline: {args.keys} keys, 5 s bars, window {window} bars, model {model_dir}; "
            f"{os.cpu_count()} CPUs shared by broker, Redis, publisher, worker and reader"
        )
        print(
            f"{'rate':>8} {'offered/s':>10} {'sustained/s':>12} {'windows/s':>10} "
            f"{'p50 s':>8} {'p99 s':>8} {'worker p50':>11} {'worker p99':>11} {'worker CPU µs/tick':>19} "
            f"{'1-hop p50':>10} {'1-hop p99':>10} {'load':>5}"
        )
        fetch_wait = int(dict(args.set).get("RMAD_SCORING_FETCH_MAX_WAIT_MS", 10))
        for rate in args.rates:
            r = await run_rate(rate, args.seconds, args.keys, kafka, redis, model_dir, window, tmp, dict(args.set))
            f50, f99 = (
                await broker_floor(rate, args.seconds, args.keys, kafka, fetch_wait)
                if args.floor
                else (float("nan"), float("nan"))
            )
            print(
                f"{r.rate:>8,} {r.offered:>10,.0f} {r.sustained:>12,.0f} {r.windows_per_s:>10,.0f} "
                f"{r.p50:>8.4f} {r.p99:>8.4f} {r.worker_p50:>11.4f} {r.worker_p99:>11.4f} {r.cpu_us_per_tick:>19.1f} "
                f"{f50:>10.4f} {f99:>10.4f} {os.getloadavg()[0]:>5.1f}"
            )
        print(
            "worker CPU µs/tick includes its share of scoring, producing scores, checkpoints and Redis calls; "
            "1e6 / it is the ticks/s one core sustains. 1-hop: the baseline, the same ticks at the same rate "
            "through the broker to a plain consumer and nothing else (a score crosses the broker twice)."
        )


def add_set_option(ap: argparse.ArgumentParser, help_text: str) -> None:
    """`--set RMAD_NAME=VALUE` (repeatable): settings passed to the service processes a bench starts."""
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        type=lambda kv: tuple(kv.split("=", 1)),
        metavar="RMAD_NAME=VALUE",
        help=help_text,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rates", type=lambda v: [int(x) for x in v.split(",")], default=[5000, 20000, 50000])
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--keys", type=int, default=200)
    ap.add_argument("--window", type=int, default=16, help="window of the test model when no --model-dir")
    ap.add_argument("--model-dir", type=Path, default=None, help="a models root holding market/<version>/")
    ap.add_argument("--no-floor", dest="floor", action="store_false", help="skip the one-hop broker baseline")
    add_set_option(ap, "a worker setting for this run (repeatable), e.g. --set RMAD_SCORING_INLINE_INFERENCE_MS=0")
    asyncio.run(amain(ap.parse_args()))


if __name__ == "__main__":
    main()
