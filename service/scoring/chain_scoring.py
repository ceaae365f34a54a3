"""chain.txs in the worker: each record names one address of a transaction; its live activity features (kept in
the state store by ingest, service/features/chain) become the newest row of the address's window, scored by the
chain model and decided by the one decision (`decision.decide`).

Chain rates are low (tens of tx/s), so these are scored per poll, not micro-batched; the partition's offsets
advance only after the scores and alerts are produced. Address windows and policy states are bounded by
`scoring_max_keys` (the oldest address is forgotten first).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

import numpy as np

from service.bus.base import Record
from service.scoring import metrics
from service.scoring.alerts import AlertPolicy, KeyAlertState
from service.scoring.decision import ModelFacts, decide
from service.scoring.emitter import Emitter, WorkerStats
from service.scoring.registry import LoadedModel
from service.scoring.scorer import Scorer
from service.settings import Settings
from service.state.base import StateStore


class ChainScoring:
    def __init__(
        self,
        settings: Settings,
        state: StateStore,
        scorer: Scorer,
        policy: AlertPolicy,
        emitter: Emitter,
        stats: WorkerStats,
    ) -> None:
        self.s = settings
        self.state = state
        self.scorer = scorer
        self.policy = policy
        self.emitter = emitter
        self.stats = stats
        self._rings: dict[str, deque[np.ndarray]] = {}
        self._policy: dict[str, KeyAlertState] = {}

    async def handle(self, recs: list[Record], model: LoadedModel) -> None:
        from service.features.chain import feature_vector
        from service.features.chain_store import address_features
        from service.schemas.chain import ChainTx

        em = self.emitter
        names = model.artifact.manifest.features.names
        ready: list[tuple[ChainTx, np.ndarray, Record]] = []
        for r in recs:
            if r.tp not in em.owned:
                continue
            try:
                tx = ChainTx.decode(r.value)
            except ValueError:
                metrics.RECORDS.labels(topic=r.topic, outcome="bad").inc()
                continue
            if tx.retraction:
                continue
            feats = await address_features(self.state, tx.chain.value, tx.address)
            ring = self._rings.setdefault(tx.key, deque(maxlen=model.window))
            ring.append(np.asarray(feature_vector(feats, names), dtype=np.float32))
            if len(ring) == model.window:
                ready.append((tx, np.stack(ring), r))
        if ready:
            results = await asyncio.to_thread(
                self.scorer.score_windows, model.name, [w for _, w, _ in ready], model=model
            )
            now_ms = int(time.time() * 1000)
            facts = ModelFacts.of(model)
            for (tx, win, r), res in zip(ready, results, strict=True):
                await em.send_score(res.to_score(tx.key, tx.time_ms, tx.time_ms, False, now_ms))
                d = decide(
                    res,
                    win,
                    facts,
                    key=tx.key,
                    window_end_ms=tx.time_ms,
                    now_ms=now_ms,
                    state=self._policy.get(tx.key) or KeyAlertState(),
                    policy=self.policy,
                    n_features=self.s.alert_top_features,
                )
                assert d.state is not None
                self._policy[tx.key] = d.state
                if d.alert is not None:
                    await em.publish(d.alert, r.tp)
            self.stats.scored += len(ready)
        for r in recs:
            if r.tp in em.owned:
                em.read(r.tp, r.offset)
        while len(self._rings) > self.s.scoring_max_keys:  # bounded: forget the oldest addresses
            old = next(iter(self._rings))
            del self._rings[old]
            self._policy.pop(old, None)
