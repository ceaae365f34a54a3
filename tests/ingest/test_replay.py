"""Replay: spec parsing, speed control, bad rows to dead letters, the ingest role's source choice, and the
simulator's pump-and-dump replayed into the real broker (Tansu) with its labels."""

from __future__ import annotations

import argparse
import collections
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from harness.readback import unpacked
from service.bus.base import Bus, Record
from service.bus.factory import standard_topics
from service.bus.kafka import KafkaBus, KafkaOptions
from service.bus.memory import MemoryBus
from service.bus.partitioning import partition_for
from service.ingest.components import ProducerComponent, SourceError, build_sources, source_name
from service.ingest.publisher import MarketPublisher
from service.ingest.replay import Replayer, ReplaySource, ReplaySpec, parse_replay_spec, parse_speed, replay_files
from service.ingest.simulator import SimConfig, SimLabel, SimulatorSource, generate_files, with_pump_at
from service.runtime import Runtime
from service.schemas.market import Bar, BookTop, Trade, decode_dead_letter, decode_market
from service.settings import Settings, load_settings

TRADES_HEADER = "symbol,timestamp,datetime,side,price,amount,btc_volume\n"


def _settings(unique: str, kafka: str | None = None, **kw: object) -> Settings:
    return load_settings(
        kafka_bootstrap_servers=kafka,
        topic_trades=f"market.trades.{unique}",
        topic_books=f"market.books.{unique}",
        topic_bars=f"market.bars.{unique}",
        topic_dead_letters=f"deadletters.{unique}",
        topic_sim_labels=f"sim.labels.{unique}",
        topic_partitions=3,
        kafka_linger_ms=2,
        **kw,
    )


async def _read_all(
    bus: Bus, topic: str, *, at_least: int, timeout_s: float = 30.0, settle_s: float = 1.0
) -> list[Record]:
    """Everything in `topic` from the start: stops `settle_s` after the last record once `at_least` arrived
    (the settle time is what would reveal duplicates), or at once with settle_s=0 (a source still running)."""
    return (await _read_topics(bus, {topic: at_least}, timeout_s=timeout_s, settle_s=settle_s))[topic]


async def _read_topics(
    bus: Bus, expected: dict[str, int], *, timeout_s: float = 30.0, settle_s: float = 1.0
) -> dict[str, list[Record]]:
    """One consumer (one group join) for several topics, records unpacked to one per event; see `_read_all`."""
    consumer = bus.consumer(list(expected), group_id=f"readback-{time.monotonic_ns()}")
    await consumer.start()
    out: dict[str, list[Record]] = {t: [] for t in expected}
    deadline = time.monotonic() + timeout_s
    idle_since = time.monotonic()

    def enough() -> bool:
        return all(len(out[t]) >= n for t, n in expected.items())

    try:
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for r in unpacked(batch):  # one per event: counts are events, packed trades or not
                out[r.topic].append(r)
            if batch:
                idle_since = time.monotonic()
            if enough() and (settle_s == 0 or time.monotonic() - idle_since > settle_s):
                break
    finally:
        await consumer.stop()
    return out


def _trades_csv(path: Path, rows: list[tuple[int, str, str, str]]) -> Path:
    path.write_text(TRADES_HEADER + "".join(f"ABC/BTC,{t},x,{s},{p},{q},0\n" for t, s, p, q in rows))
    return path


# ------------------------------------------------------------------------------------------------- parsing


