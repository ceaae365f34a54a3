"""Soak: the whole pipeline for a while at a steady tick rate, checking that nothing is lost, repeated or leaking.

    .venv/bin/python -m bench.soak [--duration 600] [--rate 10000] [--subscribers 50] [--workers 2]

What runs, each in its own process as deployed: the broker (Tansu) and redis-server (harness/servers.py, or the ones
in RMAD_KAFKA_BOOTSTRAP_SERVERS / RMAD_REDIS_URL), `rmad ingest --source simulator` in real time (simulated clock =
wall clock, trade rates scaled so the market makes about `--rate` ticks per second, anomalies every 45 s),
`--workers` x `rmad worker`, `rmad api`, and `--subscribers` WebSocket clients of /v1/alerts/stream in this process.

The model is the contract test model (harness/modelgen.py, needs torch) with its scaler fitted on a short
normal run of the same market and its threshold at the 90th percentile of that run's scores, so alerts keep coming
(cool-down 0): the soak is about delivery, not detection quality.

Printed at the end:
- ticks in (the ingest's rmad_ingest_messages_total; the achieved rate), windows scored (scores topic), alerts out
  (alerts topic), alerts delivered to every subscriber;
- lost (alerts in the topic some subscriber never got, summed over subscribers) and duplicates (ids seen twice by a
  subscriber, plus ids twice in the topic): target 0 and 0;
- RSS of each process once warm (after `--warmup` s) and at the end: target growth under 10 % for the service's
  processes (ingest, workers, api); the broker and Redis are listed too, but Tansu's memory storage holds every
  record in RAM, so its growth is the retained data, not a leak;
- while running, every 10 s: ticks, scores, alerts and each worker's consumer lag and queue; every `--rss-every`
  s (default 60) the RSS of each service process and the load average (also in the JSON as `rss_series_mb`), so
  a steady climb (a leak) can be told from a step during a burst that stays flat afterwards (a high-water mark);
- tick-to-alert-delivered p99: the worker's tick->scored p99 (closing tick's ingest time to the score, its
  rmad_worker_end_to_end_seconds histogram) plus the alert created->delivered p99 measured at the subscribers;
  the sum bounds the p99 of the whole path (target <= 100 ms).
`--tracemalloc [NAMES]` runs the named processes (default all) with allocation tracing (bench/tracemem): the
growth of Python allocations from the warm mark to the end, top 25 by traceback, lands in
`<logs>/<name>.tracemalloc.txt`. Tracing slows a process several times and each snapshot stalls it for up to a
minute on a loaded machine, so its latency figures are void; use it to find what grows, not to measure.
Everything shares this machine's cores: on a small shared machine the rate it can hold is the machine's, not the
service's; the achieved tick rate and the load average are printed so the figures can be read in that light.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from bench.pipeline import _hist_quantiles, _scrape, add_set_option
from harness.servers import free_port, test_servers
from service.bus.factory import standard_topics
from service.bus.kafka import KafkaBus, KafkaOptions

ROOT = Path(__file__).resolve().parents[1]
WINDOW, INTERVAL_MS, WARMUP_BARS = 8, 5000, 2


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def calibrate(root: Path, rate_scale: float, seconds: float = 120.0) -> Path:
    """Fit the test model's scaler on a normal run of the soak's market; threshold = its 90th percentile score."""
    from harness.modelgen import export_tiny_model
    from service.features.scaling import RobustScaler
    from service.ingest.simulator import MarketSimulator, SimConfig, to_market
    from service.scoring.alerts import AlertPolicy
    from service.scoring.offline import score_events
    from service.scoring.registry import ModelRegistry
    from service.scoring.scorer import Scorer
    from service.scoring.windows import WindowStore, apply_event

    cfg = replace(SimConfig(seed=5, duration_s=seconds, rate_scale=rate_scale), anomalies=())
    events = [to_market(e) for e in MarketSimulator(cfg).events()]
    store = WindowStore(WINDOW, 27, INTERVAL_MS, warmup_bars=WARMUP_BARS)
    rows = [w.features[-1] for i, e in enumerate(events) for w in apply_event(store, e, offset=i) if w.scorable]
    sc = RobustScaler.fit(np.stack(rows))
    probe = root / "probe"
    export_tiny_model(probe, center=sc.center.tolist(), scale=sc.scale.tolist(), alert=1e9, window=WINDOW)
    reg = ModelRegistry(probe, reload_interval_s=0)
    scores = [
        r.score
        for r, _ in score_events(
            iter(events), reg.get("market"), Scorer(reg), policy=AlertPolicy(), warmup_bars=WARMUP_BARS
        )
    ]
    threshold = float(np.quantile(scores, 0.9))
    out = root / "models"
    export_tiny_model(
        out, center=sc.center.tolist(), scale=sc.scale.tolist(), alert=threshold, window=WINDOW, created_ms=1
    )
    return out


def base_rate_per_s() -> float:
    """Ticks per simulated second of the default market at rate_scale 1 (trades scale, books and bars do not)."""
    from service.ingest.simulator import MarketSimulator, SimConfig

    cfg = SimConfig(seed=3, duration_s=60.0)
    n = sum(1 for _ in MarketSimulator(cfg).events())
    return n / 60.0


@dataclass
class Proc:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    rss: list[float] = field(default_factory=list)
    traced: bool = False  # runs bench/tracemem (SIGUSR1 writes its allocation report; untraced, SIGUSR1 kills)


def spawn(name: str, role: str, env: dict[str, str], logdir: Path, *args: str, into: list[Proc]) -> Proc:
    port = free_port()
    e = {**env, "RMAD_PORT": str(port), "RMAD_HOST": "127.0.0.1"}
    traced = e.pop("RMAD_TRACEMALLOC", "").split(",")
    if name in traced or "all" in traced:  # --tracemalloc: bench/tracemem/sitecustomize.py writes on SIGUSR1, exit
        e["RMAD_TRACEMALLOC"] = str(logdir / f"{name}.tracemalloc.txt")
        e["PYTHONPATH"] = f"{ROOT / 'bench' / 'tracemem'}{os.pathsep}{env['PYTHONPATH']}"
    fh = (logdir / f"{name}.log").open("ab")
    p = subprocess.Popen(
        [sys.executable, "-m", "service.cli", role, *args], env=e, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT
    )
    into.append(Proc(name, p, port, traced="RMAD_TRACEMALLOC" in e))
    return into[-1]


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _reap(procs: list[Proc]) -> None:
    """SIGKILL whatever is still running (the normal path has already stopped everything with SIGTERM)."""
    for p in procs:
        if p.proc.poll() is None:
            p.proc.kill()
            p.proc.wait(10)


async def wait_ready(p: Proc, within_s: float = 120.0) -> None:
    import httpx

    deadline = time.monotonic() + within_s
    async with httpx.AsyncClient(timeout=3) as c:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if (await c.get(f"http://127.0.0.1:{p.port}/readyz")).status_code == 200:
                    return
            if p.proc.poll() is not None:
                raise RuntimeError(f"{p.name} exited with {p.proc.returncode}")
            await asyncio.sleep(0.5)
    raise RuntimeError(f"{p.name} not ready within {within_s} s")


async def subscriber(url: str, got: list[tuple[str, int, int]], stop: asyncio.Event) -> None:
    """Alerts as (id, created_ms, received_ms); reconnects with last_id if the server closes the stream."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    last: str | None = None
    while not stop.is_set():
        try:
            async with connect(url + (f"&last_id={last}" if last else ""), open_timeout=30, max_queue=None) as ws:
                while not stop.is_set():
                    try:
                        raw = await asyncio.wait_for(ws.recv(), 0.5)
                    except TimeoutError:
                        continue
                    msg = orjson.loads(raw)
                    if msg.get("type") == "alert":
                        a = msg["alert"]
                        got.append((str(a["id"]), int(a["created_ms"]), int(time.time() * 1000)))
                        last = str(a["id"])
        except (ConnectionClosed, OSError, TimeoutError):
            await asyncio.sleep(0.5)


