"""What a market.trades record costs, packed or single, and what Tansu's fetch costs as a partition ages.

    .venv/bin/python -m bench.packing [--n 60000] [--keys 200] [--batches 0,5000,20000] [--set RMAD_NAME=VALUE ...]

Three measurements, each against a baseline in the same process and on the same broker:
1. publish: CPU µs per trade of this process (MarketPublisher -> aiokafka -> the broker, ended by a flush so every
   record is acknowledged) with one record per trade and with packing at several `RMAD_INGEST_PACK_MS` bounds;
   the records per trade each left on the topic;
2. consume: CPU µs per trade to read those topics back and decode every trade as the worker does
   (`decode_trade_ticks`), single records against packed ones;
3. the broker's per-fetch cost: one partition pre-filled with N record batches (each send acknowledged before the
   next, so each is its own batch), then produce -> consume round trips of one record: p50/p99 ms per N. Tansu's
   `memory://` engine walks every stored batch of the partition on each fetch (docs/benchmarks.md).
Kafka settings are the service defaults unless `--set` changes them. Prints the 1-minute load average beside each
figure: the CPU figures are steadier than the latencies on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import time
import uuid
from decimal import Decimal

import numpy as np

from bench.pipeline import add_set_option
from harness.servers import test_servers
from service.bus.base import Producer, TopicSpec
from service.bus.factory import kafka_options
from service.bus.kafka import KafkaBus
from service.ingest.publisher import MarketPublisher
from service.schemas.market import Trade, decode_trade_ticks
from service.settings import Settings, load_settings


def _trades(n: int, keys: int) -> list[Trade]:
    t0 = int(time.time() * 1000)
    return [
        Trade(
            venue="bench",
            symbol=f"S{i % keys:04d}USDT",
            event_time_ms=t0 + i // 20,
            ingest_time_ms=t0 + i // 20,
            trade_id=str(i),
            price=Decimal("43012.57") + i % 97,
            size=Decimal("0.00125"),
            side="buy" if i % 3 else "sell",
        )
        for i in range(n)
    ]


def _settings(base: dict[str, str], kafka: str, **kw: object) -> Settings:
    values: dict[str, object] = {k.removeprefix("RMAD_").lower(): v for k, v in base.items()}
    return load_settings(**{**values, "kafka_bootstrap_servers": kafka, **kw})


async def publish_cost(s: Settings, trades: list[Trade], pace_per_s: int) -> tuple[float, int, str]:
    """CPU µs per trade to publish `trades` (paced at `pace_per_s` in 5 ms slices, as a live feed arrives: packs
    then fill by time, not by count), the records on the topic, and the topic name."""
    bus = KafkaBus(kafka_options(s))
    await bus.create_topics([TopicSpec(s.topic_trades, s.topic_partitions)])
    p = bus.producer()
    await p.start()
    pub = MarketPublisher(p, s)
    per_slice = max(1, pace_per_s // 200)
    try:
        cpu0 = time.process_time()
        for i in range(0, len(trades), per_slice):
            for t in trades[i : i + per_slice]:
                await pub.publish(t)
            await asyncio.sleep(0.005)
        await pub.flush()
        cpu = time.process_time() - cpu0
        records = pub.packer.records if pub.packer is not None else len(trades)
    finally:
        await p.stop()
        await bus.close()
    return cpu / len(trades) * 1e6, records, s.topic_trades


async def consume_cost(s: Settings, topic: str, n: int) -> float:
    """CPU µs per trade to read `topic` from the start and decode every trade as the worker does."""
    bus = KafkaBus(kafka_options(s))
    c = bus.consumer([topic], f"bench-{uuid.uuid4().hex[:8]}", auto_offset_reset="earliest")
    await c.start()
    got = 0
    try:
        while not c.assignment():
            await c.getmany(timeout_ms=100)
        cpu0 = time.process_time()
        deadline = time.monotonic() + 120
        while got < n and time.monotonic() < deadline:
            for r in await c.getmany(timeout_ms=200, max_records=s.scoring_poll_records):
                got += len(decode_trade_ticks(r.value))
        cpu = time.process_time() - cpu0
    finally:
        await c.stop()
        await bus.close()
    return cpu / max(got, 1) * 1e6


async def fetch_cost(s: Settings, batches: int, probes: int = 300) -> tuple[float, float, float]:
    """Produce -> consume round trip of one record (ms p50, p99) on a partition already holding `batches` record
    batches, and the seconds the pre-fill took."""
    topic = f"age-{uuid.uuid4().hex[:8]}"
    bus = KafkaBus(kafka_options(s))
    await bus.create_topics([TopicSpec(topic, 1)])
    fillers = [bus.producer() for _ in range(16)]  # one request in flight per producer: 16 batches at a time
    for f in fillers:
        await f.start()

    async def fill(f: Producer, n: int) -> None:
        for _ in range(n):
            await f.send_and_wait(topic, b"x" * 200, key=b"k")

    t0 = time.monotonic()
    await asyncio.gather(*(fill(f, batches // 16 + (i < batches % 16)) for i, f in enumerate(fillers)))
    fill_s = time.monotonic() - t0
    for f in fillers:
        await f.stop()
    p = bus.producer()
    await p.start()
    c = bus.consumer([topic], f"age-{uuid.uuid4().hex[:8]}", fetch_max_wait_ms=s.scoring_fetch_max_wait_ms)
    await c.start()
    lat: list[float] = []
    try:
        seen = 0
        while seen < batches:  # to the end of the pre-fill
            seen += len(await c.getmany(timeout_ms=200))
            if not c.assignment():
                continue
            if batches == 0:
                break
        for _ in range(probes):
            t = time.perf_counter()
            await p.send_and_wait(topic, b"probe", key=b"p")
            while not await c.getmany(timeout_ms=1000):
                pass
            lat.append((time.perf_counter() - t) * 1000)
    finally:
        await c.stop()
        await p.stop()
        await bus.close()
    return float(np.percentile(lat, 50)), float(np.percentile(lat, 99)), fill_s


async def amain(args: argparse.Namespace) -> None:
    base = dict(args.set)
    with contextlib.ExitStack() as stack:
        kafka = os.environ.get("RMAD_KAFKA_BOOTSTRAP_SERVERS") or ""
        if not kafka:
            kafka = stack.enter_context(test_servers()).kafka_bootstrap
        s0 = _settings(base, kafka)
        print(
            f"packing: {args.n:,} trades over {args.keys} keys paced at {args.rate:,}/s, {s0.topic_partitions} "
            f"partitions, linger {s0.kafka_linger_ms} ms; {os.cpu_count()} CPUs shared with the broker; "
            f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC"
        )
        trades = _trades(args.n, args.keys)
        print(f"{'records':>22} {'publish µs/trade':>17} {'trades/record':>14} {'consume µs/trade':>17} {'load':>5}")
        for pack_ms in args.pack_ms:
            s = _settings(base, kafka, topic_trades=f"pack-{uuid.uuid4().hex[:8]}", ingest_pack_ms=pack_ms)
            pub_us, records, topic = await publish_cost(s, trades, args.rate)
            con_us = await consume_cost(s, topic, len(trades))
            name = "one per trade" if pack_ms == 0 else f"packed, {pack_ms:g} ms"
            print(
                f"{name:>22} {pub_us:>17.2f} {len(trades) / records:>14.1f} {con_us:>17.2f} {os.getloadavg()[0]:>5.1f}",
                flush=True,
            )
        print(f"\n{'stored batches':>15} {'fill s':>7} {'round trip p50 ms':>18} {'p99 ms':>7} {'load':>5}")
        for n in args.batches:
            p50, p99, fill = await fetch_cost(s0, n)
            print(f"{n:>15,} {fill:>7.1f} {p50:>18.2f} {p99:>7.2f} {os.getloadavg()[0]:>5.1f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--n", type=int, default=60_000)
    ap.add_argument("--keys", type=int, default=200)
    ap.add_argument("--rate", type=int, default=20_000, help="trades per second offered to the publisher")
    ap.add_argument("--pack-ms", type=lambda v: [float(x) for x in v.split(",")], default=[0.0, 1.0, 2.0, 5.0])
    ap.add_argument("--batches", type=lambda v: [int(x) for x in v.split(",")], default=[0, 5000, 20000])
    add_set_option(ap, "a setting for the bench's clients (repeatable), e.g. --set RMAD_KAFKA_LINGER_MS=1")
    asyncio.run(amain(ap.parse_args()))


if __name__ == "__main__":
    main()