def test_parse_speed_and_spec() -> None:
    assert parse_speed("1") == 1.0 and parse_speed("100x") == 100.0 and parse_speed("0.5") == 0.5
    assert parse_speed("max") is None and parse_speed("0") is None and parse_speed("inf") is None
    with pytest.raises(ValueError):
        parse_speed("fastest")
    assert parse_replay_spec("replay:/d/f.csv.gz") == ReplaySpec(Path("/d/f.csv.gz"), None, 1.0)
    assert parse_replay_spec("replay:/d/f.csv:binance-trades-csv") == ReplaySpec(Path("/d/f.csv"), "binance-trades-csv")
    assert parse_replay_spec("replay:/d/f.csv:feather:100x") == ReplaySpec(Path("/d/f.csv"), "feather", 100.0)
    assert parse_replay_spec("replay:/d/f.txt:max") == ReplaySpec(Path("/d/f.txt"), None, None)
    assert parse_replay_spec("replay:/d/a:b/f.csv", default_speed=None) == ReplaySpec(Path("/d/a:b/f.csv"), None, None)
    with pytest.raises(ValueError, match="needs a path"):
        parse_replay_spec("replay:")


# ------------------------------------------------------------------------------------------- memory bus


async def test_as_fast_as_possible_publishes_everything_in_order(tmp_path: Path, unique: str) -> None:
    res = generate_files(SimConfig(duration_s=300, anomalies=()), tmp_path)
    total = sum(res.counts.values())
    settings = _settings(unique)
    bus = MemoryBus(default_partitions=3)
    producer = bus.producer()
    await producer.start()
    rep = Replayer(MarketPublisher(producer, settings), [res.events], speed=None)
    stats = await rep.run()
    assert stats.published == total and stats.finished and stats.bad_rows == 0
    got = await _read_topics(
        bus,
        {
            settings.topic_trades: res.counts["trade"],
            settings.topic_books: res.counts["book"],
            settings.topic_bars: res.counts["bar"],
        },
    )
    trades, books, bars = got[settings.topic_trades], got[settings.topic_books], got[settings.topic_bars]
    assert (len(trades), len(books), len(bars)) == (res.counts["trade"], res.counts["book"], res.counts["bar"])
    per_key: dict[bytes, list[int]] = collections.defaultdict(list)
    for r in trades:
        ev = decode_market(r.value)
        assert isinstance(ev, Trade) and partition_for(ev.key.encode(), 3) == r.partition  # in its key's partition
        per_key[ev.key.encode()].append(int(ev.trade_id))
    assert all(ids == sorted(ids) and len(set(ids)) == len(ids) for ids in per_key.values())  # per key, in order
    await producer.stop()
    await bus.close()


async def test_paced_replay_follows_event_time(tmp_path: Path, unique: str) -> None:
    """2 s of event time at 4x takes about 0.5 s of wall time; ingest times spread accordingly."""
    t0 = 1_600_000_000_000
    rows = [(t0 + i * 100, "buy" if i % 2 else "sell", "0.001", "1") for i in range(21)]  # 0 .. 2000 ms
    p = _trades_csv(tmp_path / "ABC_2020-09-13_12.26.csv", rows)
    settings = _settings(unique)
    bus = MemoryBus()
    producer = bus.producer()
    await producer.start()
    start = time.monotonic()
    stats = await Replayer(MarketPublisher(producer, settings), [p], speed=4.0).run()
    elapsed = time.monotonic() - start
    assert stats.published == 21
    assert elapsed >= 0.45  # it waited for event time / speed (no upper bound asserted: shared CI cores)
    recs = await _read_all(bus, settings.topic_trades, at_least=21)
    evs = sorted((decode_market(r.value) for r in recs), key=lambda e: int(getattr(e, "trade_id", 0)))
    ingest = [e.ingest_time_ms for e in evs]
    assert ingest[-1] - ingest[0] >= 450
    assert [e.event_time_ms for e in evs] == [t for t, *_ in rows]  # event times kept as recorded
    # as fast as possible: no waiting for event time at all
    start = time.monotonic()
    await Replayer(MarketPublisher(producer, settings), [p], speed=None).run()
    fast = time.monotonic() - start
    assert fast < elapsed
    await producer.stop()
    await bus.close()


