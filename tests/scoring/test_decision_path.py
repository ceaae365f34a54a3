"""One decision path: the same windows through the streaming worker (real broker and Redis), `rmad score`'s
`score_events` and POST /v1/score/window give the same score records: the same scores, verdicts, anomaly types,
severities, top features, explanations and alerts (service/scoring/decision.py decides for all three)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness.scenario import INTERVAL_MS, WARMUP, WINDOW, Collected, build_scenario, collect, stamped, wait_for
from harness.scenario import worker_env as scenario_env
from service.bus.factory import standard_topics
from service.bus.kafka import KafkaBus, KafkaOptions
from service.ingest.publisher import MarketPublisher
from service.scoring.alerts import AlertPolicy
from service.scoring.decision import Decision
from service.scoring.live_state import read_live
from service.scoring.offline import score_events
from service.scoring.registry import ModelRegistry
from service.scoring.scorer import Scorer
from service.scoring.windows import WindowStore, apply_event
from service.scoring.worker import ScoringWorker
from service.settings import load_settings
from service.state.redis import RedisState
from tests.api.conftest import api_settings, harness

pytest.importorskip("torch")

SKIP = {"created_ms", "scored_ms", "last_event_ms", "schema_version"}  # clocks, and what only the worker knows


def _close(a: Any, b: Any) -> bool:
    """Equal, floats to 1e-5 relative (batches of other sizes may round the last bits differently)."""
    if isinstance(a, float) or isinstance(b, float):
        return bool(np.isclose(float(a), float(b), rtol=1e-5, atol=1e-9))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _record(x: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in x.items() if k not in SKIP}


@pytest.mark.integration
@pytest.mark.slow
async def test_worker_rmad_score_and_api_decide_alike(
    tmp_path: Path, kafka_bootstrap: str, redis_url: str, unique: str
) -> None:
    scn = build_scenario(tmp_path, duration_s=600.0)
    # the decision path alone: no cross-venue rule (its view of other keys depends on the order keys arrive)
    reg = ModelRegistry(scn.model_dir, reload_interval_s=0)
    model = reg.get("market")
    offline: dict[tuple[str, int], tuple[Decision, dict[str, Any] | None]] = {}
    for row, alert in score_events(iter(scn.events), model, Scorer(reg), policy=AlertPolicy(), warmup_bars=WARMUP):
        assert row.decision is not None
        offline[(row.key, row.timestamp)] = (row.decision, None if alert is None else alert.model_dump(mode="json"))
    alerted = [k for k, (_, a) in offline.items() if a is not None]
    assert len(alerted) >= 2, "the scenario's pump and crash raise alerts"

    # 1. the streaming worker on the real broker and Redis
    env = scenario_env(
        unique, kafka_bootstrap, redis_url, scn.model_dir, RMAD_CENTRES_ONLINE="false",
        RMAD_CROSSVENUE_ENABLED="false", RMAD_WASH_ENABLED="false",
    )  # fmt: skip
    s = load_settings(**{k.removeprefix("RMAD_").lower(): v for k, v in env.items() if k.startswith("RMAD_")})
    bus = KafkaBus(KafkaOptions(kafka_bootstrap, session_timeout_ms=6000, heartbeat_interval_ms=500, linger_ms=2))
    state = RedisState(redis_url, key_prefix=f"t{unique}:")
    await bus.create_topics(standard_topics(s))
    worker = ScoringWorker(s, bus, state)
    out, stop = Collected(), asyncio.Event()
    reader = asyncio.create_task(collect(bus, (s.topic_scores, s.topic_alerts), out, stop, f"c-{unique}"))
    await worker.start()
    try:
        p = bus.producer()
        await p.start()
        pub = MarketPublisher(p, s)
        for e in stamped(scn.events):
            await pub.publish(e)
        await p.stop()
        expected = {k for k in offline if k[1] <= scn.max_event_ms - 3 * INTERVAL_MS}
        await wait_for(lambda: expected <= out.windows(), 120, "every window")
        await wait_for(lambda: len(out.alerts) >= len([k for k in alerted if k in expected]), 30, "the alerts")
        # the live context the API reads: each key's newest scored window and its recent trades
        newest: dict[str, int] = {}
        for key, end in out.windows():
            newest[key] = max(end, newest.get(key, 0))
        for key, end in newest.items():
            live = await read_live(state, key)
            assert live is not None and live.window_end_ms == end and live.model_version == model.version
            assert live.window.shape == (model.window, model.n_features) and len(live.prints) > 0
    finally:
        await worker.stop()
        stop.set()
        await reader
        await bus.close()
        await state.close()
    streamed = {(str(x["key"]), int(x["window_end_ms"])): x for x in out.scores}
    for k in expected:
        d, _ = offline[k]
        score = _record(d.result.to_score(d.key, k[1], 0, d.incomplete, 0).model_dump(mode="json"))
        assert _close(_record(streamed[k]), score), (k, streamed[k], score)
    worker_alerts = {(str(a["key"]), int(a["window_end_ms"])): _record(a) for a in out.alerts}
    offline_alerts = {k: _record(a) for k, (_, a) in offline.items() if a is not None and k in expected}
    assert worker_alerts.keys() == offline_alerts.keys()
    for k, a in offline_alerts.items():
        assert _close(worker_alerts[k], a), (k, worker_alerts[k], a)

    # 2. POST /v1/score/window with the same feature windows (and their end times)
    store = WindowStore(WINDOW, model.n_features, INTERVAL_MS, warmup_bars=WARMUP)
    normal_keys = [k for k in sorted(offline) if offline[k][0].alert is None][::97][:6]
    wanted = set(alerted) | set(normal_keys)
    closed = [w for i, e in enumerate(scn.events) for w in apply_event(store, e, offset=i)]
    windows = {
        (w.key, w.window_end_ms): w.features for w in [*closed, *store.flush()] if (w.key, w.window_end_ms) in wanted
    }
    assert windows.keys() == wanted
    settings = api_settings(redis_url, unique, model_dir=str(scn.model_dir))
    async with harness(settings) as h:
        for (key, end), feats in sorted(windows.items()):
            body = {"model": "market", "key": key, "features": feats.tolist(), "window_end_ms": end}
            r = await h.client.post("/v1/score/window", json=body, headers=h.h("score"))
            assert r.status_code == 200, r.text
            got = r.json()
            d, alert = offline[(key, end)]
            want = {
                "fused": d.result.fused,
                "threshold": d.result.threshold,
                "verdict": d.verdict.value,
                "anomaly_type": None if d.anomaly_type is None else d.anomaly_type.value,
                "severity": None if d.severity is None else d.severity.value,
                "explanation": d.explanation,
                "top_features": [c.as_dict() for c in d.top_features],
                "model_version": d.result.model_version,
            }
            assert _close({k: got[k] for k in want}, want), (key, end, got, want)
            if alert is not None:  # the API's answer says what the worker's alert said
                assert _close(
                    {k: got[k] for k in ("explanation", "top_features", "branches", "weights", "severity")},
                    {k: alert[k] for k in ("explanation", "top_features", "branches", "weights", "severity")},
                )
                assert got["anomaly_type"] == alert["anomaly_type"]
