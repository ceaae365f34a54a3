"""The fault suite: real parts killed, dropped and flooded on loopback, and what users are promised afterwards.

Each case states its bound; the bounds are generous for a loaded 2-core CI machine (they are promises about
recovery, not benchmarks: bench/soak.py measures speed).

- broker: Tansu SIGKILLed mid-stream, restarted 2 s later (S3 storage on moto, see conftest): no window lost,
  no alert id twice, the worker answers /readyz 503 while it is down and 200 within READY_S of the restart;
- redis: redis-server (appendonly yes, as in production) SIGKILLed mid-stream, restarted 2 s later: the same;
- worker: one of two workers SIGKILLed mid-stream: the survivor takes its partitions, no window lost, no id twice;
- exchange: the connection dropped in the middle of book updates, then a depth gap injected: the book equals the
  exchange's within RESYNC_S each time, the gap resync and both gaps counted, Gap events published;
- garbage: 10,000 malformed frames mixed into a normal trade stream: every trade exactly once, 10,000 dead letters
  in the topic and in the metric, the book still in sync, the connector healthy;
- burst: 150 WebSocket + 50 SSE subscribers connect at once, 100 alerts follow: every subscriber gets all 100, once
  and in order, within DELIVER_S; /readyz 200 throughout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import msgspec
import orjson
import pytest
from websockets.asyncio.client import connect

from harness.scenario import Scenario, stamped, wait_for, worker_env
from service.bus.base import Bus
from service.ingest.binance import BinanceConfig, BinanceConnector
from service.ingest.metrics import DEAD_LETTERS, GAPS, RESYNCS, sum_counter
from service.ingest.publisher import MarketPublisher
from service.schemas.market import DeadLetter, Gap, Trade
from tests.api.conftest import make_alert
from tests.faults.conftest import DurableBroker, RestartableRedis, RmadProcess
from tests.faults.harness import GRACE_S, create_topics, kafka_bus, settings_of
from tests.ingest.conftest import Ingest, eventually, ingest  # noqa: F401  (the fixture)
from tests.ingest.fakes import FakeBinance, random_changes

pytestmark = [pytest.mark.slow]

READY_S = 30.0  # a worker answers /readyz 200 within this many seconds of its broker or Redis coming back
RESYNC_S = 10.0  # an order book equals the exchange's again within this many seconds of the reconnect
DELIVER_S = 30.0  # the API burst: every subscriber has every alert within this many seconds
PROGRESS_S = 180.0  # generous: scoring a few hundred windows on a loaded 2-core machine


class Distinct:
    """Scores and alerts read from the topics, one entry per record (partition, offset): a reader that re-reads
    after a broker restart does not count a record twice, while a record produced twice counts twice."""

    def __init__(self) -> None:
        self.scores: dict[tuple[int, int], dict[str, Any]] = {}
        self.alerts: dict[tuple[int, int], dict[str, Any]] = {}

    def windows(self) -> set[tuple[str, int]]:
        return {(str(s["key"]), int(s["window_end_ms"])) for s in self.scores.values()}

    def duplicate_alert_ids(self) -> list[str]:
        ids = [str(a["id"]) for a in self.alerts.values()]
        return sorted({i for i in ids if ids.count(i) > 1})


async def _collect(bus: Bus, scores: str, alerts: str, out: Distinct, stop: asyncio.Event, group: str) -> None:
    while not stop.is_set():  # a consumer that dies with the broker is made again
        c = bus.consumer([scores, alerts], group, auto_offset_reset="earliest")
        try:
            await c.start()
            while not stop.is_set():
                for r in await c.getmany(timeout_ms=200):
                    (out.scores if r.topic == scores else out.alerts)[(r.partition, r.offset)] = orjson.loads(r.value)
        except Exception:
            await asyncio.sleep(0.5)
        finally:
            with contextlib.suppress(Exception):
                await c.stop()


def _env(unique: str, kafka: str, redis: str, scn: Scenario, **extra: str) -> dict[str, str]:
    return worker_env(unique, kafka, redis, scn.model_dir, RMAD_SHUTDOWN_GRACE_S=str(GRACE_S), **extra)


async def _stream_with_fault(
    scn: Scenario, kafka: str, redis: str, unique: str, tmp_path: Path, fault: str, server: Any = None
) -> tuple[Distinct, float | None]:
    """Publish the labelled market to a worker (two for `worker`), inject `fault` once a quarter of the windows
    are scored, publish the rest; return what came out and the seconds to /readyz 200 after the recovery."""
    env = _env(unique, kafka, redis, scn)
    s = settings_of(env)
    bus = kafka_bus(kafka)
    await create_topics(bus, s)
    out, stop = Distinct(), asyncio.Event()
    reader = asyncio.create_task(_collect(bus, s.topic_scores, s.topic_alerts, out, stop, f"c-{unique}"))
    expected = scn.expected_windows()
    workers = [RmadProcess("worker", env, tmp_path / "w1.log")]
    if fault == "worker":
        workers.append(RmadProcess("worker", env, tmp_path / "w2.log"))
    ready_after: float | None = None
    gate = asyncio.Event()
    gate.set()
    publisher: asyncio.Task[None] | None = None
    try:
        for w in workers:
            await w.wait_ready(90)
        # the market keeps flowing through the fault (paused only while the broker itself is down)
        # Tansu's S3 engine writes an object per produced batch and lists them on fetch: fewer, larger chunks there
        # paced so the stream lasts ~10 s and the fault lands while the worker is busy
        chunk, pause = (4000, 1.0) if fault == "broker" else (1000, 0.25)
        publisher = asyncio.create_task(_publish_gated(bus, s, scn, gate, chunk, pause))
        await wait_for(lambda: len(out.windows() & expected) > 0.25 * len(expected), PROGRESS_S, "progress")
        assert len(out.windows() & expected) < 0.8 * len(expected), "the fault came too late to matter"
        if fault == "worker":
            workers[0].kill()
        else:
            if fault == "broker":
                gate.clear()
            server.kill()
            await asyncio.sleep(2.0)
            code, _ = await workers[0].readyz()
            assert code == 503, f"{fault} down but the worker says ready"
            server.restart()
            gate.set()
            ready_after = await workers[0].wait_ready(READY_S)
        await publisher
        await wait_for(lambda: expected <= out.windows(), PROGRESS_S, f"every window after the {fault} fault")
        await asyncio.sleep(1.5)  # anything still in flight
    finally:
        if publisher is not None:
            publisher.cancel()
        for w in workers:
            w.close()
        stop.set()
        await reader
        await bus.close()
    return out, ready_after


async def _publish_gated(
    bus: Bus, s: Any, scn: Scenario, gate: asyncio.Event, chunk: int = 1000, pause: float = 0.25
) -> None:
    """The labelled market through one producer in flushed chunks of `chunk` events, `pause` s apart, waiting at
    `gate` between chunks (ingest time = now, as ingest stamps it)."""
    p = bus.producer()
    await p.start()
    pub = MarketPublisher(p, s)
    try:
        events = list(stamped(scn.events))
        for i in range(0, len(events), chunk):
            await gate.wait()
            for e in events[i : i + chunk]:
                await pub.publish(msgspec.structs.replace(e, ingest_time_ms=int(time.time() * 1000)))
            await pub.flush()
            await asyncio.sleep(pause)
    finally:
        await p.stop()


async def test_broker_killed_and_restarted_mid_stream(
    fault_scenario: Scenario, durable_broker: DurableBroker, redis_url: str, unique: str, tmp_path: Path
) -> None:
    """Tansu on its S3 engine (moto S3 in its own process) keeps records and committed offsets across a SIGKILL."""
    out, ready = await _stream_with_fault(
        fault_scenario, durable_broker.bootstrap, redis_url, unique, tmp_path, "broker", durable_broker
    )
    assert ready is not None and ready <= READY_S
    assert not out.duplicate_alert_ids()
    assert out.alerts, "the labelled market raised no alert"


async def test_redis_killed_and_restarted_mid_stream(
    fault_scenario: Scenario, restartable_redis: RestartableRedis, kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    out, ready = await _stream_with_fault(
        fault_scenario, kafka_bootstrap, restartable_redis.url, unique, tmp_path, "redis", restartable_redis
    )
    assert ready is not None and ready <= READY_S
    assert not out.duplicate_alert_ids()
    assert out.alerts


async def test_worker_sigkilled_survivor_takes_over(
    fault_scenario: Scenario, kafka_bootstrap: str, redis_url: str, unique: str, tmp_path: Path
) -> None:
    out, _ = await _stream_with_fault(fault_scenario, kafka_bootstrap, redis_url, unique, tmp_path, "worker")
    assert not out.duplicate_alert_ids()
    assert out.alerts


# ------------------------------------------------------------------------------------------------ exchange faults
MID, TICK = Decimal("43000.00"), Decimal("0.01")
T0 = 1_700_000_000_000


async def _binance(ingest: Ingest) -> tuple[FakeBinance, BinanceConnector]:  # noqa: F811
    fake = FakeBinance("spot", seed=21)
    await fake.start()
    for _ in range(10):  # a book before we connect: reaches the client through the REST snapshot
        bids, asks = random_changes(fake.rng, fake.book("BTCUSDT"), MID, TICK)
        await fake.depth("BTCUSDT", bids, asks, T0)
    cfg = BinanceConfig.from_settings(ingest.settings, "spot", ["BTCUSDT"])
    cfg = BinanceConfig(**{**cfg.__dict__, "ws_url": fake.ws_url, "rest_url": fake.rest_url})
    conn = BinanceConnector(cfg, ingest.publisher)
    await conn.start()
    await fake.wait_subscribed(3)
    return fake, conn


async def _depth(fake: FakeBinance, n: int, t: int, *, drop: bool = False) -> None:
    for _ in range(n):
        bids, asks = random_changes(fake.rng, fake.book("BTCUSDT"), MID, TICK)
        await fake.depth("BTCUSDT", bids, asks, t, drop=drop)


def _in_sync(fake: FakeBinance, conn: BinanceConnector) -> bool:
    st = conn.books.get("BTCUSDT")
    return bool(
        st is not None
        and st.synced
        and st.book is not None
        and st.last_u == fake.book("BTCUSDT").last_u
        and st.book.bids == fake.book("BTCUSDT").bids
        and st.book.asks == fake.book("BTCUSDT").asks
    )


async def test_exchange_connection_dropped_mid_book_and_gap_resyncs(ingest: Ingest) -> None:  # noqa: F811
    fake, conn = await _binance(ingest)
    resyncs0 = sum_counter(RESYNCS, venue="binance-spot")
    gaps0 = sum_counter(GAPS, venue="binance-spot", stream="books")
    try:
        await _depth(fake, 5, T0 + 1000)
        await eventually(lambda: _in_sync(fake, conn), RESYNC_S, "initial sync")
        # mid-book: some updates reach the client, then the connection drops while the book keeps changing
        await _depth(fake, 3, T0 + 2000)
        await fake.drop_connections()
        await _depth(fake, 4, T0 + 2100)  # never sent: the client must take them from a new snapshot
        await fake.wait_subscribed(3)
        t_back = time.monotonic()
        await _depth(fake, 3, T0 + 3000)
        await eventually(lambda: _in_sync(fake, conn), RESYNC_S, "book resynced after the reconnect")
        reconnect_resync_s = time.monotonic() - t_back
        # a gap on a live connection: one update lost on the wire
        await _depth(fake, 1, T0 + 4000, drop=True)
        t_gap = time.monotonic()
        await _depth(fake, 3, T0 + 4100)
        await eventually(lambda: _in_sync(fake, conn), RESYNC_S, "book resynced after the gap")
        gap_resync_s = time.monotonic() - t_gap
        assert reconnect_resync_s <= RESYNC_S and gap_resync_s <= RESYNC_S
        assert sum_counter(RESYNCS, venue="binance-spot") - resyncs0 >= 1  # the gap (a reconnect syncs afresh)
        assert sum_counter(GAPS, venue="binance-spot", stream="books") - gaps0 >= 2
        books = (await ingest.everything())["books"]
        reasons = {g.reason for g in books if isinstance(g, Gap)}
        assert {"reconnect", "sequence_gap"} <= reasons, reasons
        assert conn.health().ok, conn.health()
    finally:
        await conn.stop()
        await fake.stop()


GARBAGE: list[bytes] = [
    b"\x00\xff\xfe not json",
    b"[1,2,3]",
    b'{"hello":"world"}',
    b'{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","s":"BTCUSDT"}}',
    b'{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","E":1,"s":"BTCUSDT","a":1,"p":"NaN","q":"1",'
    b'"T":1700000000000,"m":true}}',
    b'{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","s":"BTCUSDT","U":"x"}}',
    b"{" * 50,
    b"",
]


async def test_ten_thousand_malformed_frames_in_a_normal_stream(ingest: Ingest) -> None:  # noqa: F811
    fake, conn = await _binance(ingest)
    dead0 = sum_counter(DEAD_LETTERS, venue="binance-spot")
    n_bad, n_good = 10_000, 500
    try:
        await _depth(fake, 3, T0 + 1000)
        await eventually(lambda: _in_sync(fake, conn), RESYNC_S, "initial sync")
        sent_bad = 0
        for i in range(n_bad):
            sent_bad += await fake.broadcast(GARBAGE[i % len(GARBAGE)] + str(i).encode())
            if i % (n_bad // n_good) == 0:
                await fake.trade("BTCUSDT", f"{43000 + i % 7}.5", "0.010", i % 2 == 0, T0 + 2000 + i)
            if i % 200 == 0:
                await asyncio.sleep(0)  # let the client read
        assert sent_bad == n_bad
        await _depth(fake, 3, T0 + 20_000)
        await eventually(
            lambda: sum_counter(DEAD_LETTERS, venue="binance-spot") - dead0 >= n_bad, 60, "every bad frame counted"
        )
        await eventually(lambda: _in_sync(fake, conn), RESYNC_S, "book still in sync")
        topics = await ingest.everything(at_least=n_bad + n_good)
        trades = [(e.symbol, e.trade_id) for e in topics["trades"] if isinstance(e, Trade)]
        sent = {("BTCUSDT", str(i)) for i in fake.sent_trades["BTCUSDT"]}
        assert len(trades) == len(set(trades)) and set(trades) == sent and len(sent) == n_good
        letters = [d for d in topics["dead"] if isinstance(d, DeadLetter)]
        assert len(letters) == n_bad
        assert sum_counter(DEAD_LETTERS, venue="binance-spot") - dead0 == n_bad
        assert conn.health().ok, conn.health()
    finally:
        await conn.stop()
        await fake.stop()


# ------------------------------------------------------------------------------------------------ API burst
async def _ws_sub(url: str, want: int, got: list[str]) -> None:
    async with connect(url, open_timeout=30, max_queue=None) as ws:
        while len(got) < want:
            msg = json.loads(await ws.recv())
            if msg.get("type") == "alert":
                got.append(str(msg["alert"]["id"]))


async def _sse_sub(url: str, want: int, got: list[str]) -> None:
    async with httpx.AsyncClient(timeout=httpx.Timeout(60.0)) as c, c.stream("GET", url) as r:
        assert r.status_code == 200
        event = ""
        async for line in r.aiter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and event == "alert":
                got.append(str(json.loads(line[5:])["alert"]["id"]))
                if len(got) >= want:
                    return


async def test_api_burst_of_subscribers(
    fault_scenario: Scenario, kafka_bootstrap: str, redis_url: str, unique: str, tmp_path: Path
) -> None:
    n_ws, n_sse, n_alerts = 150, 50, 100
    env = _env(
        unique,
        kafka_bootstrap,
        redis_url,
        fault_scenario,
        RMAD_ENV="development",
        RMAD_API_RATE_BURST="100000",
        RMAD_API_RATE_PER_S="100000",
        RMAD_API_STREAM_QUEUE="1000",
    )
    s = settings_of(env)
    bus = kafka_bus(kafka_bootstrap)
    await create_topics(bus, s)
    api = RmadProcess("api", env, tmp_path / "api.log")
    ws_got: list[list[str]] = [[] for _ in range(n_ws)]
    sse_got: list[list[str]] = [[] for _ in range(n_sse)]
    tasks: list[asyncio.Task[None]] = []
    try:
        await api.wait_ready(90)
        ws_url = f"ws://127.0.0.1:{api.port}/v1/alerts/stream?api_key=rmad-dev-key"
        sse_url = f"{api.base}/v1/alerts/sse?api_key=rmad-dev-key"
        tasks = [asyncio.create_task(_ws_sub(ws_url, n_alerts, g)) for g in ws_got]
        tasks += [asyncio.create_task(_sse_sub(sse_url, n_alerts, g)) for g in sse_got]
        deadline = time.monotonic() + 60
        while await api.metric("rmad_api_stream_subscribers") < n_ws + n_sse:  # all registered at the hub
            assert time.monotonic() < deadline, "not every subscriber connected within 60 s"
            await asyncio.sleep(0.2)
        alerts = [make_alert(i, symbol=f"B{unique}") for i in range(n_alerts)]
        t0 = time.monotonic()
        p = bus.producer()
        await p.start()
        for a in alerts:
            await p.send(s.topic_alerts, a.model_dump_json().encode(), key=a.key.encode())
        await p.stop()
        code, _ = await api.readyz()
        assert code == 200
        done, pending = await asyncio.wait(tasks, timeout=DELIVER_S)
        took = time.monotonic() - t0
        assert not pending, f"{len(pending)} subscribers still waiting after {DELIVER_S} s"
        for t in done:
            t.result()
        code, _ = await api.readyz()
        assert code == 200
    finally:
        for t in tasks:
            t.cancel()
        api.close()
        await bus.close()
    want = [a.id for a in alerts]
    assert all(g == want for g in ws_got + sse_got), "a subscriber missed, repeated or reordered an alert"
    assert took <= DELIVER_S