async def test_directory_is_merged_by_event_time_and_long_holes_are_skipped(tmp_path: Path, unique: str) -> None:
    """Two pairs' bars interleave as they happened (what a cross-pair de-peg detector needs); a day-long hole
    before a third file at 60x costs at most max_wait_s, not 24 minutes."""
    d = tmp_path / "depeg"
    d.mkdir()
    t0 = 1_678_492_800_000  # 2023-03-11 00:00 UTC
    for sym, px in (("BTCUSDT", "20000"), ("BTCUSDC", "21000")):
        rows = "".join(f"{t0 + i * 60_000},{px},{px},{px},{px},1\n" for i in range(3))
        (d / f"{sym}_1m_20230311_20230311.csv").write_text("open_time,open,high,low,close,volume\n" + rows)
    (d / "labels.json").write_text("[]")
    late = d / "ZZZUSDT_1m_20230312_20230312.csv"  # one bar a day later
    late.write_text(f"open_time,open,high,low,close,volume\n{t0 + 86_400_000},1,1,1,1,1\n")
    settings = _settings(unique)
    bus = MemoryBus(default_partitions=1)
    producer = bus.producer()
    await producer.start()
    files = replay_files(d)
    assert [f.name for f in files] == sorted(f.name for f in d.iterdir() if f.suffix == ".csv")
    start = time.monotonic()
    stats = await Replayer(MarketPublisher(producer, settings), files, speed=60.0, max_wait_s=0.2).run()
    assert stats.published == 7 and time.monotonic() - start < 60  # not 24 min: the hole was skipped
    recs = await _read_all(bus, settings.topic_bars, at_least=7)
    order = [(decode_market(r.value).event_time_ms, decode_market(r.value).symbol) for r in recs]
    assert [sym for _, sym in order[:6]] == ["BTCUSDC", "BTCUSDT"] * 3  # interleaved (ties: file order)
    assert [t for t, _ in order] == sorted(t for t, _ in order)
    await producer.stop()
    await bus.close()


async def test_rebase_shifts_event_times_to_now_and_bad_rows_are_dead_lettered(tmp_path: Path, unique: str) -> None:
    t0 = 1_600_000_000_000
    p = tmp_path / "ABC_2020-09-13_12.26.csv"
    p.write_text(
        TRADES_HEADER + f"ABC/BTC,{t0},x,buy,0.001,1,0\nABC/BTC,oops,x,buy,1,1,0\nABC/BTC,{t0 + 500},x,sell,0.002,2,0\n"
    )
    settings = _settings(unique)
    bus = MemoryBus()
    producer = bus.producer()
    await producer.start()
    before = int(time.time() * 1000)
    stats = await Replayer(MarketPublisher(producer, settings), [p], speed=None, rebase_time=True).run()
    assert stats.published == 2 and stats.bad_rows == 1
    evs = [decode_market(r.value) for r in await _read_all(bus, settings.topic_trades, at_least=2)]
    times = sorted(e.event_time_ms for e in evs)
    assert times[0] >= before and times[1] - times[0] == 500  # shifted to now, spacing kept
    dead = [decode_dead_letter(r.value) for r in await _read_all(bus, settings.topic_dead_letters, at_least=1)]
    assert len(dead) == 1 and dead[0].reason == "bad_row" and "oops" in dead[0].raw and dead[0].venue == "replay"
    await producer.stop()
    await bus.close()


async def test_ws_frames_replay_publishes_trades_and_skips_depth_diffs(tmp_path: Path, unique: str) -> None:
    frame = (
        '{"stream":"abcusdt@aggTrade","data":{"e":"aggTrade","E":1633998523963,"s":"ABCUSDT","a":1,'
        '"p":"0.35","q":"58","f":1,"l":1,"T":1633998523963,"m":false,"M":true}}'
    )
    depth = (
        '{"stream":"abcusdt@depth@100ms","data":{"e":"depthUpdate","E":1633998512068,"s":"ABCUSDT",'
        '"U":5,"u":6,"b":[["0.35","1"]],"a":[]}}'
    )
    p = tmp_path / "rec.txt"
    p.write_text(
        f"wss://stream.binance.com:9443/stream?streams=x <-> 1.0\n1633998512.1: {depth}\n1633998524.0: {frame}\n"
    )
    settings = _settings(unique)
    bus = MemoryBus()
    producer = bus.producer()
    await producer.start()
    stats = await Replayer(MarketPublisher(producer, settings), [p], speed=None).run()
    assert stats.published == 1 and stats.skipped_book_updates == 1
    (rec,) = await _read_all(bus, settings.topic_trades, at_least=1)
    assert rec.key == b"binance-spot:ABCUSDT"
    await producer.stop()
    await bus.close()


