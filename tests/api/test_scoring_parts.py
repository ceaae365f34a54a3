"""The scoring route's hot-path parts against the plain code they replace: the generated state copier against
deepcopy, the window built from cached live rows against `padded`, `top_features` against the plain ranking, the
response dict against the validated `ScoreResult` (byte for byte), and the micro-batcher's waits."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from service.features.spec import MARKET_FEATURES
from service.scoring.decision import top_features


@pytest.mark.parametrize("special", [None, np.nan, np.inf, -np.inf])
def test_top_features_match_the_plain_ranking(special: float | None) -> None:
    """The decision's ranking skips `nan_to_num` when every error is finite; it ranks like the plain code."""
    f = len(MARKET_FEATURES)
    rng = np.random.default_rng(1)
    errs = rng.gamma(1.0, size=f).astype(np.float32)
    errs[3] = errs[7]  # a tie keeps the worker's order too
    if special is not None:
        errs[5] = special
    r = SimpleNamespace(feature_errors=errs, last_values=rng.normal(size=f).astype(np.float32))
    normal = rng.normal(size=f)
    ours = top_features(r, list(MARKET_FEATURES), normal, 3)  # type: ignore[arg-type]
    plain = np.nan_to_num(errs.astype(np.float64))
    order = np.argsort(-plain)[:3]
    assert [c.as_dict() for c in ours] == [
        {"name": MARKET_FEATURES[i], "value": float(r.last_values[i]), "normal": float(normal[i]),
         "error": float(plain[i])}
        for i in order
    ]  # fmt: skip


async def test_batcher_does_not_idle_between_batches() -> None:
    """The API's micro-batching (the worker's `MicroBatcher` through `BatchRunner`): requests that queued while the
    model was busy go as soon as it is free, without waiting for company again."""
    import asyncio

    from service.scoring.batcher import BatchRunner

    release = asyncio.Event()
    sizes: list[int] = []

    async def run(windows: list[np.ndarray]) -> list[float]:
        sizes.append(len(windows))
        if len(sizes) == 1:
            await release.wait()  # the model is busy with the first batch until the test says so
        return [float(w.sum()) for w in windows]

    b: BatchRunner[np.ndarray, float] = BatchRunner(run, max_size=5, max_wait_s=0.2)
    first = [asyncio.ensure_future(b.submit(np.full((2, 2), i, np.float32))) for i in range(5)]
    await asyncio.sleep(0)
    later = [asyncio.ensure_future(b.submit(np.full((2, 2), 10 + i, np.float32))) for i in range(6)]
    await asyncio.sleep(0.3)  # the later windows have now waited longer than max_wait, behind the busy model
    release.set()
    assert await asyncio.gather(*first) == [4.0 * i for i in range(5)]  # a full batch goes at once
    assert await asyncio.gather(*later) == [4.0 * (10 + i) for i in range(6)]
    assert sizes == [5, 5, 1] and b.queue.deadline_waits == 0  # 5, then 5 + 1 without waiting again
    assert (b.batches, b.windows) == (3, 11)
    # a lone window after a quiet spell waits (up to max_wait) for company
    assert await b.submit(np.ones((2, 2), np.float32)) == 4.0
    assert b.queue.deadline_waits == 1 and sizes[-1] == 1


async def test_batch_runner_fails_each_caller_of_a_failing_batch() -> None:
    import asyncio

    from service.scoring.batcher import BatchRunner

    async def run(items: list[int]) -> list[int]:
        if 3 in items:
            raise RuntimeError("model failed")
        return [i * 2 for i in items]

    b: BatchRunner[int, int] = BatchRunner(run, max_size=4, max_wait_s=0.01)
    got = await asyncio.gather(*(b.submit(i) for i in range(4)), return_exceptions=True)
    assert all(isinstance(x, RuntimeError) for x in got)
    assert await asyncio.gather(*(b.submit(i) for i in (5, 6))) == [10, 12]  # the runner keeps serving


@pytest.mark.parametrize(
    ("fused", "warm", "key"),
    [
        (0.5, True, "sim:AUSDT"),  # normal
        (5.0, False, "sim:BUSDT"),  # watch, cold
        (25.0, True, "sim:PUMPUSDT"),  # anomalous
        (95.0, True, "sim:USDCUSDT"),  # critical (a stablecoin: de-peg)
        (float("nan"), True, "sim:CUSDT"),
        (1e-7, True, "sim:DUSDT"),
    ],
)
def test_result_json_is_the_validated_models(fused: float, warm: bool, key: str) -> None:
    import orjson

    from service.api.payloads import ScoreResult
    from service.api.routes_scoring import _result

    f = len(MARKET_FEATURES)
    rng = np.random.default_rng(2)
    manifest = SimpleNamespace(
        kind="market",
        features=SimpleNamespace(names=list(MARKET_FEATURES)),
        thresholds=SimpleNamespace(critical=60.0, watch=3.0),
    )
    model = SimpleNamespace(artifact=SimpleNamespace(manifest=manifest, normal=rng.normal(size=f)))
    r = SimpleNamespace(
        fused=fused, threshold=20.0, s_md=rng.gamma(2.0), s_trans=1e-5, s_clust=123456.789,
        weights=(0.2, 0.3, 0.5), feature_errors=rng.gamma(1.0, size=f).astype(np.float32),
        last_values=rng.normal(size=f).astype(np.float32), model_name="market", model_version="v9",
    )  # fmt: skip
    window = rng.normal(scale=0.01, size=(8, f)).astype(np.float32)
    got = _result(None, model, r, key, window, 3, warm, "market")  # type: ignore[arg-type]
    assert orjson.dumps(got) == ScoreResult.model_validate(got).model_dump_json().encode()
    if fused >= 20.0:
        assert got["anomaly_type"] is not None and got["severity"] is not None
        assert got["verdict"] == ("critical" if fused >= 60.0 else "anomalous")
