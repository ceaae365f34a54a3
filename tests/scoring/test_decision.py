"""`decide` is pure and says one thing per window: the input policy state is never changed, the same inputs give
the same decision, the explanation names the window's end only when it is known, and a cold window says so."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from service.features.spec import MARKET_FEATURES
from service.schemas.scoring import AnomalyType, Verdict
from service.scoring.alerts import AlertPolicy, KeyAlertState
from service.scoring.decision import ModelFacts, decide
from service.scoring.scorer import WindowResult

F = len(MARKET_FEATURES)
FACTS = ModelFacts(MARKET_FEATURES, np.zeros(F), "market", 5.0, 40.0)


def _result(fused: float) -> WindowResult:
    errs = np.arange(F, dtype=np.float32)
    return WindowResult(fused, 1.0, 2.0, 3.0, (0.2, 0.5, 0.3), errs, np.zeros(4, np.float32), errs, 10.0, "m", "v1")


def _window() -> np.ndarray:
    w = np.zeros((4, F), np.float32)
    w[:, MARKET_FEATURES.index("ret_1")] = [0, 0.05, 0.07, 0.01]
    return w


def test_decide_is_pure_and_repeatable() -> None:
    state = KeyAlertState()
    before = dataclasses.replace(state)
    args = dict(key="b:XUSDT", window_end_ms=1_600_000_000_000, now_ms=7, state=state, policy=AlertPolicy())
    r, w = _result(30.0), _window()  # one result object: a WindowResult holds arrays, compared by identity
    d1 = decide(r, w, FACTS, **args)  # type: ignore[arg-type]
    d2 = decide(r, w, FACTS, **args)  # type: ignore[arg-type]
    assert state == before  # the caller's state is untouched
    assert d1 == d2 and d1.alert is not None and d1.state is not None and not d1.state.armed
    assert d1.anomaly_type is AnomalyType.PUMP_AND_DUMP and d1.verdict is Verdict.ANOMALOUS
    assert d1.alert.explanation == d1.explanation and "2020-09-13 12:26:40 UTC" in d1.explanation
    assert [c.name for c in d1.top_features] == [MARKET_FEATURES[i] for i in (F - 1, F - 2, F - 3)]
    # the next window of the episode, decided in the returned state: above the threshold, no second alert
    d3 = decide(_result(31.0), _window(), FACTS, **{**args, "state": d1.state, "window_end_ms": 1_600_000_005_000})  # type: ignore[arg-type]
    assert d3.alert is None and d3.anomaly_type is AnomalyType.PUMP_AND_DUMP


def test_stateless_decision_and_its_words() -> None:
    d = decide(_result(30.0), _window(), FACTS, key="b:XUSDT", window_end_ms=None, now_ms=0, cold_context=3)
    assert d.alert is None and d.state is None and d.verdict is Verdict.ANOMALOUS
    assert "window ending" not in d.explanation and d.explanation.endswith(
        "Only 3 bars of live context were available; the rest of the window is typical values."
    )
    watch = decide(_result(6.0), _window(), FACTS, key="b:XUSDT", window_end_ms=None, now_ms=0)
    assert watch.verdict is Verdict.WATCH and watch.anomaly_type is None and "below the threshold" in watch.explanation
    crit = decide(_result(45.0), _window(), FACTS, key="b:XUSDT", window_end_ms=None, now_ms=0, dislocated=True)
    assert crit.verdict is Verdict.CRITICAL and crit.anomaly_type is AnomalyType.DEPEG
    with pytest.raises(ValueError, match="end time"):
        decide(_result(30.0), _window(), FACTS, key="k", window_end_ms=None, now_ms=0, state=KeyAlertState())
