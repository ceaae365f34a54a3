"""Backpressure: a slow model fills the bounded queue, the worker pauses its partitions, nothing is dropped."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from pathlib import Path

import numpy as np

from service.bus.factory import standard_topics
from service.bus.memory import MemoryBus
from service.ingest.publisher import MarketPublisher
from service.schemas.market import Trade
from service.scoring.scorer import Scorer
from service.scoring.worker import ScoringWorker
from service.settings import load_settings
from service.state.memory import MemoryState


async def test_full_queue_pauses_partitions_and_loses_nothing(tiny_model_dir: Path, monkeypatch: object) -> None:
    s = load_settings(
        model_dir=tiny_model_dir,
        model_reload_interval_s=0,
        scoring_warmup_bars=0,
        scoring_queue_bound=8,
        scoring_batch_size=2,
        topic_partitions=2,
        crossvenue_enabled=False,
        spoofing_enabled=False,
    )
    bus, state = MemoryBus(default_partitions=2), MemoryState()
    await bus.create_topics(standard_topics(s))
    worker = ScoringWorker(s, bus, state)
    slow = worker.scorer.score_windows

    def slowly(*a: object, **k: object) -> object:
        time.sleep(0.02)  # a model far slower than the ticks arrive
        return slow(*a, **k)  # type: ignore[arg-type]

    worker.scorer.score_windows = slowly  # type: ignore[method-assign]
    paused_seen = []
    await worker.start()
    p = bus.producer()
    await p.start()
    pub = MarketPublisher(p, s)
    t0 = 1_700_000_000_000
    rng = np.random.default_rng(0)
    n_keys, n_bars = 20, 12
    for b in range(n_bars * 5):  # one tick per key per second: 5 ticks per 5 s bar
        for k in range(n_keys):
            await pub.publish(
                Trade(
                    venue="x", symbol=f"K{k}", event_time_ms=t0 + b * 1000 + k, ingest_time_ms=t0, trade_id=str(b),
                    price=Decimal(f"{100 + rng.normal():.2f}"), size=Decimal(1),
                    side="buy" if rng.random() < 0.5 else "sell",
                )
            )  # fmt: skip
    await pub.flush()
    expected = n_keys * (n_bars - 1 - 8 + 1)  # windows of 8 bars over the closed bars of each key
    deadline = time.monotonic() + 60
    while worker.stats.scored < expected and time.monotonic() < deadline:
        if worker.consumer is not None and worker.consumer.paused():
            paused_seen.append(True)
        assert len(worker.batcher) <= s.scoring_queue_bound + s.scoring_poll_records  # bounded
        await asyncio.sleep(0.005)
    await worker.stop()
    assert worker.stats.pauses > 0 and paused_seen
    assert worker.stats.scored == expected
    assert isinstance(worker.scorer, Scorer)
