"""Ingest throughput: trade messages per second, parse alone and parse + normalise + publish to the broker.

    .venv/bin/python -m bench.ingest [--n 200000] [--loop asyncio|uvloop]

Frames are real-format Binance aggTrade combined-stream frames (10 symbols, contiguous ids) and Bybit
publicTrade frames. "End to end" runs the connector's own frame handler (parse, trade-id gap check, metrics,
msgspec encode, keyed `Producer.send` with the bus's batching) into a real Kafka-protocol broker and ends with a
flush, so every record is acknowledged. It starts its own Tansu unless RMAD_KAFKA_BOOTSTRAP_SERVERS is set.
One Python process = one core; the broker runs in its own process. Each line prints the wall-clock rate and the
rate per CPU-second of this process (what one core sustains when the machine is shared, as CI machines are).
Target (issue 3): >= 50,000 trade messages/s end to end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from collections.abc import Callable

import orjson

from service.bus.factory import standard_topics
from service.bus.kafka import KafkaBus, KafkaOptions
from service.ingest.binance import BinanceConfig, BinanceConnector, parse_binance
from service.ingest.bybit import BybitConfig, BybitConnector, parse_bybit
from service.ingest.publisher import MarketPublisher
from service.settings import load_settings

SYMBOLS = [f"{c}USDT" for c in ("BTC", "ETH", "SOL", "BNB", "XRP", "ADA", "DOGE", "AVAX", "LINK", "DOT")]


def binance_frames(n: int) -> list[bytes]:
    out = []
    t0 = 1_700_000_000_000
    for i in range(n):
        s = SYMBOLS[i % len(SYMBOLS)]
        tid = 1_000_000 + i // len(SYMBOLS)
        data = {
            "e": "aggTrade", "E": t0 + i, "s": s, "a": tid, "p": f"{43000 + (i % 997) / 100:.8f}",
            "q": f"{(i % 50) / 1000 + 0.001:.8f}", "f": tid, "l": tid, "T": t0 + i, "m": i % 3 == 0, "M": True,
        }  # fmt: skip
        out.append(orjson.dumps({"stream": f"{s.lower()}@aggTrade", "data": data}))
    return out


def bybit_frames(n_trades: int, per_frame: int = 4) -> list[bytes]:
    out = []
    t0 = 1_703_430_744_000
    for f in range(n_trades // per_frame):
        s = SYMBOLS[f % len(SYMBOLS)]
        data = [
            {"i": str(uuid.UUID(int=f * per_frame + j)), "T": t0 + f, "p": f"{43774 + j}.5", "v": "0.0026",
             "S": "Buy" if j % 2 else "Sell", "s": s, "BT": False}
            for j in range(per_frame)
        ]  # fmt: skip
        out.append(orjson.dumps({"topic": f"publicTrade.{s}", "ts": t0 + f, "type": "snapshot", "data": data}))
    return out


def rate(n: int, seconds: float, cpu: float | None = None) -> str:
    text = f"{n / seconds:>10,.0f} msgs/s wall ({n:,} in {seconds:.2f} s)"
    if cpu is not None:
        text += f", {n / cpu:>9,.0f} msgs per CPU-second of this process"
    return text


def bench_parse(name: str, frames: list[bytes], parse: Callable[[bytes], object], trades: int) -> None:
    t, c = time.perf_counter(), time.process_time()
    for f in frames:
        parse(f)
    print(f"parse only              {name:<20} {rate(trades, time.perf_counter() - t, time.process_time() - c)}")


async def bench_end_to_end(bootstrap: str, n: int) -> None:
    unique = uuid.uuid4().hex[:8]
    settings = load_settings(
        kafka_bootstrap_servers=bootstrap,
        topic_trades=f"bench.trades.{unique}",
        topic_books=f"bench.books.{unique}",
        topic_bars=f"bench.bars.{unique}",
        topic_dead_letters=f"bench.dead.{unique}",
    )
    bus = KafkaBus(
        KafkaOptions(
            bootstrap_servers=bootstrap,
            linger_ms=settings.kafka_linger_ms,
            max_batch_bytes=settings.kafka_max_batch_bytes,
            compression=settings.kafka_compression,
            default_partitions=settings.topic_partitions,
        )
    )
    await bus.create_topics(standard_topics(settings))
    producer = bus.producer()
    await producer.start()
    try:
        publisher = MarketPublisher(producer, settings)
        cases: list[tuple[str, list[bytes], Callable[[bytes, int], object], int]] = []
        bn = BinanceConnector(
            BinanceConfig(market="spot", ws_url="ws://x", rest_url="http://x", symbols=tuple(SYMBOLS)), publisher
        )
        by = BybitConnector(BybitConfig(market="linear", ws_url="ws://x", symbols=tuple(SYMBOLS)), publisher)
        cases.append(("binance aggTrade", binance_frames(n), bn.handle_frame, n))  # type: ignore[arg-type]
        cases.append(("bybit publicTrade x4", bybit_frames(n), by.handle_frame, n))  # type: ignore[arg-type]
        # warm up the connection and metadata
        await publisher.publish_trade(parse_binance(binance_frames(1)[0], "spot", 1)[0])  # type: ignore[arg-type]
        await publisher.flush()
        for name, frames, handle, trades in cases:
            before = publisher.published
            t, c = time.perf_counter(), time.process_time()
            now = int(time.time() * 1000)
            for f in frames:
                await handle(f, now)
            await publisher.flush()
            elapsed, cpu = time.perf_counter() - t, time.process_time() - c
            assert publisher.published - before == trades, (publisher.published - before, trades)
            print(f"parse+normalise+publish {name:<20} {rate(trades, elapsed, cpu)}")
    finally:
        await producer.stop()
        await bus.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200_000, help="trade messages per case")
    ap.add_argument("--loop", choices=["asyncio", "uvloop"], default="uvloop")
    args = ap.parse_args(argv)
    print(f"python {sys.version.split()[0]}, event loop {args.loop}, {args.n:,} trades per case, one process")
    frames = binance_frames(args.n)
    bench_parse("binance aggTrade", frames, lambda f: parse_binance(f, "spot", 1), args.n)
    bb = bybit_frames(args.n)
    bench_parse("bybit publicTrade x4", bb, lambda f: parse_bybit(f, "linear", 1), args.n)

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

            uvloop.run(bench_end_to_end(bootstrap, args.n))
        else:
            asyncio.run(bench_end_to_end(bootstrap, args.n))
    finally:
        if server is not None:
            server.stop()
    print("target: >= 50,000 trade msgs/s end to end on one core")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
