"""Graceful shutdown, per role: SIGTERM to a real `python -m service.cli <role>` under load.

What every role promises (RMAD_SHUTDOWN_GRACE_S = 6 s here): it stops taking input, finishes what is in flight,
produces, commits, closes, and exits with status 0 within the grace period, counted from the signal. Then, per role:
- ingest: its producer was flushed: the topics hold exactly the events the simulator source counted as sent;
- worker: nothing committed is unproduced: every window end stored as produced (the marks the worker checkpoints
  with its offsets) has its score in the scores topic, offsets are committed, and a restarted worker goes on with
  no window lost and none scored twice;
- api: open WebSocket streams are closed with 1012 (service restart) and SSE streams end with a reason, the
  alert-log follower committed only what it wrote: every alert below its committed offsets is in the alert log;
- run (all three in one process, in-process bus and state): the same deadline holds for all of them together.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from harness.readback import read_all
from harness.scenario import Collected, Scenario, collect, wait_for, worker_env
from service.api.alertlog import AlertLog
from service.state.redis import RedisState
from tests.api.conftest import make_alert
from tests.faults.conftest import RmadProcess
from tests.faults.harness import (
    GRACE_S,
    create_topics,
    decode,
    duplicate_ids,
    duplicate_windows,
    kafka_bus,
    publish_events,
    settings_of,
)

pytestmark = [pytest.mark.slow]


def _env(unique: str, kafka: str | None, redis: str | None, model_dir: Path, **extra: str) -> dict[str, str]:
    env = worker_env(unique, kafka or "", redis or "", model_dir, RMAD_SHUTDOWN_GRACE_S=str(GRACE_S), **extra)
    if kafka is None:
        env.pop("RMAD_KAFKA_BOOTSTRAP_SERVERS")
    if redis is None:
        env.pop("RMAD_REDIS_URL")
    return env


async def committed_offsets(
    bootstrap: str, group: str, topics: list[str], partitions: int
) -> dict[tuple[str, int], int]:
    """The group's committed offsets (OffsetFetch through an unsubscribed member: no group join, no rebalance)."""
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await c.start()
    try:
        out: dict[tuple[str, int], int] = {}
        for t in topics:
            for part in range(partitions):
                off = await c.committed(TopicPartition(t, part))
                if off is not None and off >= 0:
                    out[(t, part)] = off
        return out
    finally:
        await c.stop()


def _assert_clean_exit(p: RmadProcess, took: float) -> None:
    assert took <= GRACE_S, f"{p.role} took {took:.2f} s to exit after SIGTERM (grace {GRACE_S} s)\n{p.tail()}"
    assert p.proc.returncode == 0, f"{p.role} exited with {p.proc.returncode}\n{p.tail()}"
    assert "runtime stopped in" in p.text(), p.tail()


async def test_ingest_sigterm_flushes_everything_it_counted(
    fault_scenario: Scenario, kafka_bootstrap: str, redis_url: str, unique: str, tmp_path: Path
) -> None:
    env = _env(
        unique,
        kafka_bootstrap,
        redis_url,
        fault_scenario.model_dir,
        RMAD_SIM_SPEED="200",
        RMAD_TOPIC_SIM_LABELS=f"sim.labels-{unique}",
    )
    s = settings_of(env)
    bus = kafka_bus(kafka_bootstrap)
    try:
        await create_topics(bus, s)
        p = RmadProcess("ingest", env, tmp_path / "ingest.log", "--source", "simulator")
        try:
            await p.wait_ready(60)
            for _ in range(300):  # under load: a few thousand events on the way
                if await p.metric("rmad_ingest_messages_total") > 3000:
                    break
                await asyncio.sleep(0.1)
            took = p.terminate(GRACE_S)
        finally:
            p.close()
        _assert_clean_exit(p, took)
        m = re.search(r"stopped ingest\.simulator in [\d.]+ s: .*?(\d+) events", p.text())
        assert m, p.tail()
        counted = int(m.group(1))
        assert counted > 3000
        topics = [s.topic_trades, s.topic_books, s.topic_bars]
        got = await read_all(bus, topics, at_least=counted, events=True)  # trades packed or not
        assert sum(len(v) for v in got.values()) == counted
    finally:
        await bus.close()