async def topic_reader(bus: KafkaBus, topics: tuple[str, str], out: dict[str, Any], stop: asyncio.Event) -> None:
    c = bus.consumer(list(topics), f"soak-{uuid.uuid4().hex[:8]}", auto_offset_reset="earliest")
    await c.start()
    try:
        while not stop.is_set():
            for r in await c.getmany(timeout_ms=200):
                if r.topic == topics[0]:
                    out["scores"] += 1
                else:
                    out["alerts"].append(orjson.loads(r.value)["id"])
    finally:
        await c.stop()


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    unique = uuid.uuid4().hex[:8]
    work = Path(tempfile.mkdtemp(prefix="rmad-soak-"))
    base = base_rate_per_s()
    rate_scale = max(0.05, args.rate / base)
    print(f"soak: {args.duration:g} s at ~{args.rate:g} ticks/s (rate_scale {rate_scale:.1f}), logs in {work}")
    model_dir = calibrate(work, rate_scale)
    spawned: list[Proc] = []
    with test_servers() as sv:
        try:
            env = {k: v for k, v in os.environ.items() if not k.startswith("RMAD_")}
            env.update(
                {
                    "PYTHONPATH": str(ROOT),
                    "RMAD_ENV": "development",
                    "RMAD_LOG_LEVEL": "WARNING",
                    "RMAD_KAFKA_BOOTSTRAP_SERVERS": sv.kafka_bootstrap,
                    "RMAD_REDIS_URL": sv.redis_url,
                    "RMAD_REDIS_KEY_PREFIX": f"soak{unique}:",
                    "RMAD_TOPIC_PARTITIONS": "6",
                    "RMAD_KAFKA_LINGER_MS": "5",
                    "RMAD_MODEL_DIR": str(model_dir),
                    "RMAD_MODEL_RELOAD_INTERVAL_S": "0",
                    "RMAD_SCORING_GROUP_ID": f"soak-workers-{unique}",
                    "RMAD_SCORING_WARMUP_BARS": str(WARMUP_BARS),
                    "RMAD_ALERT_COOLDOWN_S": "0",
                    "RMAD_SIM_SPEED": "1",
                    "RMAD_SIM_BACKFILL_S": "0",
                    "RMAD_SIM_RATE_SCALE": f"{rate_scale:.4f}",
                    "RMAD_SIM_FIRST_ANOMALY_S": "20",
                    "RMAD_SIM_ANOMALY_EVERY_S": "45",
                    "RMAD_API_RATE_BURST": "100000",
                    "RMAD_API_RATE_PER_S": "100000",
                    "RMAD_API_STREAM_QUEUE": "10000",
                }
            )
            for name, value in args.set:
                if not name.startswith("RMAD_"):
                    raise SystemExit(f"--set {name}: expected RMAD_NAME=VALUE")
                env[name] = value
            if args.tracemalloc:
                env["RMAD_TRACEMALLOC"] = args.tracemalloc
            for name in ("trades", "books", "bars", "chain", "scores", "alerts", "dead_letters", "sim_labels"):
                env[f"RMAD_TOPIC_{name.upper()}"] = f"soak-{name}-{unique}"
            bus = KafkaBus(KafkaOptions(sv.kafka_bootstrap, linger_ms=5))
            from service.settings import load_settings

            s = load_settings(
                **{
                    k.removeprefix("RMAD_").lower(): v
                    for k, v in env.items()
                    if k.startswith("RMAD_") and "SIM" not in k
                }
            )
            await bus.create_topics(standard_topics(s))
            servers = {srv.name: srv.pid for srv in sv.owned}
            api = spawn("api", "api", env, work, into=spawned)
            workers = [spawn(f"worker{i + 1}", "worker", env, work, into=spawned) for i in range(args.workers)]
            for p in (api, *workers):
                await wait_ready(p)
            stop_subs = asyncio.Event()
            got: list[list[tuple[str, int, int]]] = [[] for _ in range(args.subscribers)]
            url = f"ws://127.0.0.1:{api.port}/v1/alerts/stream?api_key=rmad-dev-key"
            subs = [asyncio.create_task(subscriber(url, g, stop_subs)) for g in got]
            topic_out: dict[str, Any] = {"scores": 0, "alerts": []}
            stop_reader = asyncio.Event()
            reader = asyncio.create_task(topic_reader(bus, (s.topic_scores, s.topic_alerts), topic_out, stop_reader))
            await asyncio.sleep(3)  # subscribers connected before the first tick
            ingest = spawn("ingest", "ingest", env, work, "--source", "simulator", into=spawned)
            procs = [ingest, *workers, api]
            t0 = time.monotonic()
            await wait_ready(ingest)
            await asyncio.sleep(min(args.warmup, args.duration / 2))
            e2e_start = "".join(_scrape(w.port) for w in workers)
            ticks_start = _ticks(_scrape(ingest.port))
            t_warm = time.monotonic()
            for p in procs:
                p.rss.append(rss_mb(p.proc.pid))
                if p.traced:
                    p.proc.send_signal(signal.SIGUSR1)  # baseline snapshot
            server_rss0 = {n: rss_mb(pid) for n, pid in servers.items()}
            series: dict[str, list[list[float]]] = {p.name: [[round(t_warm - t0), round(p.rss[0], 1)]] for p in procs}
            next_rss = t_warm
            while time.monotonic() - t0 < args.duration:
                await asyncio.sleep(min(10.0, max(0.1, args.duration - (time.monotonic() - t0))))
                el = time.monotonic() - t0
                wm = [_scrape(w.port) for w in workers]
                backlog = ", ".join(
                    f"{w.name} lag {_gauge_max(m, 'rmad_worker_consumer_lag_seconds'):.1f} s "
                    f"q {_gauge_max(m, 'rmad_worker_queue_windows'):.0f}"
                    for w, m in zip(workers, wm, strict=True)
                )
                print(
                    f"  {el:5.0f} s: {_ticks(_scrape(ingest.port)):,.0f} ticks, {topic_out['scores']:,} scores, "
                    f"{len(topic_out['alerts'])} alerts, {backlog}, load {os.getloadavg()[0]:.1f}",
                    flush=True,
                )
                if time.monotonic() >= next_rss + args.rss_every:
                    next_rss += args.rss_every
                    for p in procs:
                        series[p.name].append([round(el), round(rss_mb(p.proc.pid), 1)])
                    print(
                        f"  {el:5.0f} s: RSS MB "
                        + ", ".join(f"{p.name} {series[p.name][-1][1]:.0f}" for p in procs)
                        + f", load {' '.join(f'{x:.1f}' for x in os.getloadavg())}",
                        flush=True,
                    )
            ticks_end = _ticks(_scrape(ingest.port))
            t_end = time.monotonic()
            e2e_end = "".join(_scrape(w.port) for w in workers)  # before a traced worker stalls in its snapshot
            for p in procs:
                p.rss.append(rss_mb(p.proc.pid))
                if p.traced:
                    p.proc.send_signal(signal.SIGUSR1)  # difference from the baseline, before the drain
            for p in procs:  # a snapshot of a few hundred MB takes a minute or more on a loaded 2-core machine
                report = work / f"{p.name}.tracemalloc.txt"
                for _ in range(150 if p.traced else 0):
                    if "top 25" in _read(report):
                        break
                    await asyncio.sleep(2)
            server_rss1 = {n: rss_mb(pid) for n, pid in servers.items()}
            # drain: stop input, let the workers and the api deliver what is in flight
            ingest.proc.send_signal(signal.SIGTERM)
            ingest.proc.wait(30)
            await asyncio.sleep(5)
            for w in workers:
                w.proc.send_signal(signal.SIGTERM)
            for w in workers:
                w.proc.wait(30)
            await asyncio.sleep(3)
            stop_subs.set()
            stop_reader.set()
            await asyncio.gather(*subs, reader, return_exceptions=True)
            api.proc.send_signal(signal.SIGTERM)
            api.proc.wait(30)
            await bus.close()
        finally:
            _reap(spawned)  # on a failure too: no service process outlives the soak (and its broker)

    topic_ids = topic_out["alerts"]
    out_ids = set(topic_ids)
    lost = sum(len(out_ids - {i for i, _, _ in g}) for g in got)
    dup = sum(len(g) - len({i for i, _, _ in g}) for g in got) + (len(topic_ids) - len(out_ids))
    everyone = sum(1 for a in out_ids if all(a in {i for i, _, _ in g} for g in got))
    deliver = np.array([(r - c) / 1000 for g in got for _, c, r in g], dtype=float)
    dq = np.quantile(deliver, [0.5, 0.99]) if deliver.size else [float("nan")] * 2
    e50, e99 = _hist_quantiles(e2e_end, "rmad_worker_end_to_end_seconds", (0.5, 0.99), minus=e2e_start)
    rss = {p.name: p.rss for p in procs}
    for n in servers:
        rss[n] = [server_rss0[n], server_rss1[n]]
    ticks = ticks_end - ticks_start
    result = {
        "duration_s": round(t_end - t0, 1),
        "measured_s": round(t_end - t_warm, 1),
        "rate_requested": args.rate,
        "ticks_in": int(ticks_end),
        "ticks_per_s_measured": round(ticks / max(t_end - t_warm, 1e-9)),
        "windows_scored": topic_out["scores"],
        "alerts_out": len(out_ids),
        "alerts_delivered_to_every_subscriber": everyone,
        "subscribers": args.subscribers,
        "lost": lost,
        "duplicates": dup,
        "rss_mb": {n: [round(v, 1) for v in vals] for n, vals in rss.items()},
        "rss_growth_pct": {n: round(100 * (v[1] - v[0]) / v[0], 1) if v[0] else None for n, v in rss.items()},
        "rss_series_mb": series,
        "tick_to_scored_p50_p99_ms": [round(e50 * 1000, 1), round(e99 * 1000, 1)],
        "alert_created_to_delivered_p50_p99_ms": [round(float(dq[0]) * 1000, 1), round(float(dq[1]) * 1000, 1)],
        "tick_to_alert_delivered_p99_ms_bound": round((e99 + float(dq[1])) * 1000, 1),
        "load_avg_1m_end": round(os.getloadavg()[0], 1),
        "cpus": os.cpu_count(),
    }
    return result


