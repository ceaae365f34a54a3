"""The evidence builder on exact series: phases, onset, the rush's trades, bounds; and its store on both states."""

from __future__ import annotations

import pytest

from service.evidence.builder import Limits, build_evidence
from service.evidence.store import EvidenceStore
from service.state.base import StateStore

BAR = 1000
T0 = 1_700_000_000_000


def _alert(end: int, thr: float = 10.0, kind: str = "pump_and_dump") -> dict[str, object]:
    return {
        "id": "a1", "key": "sim:X", "window_end_ms": end, "threshold": thr, "score": 30.0, "anomaly_type": kind,
        "severity": "high", "model_name": "market", "model_version": "v1",
        "branches": {"md": 1.0, "trans": 2.0, "clust": 3.0}, "weights": {"md": 0.2, "trans": 0.5, "clust": 0.3},
        "top_features": [{"name": "ret_1", "value": 0.3, "normal": 0.0, "error": 9.0}],
    }  # fmt: skip


def _bars(n: int) -> list[dict[str, float]]:
    return [{"t": T0 + i * BAR, "o": 1.0, "h": 1.1, "l": 0.9, "c": 1.0 + i, "v": 5.0} for i in range(n)]


def _scores(values: list[float], every: int = 5) -> list[dict[str, float]]:
    return [{"window_end_ms": T0 + i * every * BAR, "fused": v, "threshold": 10.0} for i, v in enumerate(values)]


def test_phases_onset_and_branches() -> None:
    # scores every 5 s: quiet, then above threshold from index 6 (t0+30 s) to the alert at index 8 (t0+40 s)
    scores = _scores([1, 2, 1, 12, 1, 2, 11, 15, 30, 4, 3])
    alert_ms = T0 + 40 * BAR
    ev = build_evidence(_alert(alert_ms), _bars(100), scores, bar_ms=BAR, now_ms=alert_ms + 500)
    assert ev.onset_ms == T0 + 30 * BAR  # the run that ended in the alert, not the earlier lone crossing at 15 s
    phases = {b.t: b.phase for b in ev.bars}
    assert phases[T0 + 10 * BAR] == "before" and phases[T0 + 35 * BAR] == "during"
    assert phases[T0 + 40 * BAR] == "during" and phases[T0 + 41 * BAR] == "after"
    assert [b["name"] for b in ev.branches] == ["md", "trans", "clust"] and ev.branches[1]["weight"] == 0.5
    assert ev.top_features[0]["value"] == 0.3 and ev.top_features[0]["normal"] == 0.0
    assert not ev.complete  # captured 0.5 s after the alert: the after-part is still to come
    later = build_evidence(_alert(alert_ms), _bars(100), scores, bar_ms=BAR, now_ms=alert_ms + 10**7)
    assert later.complete


def test_trades_of_the_rush_are_kept_largest_first_within_bound() -> None:
    alert_ms = T0 + 40 * BAR
    trades = [{"t": T0 + i * 10, "price": 1.0, "size": float(i % 97), "side": "buy"} for i in range(5000)]
    lim = Limits(max_trades=50)
    ev = build_evidence(_alert(alert_ms), _bars(60), _scores([1] * 6 + [20] * 3), trades, bar_ms=BAR,
                        now_ms=alert_ms, limits=lim)  # fmt: skip
    assert len(ev.trades) == 50
    assert all(ev.onset_ms - BAR <= t.t <= alert_ms + BAR for t in ev.trades)
    assert min(t.size for t in ev.trades) >= 90  # the biggest prints of the rush
    assert [t.t for t in ev.trades] == sorted(t.t for t in ev.trades)


def test_bars_and_scores_are_thinned_to_their_bounds() -> None:
    alert_ms = T0 + 3000 * BAR
    lim = Limits(before_ms=10**9, after_ms=10**9, max_bars=100, max_scores=40)
    ev = build_evidence(_alert(alert_ms), _bars(5000), _scores([1.0] * 1000), bar_ms=BAR, now_ms=0, limits=lim)
    assert len(ev.bars) <= 100 and len(ev.scores) <= 40
    assert ev.bars[-1].t == T0 + 4999 * BAR  # the newest kept


def test_book_rule_without_books_says_so() -> None:
    ev = build_evidence(_alert(T0, kind="spoofing_like"), _bars(5), [], bar_ms=BAR, now_ms=T0)
    assert ev.onset_ms == T0 and ev.notes
    books = [{"t": T0 - 1000, "bid": 1.0, "bid_size": 900.0, "ask": 1.1, "ask_size": 2.0}]
    ev2 = build_evidence(_alert(T0, kind="spoofing_like"), _bars(5), [], books=books, bar_ms=BAR, now_ms=T0)
    assert not ev2.notes and ev2.books[0].bid_size == 900.0


async def test_store_round_trip_and_expiry(state: StateStore) -> None:
    ev = build_evidence(_alert(T0 + 40 * BAR), _bars(60), _scores([1, 20]), bar_ms=BAR, now_ms=T0)
    store = EvidenceStore(state, ttl_s=60)
    size = await store.put(ev)
    assert 0 < size < 512 * 1024
    back = await store.get("a1")
    assert back is not None and back.to_dict() == ev.to_dict()
    assert await store.get("nope") is None
    ttl = await state.ttl("evidence:a1")
    assert ttl is not None and 0 < ttl <= 60


@pytest.mark.parametrize("n", [0, 1])
def test_no_bars_no_scores(n: int) -> None:
    ev = build_evidence(_alert(T0), _bars(n), [], bar_ms=BAR, now_ms=T0)
    assert ev.onset_ms == ev.alert_ms == T0 and len(ev.bars) == n


def test_complete_follows_the_data_not_the_wall_clock() -> None:
    # a backfill decides an alert long after it happened: the evidence waits for data past its window
    alert_ms = T0 + 40 * BAR
    now = alert_ms + 600_000  # ten minutes later by the wall clock
    early = build_evidence(_alert(alert_ms), _bars(41), _scores([1] * 9), bar_ms=BAR, now_ms=now)
    assert not early.complete and not [b for b in early.bars if b.phase == "after"]
    done = build_evidence(_alert(alert_ms), _bars(300), _scores([1] * 9), bar_ms=BAR, now_ms=now)
    assert done.complete and [b for b in done.bars if b.phase == "after"]
    quiet = build_evidence(_alert(alert_ms), _bars(41), [], bar_ms=BAR, now_ms=alert_ms + 2 * 3_600_000)
    assert quiet.complete  # a market gone quiet is given up on after an hour
