"""The worker end to end on the real broker (Tansu) and Redis: simulated anomalies in, typed alerts out,
exactly once across a SIGKILL, keys split across two workers sharing one set of centres, hot reload."""

from __future__ import annotations

import asyncio
import collections
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from harness.scenario import (
    Collected,
    Scenario,
    WorkerProcess,
    build_scenario,
    collect,
    stamped,
    wait_for,
    worker_env,
)
from service.bus.factory import standard_topics
from service.bus.kafka import KafkaBus, KafkaOptions
from service.ingest.publisher import MarketPublisher
from service.ingest.simulator import EXPECTED_ALERT_TYPE
from service.scoring.centres import centres_key
from service.scoring.worker import ScoringWorker
from service.settings import Settings, load_settings
from service.state.redis import RedisState

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    """Every anomaly kind, books included (spoofing)."""
    return build_scenario(tmp_path_factory.mktemp("scenario"), spoofing=True, wash=True)


@pytest.fixture(scope="module")
def trades_scenario(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    """Trades only. Why a second one: with books flowing too, the local Tansu broker was seen to return one
    batch of a 7-partition topic out of order (a key's ticks minutes back in time after later ones; reproduced
    without any worker), which makes the late ticks drop and their windows go missing: a broker fault, not what
    the split and no-gap tests are about."""
    return build_scenario(tmp_path_factory.mktemp("trades_scenario"))


def _settings(env: dict[str, str], **over: object) -> Settings:
    fields = {k.removeprefix("RMAD_").lower(): v for k, v in env.items() if k.startswith("RMAD_")}
    fields.update(over)
    return load_settings(**fields)


@pytest.fixture
async def kbus(kafka_bootstrap: str) -> AsyncIterator[KafkaBus]:
    bus = KafkaBus(KafkaOptions(kafka_bootstrap, session_timeout_ms=6000, heartbeat_interval_ms=500, linger_ms=2))
    yield bus
    await bus.close()


async def _publish(bus: KafkaBus, s: Settings, events: list[object], pace_every: int = 0) -> None:
    p = bus.producer()
    await p.start()
    pub = MarketPublisher(p, s)
    try:
        for i, e in enumerate(stamped(events)):  # type: ignore[arg-type]
            await pub.publish(e)
            if pace_every and i % pace_every == pace_every - 1:
                await pub.flush()
                await asyncio.sleep(0.05)
        await pub.flush()
    finally:
        await p.stop()


def _check_alert_types(scn: Scenario, alerts: list[dict[str, object]]) -> None:
    by_key = collections.defaultdict(list)
    for a in alerts:
        by_key[a["key"]].append(a)
    for lab in scn.labels:
        want = EXPECTED_ALERT_TYPE[lab.type]
        hits = [
            a
            for a in by_key[lab.key]
            if a["anomaly_type"] == want
            and lab.start_ms - 30_000 <= int(str(a["window_end_ms"])) <= lab.end_ms + 60_000
        ]
        assert hits, f"no {want} alert on {lab.key} for {lab.type} at {lab.start_ms}: {by_key[lab.key]}"


async def test_alerts_exactly_once_across_sigkill_and_no_lost_window(
    scenario: Scenario, kbus: KafkaBus, kafka_bootstrap: str, redis_url: str, unique: str, tmp_path: Path
) -> None:
    """The kill is placed by the data, not by a race with the clock: the stream is published in three stages
    (up to the first anomalies; a slice the worker is still chewing on when it is killed; the rest, de-peg
    included, after the restart), so the kill always lands mid-stream with alerts already out and windows,
    alerts and cross-venue state still to come."""
    env = worker_env(unique, kafka_bootstrap, redis_url, scenario.model_dir)
    s = _settings(env)
    await kbus.create_topics(standard_topics(s))
    out, stop = Collected(), asyncio.Event()
    reader = asyncio.create_task(collect(kbus, (s.topic_scores, s.topic_alerts), out, stop, f"c-{unique}"))
    log = tmp_path / "worker.log"
    w = WorkerProcess(env, log)
    t0 = min(e.event_time_ms for e in scenario.events)
    cut1 = next(i for i, e in enumerate(scenario.events) if e.event_time_ms >= t0 + 450_000)
    cut2 = next(i for i, e in enumerate(scenario.events) if e.event_time_ms >= t0 + 520_000)
    assert all(lab.start_ms >= t0 + 520_000 for lab in scenario.labels if lab.type == "depeg")
    try:
        expected = scenario.expected_windows()
        await _publish(kbus, s, scenario.events[:cut1])
        await wait_for(lambda: len(out.windows() & expected) > 0.15 * len(expected) and out.alerts, 180, "progress")
        # the next slice goes out at full speed and the worker dies while it is consuming it
        await _publish(kbus, s, scenario.events[cut1:cut2])
        w.kill()
        killed_at = len(out.windows() & expected)
        assert killed_at < len(expected)
        w = WorkerProcess(env, log)
        await _publish(kbus, s, scenario.events[cut2:], pace_every=2000)
        await wait_for(lambda: expected <= out.windows(), 180, "every window after the restart")
        await asyncio.sleep(2.0)  # anything still in flight
    finally:
        w.stop()
        stop.set()
        await reader
    (tmp_path / "out.json").write_text(json.dumps({"scores": out.scores, "alerts": out.alerts}))
    ids = [a["id"] for a in out.alerts]
    dups = [i for i, n in collections.Counter(ids).items() if n > 1]
    assert not dups, f"duplicate alert ids: {dups}"
    _check_alert_types(scenario, out.alerts)
    assert "partitions +" in log.read_text()
    assert all(a["explanation"] and a["severity"] for a in out.alerts)


async def test_two_workers_split_keys_and_share_centres(
    trades_scenario: Scenario, kbus: KafkaBus, kafka_bootstrap: str, redis_url: str, unique: str, tmp_path: Path
) -> None:
    # 7 partitions: the 5 keys land on partitions 3, 4, 5, 6, so any 2-member assignment gives both some keys
    env = worker_env(
        unique, kafka_bootstrap, redis_url, trades_scenario.model_dir, partitions=7, RMAD_CENTRES_HALF_LIFE_S="1e12"
    )
    s = _settings(env)
    await kbus.create_topics(standard_topics(s))
    out, stop = Collected(), asyncio.Event()
    reader = asyncio.create_task(collect(kbus, (s.topic_scores, s.topic_alerts), out, stop, f"c-{unique}"))
    a = WorkerProcess(env, tmp_path / "a.log")
    b = WorkerProcess(env, tmp_path / "b.log")
    state = RedisState(redis_url, key_prefix=f"t{unique}:")
    try:
        await asyncio.sleep(8)  # both join before data flows, so the group has settled on a split
        await _publish(kbus, s, trades_scenario.events)
        expected = trades_scenario.expected_windows()
        try:
            await wait_for(lambda: expected <= out.windows(), 180, "every window")
        except AssertionError:
            missing = sorted(expected - out.windows())
            per_key = collections.defaultdict(list)
            for k, e in missing:
                per_key[k].append(e)
            brief = {k: (len(v), min(v), max(v)) for k, v in per_key.items()}
            raise AssertionError(f"{len(missing)} windows missing: {brief}") from None
        await asyncio.sleep(1.5)
        stats = await state.hgetall(f"worker:{s.scoring_group_id}:members")
        raw_n = await state.hget(centres_key("market", "v1"), "n")
    finally:
        a.stop()
        b.stop()
        stop.set()
        await reader
        await state.close()
    # both members scored windows: the keys were split between them
    assert len(stats) == 2 and all(int(v) > 0 for v in stats.values()), stats
    # one set of centres: every normal window of both workers was folded into the same counts
    assert raw_n is not None
    folded = sum(json.loads(raw_n)) - 100.0 * len(json.loads(raw_n))
    normal_windows = {
        (x["key"], x["window_end_ms"]) for x in out.scores if float(x["fused"]) < trades_scenario.threshold
    }
    assert len(normal_windows) <= folded + 1e-6 <= len(out.scores)


async def test_hot_reload_failed_keeps_old_good_swaps_without_gap(
    trades_scenario: Scenario, kbus: KafkaBus, kafka_bootstrap: str, redis_url: str, unique: str, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    shutil.copytree(trades_scenario.model_dir, models)
    env = worker_env(unique, kafka_bootstrap, redis_url, models, RMAD_MODEL_RELOAD_INTERVAL_S="0.3")
    s = _settings(env)
    await kbus.create_topics(standard_topics(s))
    state = RedisState(redis_url, key_prefix=f"t{unique}:")
    worker = ScoringWorker(s, kbus, state)
    out, stop = Collected(), asyncio.Event()
    reader = asyncio.create_task(collect(kbus, (s.topic_scores, s.topic_alerts), out, stop, f"c-{unique}"))
    await worker.start()
    n = len(trades_scenario.events)
    try:
        await _publish(kbus, s, trades_scenario.events[: n // 3])
        await wait_for(lambda: len(out.scores) > 50, 120, "first scores")
        # a broken v2 (newer): refused in the background, v1 keeps scoring
        bad = models / "market" / "v2"
        shutil.copytree(models / "market" / "v1", bad)
        m = json.loads((bad / "manifest.json").read_text())
        (bad / "manifest.json").write_text(json.dumps({**m, "version": "v2", "created_ms": 2}))
        (bad / "model.onnx").write_bytes(b"\x00broken")
        await wait_for(lambda: str(bad) in worker.registry.failures(), 30, "the failed reload")
        await _publish(kbus, s, trades_scenario.events[n // 3 : 2 * n // 3])
        await asyncio.sleep(1.0)
        assert worker.registry.get("market").version == "v1" and worker.health().ok
        # a good v3: swapped in while data flows
        good = models / "market" / "v3"
        shutil.copytree(models / "market" / "v1", good)
        (good / "manifest.json").write_text(json.dumps({**m, "version": "v3", "created_ms": 3}))
        await wait_for(lambda: worker.registry.get("market").version == "v3", 30, "the swap to v3")
        await _publish(kbus, s, trades_scenario.events[2 * n // 3 :])
        expected = trades_scenario.expected_windows()
        await wait_for(lambda: expected <= out.windows(), 120, "every window")
    finally:
        await worker.stop()
        stop.set()
        await reader
        await state.close()
    versions = collections.Counter(str(x["model_version"]) for x in out.scores)
    assert set(versions) == {"v1", "v3"} and versions["v1"] > 0 and versions["v3"] > 0
    # no gap: per key, window ends are consecutive bars across the swap
    per_key = collections.defaultdict(set)
    for x in out.scores:
        per_key[x["key"]].add(int(str(x["window_end_ms"])))
    for key, ends in per_key.items():
        steps = np.diff(sorted(ends))
        assert set(steps.tolist()) == {5000}, f"{key}: gap in scores {sorted(set(steps.tolist()))}"