def _ticks(metrics_text: str) -> float:
    total = 0.0
    for line in metrics_text.splitlines():
        if line.startswith("rmad_ingest_messages_total"):
            total += float(line.rpartition(" ")[2])
    return total


def _gauge_max(metrics_text: str, name: str) -> float:
    """The largest sample of a gauge over its label sets (0 if absent)."""
    vals = [float(line.rpartition(" ")[2]) for line in metrics_text.splitlines() if line.startswith(name)]
    return max(vals, default=0.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=600.0, help="seconds of simulated market (default 600)")
    ap.add_argument("--rate", type=float, default=10_000.0, help="ticks per second to aim at (default 10000)")
    ap.add_argument("--subscribers", type=int, default=50)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--warmup", type=float, default=60.0, help="seconds before the RSS and rate baseline")
    add_set_option(ap, "a setting for every service process (repeatable), e.g. --set RMAD_KAFKA_MAX_BATCH_BYTES=262144")
    ap.add_argument(
        "--tracemalloc",
        nargs="?",
        const="all",
        metavar="NAMES",
        help="trace allocations (tracemalloc, 8 frames: slows a process 2-4x) in the named processes (comma-separated"
        " ingest, worker1, worker2, api; default all); growth from warm to end is written to "
        "<logs>/<name>.tracemalloc.txt",
    )
    ap.add_argument(
        "--rss-every", type=float, default=60.0, help="seconds between RSS samples of each process (default 60)"
    )
    args = ap.parse_args()
    # SIGTERM (and SIGINT, which a shell's background job ignores) unwind amain, so its processes and servers stop
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    result = asyncio.run(amain(args))
    print(json.dumps(result, indent=2))
    ok = result["lost"] == 0 and result["duplicates"] == 0
    # the service's processes; the test broker (Tansu, memory storage) keeps every record in RAM by design
    growth = [g for n, g in result["rss_growth_pct"].items() if g is not None and n not in ("tansu", "redis")]
    print(
        f"targets: lost 0 and duplicates 0 -> {'met' if ok else 'NOT met'}; RSS growth < 10% -> "
        f"{'met' if growth and max(growth) < 10 else 'NOT met'}; tick-to-alert-delivered p99 <= 100 ms -> "
        f"{'met' if result['tick_to_alert_delivered_p99_ms_bound'] <= 100 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