async def test_worker_sigterm_produces_then_commits_and_restart_loses_nothing(
    fault_scenario: Scenario, kafka_bootstrap: str, redis_url: str, unique: str, tmp_path: Path
) -> None:
    env = _env(unique, kafka_bootstrap, redis_url, fault_scenario.model_dir)
    s = settings_of(env)
    bus = kafka_bus(kafka_bootstrap)
    await create_topics(bus, s)
    out, stop = Collected(), asyncio.Event()
    reader = asyncio.create_task(collect(bus, (s.topic_scores, s.topic_alerts), out, stop, f"c-{unique}"))
    expected = fault_scenario.expected_windows()
    w1 = RmadProcess("worker", env, tmp_path / "w1.log")
    w2: RmadProcess | None = None
    publisher = asyncio.create_task(publish_events(bus, s, fault_scenario.events))
    try:
        await wait_for(lambda: len(out.windows() & expected) > 0.3 * len(expected), 180, "progress")
        took = w1.terminate(GRACE_S)
        _assert_clean_exit(w1, took)
        # the marks the worker stored with its last checkpoint: window ends it says are produced
        state = RedisState(redis_url, key_prefix=f"t{unique}:")
        marks: dict[str, int] = {}
        try:
            for topic in (s.topic_trades, s.topic_bars):
                for part in range(s.topic_partitions):
                    raw = await state.hgetall(f"worker:{s.scoring_group_id}:marks:{topic}:{part}")
                    for k, v in raw.items():
                        if not k.startswith("xv|"):
                            marks[k] = int(v.decode().partition(";")[0])
        finally:
            await state.close()
        assert marks, w1.tail()
        await asyncio.sleep(2.0)  # let the reader catch up with the topic
        produced = out.windows()
        unproduced = {(k, e) for k, e in marks.items() if (k, e) not in produced}
        assert not unproduced, f"marked as produced but not in the scores topic: {sorted(unproduced)[:5]}"
        committed = await committed_offsets(
            kafka_bootstrap, s.scoring_group_id, [s.topic_trades, s.topic_bars], s.topic_partitions
        )
        # committed, though never past the history a key still needs (trades may stay at the oldest needed bar)
        assert any(o > 0 for o in committed.values()), committed
        # a new worker resumes from those offsets and marks
        w2 = RmadProcess("worker", env, tmp_path / "w2.log")
        await publisher
        await wait_for(lambda: expected <= out.windows(), 180, "every window after the restart")
        await asyncio.sleep(1.5)
    finally:
        publisher.cancel()
        for w in (w1, w2):
            if w is not None:
                w.close()
        stop.set()
        await reader
        await bus.close()
    # windows the first worker stored as produced are never scored again; a window scored after its last
    # checkpoint (a drain cut short by the grace period) may be re-scored: at-least-once for scores
    twice = [(k, e) for k, e in duplicate_windows(out) if e <= marks.get(k, -1)]
    assert not twice, f"windows marked produced and scored again: {twice[:5]}"
    assert not duplicate_ids(out.alerts)


async def _ws_client(url: str, got: list[str], closes: list[int | None]) -> None:
    try:
        async with connect(url, open_timeout=20) as ws:
            async for raw in ws:
                msg = json.loads(raw)
                if msg.get("type") == "alert":
                    got.append(str(msg["alert"]["id"]))
    except ConnectionClosed as exc:
        closes.append(exc.rcvd.code if exc.rcvd else None)
        return
    closes.append(ws.close_code)


async def _sse_client(url: str, got: list[str], ends: list[str]) -> None:
    async with httpx.AsyncClient(timeout=httpx.Timeout(30.0, read=60.0)) as c, c.stream("GET", url) as r:
        event = ""
        async for line in r.aiter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and event == "alert":
                got.append(str(json.loads(line[5:])["alert"]["id"]))
            elif line.startswith("data:") and event == "error":
                ends.append(line[5:].strip())
    ends.append("eof")