# -------------------------------------------------------------------------------------------- ingest role


def test_source_choice(tmp_path: Path, unique: str) -> None:
    settings = _settings(unique, ingest_venues="binance-spot,bybit-linear")
    runtime = Runtime.from_settings(settings)
    assert source_name(argparse.Namespace(source=None), settings) == "live"
    assert source_name(argparse.Namespace(source="none"), settings) == "none"
    assert build_sources(runtime, "none") == []
    (sim,) = build_sources(runtime, "simulator")
    assert isinstance(sim, SimulatorSource)
    f = _trades_csv(tmp_path / "ABC_2020-09-13_12.26.csv", [(1_600_000_000_000, "buy", "1", "1")])
    (rep,) = build_sources(runtime, f"replay:{f}:binance-trades-csv:max")
    assert isinstance(rep, ReplaySource) and rep.spec == ReplaySpec(f, "binance-trades-csv", None)
    live = build_sources(runtime, "live")
    assert isinstance(live[0], ProducerComponent) and [c.name for c in live[1:]] == [
        "ingest-binance-spot",
        "ingest-bybit-linear",
    ]
    with pytest.raises(SourceError, match="unknown market source"):
        build_sources(runtime, "exchange")
    with pytest.raises(ValueError, match="does not exist"):
        build_sources(runtime, f"replay:{tmp_path / 'missing.csv'}")
    with pytest.raises(SourceError, match="needs a path"):
        build_sources(runtime, "replay")
    settings2 = _settings(unique, replay_path=str(f), replay_speed=0)
    (rep2,) = build_sources(Runtime.from_settings(settings2), "replay")
    assert isinstance(rep2, ReplaySource) and rep2.spec.speed is None


# ------------------------------------------------------------------------------------------- real broker


@pytest.fixture
async def kafka_bus(kafka_bootstrap: str) -> AsyncIterator[KafkaBus]:
    bus = KafkaBus(
        KafkaOptions(
            bootstrap_servers=kafka_bootstrap,
            linger_ms=2,
            session_timeout_ms=6_000,
            heartbeat_interval_ms=500,
            request_timeout_ms=10_000,
            default_partitions=3,
        )
    )
    yield bus
    await bus.close()


