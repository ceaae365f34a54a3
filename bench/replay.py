"""Replay and simulator throughput: how fast recorded or simulated markets can be fed to the service.

    .venv/bin/python -m bench.replay [--sim-seconds 1800] [--loop asyncio|uvloop]

Prints, on one core:
- simulator: raw events/s (trades, books, bars of the default 7-instrument universe) and with normalisation to the
  topic schemas, and trades/s at fixed tick rates with books off (the training-data case);
- readers: events/s for each format on files the benchmark writes (the simulated market as events-jsonl and as a
  Binance trade CSV) and, when ../shared/data is present, on the real files;
- replay end to end: events/s published as fast as possible through MarketPublisher into a real Kafka-protocol
  broker (its own Tansu unless RMAD_KAFKA_BOOTSTRAP_SERVERS is set), ending with a flush (all acknowledged).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path

from service.bus.factory import standard_topics
from service.bus.kafka import KafkaBus, KafkaOptions
from service.ingest.publisher import MarketPublisher
from service.ingest.readers import read_events
from service.ingest.replay import Replayer
from service.ingest.simulator import MarketSimulator, SimConfig, TradesCsvWriter, generate_files, to_market
from service.settings import load_settings

SHARED = Path(os.environ.get("RMAD_SHARED_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))


def _rate(n: int, dt: float) -> str:
    return f"{n:>9,} in {dt:6.2f} s = {n / dt:>10,.0f}/s"


def bench_simulator(seconds: float) -> None:
    cfg = SimConfig(duration_s=seconds)
    t0 = time.perf_counter()
    n = sum(1 for _ in MarketSimulator(cfg).events())
    print(f"simulator, raw events ({seconds:.0f} s simulated, 7 instruments): {_rate(n, time.perf_counter() - t0)}")
    t0 = time.perf_counter()
    n = sum(1 for e in MarketSimulator(cfg).events() if to_market(e))
    print(f"simulator, normalised to topic events:                   {_rate(n, time.perf_counter() - t0)}")
    fixed = replace(cfg, fixed_rates=True, emit_books=False, rate_scale=10.0, duration_s=seconds / 4)
    t0 = time.perf_counter()
    n = sum(1 for _ in MarketSimulator(fixed).events())
    print(f"simulator, fixed rates x10, no books (trades + bars):    {_rate(n, time.perf_counter() - t0)}")


def bench_readers(tmp: Path, seconds: float) -> Path:
    res = generate_files(SimConfig(duration_s=seconds), tmp / "sim")
    csvw = TradesCsvWriter(tmp)
    for e in MarketSimulator(SimConfig(duration_s=seconds, emit_books=False)).events():
        from service.ingest.simulator import SimTrade

        if isinstance(e, SimTrade):
            csvw.write(e)
    csvw.close()
    cases = [("events-jsonl (simulated)", res.events), *((f"binance-trades-csv {k}", p) for k, p in csvw.paths.items())]
    cases = cases[:3]
    if SHARED.is_dir():
        real = [
            ("binance-trades-csv (real pump)", SHARED / "binance-pump-trades/trades/APPC_2020-11-18_18.00.csv.gz"),
            ("binance-kline-csv (real)", SHARED / "binanceus-usdc-depeg-2023-03/BTCUSDC_1m_20230301_20230321.csv"),
            ("freqtrade-json (real)", SHARED / "binance-1m-klines/spot_BTCUSDT_1m_2021-09-17_2021-10-17.json.gz"),
            ("feather (real)", SHARED / "binance-1m-klines/spot_BTCUSDT_1m_2025-06-01_2025-07-01.feather"),
            ("nab-csv (real)", SHARED / "nab/data/realKnownCause/nyc_taxi.csv"),
            ("ws-frames (real futures)", SHARED / "ws-recorded-messages/cryptofeed_BINANCE_FUTURES.ws.1.0.txt"),
        ]
        cases += [(name, p) for name, p in real if p.exists()]
    for name, path in cases:
        t0 = time.perf_counter()
        n = sum(1 for _ in read_events(path, on_bad=lambda *a: None))
        print(f"reader {name:42s} {_rate(n, time.perf_counter() - t0)}")
    return res.events


async def bench_replay(bootstrap: str, path: Path) -> None:
    u = uuid.uuid4().hex[:8]
    settings = load_settings(
        kafka_bootstrap_servers=bootstrap,
        topic_trades=f"bench.trades.{u}",
        topic_books=f"bench.books.{u}",
        topic_bars=f"bench.bars.{u}",
        topic_dead_letters=f"bench.dead.{u}",
    )
    bus = KafkaBus(KafkaOptions(bootstrap_servers=bootstrap, linger_ms=settings.kafka_linger_ms, default_partitions=6))
    await bus.create_topics(standard_topics(settings))
    producer = bus.producer()
    await producer.start()
    try:
        rep = Replayer(MarketPublisher(producer, settings), [path], speed=None)
        t0 = time.perf_counter()
        stats = await rep.run()  # ends with a flush: every record acknowledged
        dt = time.perf_counter() - t0
        print(f"replay as fast as possible -> broker (read+normalise+publish+ack): {_rate(stats.published, dt)}")
    finally:
        await producer.stop()
        await bus.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sim-seconds", type=float, default=1800.0, help="simulated duration per case")
    ap.add_argument("--loop", choices=["asyncio", "uvloop"], default="uvloop")
    args = ap.parse_args(argv)
    print(f"python {sys.version.split()[0]}, event loop {args.loop}, one process")
    bench_simulator(args.sim_seconds)
    with tempfile.TemporaryDirectory() as tmpdir:
        events = bench_readers(Path(tmpdir), args.sim_seconds)
        bootstrap = os.environ.get("RMAD_KAFKA_BOOTSTRAP_SERVERS")
        server = None
        if not bootstrap:
            from harness.servers import start_tansu

            server = start_tansu()
            bootstrap = f"127.0.0.1:{server.port}"
            print(f"broker: Tansu (started by the benchmark) at {bootstrap}")
        else:
            print(f"broker: {bootstrap}")
        try:
            if args.loop == "uvloop":
                import uvloop

                uvloop.run(bench_replay(bootstrap, events))
            else:
                asyncio.run(bench_replay(bootstrap, events))
        finally:
            if server is not None:
                server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