async def test_api_sigterm_closes_streams_and_commits_only_what_it_logged(
    fault_scenario: Scenario, kafka_bootstrap: str, redis_url: str, unique: str, tmp_path: Path
) -> None:
    env = _env(
        unique,
        kafka_bootstrap,
        redis_url,
        fault_scenario.model_dir,
        RMAD_ENV="development",
        RMAD_API_RATE_BURST="100000",
        RMAD_API_RATE_PER_S="100000",
        RMAD_API_STREAM_HEARTBEAT_S="1",
    )
    s = settings_of(env)
    bus = kafka_bus(kafka_bootstrap)
    await create_topics(bus, s)
    p = RmadProcess("api", env, tmp_path / "api.log")
    producing = asyncio.Event()
    producing.set()

    async def produce() -> None:
        prod = bus.producer()
        await prod.start()
        try:
            n = 0
            while producing.is_set():
                a = make_alert(n, symbol=f"S{unique}")
                await prod.send(s.topic_alerts, a.model_dump_json().encode(), key=a.key.encode())
                n += 1
                if n % 10 == 0:
                    await prod.flush()
                    await asyncio.sleep(0.2)
            await prod.flush()
        finally:
            await prod.stop()

    ws_got: list[list[str]] = [[] for _ in range(20)]
    ws_closes: list[int | None] = []
    sse_got: list[list[str]] = [[] for _ in range(5)]
    sse_ends: list[str] = []
    tasks: list[asyncio.Task[Any]] = []
    producer = asyncio.create_task(produce())
    try:
        await p.wait_ready(60)
        ws_url = f"ws://127.0.0.1:{p.port}/v1/alerts/stream?api_key=rmad-dev-key"
        sse_url = f"{p.base}/v1/alerts/sse?api_key=rmad-dev-key"
        tasks += [asyncio.create_task(_ws_client(ws_url, g, ws_closes)) for g in ws_got]
        tasks += [asyncio.create_task(_sse_client(sse_url, g, sse_ends)) for g in sse_got]
        await wait_for(lambda: all(len(g) >= 3 for g in ws_got + sse_got), 60, "every subscriber receiving")
        await asyncio.sleep(1.5)  # steady state: the follower has committed batches, alerts keep coming
        took = p.terminate(GRACE_S)
        _, pending = await asyncio.wait(tasks, timeout=5)
        assert not pending, "a stream stayed open after the api exited"
    finally:
        producing.clear()
        for t in tasks:
            t.cancel()
        with contextlib.suppress(Exception):
            await producer
        p.close()
    _assert_clean_exit(p, took)
    assert ws_closes == [1012] * 20, ws_closes  # service restart: reconnect with last_id elsewhere
    assert sum("server shutting down" in e for e in sse_ends) == 5 and sse_ends.count("eof") == 5, sse_ends
    for g in ws_got + sse_got:
        assert len(g) == len(set(g))
    # the alert-log follower committed only alerts it had written to the log
    committed = await committed_offsets(kafka_bootstrap, "rmad-api-alert-log", [s.topic_alerts], s.topic_partitions)
    topic = await read_all(bus, [s.topic_alerts])
    await bus.close()
    state = RedisState(redis_url, key_prefix=f"t{unique}:")
    try:
        alog = AlertLog(state, s.api_alert_log_maxlen, s.api_alert_ttl_s)
        below = [r for r in topic[s.topic_alerts] if r.offset < committed.get((r.topic, r.partition), 0)]
        assert below, committed
        missing = [a["id"] for a in decode(below) if await alog.get(str(a["id"])) is None]
    finally:
        await state.close()
    assert not missing, f"{len(missing)} committed alerts are not in the alert log"


async def test_run_sigterm_all_roles_within_one_grace_period(
    fault_scenario: Scenario, unique: str, tmp_path: Path
) -> None:
    env = _env(unique, None, None, fault_scenario.model_dir, RMAD_SIM_SPEED="50", RMAD_ENV="development")
    p = RmadProcess("run", env, tmp_path / "run.log", "--source", "simulator")
    try:
        await p.wait_ready(90)
        for _ in range(100):
            if await p.metric("rmad_ingest_messages_total") > 2000:
                break
            await asyncio.sleep(0.1)
        took = p.terminate(GRACE_S)
    finally:
        p.close()
    _assert_clean_exit(p, took)
    text = p.text()
    for part in ("ingest.simulator", "worker", "api-alert-hub"):
        assert f"stopped {part} in" in text, text[-3000:]
