"""API throughput and latency: POST /v1/score/transaction against GET /healthz (the framework's floor), one run.

    .venv/bin/python -m bench.api [--seconds 8] [--connections 32] [--model auto|shipped|contract] [--workers N]

One uvicorn worker (one process, uvloop, httptools, no access log), or `--workers N` of them on one socket as `rmad api
--workers N` runs them (server CPU is then the sum over the processes), serves the real app on a real redis-server
(harness/servers.py starts one unless RMAD_REDIS_URL is set): every scored request is authenticated (API key, scope
check) and rate-limited (the token-bucket Lua script in Redis; concurrent takes share one call), validated, given live
market context and scored by the ONNX model through the micro-batcher. Each of the 50 market keys is given 10 minutes of
live trades first (as the api's trade follower would), so a scored trade takes the warm path: the key's real feature
rows plus its open bar with the trade added, on copies of the live state. The model is models/artifacts/market when
shipped (`--model auto`), or the contract test model (harness/modelgen, window 64; needs torch), whose inference is
nearly free, so that run shows what the API itself costs. The load comes from a separate process with keep-alive
connections written against raw asyncio streams (an HTTP client library would be the bottleneck); latency is measured by
that client, request written to response read. Both processes' CPU per request is printed (the server's is the steadier
figure on a shared machine), and the server's own account of the run: windows per inference call, ONNX run time per
window, rate-limit script calls per request.

To see where the server's time goes: `py-spy record --pid <server pid> --nonblocking` during the scoring phase (the
server pid is printed; py-spy is in the dev extra). Target: >= 2,000 scored requests/s at p99 <= 20 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------------- the server


def serve(port: int, workers: int = 1, fd: int | None = None) -> None:
    """The server: the app with the api role's components in one uvicorn process, or `workers` of them on one
    socket (service/api/workers.py, as `rmad api --workers N` runs them; `fd` is a worker's inherited socket)."""
    import argparse as ap

    import uvicorn

    from service.api.workers import bind, inherited, supervise

    if workers > 1:
        argv = [sys.executable, "-m", "bench.api", "--serve", str(port), "--serve-fd"]
        raise SystemExit(supervise(workers, lambda fd: [*argv, str(fd)], bind("127.0.0.1", port), 10.0))

    from service.api.app import create_app
    from service.roles import build
    from service.runtime import Runtime
    from service.settings import load_settings

    settings = load_settings()
    runtime = Runtime.from_settings(settings)
    for c in build({"api"}, runtime, ap.Namespace()):
        runtime.add(c)
    stats = os.environ.get("RMAD_BENCH_STATS")
    runtime.add(_BenchHooks(runtime, Path(stats) if stats else None))  # added last: started last, stopped first
    app = create_app(runtime)
    if fd is None:
        uvicorn.run(app, host="127.0.0.1", port=port, workers=1, log_level="warning", access_log=False, lifespan="on")
        return
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    uvicorn.Server(config).run(sockets=[inherited(fd)])


class _BenchHooks:
    """At start, gives every bench symbol a live market history (as the api's trade follower would from the trades
    topic, which this bench does not run), so scored trades take the warm path: a window of real feature rows and
    copies of the key's live state. At stop, writes how well the server coalesced (rate-limit script calls,
    inference calls).

    Why a component: it runs after the models are loaded, and uvicorn re-raises the SIGTERM it caught once it has
    shut down, so nothing after `uvicorn.run` runs, while the lifespan's runtime stop does.
    """

    name = "bench-hooks"

    def __init__(self, runtime: Any, path: Path | None) -> None:
        self.runtime = runtime
        self.path = path

    async def start(self) -> None:
        from service.api.context import context_for
        from service.features.trade_context import TradeContext
        from service.scoring.live_state import LiveContext, LivePublisher
        from service.scoring.windows import WindowStore

        svc = context_for(self.runtime).scoring
        model = svc.model(self.runtime.settings.model_market)
        store = WindowStore(model.window, model.n_features, round(model.artifact.manifest.bar_interval_s * 1000))
        rng = random.Random(7)
        end = int(os.environ.get("RMAD_BENCH_T0_MS") or time.time() * 1000) - 1000
        live: list[LiveContext] = []
        for i in range(SYMBOLS):  # the keys' live context as the scoring worker publishes it
            price, key, last = 100.0, f"bench:SYM{i}USDT", None
            t0 = end - HISTORY_S * 1000
            for t in range(t0, end, 1000):  # one trade a second for HISTORY_S seconds
                price *= 1 + rng.uniform(-0.001, 0.001)
                for w in store.on_trade(key, t, price, rng.lognormvariate(0, 1), rng.random() < 0.5):
                    last = w
            if last is not None:
                prints = store.keys[key].prints if key in store.keys else TradeContext()
                live.append(
                    LiveContext(key, last.features, last.window_end_ms, model.name, model.version, True, False, prints)
                )
        await LivePublisher(self.runtime.state, 3600.0).publish(live)

    async def stop(self) -> None:
        from service.api.context import context_for

        if self.path is None:
            return
        from service.metrics import REGISTRY

        ctx = context_for(self.runtime)
        batchers = list(ctx.scoring._batchers.values())
        inference_s = sum(
            REGISTRY.get_sample_value("rmad_worker_inference_seconds_sum", {"model": b.model_name}) or 0.0
            for b in batchers
        )
        Path(f"{self.path}.{os.getpid()}").write_text(  # noqa: ASYNC240 (at shutdown) one file per server process
            json.dumps(
                {
                    "rate_limit_calls": ctx.limiter.calls,
                    "inference_calls": sum(b.batches for b in batchers),
                    "windows": sum(b.windows for b in batchers),
                    "inference_s": inference_s,  # wall time inside the ONNX session (one intra-op thread)
                    "fast_path": ctx.fast_path_served,
                }
            )
        )

    def health(self) -> Any:
        from service.runtime import Health

        return Health(True, "bench")


# --------------------------------------------------------------------------------------------------- the load


def _request(path: str, body: bytes | None, key: str) -> bytes:
    if body is None:
        return f"GET {path} HTTP/1.1\r\nHost: bench\r\nX-API-Key: {key}\r\n\r\n".encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: bench\r\nX-API-Key: {key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


SYMBOLS = 50  # market keys the bench scores trades of
HISTORY_S = 600  # seconds of live trades each key has seen before the load starts (120 five-second bars)


def _trade_bodies(n: int, t0_ms: int, seed: int = 1) -> list[bytes]:
    """`n` trades over the bench's symbols from `t0_ms` on, one a millisecond (all in the keys' open bar)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        sym = f"SYM{i % SYMBOLS}USDT"
        out.append(
            json.dumps(
                {
                    "kind": "trade",
                    "venue": "bench",
                    "symbol": sym,
                    "price": round(100 * (1 + rng.uniform(-0.01, 0.01)), 4),
                    "size": round(rng.lognormvariate(0, 1), 6),
                    "side": rng.choice(["buy", "sell"]),
                    "time_ms": t0_ms + i,
                }
            ).encode()
        )
    return out


async def _conn(port: int, reqs: list[bytes], t_start: float, t_stop: float, out: dict[str, Any]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    i = random.randrange(len(reqs))
    lat: list[float] = out["lat"]
    try:
        while True:
            t0 = time.perf_counter()
            if t0 >= t_stop:
                return
            writer.write(reqs[i % len(reqs)])
            i += 1
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length:
                await reader.readexactly(length)
            t1 = time.perf_counter()
            if t0 >= t_start:  # after the warm-up
                lat.append(t1 - t0)
                out["status"][status] = out["status"].get(status, 0) + 1
    finally:
        writer.close()


def _load(port: int, reqs: list[bytes], connections: int, warmup_s: float, seconds: float, q: Any) -> None:
    """The client process: `connections` keep-alive connections for warm-up + `seconds`; reports latencies."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass

    async def main() -> dict[str, Any]:
        now = time.perf_counter()
        out: dict[str, Any] = {"lat": [], "status": {}}
        t_start, t_stop = now + warmup_s, now + warmup_s + seconds

        async def cpu_at(t: float, key: str) -> None:
            await asyncio.sleep(max(0.0, t - time.perf_counter()))
            out[key] = time.process_time()

        await asyncio.gather(
            cpu_at(t_start, "cpu0"),
            cpu_at(t_stop, "cpu1"),
            *(_conn(port, reqs, t_start, t_stop, out) for _ in range(connections)),
        )
        return out

    res = asyncio.run(main())
    q.put({"lat": res["lat"], "status": res["status"], "client_cpu_s": res["cpu1"] - res["cpu0"]})


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (and its threads) and of its child processes (the API workers), from
    /proc; 0 where /proc is missing."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except (OSError, IndexError, ValueError):
        return 0.0
    return own + sum(cpu_seconds(int(k)) for k in kids)


def measure(
    port: int, reqs: list[bytes], connections: int, warmup_s: float, seconds: float, server_pid: int
) -> dict[str, float]:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_load, args=(port, reqs, connections, warmup_s, seconds, q))
    p.start()
    time.sleep(warmup_s)
    cpu0 = cpu_seconds(server_pid)
    res = q.get(timeout=warmup_s + seconds + 120)
    cpu1 = cpu_seconds(server_pid)
    p.join(30)
    lat = sorted(res["lat"])
    n = len(lat)
    if not n:
        return {
            "rps": 0.0, "p50_ms": float("nan"), "p99_ms": float("nan"), "n": 0, "non_2xx": 0, "cpu_ms": 0.0,
            "client_cpu_ms": 0.0,
        }  # fmt: skip
    non_ok = sum(v for k, v in res["status"].items() if not 200 <= int(k) < 300)
    return {
        "rps": n / seconds,
        "p50_ms": lat[n // 2] * 1000,
        "p99_ms": lat[min(n - 1, int(n * 0.99))] * 1000,
        "max_ms": lat[-1] * 1000,
        "n": n,
        "non_2xx": non_ok,
        # server CPU per request: what the request costs, independent of how busy the machine is
        "cpu_ms": (cpu1 - cpu0) * 1000 / n,
        "client_cpu_ms": res["client_cpu_s"] * 1000 / n,  # the load generator's own share of the 2 cores
    }


# --------------------------------------------------------------------------------------------------- driver


def _model_dir(which: str) -> tuple[Path, str]:
    """The models the server loads: the shipped market model (`auto` when present), or the contract test model,
    whose inference is nearly free, so the run shows what the API itself costs."""
    shipped = ROOT / "models" / "artifacts"
    if which in ("auto", "shipped") and any((shipped / "market").glob("*/manifest.json")):
        return shipped, "shipped models/artifacts/market"
    if which == "shipped":
        raise SystemExit("no shipped market model under models/artifacts/market")
    sys.path.insert(0, str(ROOT))
    from harness.modelgen import export_tiny_model
    from service.features.spec import MARKET_FEATURES

    root = Path(tempfile.mkdtemp(prefix="bench-api-models-"))
    export_tiny_model(root, name="market", version="bench", window=64, created_ms=1)
    return root, f"contract test model (harness/modelgen, window 64 x {len(MARKET_FEATURES)} features)"


async def _make_key(redis_url: str, prefix: str) -> str:
    from service.api.auth import KeyStore, Scope
    from service.settings import load_settings
    from service.state.redis import RedisState

    settings = load_settings(redis_url=redis_url, redis_key_prefix=prefix, env="test")
    state = RedisState(redis_url, prefix)
    try:
        key, _ = await KeyStore(state, settings).create("bench", [Scope.SCORE], rate_per_s=1e7, burst=10_000_000)
        return key
    finally:
        await state.close()


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the API server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError("the API server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per endpoint")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per endpoint (not measured)")
    parser.add_argument("--connections", type=int, default=32, help="concurrent keep-alive connections")
    parser.add_argument(
        "--model",
        choices=["auto", "shipped", "contract"],
        default="auto",
        help="the shipped market model (auto: when present) or the contract test model (what the API alone costs)",
    )
    parser.add_argument("--workers", type=int, default=1, help="API processes on one socket (rmad api --workers)")
    parser.add_argument("--serve", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--serve-fd", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        serve(args.serve, args.workers, args.serve_fd)
        return
    sys.path.insert(0, str(ROOT))
    from harness.servers import free_port, start_redis

    owned = None
    redis_url = os.environ.get("RMAD_REDIS_URL") or ""
    if not redis_url:
        owned = start_redis()
        redis_url = f"redis://127.0.0.1:{owned.port}/0"
    models, model_note = _model_dir(args.model)
    prefix = f"bench-api-{os.getpid()}:"
    key = asyncio.run(_make_key(redis_url, prefix))
    port = free_port()
    # the scored trades' time: 1 s into a 5-second bar whose first second the history the server gives each key
    # ends with, so a scored trade lands in the key's open bar, as a trade on a live key does
    t0_ms = int(time.time() * 1000) // 5000 * 5000 + 1000
    env = dict(
        os.environ,
        RMAD_REDIS_URL=redis_url,
        RMAD_REDIS_KEY_PREFIX=prefix,
        RMAD_ENV="test",
        RMAD_MODEL_DIR=str(models),
        RMAD_LOG_LEVEL="WARNING",
        RMAD_BENCH_T0_MS=str(t0_ms),
        RMAD_BENCH_STATS=str(Path(tempfile.mkdtemp(prefix="bench-api-stats-")) / "stats.json"),
    )
    env.pop("RMAD_KAFKA_BOOTSTRAP_SERVERS", None)
    argv = os.environ.get("RMAD_BENCH_SERVER_ARGV", "").split() or [sys.executable, "-m", "bench.api", "--serve"]
    server = subprocess.Popen([*argv, str(port), "--workers", str(args.workers)], cwd=ROOT, env=env)
    try:
        _wait_port(port, server)
        print(
            f"api bench: {args.workers} uvicorn worker process(es), {args.connections} keep-alive connections, "
            f"{args.seconds:g} s measured after {args.warmup:g} s warm-up per endpoint; "
            f"python {platform.python_version()}, {os.cpu_count()} cpus; "
            f"redis at {redis_url}; model: {model_note}"
        )
        print(f"server pid {server.pid}; load average (1 min) before the runs: {os.getloadavg()[0]:.1f}")
        rows = []
        health = measure(
            port, [_request("/healthz", None, key)], args.connections, args.warmup, args.seconds, server.pid
        )
        rows.append(("GET /healthz (floor)", health))
        bodies = _trade_bodies(2000, t0_ms)
        score = measure(
            port,
            [_request("/v1/score/transaction", b, key) for b in bodies],
            args.connections,
            args.warmup,
            args.seconds,
            server.pid,
        )
        rows.append(("POST /v1/score/transaction (trade)", score))
        print(
            f"{'endpoint':38} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'requests':>9} {'non-2xx':>8} "
            f"{'server CPU ms/req':>18} {'client CPU ms/req':>18}"
        )
        for name, r in rows:
            print(
                f"{name:38} {r['rps']:9.0f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {r.get('max_ms', 0):8.1f} "
                f"{r['n']:9d} {r['non_2xx']:8d} {r['cpu_ms']:18.3f} {r['client_cpu_ms']:18.3f}"
            )
        ok = score["rps"] >= 2000 and score["p99_ms"] <= 20 and score["non_2xx"] == 0
        print(
            f"target >= 2,000 scored req/s at p99 <= 20 ms: {'met' if ok else 'NOT met'} "
            f"({score['rps']:.0f} req/s, p99 {score['p99_ms']:.1f} ms; floor {health['rps']:.0f} req/s)"
        )
        print(f"load average (1 min) after the runs: {os.getloadavg()[0]:.1f}")
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
        if owned is not None:
            owned.stop()
    stats_file = Path(env["RMAD_BENCH_STATS"])
    per_process = [json.loads(f.read_text()) for f in stats_file.parent.glob(stats_file.name + ".*")]
    if per_process:
        st = {k: sum(p[k] for p in per_process) for k in per_process[0]}
        n = max(1, st["windows"])
        print(
            f"server, whole run: {st['windows']} windows scored in {st['inference_calls']} inference calls "
            f"({st['windows'] / max(1, st['inference_calls']):.1f} per call), {st['inference_s'] * 1000 / n:.3f} ms "
            f"of ONNX run time per window; {st['rate_limit_calls']} rate-limit script calls "
            f"({st['rate_limit_calls'] / n:.3f} per scored request); {st['fast_path']} answered by the fast path"
        )


if __name__ == "__main__":
    main()
