"""Chain ingest throughput: transactions per second through normalise + publish + feature update.

The full follower path runs on one Python process (one core): a node stub serves real-format JSON-RPC text
(`eth_getBlockByNumber(n, true)` + `eth_getBlockReceipts`, hex quantities), the follower decodes and normalises it
(ethereum.parse_block), publishes one record per involved address to the bus, flushes, saves the block and the
checkpoint to Redis, and applies every transaction to the address features with one atomic Lua script each
(confirmations = 0, so features are updated for every block at once). Redis is a real redis-server started here
(harness/servers.py) unless RMAD_REDIS_URL is set. The bus is the in-process bus, and with `--kafka` also the Tansu
broker (or RMAD_KAFKA_BOOTSTRAP_SERVERS). Also prints each stage alone, to show where the time goes.

    .venv/bin/python -m bench.chain [--blocks 200 --txs-per-block 200 --addresses 20000 --kafka]

Target: >= 5,000 tx/s on one core (Ethereum mainnet peaks near 50 tx/s; the rest is room for backfill).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import time
import uuid
from typing import Any

import orjson

from service.bus.base import Bus, TopicSpec
from service.bus.memory import MemoryBus
from service.features.chain_store import apply_transactions
from service.ingest.chain.ethereum import parse_block
from service.ingest.chain.follower import ChainFollower, FollowerConfig
from service.ingest.chain.node import Block, BlockRef
from service.ingest.chain.publisher import ChainPublisher
from service.schemas.chain import Chain
from service.state.redis import RedisState

TARGET_TX_S = 5_000


def make_chain(blocks: int, txs_per_block: int, addresses: int, seed: int = 1) -> list[tuple[str, str, str]]:
    """Raw JSON text per block: (hash, block JSON, receipts JSON), in geth's format."""
    rng = random.Random(seed)
    pool = ["0x" + f"{rng.getrandbits(160):040x}" for _ in range(addresses)]
    out = []
    parent = "0x" + "00" * 32
    for n in range(1, blocks + 1):
        bhash = "0x" + f"{rng.getrandbits(256):064x}"
        txs, receipts = [], []
        for i in range(txs_per_block):
            h = "0x" + f"{rng.getrandbits(256):064x}"
            frm, to = rng.choice(pool), rng.choice(pool)
            data = "0x" if rng.random() < 0.5 else "0xa9059cbb" + "00" * 64
            txs.append(
                {
                    "blockHash": bhash,
                    "blockNumber": hex(n),
                    "from": frm,
                    "gas": "0x5208",
                    "gasPrice": hex(20 * 10**9),
                    "hash": h,
                    "input": data,
                    "nonce": hex(i),
                    "to": to,
                    "transactionIndex": hex(i),
                    "value": hex(rng.randrange(0, 10**20)),
                    "type": "0x2",
                    "chainId": "0x1",
                    "v": "0x1",
                    "r": "0x" + "11" * 32,
                    "s": "0x" + "22" * 32,
                }
            )
            receipts.append(
                {
                    "blockHash": bhash,
                    "blockNumber": hex(n),
                    "contractAddress": None,
                    "cumulativeGasUsed": hex(21000 * (i + 1)),
                    "effectiveGasPrice": hex(20 * 10**9),
                    "from": frm,
                    "gasUsed": "0x5208",
                    "logs": [],
                    "status": "0x1",
                    "to": to,
                    "transactionHash": h,
                    "transactionIndex": hex(i),
                    "type": "0x2",
                }
            )
        block = {
            "number": hex(n),
            "hash": bhash,
            "parentHash": parent,
            "timestamp": hex(1_700_000_000 + 12 * n),
            "transactions": txs,
        }
        out.append((bhash, orjson.dumps(block).decode(), orjson.dumps(receipts).decode()))
        parent = bhash
    return out


class StubNode:
    """NodeClient serving pre-rendered JSON text; decoding and normalising happen in `block_by_number`."""

    chain = Chain.ETHEREUM

    def __init__(self, raw: list[tuple[str, str, str]]) -> None:
        self.raw = raw

    async def connect(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def next_head(self, timeout_s: float) -> BlockRef | None:
        await asyncio.sleep(timeout_s)
        return None

    async def head(self) -> BlockRef:
        return BlockRef(len(self.raw), self.raw[-1][0])

    async def block_by_number(self, number: int) -> Block:
        _, block, receipts = self.raw[number - 1]
        return parse_block(orjson.loads(block), orjson.loads(receipts))

    async def block_by_hash(self, block_hash: str) -> Block:
        for i, (h, _, _) in enumerate(self.raw):
            if h == block_hash:
                return await self.block_by_number(i + 1)
        raise KeyError(block_hash)


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc), to separate work from waiting."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            parts = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


