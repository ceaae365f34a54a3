"""The worker's capture: evidence from its own rings, stored before the alert goes out, first record kept, and a
failing store never raising into the alert path."""

from __future__ import annotations

from service.evidence.worker_capture import WorkerEvidence
from service.schemas.scoring import Action, Alert, AnomalyType, BranchScores, Score, Severity
from service.state.base import StateStore
from service.state.memory import MemoryState

T0 = 1_700_000_000_000


def _alert(end: int) -> Alert:
    zero = BranchScores(md=1.0, trans=2.0, clust=3.0)
    return Alert(id="w1", key="v:X", venue="v", symbol="X", window_end_ms=end, created_ms=end,
                 anomaly_type=AnomalyType.PUMP_AND_DUMP, severity=Severity.HIGH, action=Action.REVIEW_NOW,
                 score=40.0, threshold=30.0, branches=zero, weights=zero, explanation="x", model_name="market",
                 model_version="v1")  # fmt: skip


def _score(t: int, fused: float) -> Score:
    return Score.model_validate(
        {"key": "v:X", "window_end_ms": t, "last_event_ms": t, "fused": fused, "threshold": 30.0,
         "branches": {"md": 1.0, "trans": 1.0, "clust": 1.0}, "weights": {"md": 0.3, "trans": 0.4, "clust": 0.3},
         "model_name": "market", "model_version": "v1", "scored_ms": t, "is_anomalous": fused >= 30.0}
    )  # fmt: skip


async def test_worker_evidence_from_its_rings(state: StateStore) -> None:
    we = WorkerEvidence(state, ttl_s=60)
    for i in range(300):  # two trades a second, a rush from 250 s on
        t = T0 + i * 500
        we.on_trade("v:X", t, 1.0 + (i >= 250), 9.0 if i >= 250 else 1.0, True)
    for i in range(0, 150, 5):
        we.on_score(_score(T0 + i * 1000, 40.0 if i >= 125 else 2.0))
    end = T0 + 145 * 1000
    await we.capture(_alert(end))
    ev = await we.store.get("w1")
    assert ev is not None and ev.source == "worker" and we.stored == 1
    assert ev.onset_ms == T0 + 125_000 and ev.alert_ms == end
    assert [b.t for b in ev.bars][:2] == [T0, T0 + 1000] and ev.bars[0].v == 2.0  # 1 s bars built from the trades
    assert ev.trades and max(t.size for t in ev.trades) == 9.0
    # a second capture of the same alert (a re-scored window after a restart) keeps the first record
    we.recorder.series = type(we.recorder.series)(1000)
    await we.capture(_alert(end))
    again = await we.store.get("w1")
    assert again is not None and again.to_dict() == ev.to_dict() and we.stored == 1


async def test_a_failing_store_never_raises() -> None:
    broken = MemoryState()
    await broken.close()
    we = WorkerEvidence(broken, ttl_s=60)

    async def fail(*_a: object, **_k: object) -> bool:
        raise RuntimeError("store down")

    broken.set = fail  # type: ignore[method-assign]
    await we.capture(_alert(T0))
    assert we.failed == 1 and we.stored == 0