@pytest.mark.integration
async def test_simulated_pump_replayed_into_kafka_is_visible_with_its_labels(
    tmp_path: Path, unique: str, kafka_bootstrap: str, kafka_bus: KafkaBus
) -> None:
    key = "sim-binance:ALT1BTC"
    keep = {"sim-binance:ALT1BTC", "sim-binance:BTCUSDT"}
    base = SimConfig(duration_s=900, instruments=tuple(i for i in SimConfig().instruments if i.key in keep))
    cfg = with_pump_at(base, key, 120, magnitude=0.8, scale=0.5)
    res = generate_files(cfg, tmp_path / "sim")
    (truth,) = res.labels
    settings = _settings(unique, kafka_bootstrap)
    await kafka_bus.create_topics(standard_topics(settings))
    src = ReplaySource(kafka_bus, settings, ReplaySpec(res.events, None, None))
    await src.start()
    stats = await src.wait()
    await src.stop()
    assert stats.published == sum(res.counts.values()) and stats.labels == 1 and not stats.error
    assert src.health().ok and "finished" in src.health().detail

    got = await _read_topics(
        kafka_bus,
        {
            settings.topic_sim_labels: 1,
            settings.topic_trades: res.counts["trade"],
            settings.topic_bars: res.counts["bar"],
            settings.topic_books: res.counts["book"],
        },
    )
    labels = [SimLabel.model_validate_json(r.value) for r in got[settings.topic_sim_labels]]
    assert labels == [truth]
    recs = got[settings.topic_trades]
    assert len(recs) == res.counts["trade"]  # nothing lost or duplicated
    trades = [e for e in (decode_market(r.value) for r in recs if r.key == key.encode()) if isinstance(e, Trade)]
    assert len({t.trade_id for t in trades}) == len(trades)
    before = [t for t in trades if t.event_time_ms < truth.start_ms]
    rush = [t for t in trades if truth.onset_ms <= t.event_time_ms < truth.onset_ms + 30_000]
    rate_before = len(before) / ((truth.start_ms - cfg.start_ms) / 1000)
    assert len(rush) / 30 > 20 * rate_before  # the rush of buys is in the topic
    assert sum(t.side == "buy" for t in rush) > 0.8 * len(rush)
    same_ms = collections.Counter(t.event_time_ms for t in rush)
    assert max(same_ms.values()) >= 3
    p0 = before[-1].price_f
    assert max(t.price_f for t in trades if t.event_time_ms >= truth.onset_ms) > 1.3 * p0
    bars = [decode_market(r.value) for r in got[settings.topic_bars]]
    pump_bars = [b for b in bars if isinstance(b, Bar) and b.key == key and truth.onset_ms <= b.close_time_ms]
    assert pump_bars and max(b.volume_f for b in pump_bars) > 10 * min(b.volume_f for b in pump_bars if b.volume_f > 0)
    books = got[settings.topic_books]
    assert len(books) == res.counts["book"] and all(isinstance(decode_market(r.value), BookTop) for r in books[:50])


@pytest.mark.integration
async def test_simulator_source_on_kafka_publishes_market_and_labels(
    unique: str, kafka_bootstrap: str, kafka_bus: KafkaBus
) -> None:
    settings = _settings(
        unique,
        kafka_bootstrap,
        sim_speed=400.0,
        sim_backfill_s=900.0,
        sim_first_anomaly_s=10.0,
        sim_anomaly_time_scale=0.2,
    )
    await kafka_bus.create_topics(standard_topics(settings))
    src = SimulatorSource(
        kafka_bus, settings, replace(SimulatorSource(kafka_bus, settings).cfg, anomaly_kinds=("pump_and_dump",))
    )
    await src.start()
    try:
        got = await _read_topics(
            kafka_bus, {settings.topic_sim_labels: 1, settings.topic_trades: 100}, timeout_s=30, settle_s=0
        )
        assert SimLabel.model_validate_json(got[settings.topic_sim_labels][0].value).type == "pump_and_dump"
        assert len(got[settings.topic_trades]) >= 100
        assert src.health().ok
    finally:
        await src.stop()


@pytest.mark.data
async def test_real_pump_file_replays_completely(shared_data: Path, unique: str) -> None:
    """A real pump (../shared/data) through replay as fast as possible: every trade reaches the topic, keyed."""
    p = shared_data / "binance-pump-trades" / "trades" / "APPC_2020-11-18_18.00.csv.gz"
    if not p.exists():
        pytest.skip(f"{p} absent")
    from service.ingest.readers import read_events

    n = sum(1 for _ in read_events(p))
    settings = _settings(unique)
    bus = MemoryBus(default_partitions=3)
    producer = bus.producer()
    await producer.start()
    stats = await Replayer(MarketPublisher(producer, settings), [p], speed=None).run()
    recs = await _read_all(bus, settings.topic_trades, at_least=n, settle_s=0.3)
    assert stats.published == n == len(recs) and stats.bad_rows == 0
    assert {r.key for r in recs} == {b"binance-spot:APPCBTC"}
    await producer.stop()
    await bus.close()