async def run_follower(
    raw: list[tuple[str, str, str]], bus: Bus, redis_url: str, topic: str, pids: dict[str, int]
) -> tuple[float, dict[str, float]]:
    """Wall seconds of the full follower path, and CPU seconds per process (this one, Redis, the broker)."""
    state = RedisState(redis_url, key_prefix=f"bench-{uuid.uuid4().hex[:8]}:")
    producer = bus.producer()
    await producer.start()
    publisher = ChainPublisher(producer, topic, topic + ".dlq")
    cfg = FollowerConfig(Chain.ETHEREUM, confirmations=0, reorg_depth=16, backfill_batch=8, start_block=1)
    follower = ChainFollower(StubNode(raw), publisher, state, cfg)
    before = {name: cpu_s(pid) for name, pid in pids.items()}
    cpu0 = time.process_time()
    t = time.perf_counter()
    await follower.start()
    await follower.synced.wait()  # set when a sync reached the node's head (the last block)
    await follower.stop()  # waits for the last block's feature update
    assert follower.tip is not None and follower.tip.number == len(raw)
    assert follower.features_checkpoint == len(raw)
    elapsed = time.perf_counter() - t
    cpu = {"ingest (python)": time.process_time() - cpu0}
    cpu.update({name: cpu_s(pid) - before[name] for name, pid in pids.items()})
    await producer.stop()
    await state.client.flushdb()
    await state.close()
    return elapsed, cpu


async def stages(raw: list[tuple[str, str, str]], bus: Bus, redis_url: str, topic: str) -> dict[str, float]:
    """Seconds spent in each stage alone over the same blocks."""
    t = time.perf_counter()
    blocks = [parse_block(orjson.loads(b), orjson.loads(r)) for _, b, r in raw]
    normalise = time.perf_counter() - t
    producer = bus.producer()
    await producer.start()
    publisher = ChainPublisher(producer, topic, topic + ".dlq")
    t = time.perf_counter()
    for b in blocks:
        await publisher.publish_block(b)
        await publisher.flush()
    publish = time.perf_counter() - t
    await producer.stop()
    state = RedisState(redis_url, key_prefix=f"bench-{uuid.uuid4().hex[:8]}:")
    t = time.perf_counter()
    for b in blocks:
        await apply_transactions(state, b.txs)
    features = time.perf_counter() - t
    await state.client.flushdb()
    await state.close()
    return {"normalise": normalise, "publish": publish, "features": features}


async def main_async(args: argparse.Namespace) -> None:
    from harness.servers import start_redis, start_tansu

    owned = []
    pids: dict[str, int] = {}
    redis_url = os.environ.get("RMAD_REDIS_URL") or ""
    if not redis_url:
        r = start_redis()
        owned.append(r)
        pids["redis-server"] = r.pid
        redis_url = f"redis://127.0.0.1:{r.port}/0"
    try:
        raw = make_chain(args.blocks, args.txs_per_block, args.addresses)
        n_tx = args.blocks * args.txs_per_block
        print(
            f"chain ingest bench: {args.blocks} blocks x {args.txs_per_block} txs = {n_tx} Ethereum txs, "
            f"{args.addresses} addresses; python {platform.python_version()}, {os.cpu_count()} cpus; "
            f"real redis-server at {redis_url}"
        )
        buses: list[tuple[str, Any]] = [("in-process bus", lambda: MemoryBus(default_partitions=6))]
        pids_kafka: dict[str, int] = {}
        if args.kafka:
            from service.bus.kafka import KafkaBus, KafkaOptions

            kafka = os.environ.get("RMAD_KAFKA_BOOTSTRAP_SERVERS") or ""
            if not kafka:
                t = start_tansu()
                owned.append(t)
                pids_kafka = {"broker (tansu)": t.pid}
                kafka = f"127.0.0.1:{t.port}"
            buses.append(
                (
                    "Kafka (Tansu)",
                    lambda: KafkaBus(KafkaOptions(bootstrap_servers=kafka, linger_ms=5, default_partitions=6)),
                )
            )
        load = os.getloadavg()[0]
        print(f"load average (1 min) before the runs: {load:.1f} on {os.cpu_count()} cpus")
        for name, make in buses:
            bus = make()
            topic = f"chain.bench.{uuid.uuid4().hex[:8]}"
            await bus.create_topics([TopicSpec(topic, 6), TopicSpec(topic + ".dlq", 1)])
            st = await stages(raw, bus, redis_url, topic)
            run_pids = dict(pids, **(pids_kafka if name.startswith("Kafka") else {}))
            elapsed, cpu = await run_follower(raw, bus, redis_url, topic, run_pids)
            await bus.close()
            rate = n_tx / elapsed
            per_core = n_tx / cpu["ingest (python)"]
            print(f"\n[{name}] full follower path: normalise + publish + flush + checkpoint + features")
            print(f"  wall clock: {rate:,.0f} tx/s ({elapsed * 1e6 / n_tx:.0f} us/tx)")
            for proc, secs in cpu.items():
                print(f"  cpu {proc:>16}: {secs * 1e6 / n_tx:6.1f} us/tx")
            verdict = "meets" if per_core >= TARGET_TX_S else "MISSES"
            print(
                f"  one ingest core (tx per CPU-second of the ingest process): {per_core:,.0f} tx/s -> {verdict} the "
                f"{TARGET_TX_S:,} tx/s target; wall clock {'meets' if rate >= TARGET_TX_S else 'misses'} it here"
            )
            for stage, secs in st.items():
                print(f"  {stage:>9} alone (wall): {n_tx / secs:>10,.0f} tx/s  ({secs * 1e6 / n_tx:6.1f} us/tx)")
    finally:
        for s in owned:
            s.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--blocks", type=int, default=150)
    p.add_argument("--txs-per-block", type=int, default=200)
    p.add_argument("--addresses", type=int, default=20_000)
    p.add_argument(
        "--kafka", action="store_true", help="also publish to the Tansu broker (or RMAD_KAFKA_BOOTSTRAP_SERVERS)"
    )
    asyncio.run(main_async(p.parse_args()))


if __name__ == "__main__":
    main()
