"""Evidence captured where an alert is decided: the worker's emitter stores it before the alert goes out.

Why before: the API logs the alert from the topic and would otherwise build its own evidence from its price tape;
stored first (only where none is stored yet, so a re-scored window after a restart keeps the first record), the
worker's record is the one every API process serves. A failure to store evidence is logged and never holds an
alert back: the alert matters more than its companion.
"""

from __future__ import annotations

import logging

from service.evidence.recorder import EvidenceRecorder
from service.evidence.store import EvidenceStore
from service.schemas.market import BookTop
from service.schemas.scoring import Alert, Score
from service.state import StateStore

log = logging.getLogger(__name__)


class WorkerEvidence:
    """The worker's rings (fed by its window feed, rules and score output) and the store."""

    def __init__(self, state: StateStore, ttl_s: float, bar_ms: int = 1000) -> None:
        self.recorder = EvidenceRecorder(bar_ms)
        self.store = EvidenceStore(state, ttl_s)
        self.stored = 0
        self.failed = 0

    def on_trade(self, key: str, t_ms: int, price: float, size: float, buy: bool) -> None:
        self.recorder.trades.add(key, t_ms, price, size, buy)
        self.recorder.series.add_trade(key, t_ms, price, size)

    def on_book(self, book: BookTop) -> None:
        self.recorder.books.add(book)

    def on_score(self, score: Score) -> None:
        self.recorder.series.add_score(score.key, score.window_end_ms, score.fused, score.threshold)

    async def capture(self, alert: Alert) -> None:
        try:
            ev = self.recorder.capture(alert.model_dump(mode="json"), source="worker")
            if await self.store.put(ev, only_new=True):
                self.stored += 1
        except Exception as exc:  # evidence never holds an alert back
            self.failed += 1
            log.warning("alert %s: evidence not stored: %s", alert.id, exc)
