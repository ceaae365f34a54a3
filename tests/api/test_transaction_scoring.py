"""Transaction-level scoring: each trade or transfer judged for itself in its context, with monotonic sanity."""

from __future__ import annotations

import math
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.api.txscore import TX_TIERS, Tiers, features_after, score_chain, score_trade
from service.features.chain import CHAIN_FEATURES
from service.features.trade_context import TradeContext
from service.scoring.live_state import LiveContext, LivePublisher
from service.scoring.windows import WindowStore
from tests.api.conftest import Harness, api_settings, export_models, harness

T0 = 1_800_000_000_000


def quiet_context(n: int = 200, seed: int = 1) -> TradeContext:
    rng = random.Random(seed)
    ctx = TradeContext()
    price = 100.0
    for i in range(n):
        price *= math.exp(rng.gauss(0, 2e-4))
        ctx.add(T0 + i * 997, price, math.exp(rng.gauss(0, 0.5)), rng.random() < 0.5)
    return ctx


def test_a_10000x_size_outlier_scores_higher_than_a_typical_trade() -> None:
    ctx = quiet_context()
    last = ctx.last_price() or 100.0
    typical = score_trade(ctx, T0 + 300_000, last, 1.0, True)
    outlier = score_trade(ctx, T0 + 300_000, last, 10_000.0, True)
    assert typical.verdict == "normal" and typical.score < TX_TIERS.note
    assert outlier.score > typical.score and outlier.verdict == "anomalous"
    assert outlier.ranked()[0].name == "size" and "x the usual" in outlier.ranked()[0].why


@settings(max_examples=100, deadline=None)
@given(a=st.floats(1e-6, 1e9), b=st.floats(1e-6, 1e9))
def test_size_score_is_monotonic(a: float, b: float) -> None:
    ctx = quiet_context(64)
    lo, hi = sorted((a, b))
    s = [
        next(d.score for d in score_trade(ctx, T0 + 10**6, 100.0, x, True).drivers if d.name == "size")
        for x in (lo, hi)
    ]
    assert s[0] <= s[1]


def test_price_rush_and_wash_drivers() -> None:
    ctx = quiet_context()
    last = ctx.last_price() or 100.0
    far = score_trade(ctx, T0 + 300_000, last * 1.05, 1.0, True)  # 5 % off in a market moving 0.02 % a trade
    assert far.ranked()[0].name == "price" and far.verdict == "anomalous"
    assert score_trade(ctx, T0 + 300_000, last * 1.0001, 1.0, True).verdict == "normal"
    burst = TradeContext()
    for _ in range(7):
        burst.add(T0, 100.0, 1.0, True)
    rush = score_trade(burst, T0, 100.0, 1.0, True)
    assert {d.name: d.score for d in rush.drivers}["rush"] == pytest.approx(6.0)  # fill 8 of a burst
    assert not any(d.name == "rush" for d in score_trade(burst, T0, 100.0, 1.0, False).drivers)
    mirror = TradeContext()
    mirror.add(T0, 100.0, 3.25, True)
    wash = score_trade(mirror, T0 + 500, 100.0, 3.25, False)
    assert wash.ranked()[0].name == "wash" and wash.score == 5.0 and wash.verdict == "watch"
    assert score_trade(mirror, T0 + 20_000, 100.1, 3.25, False).verdict == "note"
    assert not any(d.name == "wash" for d in score_trade(mirror, T0 + 120_000, 100.0, 3.25, False).drivers)


def test_chain_value_ladder_and_novelty() -> None:
    sender = {n: 0.0 for n in CHAIN_FEATURES} | {"Sent tnx": 40.0, "avg val sent": 0.5, "first_seen_ms": 1.0}
    receiver = {n: 0.0 for n in CHAIN_FEATURES} | {"Received Tnx": 10.0, "avg val received": 0.4, "first_seen_ms": 1.0}
    scores = [score_chain(sender, receiver, wei / 1e18, 0.0).score for wei in (1, 3.1e19, 1e30)]
    assert scores[0] < scores[1] < scores[2] and score_chain(sender, receiver, 1e12, 0.0).verdict == "anomalous"
    assert score_chain(sender, receiver, 0.5, 0.0).verdict == "normal"
    new = score_chain({"Sent tnx": 0.0}, {"Received Tnx": 0.0}, 1.0, 0.0)
    assert new.ranked()[0].name == "new_counterparty" and new.score == 3.0
    after = features_after(sender, 10.0, 0.01, 2_000_000, receiver_new=False)
    assert after["Sent tnx"] == 41 and after["max val sent"] == 10.0
    assert after["avg val sent"] == pytest.approx((0.5 * 40 + 10) / 41)
    assert after["total ether balance"] == pytest.approx(-10.01)


def test_tiers_must_be_ordered() -> None:
    with pytest.raises(ValueError, match="ordered"):
        Tiers(note=5.0, watch=3.0, alert=8.0)
    assert [TX_TIERS.verdict(x) for x in (0, 3, 5, 8)] == ["normal", "note", "watch", "anomalous"]


@pytest.fixture
async def scored(redis_url: str, unique: str, tmp_path: Path) -> AsyncIterator[Harness]:
    pytest.importorskip("torch")
    models = export_models(tmp_path / "models", 8)
    async with harness(api_settings(redis_url, unique, model_dir=str(models)), components=False) as h:
        await h.ctx.scoring.start()
        yield h


async def test_the_route_says_what_drove_the_score(scored: Harness) -> None:
    svc, c, h = scored.ctx.scoring, scored.client, scored.h("score")
    now = int(time.time() * 1000) - 600_000
    rng = random.Random(3)
    model = svc.model("market")
    store = WindowStore(model.window, model.n_features, 5000, warmup_bars=0)
    last = None
    for i in range(400):  # a quiet market: ten minutes of small trades, scored and published by the worker
        size = round(math.exp(rng.gauss(0, 0.5)), 4)
        for w in store.on_trade(
            "sim:QUIETUSDT", now + i * 1000, 100.0 * (1 + 1e-4 * rng.gauss(0, 1)), size, i % 2 == 0
        ):
            last = w
    assert last is not None
    live = LiveContext("sim:QUIETUSDT", last.features, last.window_end_ms, model.name, model.version, True, False,
                       store.keys["sim:QUIETUSDT"].prints)  # fmt: skip
    await LivePublisher(scored.runtime.state, 60.0).publish([live])
    body = {"kind": "trade", "venue": "sim", "symbol": "QUIETUSDT", "price": 100.0, "size": 1.0, "side": "buy",
            "time_ms": now + 400_500}  # fmt: skip
    typical = (await c.post("/v1/score/transaction", json=body, headers=h)).json()
    outlier = (await c.post("/v1/score/transaction", json={**body, "size": 10_000.0}, headers=h)).json()
    assert typical["transaction"]["verdict"] == "normal" and typical["verdict"] == "normal"
    assert outlier["transaction"]["score"] > typical["transaction"]["score"]
    assert outlier["transaction"]["drivers"][0]["name"] == "size" and outlier["verdict"] in ("anomalous", "critical")
    assert outlier["anomaly_type"] == "volume_surge" and outlier["explanation"].startswith("Transaction score")
    assert outlier["fused"] == pytest.approx(outlier["fused"]) and "Window:" in outlier["explanation"]
    cold = (await c.post("/v1/score/transaction", json={**body, "symbol": "NEWUSDT"}, headers=h)).json()
    assert cold["transaction"]["context"] == 0 and cold["transaction"]["drivers"] == []
    assert cold["verdict"] == "normal"  # a padded window is context only
